#!/usr/bin/env python3
"""tests/real_guest/make-dumps.py — real Linux guest dumps for the real-dump tests.

Boots Debian's own kernel in qemu-system-x86_64 with a busybox initramfs
(init.sh) that starts a few hundred processes, pauses the VM when the guest
says it is ready, and saves over QMP:

  VARIANT.elf         dump-guest-memory (paging=false): PT_LOAD by physical
                      address, NT_PRSTATUS and QEMU CPU-state notes, VMCOREINFO
  VARIANT.kdump-*     the same paused state as compressed kdump files, one per
                      kdump format this QEMU offers (query-dump-guest-memory-
                      capability: kdump-zlib/-lzo/-snappy, kdump-raw-* since 8.2)
  registers-cpuN.txt  HMP "info registers" per vCPU (CR3, CR4)
  tlb-cpuN.txt        HMP "info tlb" per vCPU: QEMU's own page walk, the
                      independent oracle the tests compare ptwalk against
  console.log         the serial console, with the guest's process list
  variant.json        how this variant was made (accelerator, CPU, cmdline)

Variants: "default" (4-level, pti=off, 1 vCPU), "pti" (pti=on, 2 vCPUs) and
"la57" (5-level paging; TCG when the host CPU lacks LA57).

KVM is used when /dev/kvm opens, and given up on (for this and every later
variant, which then run on TCG) on any failure: QEMU exiting (nested KVM
that cannot set an MSR aborts at once), a guest that prints nothing within
KVM_SILENCE_S or is not ready within KVM_READY_S, a QMP error. Each is
logged with its reason; an unusable KVM never fails the run.
$PTWALK_REAL_GUEST_KVM_FAULT forces one of those failures for the tests
(make_dumps_test.py): "exit" (a stand-in for QEMU that aborts like the MSR
assertion), "silent", "no-ready", or "no-device" (/dev/kvm treated as absent).

Results are cached under $PTWALK_REAL_GUEST_CACHE (default
~/.cache/ptwalk-real-guest) in a folder named by a hash of everything that
shapes them (these scripts, the kernel package, the QEMU version), so a rerun
is instant; CACHE/current links to the newest, and older generations are
removed. Prints the folder on stdout.
Installs what it needs from Debian when missing (PACKAGES); the kernel
package is downloaded (apt-get download) and unpacked, not installed.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# gcc and libc6-dev build the static guest helper.
PACKAGES = ["qemu-system-x86", "busybox-static", "gcc", "libc6-dev"]
KERNEL_META_PACKAGE = "linux-image-amd64"
MEMORY = "384M"
BOOT_TIMEOUT_S = 420
KVM_SILENCE_S = 30
# A KVM guest boots in seconds; one not ready by then is given up on, not waited for.
KVM_READY_S = 120
KVM_FAULT_VARIABLE = "PTWALK_REAL_GUEST_KVM_FAULT"
KVM_FAULTS = ("exit", "silent", "no-ready", "no-device")

# name → (kernel command line additions, vCPUs, needs LA57)
VARIANTS = {
    "default": ("pti=off no5lvl", 1, False),
    "pti": ("pti=on no5lvl", 2, False),
    "la57": ("pti=off", 1, True),
}


def log(message):
    print(f"make-dumps: {message}", file=sys.stderr, flush=True)


def run(args, **kwargs):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs).stdout


def ensure_packages():
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout != "install ok installed"]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def kernel_package():
    """The versioned kernel package linux-image-amd64 points at, and its version."""
    def resolve():
        for line in run(["apt-cache", "depends", KERNEL_META_PACKAGE]).splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-"):
                name = line.split()[1]
                policy = run(["apt-cache", "policy", name])
                version = next(l.split()[1] for l in policy.splitlines()
                               if l.strip().startswith("Candidate:"))
                return name, version
        return None
    try:
        found = resolve()
    except subprocess.CalledProcessError:
        found = None
    if not found:
        run(["apt-get", "update", "-qq"])
        found = resolve()
    if not found:
        sys.exit(f"make-dumps: cannot resolve {KERNEL_META_PACKAGE} with apt-cache")
    return found


def fetch_kernel(cache, package, version):
    """vmlinuz and qemu_fw_cfg.ko from the package, unpacked once into the cache."""
    unpacked = cache / "kernels" / f"{package}_{version}"
    vmlinuz = next(unpacked.glob("boot/vmlinuz-*"), None) if unpacked.exists() else None
    if vmlinuz:
        return vmlinuz, next(unpacked.glob("lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"))
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        log(f"downloading {package} {version}")
        run(["apt-get", "download", f"{package}={version}"], cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        # Only two files are needed out of the whole package.
        staging = Path(tmp) / "x"
        staging.mkdir()
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(staging), "--wildcards", "./boot/vmlinuz-*",
                        "./lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"],
                       stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            sys.exit(f"make-dumps: {deb}: dpkg-deb failed")
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(unpacked)
    return fetch_kernel(cache, package, version)


def cpio_newc(files):
    """An uncompressed newc cpio archive of {path: (mode, bytes)}: the initramfs format."""
    out = io.BytesIO()

    def entry(name, mode, data, ino):
        name_bytes = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0]
        out.write(b"070701" + b"".join(b"%08x" % f for f in fields) + name_bytes)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, (mode, data)) in enumerate(sorted(files.items()), start=1):
        entry(name, mode, data, ino)
    entry("TRAILER!!!", 0, b"", 0)
    return out.getvalue()


def build_initramfs(work, fw_cfg_ko):
    helper = work / "guest_helper"
    run(["gcc", "-static", "-Os", "-Wall", "-o", str(helper), str(HERE / "guest_helper.c")])
    directory, executable, regular = 0o040755, 0o100755, 0o100644
    files = {
        "bin": (directory, b""), "sbin": (directory, b""), "usr": (directory, b""),
        "usr/bin": (directory, b""), "usr/sbin": (directory, b""), "proc": (directory, b""),
        "sys": (directory, b""), "dev": (directory, b""), "tmp": (directory, b""),
        "bin/busybox": (executable, Path("/bin/busybox").read_bytes()),
        "init": (executable, (HERE / "init.sh").read_bytes()),
        "guest_helper": (executable, helper.read_bytes()),
        "qemu_fw_cfg.ko": (regular, fw_cfg_ko.read_bytes()),
    }
    initramfs = work / "initramfs.cpio.gz"
    initramfs.write_bytes(gzip.compress(cpio_newc(files), compresslevel=1))
    return initramfs


class Qmp:
    """The smallest QMP client: one command at a time, events skipped."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self):
        while True:
            line = self.reader.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command, **arguments):
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error']}")
        return reply["return"]

    def hmp(self, command, cpu):
        return self.execute("human-monitor-command", **{"command-line": command, "cpu-index": cpu})


def kvm_fault():
    """The KVM failure the tests ask for ($PTWALK_REAL_GUEST_KVM_FAULT), or None."""
    fault = os.environ.get(KVM_FAULT_VARIABLE) or None
    if fault is not None and fault not in KVM_FAULTS:
        sys.exit(f"make-dumps: {KVM_FAULT_VARIABLE}={fault}: expected one of {', '.join(KVM_FAULTS)}")
    return fault


def kvm_unusable_reason():
    """Why KVM cannot be tried here, or None when /dev/kvm opens (or a forced fault stands in)."""
    fault = kvm_fault()
    if fault == "no-device":
        return f"/dev/kvm treated as absent ({KVM_FAULT_VARIABLE}=no-device)"
    if fault is not None:
        return None  # the stand-in fails the start itself, with or without /dev/kvm
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return None
    except OSError as error:
        return f"/dev/kvm: {error.strerror}"


def qemu_command(accel, cpu, cpus, cmdline, kernel, initramfs, console, qmp_path):
    """The QEMU command line; for a KVM start under a forced fault, a stand-in that fails like it."""
    fault = kvm_fault() if accel == "kvm" else None
    if fault == "exit":
        # What nested KVM printed on a host that refuses MSR 0x10a, then abort().
        return [sys.executable, "-c",
                "import os, sys; sys.stderr.write('qemu-system-x86_64: error: failed to set MSR 0x10a "
                "to 0x69\\nqemu-system-x86_64: kvm_buf_set_msrs: Assertion "
                "`ret == cpu->kvm_msr_buf->nmsrs\\' failed.\\n'); sys.stderr.flush(); os.abort()"]
    if fault == "silent":
        return [sys.executable, "-c", "import time; time.sleep(3600)"]
    if fault == "no-ready":
        return [sys.executable, "-c",
                "import sys, time; open(sys.argv[1], 'w').write('Linux version (stand-in)\\n'); "
                "time.sleep(3600)", str(console)]
    return ["qemu-system-x86_64", "-accel", accel, "-cpu", cpu, "-smp", str(cpus), "-m", MEMORY,
            "-nodefaults", "-display", "none", "-no-reboot", "-device", "vmcoreinfo",
            "-kernel", str(kernel), "-initrd", str(initramfs), "-append", cmdline,
            "-serial", f"file:{console}", "-qmp", f"unix:{qmp_path},server=on,wait=off"]


def host_has_la57():
    return any(l.startswith("flags") and " la57" in l
               for l in Path("/proc/cpuinfo").read_text().splitlines())


def stop(qemu):
    if qemu.poll() is None:
        qemu.kill()
        qemu.wait()
    qemu.stderr.close()


def boot(out, accel, cpu, cpus, cmdline, kernel, initramfs):
    """Starts QEMU; returns it once the guest printed PTWALK-READY, and the seconds it took.

    Raises RuntimeError saying why when QEMU exits first or the guest is not
    ready in time. Nested KVM can exist and still hang without a word, so a
    KVM guest that prints nothing within KVM_SILENCE_S, or is not ready within
    KVM_READY_S, is given up on early."""
    console, qmp_path = out / "console.log", out / "qmp.sock"
    console.unlink(missing_ok=True)
    qemu = subprocess.Popen(qemu_command(accel, cpu, cpus, cmdline, kernel, initramfs, console, qmp_path),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready_timeout = KVM_READY_S if accel == "kvm" else BOOT_TIMEOUT_S
    started = time.monotonic()
    try:
        while True:
            text = console.read_bytes() if console.exists() else b""
            if b"PTWALK-READY" in text:
                return qemu, time.monotonic() - started
            waited = time.monotonic() - started
            if qemu.poll() is not None:
                message = " / ".join(qemu.stderr.read().decode(errors="replace").split("\n")).strip(" /")
                raise RuntimeError(f"QEMU exited with status {qemu.returncode} after {waited:.0f} s: "
                                   f"{message or 'no message'}")
            if accel == "kvm" and not text and waited > KVM_SILENCE_S:
                raise RuntimeError(f"guest silent after {KVM_SILENCE_S} s")
            if waited > ready_timeout:
                raise RuntimeError(f"guest not ready after {ready_timeout} s; see {console}")
            time.sleep(0.5)
    except BaseException:
        stop(qemu)
        raise


def dump_variant(name, out, accel, cpu, kernel, initramfs):
    """Boots one variant on `accel`, pauses it and saves its dumps and state into `out`."""
    extra_cmdline, cpus, needs_la57 = VARIANTS[name]
    cmdline = f"console=ttyS0 quiet panic=-1 {extra_cmdline} ptwalk_sleepers=300 ptwalk_touchers=6"
    out.mkdir(parents=True)
    started = time.monotonic()
    qemu, booted = boot(out, accel, cpu, cpus, cmdline, kernel, initramfs)
    qmp_path = out / "qmp.sock"
    try:
        qmp = Qmp(qmp_path)
        qmp.execute("stop")
        for cpu_index in range(cpus):
            (out / f"registers-cpu{cpu_index}.txt").write_text(qmp.hmp("info registers", cpu_index))
            (out / f"tlb-cpu{cpu_index}.txt").write_text(qmp.hmp("info tlb", cpu_index))
        # Named after the variant: `ptwalk import` names snapshots by file stem.
        kdump_formats = [f for f in qmp.execute("query-dump-guest-memory-capability")["formats"]
                         if f.startswith("kdump-")]
        dumps = [(out / f"{name}.elf", {})]
        dumps += [(out / f"{name}.{f}", {"format": f}) for f in kdump_formats]
        for dump, arguments in dumps:
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{dump}", **arguments)
            dump.chmod(0o444)  # QEMU creates it owner-only
        qmp.execute("quit")
        qemu.wait(timeout=60)
    finally:
        stop(qemu)
        qmp_path.unlink(missing_ok=True)
    variant = {"variant": name, "accel": accel, "cpu": cpu, "vcpus": cpus, "memory": MEMORY,
               "cmdline": cmdline, "format": "x86_64-la57" if needs_la57 else "x86_64",
               "kdump": [f"{name}.{f}" for f in kdump_formats],
               "boot_seconds": round(booted, 1),
               "total_seconds": round(time.monotonic() - started, 1)}
    (out / "variant.json").write_text(json.dumps(variant, indent=2) + "\n")
    log(f"{name}: {accel}, ready after {booted:.0f} s, dumped after "
        f"{variant['total_seconds']:.0f} s")


def make_variant(name, out, kernel, initramfs, try_kvm):
    """Dumps one variant, on KVM while it is worth trying, else on TCG.

    Returns whether KVM is still worth trying: any failure on KVM is logged,
    the variant is made again on TCG, and later variants skip KVM."""
    needs_la57 = VARIANTS[name][2]
    if try_kvm and needs_la57 and not host_has_la57():
        log(f"{name}: the host CPU lacks LA57, using TCG for this variant")
    elif try_kvm:
        try:
            dump_variant(name, out, "kvm", "host", kernel, initramfs)
            return True
        except Exception as error:  # noqa: BLE001 - whatever KVM did, TCG is the answer
            log(f"{name}: KVM failed ({error}); using TCG for it and every later variant")
            shutil.rmtree(out, ignore_errors=True)
            try_kvm = False
    # One TCG thread: the machine's cores are shared with the build.
    dump_variant(name, out, "tcg,thread=single", "max" if needs_la57 else "qemu64", kernel, initramfs)
    return try_kvm


def cache_key(kernel_id, qemu_version, variants):
    digest = hashlib.sha256()
    for part in ["make-dumps.py", "init.sh", "guest_helper.c"]:
        digest.update((HERE / part).read_bytes())
    digest.update(f"{kernel_id}\n{qemu_version}\n{sorted(variants)}".encode())
    return digest.hexdigest()[:16]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"make-dumps: unknown variant {', '.join(unknown)}")

    cache = Path(os.environ.get("PTWALK_REAL_GUEST_CACHE",
                                Path.home() / ".cache" / "ptwalk-real-guest"))
    cache.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    package, version = kernel_package()
    qemu_version = run(["qemu-system-x86_64", "--version"]).splitlines()[0]
    target = cache / cache_key(f"{package}={version}", qemu_version, variants)
    if not (target / "complete").exists():
        started = time.monotonic()
        kernel, fw_cfg_ko = fetch_kernel(cache, package, version)
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            work = Path(tmp)
            initramfs = build_initramfs(work, fw_cfg_ko)
            unusable = kvm_unusable_reason()
            if unusable:
                log(f"KVM not tried: {unusable}; using TCG")
            try_kvm = unusable is None
            for name in variants:
                try_kvm = make_variant(name, work / "dumps" / name, kernel, initramfs, try_kvm)
            (work / "dumps" / "kernel.txt").write_text(f"{package} {version}\n{qemu_version}\n")
            (work / "dumps" / "complete").write_text(
                f"{round(time.monotonic() - started, 1)} seconds\n")
            (work / "dumps").rename(target)
        log(f"generated {target} in {time.monotonic() - started:.0f} s")
    current = cache / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(target.name)
    prune(cache, target.name, f"{package}_{version}")
    print(target)


def prune(cache, keep_dumps, keep_kernel):
    """Removes older generations and kernels: each generation is over 1 GB."""
    for old in cache.iterdir():
        if old.is_dir() and not old.is_symlink() and len(old.name) == 16 and old.name != keep_dumps:
            shutil.rmtree(old, ignore_errors=True)
    for old in (cache / "kernels").iterdir():
        if old.name != keep_kernel:
            shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    main()
