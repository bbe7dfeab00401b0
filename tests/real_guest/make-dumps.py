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
import sys
import time
from pathlib import Path

from guest_fixture import (HERE, Qmp, cache_key, cpio_newc, ensure_packages, generate_cached,
                           initramfs_files, kernel_package, log, run, save_dumps, start_qemu,
                           stop_qemu, unpack_package, wait_ready)

# gcc and libc6-dev build the static guest helper.
PACKAGES = ["qemu-system-x86", "busybox-static", "gcc", "libc6-dev"]
KERNEL_META_PACKAGE = "linux-image-amd64"
KERNEL_FILES = ["./boot/vmlinuz-*", "./lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"]
MEMORY = "384M"
BOOT_TIMEOUT_S = 420
KVM_SILENCE_S = 30

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


def kvm_usable():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def host_has_la57():
    return any(l.startswith("flags") and " la57" in l
               for l in Path("/proc/cpuinfo").read_text().splitlines())


def boot(out, accel, cpu, cpus, cmdline, kernel, initramfs):
    """Starts QEMU; returns it once the guest printed PTWALK-READY, and the seconds it took.

    Nested KVM can exist and still hang without a word, so a KVM guest that
    prints nothing within KVM_SILENCE_S is given up on (None)."""
    qemu = start_qemu(
        ["qemu-system-x86_64", "-accel", accel, "-cpu", cpu, "-smp", str(cpus), "-m", MEMORY,
         "-nodefaults", "-display", "none", "-no-reboot", "-device", "vmcoreinfo",
         "-kernel", str(kernel), "-initrd", str(initramfs), "-append", cmdline], out)
    booted = wait_ready(qemu, out, BOOT_TIMEOUT_S, KVM_SILENCE_S if accel == "kvm" else None)
    return (qemu if booted is not None else None), booted or KVM_SILENCE_S


def make_variant(name, out, kernel, initramfs, try_kvm):
    """Boots, pauses and dumps one variant; returns whether KVM worked."""
    extra_cmdline, cpus, needs_la57 = VARIANTS[name]
    cmdline = f"console=ttyS0 quiet panic=-1 {extra_cmdline} ptwalk_sleepers=300 ptwalk_touchers=6"
    out.mkdir(parents=True)
    started = time.monotonic()
    qemu = None
    if try_kvm and (not needs_la57 or host_has_la57()):
        accel, cpu = "kvm", "host"
        qemu, booted = boot(out, accel, cpu, cpus, cmdline, kernel, initramfs)
        if qemu is None:
            log(f"{name}: KVM guest silent after {booted:.0f} s, using TCG")
            try_kvm = False
    if qemu is None:
        # One TCG thread: the machine's cores are shared with the build.
        accel, cpu = "tcg,thread=single", "max" if needs_la57 else "qemu64"
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
        try_kvm = kvm_usable()
        for name in variants:
            try_kvm = make_variant(name, dumps / name, kernel, initramfs, try_kvm)
        (dumps / "kernel.txt").write_text(f"{package} {version}\n{qemu_version}\n")

    print(generate_cached(cache, key, generate, {f"{package}_{version}"}))


if __name__ == "__main__":
    main()
