#!/usr/bin/env python3
"""tests/real_guest/make-arm64-dumps.py — a real arm64 Linux guest dump for the arm64 real-dump tests.

Boots Debian's arm64 kernel in qemu-system-aarch64 (-M virt -cpu max, TCG:
RAM starts at 0x40000000) with the same busybox initramfs as the x86
fixture (init.sh, guest_helper.c cross-compiled with gcc-aarch64-linux-gnu):
a few hundred processes, transparent-huge-page holders, a copy-on-write
family and idle spinners. QEMU has no "info tlb" for Arm, so the truth the
tests hold ptwalk to comes from QEMU's MMU and from the guest kernel:

  default.elf           dump-guest-memory (paging=false), VMCOREINFO note
  default.kdump-*       the same paused state as compressed kdump files
  sysregs-cpuN.txt      TTBR0_EL1, TTBR1_EL1, TCR_EL1 and CPSR of vCPU N,
                        read over QEMU's gdbstub with gdb-multiarch
  gva2gpa-cpuN.txt      "VA PA" or "VA -": HMP gva2gpa (QEMU's own stage-1
                        walk on vCPU N, at EL1 without PAN after the dumps)
                        for a sample of user VAs (mapped and just outside
                        mappings) and kernel VAs (symbols, modules, vmalloc
                        areas and their guard pages, the linear map)
  pagemap.txt           every process's VMAs and /proc/PID/pagemap entries,
                        written by the guest to a second virtio disk
  console.log           the serial console
  variant.json          how it was made, with the boot and total seconds

Cached under $PTWALK_REAL_GUEST_ARM64_CACHE (default
~/.cache/ptwalk-real-guest-arm64) by a hash of its inputs (these scripts, the
kernel and busybox packages, the QEMU version); CACHE/current links to the
newest. Prints the folder on stdout. A guest that does not come up fails
with the reason (QEMU's message, the guest's PTWALK-FAIL line, or the
console's last lines after the timeout).
"""

import gzip
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from guest_fixture import (HERE, Qmp, cache_key, candidate_version, cpio_newc, ensure_packages,
                           generate_cached, initramfs_files, kernel_package, log, run, save_dumps,
                           start_qemu, stop_qemu, unpack_package, wait_ready)

PACKAGES = ["qemu-system-arm", "gdb-multiarch", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
KERNEL_META_PACKAGE = "linux-image-arm64:arm64"
BUSYBOX_PACKAGE = "busybox-static:arm64"
# Loaded in this order; virtio itself is built in.
MODULES = ["drivers/firmware/qemu_fw_cfg.ko", "drivers/virtio/virtio_mmio.ko", "drivers/block/virtio_blk.ko"]
MEMORY = "384M"
VCPUS = 2
PAGEMAP_DISK_BYTES = 64 << 20
BOOT_TIMEOUT_S = 900  # TCG on two shared cores
CMDLINE = ("console=ttyAMA0 quiet panic=-1 ptwalk_sleepers=300 ptwalk_touchers=6 "
           "ptwalk_cow_children=8 ptwalk_spinners=2 ptwalk_pagemap=/dev/vda")
# A spinner per vCPU: the paused vCPUs hold known user processes in TTBR0_EL1.
RAM_START = 0x40000000
# Every this many bytes of RAM, its linear-map VA is sampled.
LINEAR_MAP_STRIDE = 4 << 20
# Every this many present pages of the helper processes (the spinner among them) are sampled.
HELPER_PAGE_STRIDE = 4
USER_SAMPLE_LIMIT = 2000
SYSREGS = ["TTBR0_EL1", "TTBR1_EL1", "TCR_EL1", "cpsr"]


def build_initramfs(work, kernel_dir, busybox_dir):
    helper = work / "guest_helper"
    run(["aarch64-linux-gnu-gcc", "-static", "-Os", "-Wall", "-o", str(helper), str(HERE / "guest_helper.c")])
    modules = [next(kernel_dir.glob(f"lib/modules/*/kernel/{m}")) for m in MODULES]
    initramfs = work / "initramfs.cpio.gz"
    files = initramfs_files(busybox_dir / "bin" / "busybox", helper, modules)
    initramfs.write_bytes(gzip.compress(cpio_newc(files), compresslevel=1))
    return initramfs


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_pagemap(text):
    """{pid: {"vmas": [(lo, hi)], "pages": [va]}} and the kernel VAs, from the guest's pagemap text."""
    processes, kernel, pid = {}, [], None
    for line in text.splitlines():
        fields = line.split()
        if fields[0] == "process":
            pid = int(fields[1])
            processes[pid] = {"comm": fields[2], "vmas": [], "pages": []}
        elif fields[0] == "vma":
            processes[pid]["vmas"].append((int(fields[1], 16), int(fields[2], 16)))
        elif fields[0] == "page":
            processes[pid]["pages"].append(int(fields[1], 16))
        elif fields[0] == "kva":
            kernel.append(int(fields[1], 16))
    return processes, kernel


def elf_vmcoreinfo(path):
    """The VMCOREINFO note of an ELF core as {key: value}."""
    data = Path(path).read_bytes()
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        at, end = p_offset, p_offset + p_filesz
        while p_type == 4 and at + 12 <= end:  # PT_NOTE
            namesz, descsz, _ = struct.unpack_from("<III", data, at)
            name = data[at + 12:at + 12 + namesz].rstrip(b"\0")
            desc_at = at + 12 + (namesz + 3) // 4 * 4
            if name == b"VMCOREINFO":
                text = data[desc_at:desc_at + descsz].decode(errors="replace")
                return dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
            at = desc_at + (descsz + 3) // 4 * 4
    raise RuntimeError(f"{path}: no VMCOREINFO note (was qemu_fw_cfg loaded?)")


def linear_map_addresses(vmcoreinfo, ram_bytes):
    """The linear-map VA of every LINEAR_MAP_STRIDE bytes of RAM: PA - PHYS_OFFSET + PAGE_OFFSET."""
    va_bits = int(vmcoreinfo["NUMBER(VA_BITS)"])
    phys_offset = int(vmcoreinfo["NUMBER(PHYS_OFFSET)"], 0) % (1 << 64)
    page_offset = (1 << 64) - (1 << va_bits)
    return {(pa - phys_offset + page_offset) % (1 << 64)
            for pa in range(RAM_START, RAM_START + ram_bytes, LINEAR_MAP_STRIDE)}


def sample_addresses(processes, kernel):
    """User and kernel VAs to ask QEMU about: per VMA its first and last present page and the
    page below it (unmapped when no other VMA of that process covers it), for the helper
    processes (the spinner a vCPU sits in among them) every HELPER_PAGE_STRIDE-th present page
    too, the other processes as far as USER_SAMPLE_LIMIT allows; the guest's kernel VAs."""
    def of(process, stride=None):
        out = set()
        pages = sorted(process["pages"])
        if stride:
            out.update(pages[::stride])
        for lo, hi in process["vmas"]:
            inside = [p for p in pages if lo <= p < hi]
            out.update(inside[:1] + inside[-1:])
            below = lo - 4096
            if lo >= 4096 and not any(a <= below < b for a, b in process["vmas"]):
                out.add(below)
        return out

    helpers = [p for p in processes.values() if p["comm"] == "guest_helper"]
    others = [p for p in processes.values() if p["comm"] != "guest_helper"]
    user = set().union(*(of(p, HELPER_PAGE_STRIDE) for p in helpers))
    for p in random.Random(0).sample(others, len(others)):
        if len(user) >= USER_SAMPLE_LIMIT:
            break
        user |= of(p)
    return sorted(user | set(kernel))


def gva2gpa(qmp, cpu, vas):
    lines = []
    for va in vas:
        reply = qmp.hmp(f"gva2gpa 0x{va:x}", cpu)
        found = re.search(r"gpa: (0x[0-9a-f]+)", reply)
        if not found and "Unmapped" not in reply:
            raise RuntimeError(f"gva2gpa 0x{va:x} on vCPU {cpu}: {reply.strip()}")
        lines.append(f"0x{va:x} {found.group(1) if found else '-'}")
    return "\n".join(lines) + "\n"


class Gdb:
    """gdb-multiarch attached to QEMU's gdbstub, one command batch at a time.

    It stays attached while QMP asks gva2gpa: a gdb that exits detaches,
    and QEMU's gdbstub resumes the VM on detach."""

    def __init__(self, port):
        self.process = subprocess.Popen(["gdb-multiarch", "-nx", "-q"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.batch(["set pagination off", "set confirm off", "set architecture aarch64",
                    f"target remote 127.0.0.1:{port}"])

    def batch(self, commands):
        self.process.stdin.write("".join(f"{c}\n" for c in commands) + "echo PTWALK-GDB-DONE\\n\n")
        self.process.stdin.flush()
        lines = []
        for line in self.process.stdout:
            if "PTWALK-GDB-DONE" in line:
                return "".join(lines)
            lines.append(line)
        raise RuntimeError("gdb-multiarch exited: " + "".join(lines[-5:]).strip())

    def close(self):
        self.process.kill()
        self.process.wait()


def read_sysregs(gdb, out):
    """TTBR0_EL1/TTBR1_EL1/TCR_EL1/CPSR of every vCPU (gdb thread N+1 is vCPU N)."""
    for cpu in range(VCPUS):
        text = gdb.batch([f"thread {cpu + 1}"] + [f"printf \"{r}=0x%lx\\n\", ${r}" for r in SYSREGS])
        values = dict(re.findall(r"\b(\w+)=(0x[0-9a-f]+)$", text, flags=re.M))
        if sorted(values) != sorted(SYSREGS):
            raise RuntimeError(f"gdbstub: no {', '.join(sorted(set(SYSREGS) - set(values)))} for vCPU {cpu}: "
                               f"{text.strip()}")
        (out / f"sysregs-cpu{cpu}.txt").write_text("".join(f"{r}={values[r]}\n" for r in SYSREGS))


def privileged_without_pan(gdb):
    """Puts every vCPU at EL1 with PSTATE.PAN clear (after the dumps): gva2gpa translates as the
    current EL would read, and EL0 cannot read kernel pages nor EL1 with PAN user pages."""
    for cpu in range(VCPUS):
        gdb.batch([f"thread {cpu + 1}", "set $cpsr = 0x3c5"])


def make_dump(out, kernel, initramfs):
    name = "default"
    out.mkdir(parents=True)
    disk = out.parent / "pagemap.img"
    with open(disk, "wb") as f:
        f.truncate(PAGEMAP_DISK_BYTES)
    port = free_tcp_port()
    started = time.monotonic()
    # One TCG thread: the machine's cores are shared. pauth-impdef: QARMA
    # pointer authentication is the slowest thing TCG emulates for -cpu max.
    qemu = start_qemu(
        ["qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-accel", "tcg,thread=single",
         "-smp", str(VCPUS), "-m", MEMORY, "-nodefaults", "-display", "none", "-no-reboot",
         "-device", "vmcoreinfo", "-kernel", str(kernel), "-initrd", str(initramfs), "-append", CMDLINE,
         "-drive", f"if=none,file={disk},format=raw,id=pagemap", "-device", "virtio-blk-device,drive=pagemap",
         "-gdb", f"tcp:127.0.0.1:{port}"], out)
    qmp_path = out / "qmp.sock"
    try:
        booted = wait_ready(qemu, out, BOOT_TIMEOUT_S)
        qmp = Qmp(qmp_path)
        qmp.execute("stop")
        pagemap = disk.read_bytes().split(b"\0", 1)[0].decode()
        if not pagemap.rstrip().splitlines()[-1].startswith("end "):
            raise RuntimeError(f"the guest's pagemap on {disk} is cut off")
        (out / "pagemap.txt").write_text(pagemap)
        kdump_files = save_dumps(qmp, out, name)
        gdb = Gdb(port)
        read_sysregs(gdb, out)
        privileged_without_pan(gdb)
        vas = sorted(set(sample_addresses(*parse_pagemap(pagemap))) |
                     linear_map_addresses(elf_vmcoreinfo(out / f"{name}.elf"), int(MEMORY[:-1]) << 20))
        for cpu in range(VCPUS):
            (out / f"gva2gpa-cpu{cpu}.txt").write_text(gva2gpa(qmp, cpu, vas))
        qmp.execute("quit")
        gdb.close()
        qemu.wait(timeout=60)
    finally:
        stop_qemu(qemu, qmp_path)
        disk.unlink(missing_ok=True)
    variant = {"variant": name, "accel": "tcg,thread=single", "cpu": "max,pauth-impdef=on", "vcpus": VCPUS,
               "memory": MEMORY, "cmdline": CMDLINE, "format": "aarch64-4k-48", "ram_start": hex(RAM_START),
               "kdump": kdump_files, "sampled_vas": len(vas), "boot_seconds": round(booted, 1),
               "total_seconds": round(time.monotonic() - started, 1)}
    (out / "variant.json").write_text(json.dumps(variant, indent=2) + "\n")
    log(f"arm64 {name}: ready after {booted:.0f} s, dumped after {variant['total_seconds']:.0f} s")


def main():
    if len(sys.argv) > 1:
        sys.exit(f"usage: {sys.argv[0]} (no arguments; see its header)")
    cache = Path(os.environ.get("PTWALK_REAL_GUEST_ARM64_CACHE",
                                Path.home() / ".cache" / "ptwalk-real-guest-arm64"))
    cache.mkdir(parents=True, exist_ok=True)
    ensure_packages(PACKAGES, foreign_architecture="arm64")
    package, version = kernel_package(KERNEL_META_PACKAGE)
    busybox_version = candidate_version(BUSYBOX_PACKAGE)
    if not busybox_version:
        sys.exit(f"make-dumps: cannot resolve {BUSYBOX_PACKAGE} with apt-cache")
    qemu_version = run(["qemu-system-aarch64", "--version"]).splitlines()[0]
    key = cache_key(["make-arm64-dumps.py", "guest_fixture.py", "init.sh", "guest_helper.c"],
                    f"{package}={version}", f"{BUSYBOX_PACKAGE}={busybox_version}", qemu_version)

    def generate(work, dumps):
        kernel_dir = unpack_package(cache, package, version, ["./boot/vmlinuz-*"] +
                                    [f"./lib/modules/*/kernel/{m}" for m in MODULES])
        busybox_dir = unpack_package(cache, BUSYBOX_PACKAGE, busybox_version, ["./bin/busybox"])
        initramfs = build_initramfs(work, kernel_dir, busybox_dir)
        make_dump(dumps / "default", next(kernel_dir.glob("boot/vmlinuz-*")), initramfs)
        (dumps / "kernel.txt").write_text(f"{package} {version}\n{BUSYBOX_PACKAGE} {busybox_version}\n"
                                          f"{qemu_version}\n")

    keep = {f"{p.replace(':', '_')}_{v}" for p, v in [(package, version), (BUSYBOX_PACKAGE, busybox_version)]}
    print(generate_cached(cache, key, generate, keep))


if __name__ == "__main__":
    main()
