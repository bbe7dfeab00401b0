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
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from guest_fixture import (HERE, Qmp, cache_key, cpio_newc, ensure_packages, generate_cached,
                           initramfs_files, kernel_package, log, run, save_dumps, stop_qemu,
                           unpack_package, wait_ready)

# gcc and libc6-dev build the static guest helper.
PACKAGES = ["qemu-system-x86", "busybox-static", "gcc", "libc6-dev"]
KERNEL_META_PACKAGE = "linux-image-amd64"
KERNEL_FILES = ["./boot/vmlinuz-*", "./lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"]
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


def build_initramfs(work, kernel_dir):
    helper = work / "guest_helper"
    run(["gcc", "-static", "-Os", "-Wall", "-o", str(helper), str(HERE / "guest_helper.c")])
    fw_cfg_ko = next(kernel_dir.glob("lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"))
    initramfs = work / "initramfs.cpio.gz"
    files = initramfs_files(Path("/bin/busybox"), helper, [fw_cfg_ko])
    initramfs.write_bytes(gzip.compress(cpio_newc(files), compresslevel=1))
    return initramfs


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
    kvm = accel == "kvm"
    try:
        booted = wait_ready(qemu, out, KVM_READY_S if kvm else BOOT_TIMEOUT_S, KVM_SILENCE_S if kvm else None)
    except BaseException:
        stop_qemu(qemu, qmp_path)
        raise
    if booted is None:
        stop_qemu(qemu, qmp_path)
        raise RuntimeError(f"guest silent after {KVM_SILENCE_S} s")
    return qemu, booted


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
        kdump_files = save_dumps(qmp, out, name)
        qmp.execute("quit")
        qemu.wait(timeout=60)
    finally:
        stop_qemu(qemu, qmp_path)
    variant = {"variant": name, "accel": accel, "cpu": cpu, "vcpus": cpus, "memory": MEMORY,
               "cmdline": cmdline, "format": "x86_64-la57" if needs_la57 else "x86_64",
               "kdump": kdump_files,
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
    ensure_packages(PACKAGES)
    package, version = kernel_package(KERNEL_META_PACKAGE)
    qemu_version = run(["qemu-system-x86_64", "--version"]).splitlines()[0]
    key = cache_key(["make-dumps.py", "guest_fixture.py", "init.sh", "guest_helper.c"],
                    f"{package}={version}", qemu_version, sorted(variants))

    def generate(work, dumps):
        kernel_dir = unpack_package(cache, package, version, KERNEL_FILES)
        kernel = next(kernel_dir.glob("boot/vmlinuz-*"))
        initramfs = build_initramfs(work, kernel_dir)
        unusable = kvm_unusable_reason()
        if unusable:
            log(f"KVM not tried: {unusable}; using TCG")
        try_kvm = unusable is None
        for name in variants:
            try_kvm = make_variant(name, dumps / name, kernel, initramfs, try_kvm)
        (dumps / "kernel.txt").write_text(f"{package} {version}\n{qemu_version}\n")

    print(generate_cached(cache, key, generate, {f"{package}_{version}"}))


if __name__ == "__main__":
    main()
