"""tests/real_guest/guest_fixture.py — what the real-guest dump generators share.

make-dumps.py (x86-64, KVM or TCG) and make-arm64-dumps.py (AArch64, TCG)
both boot a Debian kernel with a busybox initramfs (init.sh), wait for the
guest to say PTWALK-READY, pause it and save dumps over QMP. This module
holds the common parts: Debian packages (installed, or downloaded and
unpacked without installing), the initramfs archive, a QMP client, the
boot wait, and the cache of generations keyed by a hash of their inputs.
"""

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


def log(message):
    print(f"make-dumps: {message}", file=sys.stderr, flush=True)


def run(args, **kwargs):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs).stdout


def ensure_packages(packages, foreign_architecture=None):
    """Installs the Debian packages that are missing (adding a dpkg architecture first if asked)."""
    if foreign_architecture and foreign_architecture not in run(
            ["dpkg", "--print-foreign-architectures"]).split():
        log(f"adding dpkg architecture {foreign_architecture}")
        run(["dpkg", "--add-architecture", foreign_architecture])
        run(["apt-get", "update", "-qq"])
    missing = [p for p in packages
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout != "install ok installed"]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def candidate_version(package):
    policy = run(["apt-cache", "policy", package])
    return next((l.split()[1] for l in policy.splitlines() if l.strip().startswith("Candidate:")), None)


def kernel_package(meta_package):
    """The versioned kernel package a meta package (linux-image-amd64, …:arm64) points at, and its version."""
    def resolve():
        for line in run(["apt-cache", "depends", meta_package]).splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-"):
                name = line.split()[1]
                return name, candidate_version(name)
        return None
    try:
        found = resolve()
    except subprocess.CalledProcessError:
        found = None
    if not found:
        run(["apt-get", "update", "-qq"])
        found = resolve()
    if not found or not found[1]:
        sys.exit(f"make-dumps: cannot resolve {meta_package} with apt-cache")
    return found


def unpack_package(cache, package, version, members):
    """The members (tar wildcards) of a downloaded, not installed, package, unpacked once into the cache."""
    unpacked = cache / "kernels" / f"{package.replace(':', '_')}_{version}"
    if unpacked.exists():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        log(f"downloading {package} {version}")
        run(["apt-get", "download", f"{package}={version}"], cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        staging = Path(tmp) / "x"
        staging.mkdir()
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(staging), "--wildcards", *members],
                       stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            sys.exit(f"make-dumps: {deb}: dpkg-deb failed")
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(unpacked)
    return unpacked


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


def initramfs_files(busybox, helper, modules):
    """The guest's root file system: busybox, init.sh, the helper and kernel modules (loaded in order)."""
    directory, executable, regular = 0o040755, 0o100755, 0o100644
    files = {
        "bin": (directory, b""), "sbin": (directory, b""), "usr": (directory, b""),
        "usr/bin": (directory, b""), "usr/sbin": (directory, b""), "proc": (directory, b""),
        "sys": (directory, b""), "dev": (directory, b""), "tmp": (directory, b""),
        "modules": (directory, b""),
        "bin/busybox": (executable, busybox.read_bytes()),
        "init": (executable, (HERE / "init.sh").read_bytes()),
        "guest_helper": (executable, helper.read_bytes()),
    }
    # init.sh loads /modules/*.ko in name order: prefixes keep dependencies first.
    for position, module in enumerate(modules):
        files[f"modules/{position}-{module.name}"] = (regular, module.read_bytes())
    return files


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


def start_qemu(command, out):
    """Starts QEMU with the serial console in out/console.log and QMP on out/qmp.sock."""
    console, qmp_path = out / "console.log", out / "qmp.sock"
    console.unlink(missing_ok=True)
    return subprocess.Popen(
        [*command, "-serial", f"file:{console}", "-qmp", f"unix:{qmp_path},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(qemu, out, timeout_s, silence_s=None):
    """Seconds until the guest printed PTWALK-READY on its console.

    Raises with the reason when QEMU exits, the guest reports a failure
    (PTWALK-FAIL) or the timeout passes; returns None when silence_s is set
    and the guest printed nothing in that time (a hung nested KVM)."""
    console = out / "console.log"
    started = time.monotonic()
    while True:
        text = console.read_bytes() if console.exists() else b""
        if b"PTWALK-READY" in text:
            return time.monotonic() - started
        waited = time.monotonic() - started
        failure = next((l for l in text.decode(errors="replace").splitlines() if "PTWALK-FAIL" in l), None)
        tail = " | ".join(text.decode(errors="replace").strip().splitlines()[-3:])
        if qemu.poll() is not None:
            message = " / ".join(qemu.stderr.read().decode(errors="replace").split("\n")).strip(" /")
            raise RuntimeError(f"QEMU exited with status {qemu.returncode} after {waited:.0f} s: "
                               f"{message or 'no message'}; the console's last lines: {tail}")
        if failure or waited > timeout_s or (silence_s is not None and not text and waited > silence_s):
            qemu.kill()
            qemu.wait()
            if failure:
                raise RuntimeError(f"guest failed: {failure.strip()}; see {console}")
            if waited > timeout_s:
                raise RuntimeError(f"guest not ready after {timeout_s} s; the console's last lines: {tail}")
            return None
        time.sleep(0.5)


def save_dumps(qmp, out, name):
    """dump-guest-memory as VARIANT.elf and one VARIANT.kdump-* per kdump format this QEMU offers."""
    kdump_formats = [f for f in qmp.execute("query-dump-guest-memory-capability")["formats"]
                     if f.startswith("kdump-")]
    dumps = [(out / f"{name}.elf", {})]
    dumps += [(out / f"{name}.{f}", {"format": f}) for f in kdump_formats]
    for dump, arguments in dumps:
        qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{dump}", **arguments)
        dump.chmod(0o444)  # QEMU creates it owner-only
    return [f"{name}.{f}" for f in kdump_formats]


def stop_qemu(qemu, qmp_path):
    if qemu.poll() is None:
        qemu.kill()
        qemu.wait()
    qmp_path.unlink(missing_ok=True)


def cache_key(files, *inputs):
    digest = hashlib.sha256()
    for part in files:
        digest.update((HERE / part).read_bytes())
    digest.update("\n".join(str(i) for i in inputs).encode())
    return digest.hexdigest()[:16]


def generate_cached(cache, key, generate, keep_kernels):
    """Runs generate(folder) once per key into cache/KEY, points cache/current at it, prunes the rest."""
    target = cache / key
    if not (target / "complete").exists():
        started = time.monotonic()
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            dumps = Path(tmp) / "dumps"
            generate(Path(tmp), dumps)
            (dumps / "complete").write_text(f"{round(time.monotonic() - started, 1)} seconds\n")
            dumps.rename(target)
        log(f"generated {target} in {time.monotonic() - started:.0f} s")
    current = cache / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(target.name)
    prune(cache, target.name, keep_kernels)
    return target


def prune(cache, keep_dumps, keep_kernels):
    """Removes older generations and packages: each generation is hundreds of MB."""
    for old in cache.iterdir():
        if old.is_dir() and not old.is_symlink() and len(old.name) == 16 and old.name != keep_dumps:
            shutil.rmtree(old, ignore_errors=True)
    for old in (cache / "kernels").iterdir():
        if old.name not in keep_kernels:
            shutil.rmtree(old, ignore_errors=True)
