#!/usr/bin/env python3
"""Writes hand-made hostile page-table images, from scratch (no ptwalk code),
as manifests + raw / regions files into a directory:

    python3 craft_hostile.py OUTDIR [--seed N] [--fuzz N]

Every image follows only docs/SPEC.md's encodings (§2 x86-64, §2.1 AArch64)
and README.md's manifest forms.  The manifests written are listed on stdout,
one path per line.  Python 3.11 standard library only.
"""

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys

U64 = (1 << 64) - 1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spec_walker import ARM_FORMATS as ARM  # noqa: E402  (name: granule shift, VA bits)
ALL_FORMATS = ["x86_64", "x86_64-la57"] + list(ARM)


def geometry(fmt):
    """(granule shift, levels, top-table entries, level of depth 0)."""
    if fmt == "x86_64":
        return 12, 4, 512, 0
    if fmt == "x86_64-la57":
        return 12, 5, 512, -1
    shift, va = ARM[fmt]
    bits = shift - 3
    above = va - shift
    levels = -(-above // bits)
    top = 1 << (above - (levels - 1) * bits)
    return shift, levels, top, 4 - levels


class Mem:
    def __init__(self, size):
        self.b = bytearray(size)

    def put(self, pa, val):
        struct.pack_into("<Q", self.b, pa, val & U64)

    def get(self, pa):
        return struct.unpack_from("<Q", self.b, pa)[0]


def hx(v):
    return "0x%x" % v


class Out:
    def __init__(self, d):
        self.d = d
        self.manifests = []

    def file(self, name, data):
        with open(os.path.join(self.d, name), "wb") as f:
            f.write(data)
        return name

    def manifest(self, name, snaps):
        path = os.path.join(self.d, name)
        with open(path, "w") as f:
            for s in snaps:
                f.write(json.dumps(s, separators=(",", ":")) + "\n")
        self.manifests.append(path)


def snap(sid, fmt, memory, roots, ttbr1=None, note=None):
    s = {"id": sid, "format": fmt, "memory": memory, "roots": [hx(r) for r in roots]}
    if ttbr1 is not None:
        s["ttbr1"] = hx(ttbr1) if isinstance(ttbr1, int) else [hx(t) for t in ttbr1]
    if note:
        s["meta"] = {"crafted": note}
    return s


# ---------------------------------------------------------------------------
# x86-64
# ---------------------------------------------------------------------------

X_P, X_RW, X_US, X_PS, X_NX = 1, 2, 4, 0x80, 1 << 63


def x86_all_self(out):
    """Every entry of the root points back at the root, with every mix of
    RW/US/PS/NX/available bits, at every depth (4- and 5-level); plus the same
    root again as CR3 values with a PCID (low 12 bits)."""
    snaps = []
    for fmt in ("x86_64", "x86_64-la57"):
        m = Mem(0x3000)
        root = 0x1000
        for i in range(512):
            flags = X_P
            if i & 1: flags |= X_RW
            if i & 2: flags |= X_US
            if i & 4: flags |= X_PS
            if i & 8: flags |= X_NX
            flags |= ((i >> 4) & 7) << 9  # available bits 11:9 (CoW marker = 001)
            if i & 128: flags |= 0x60  # A, D
            if i & 256: flags |= 0x100 | (0x3ff << 52)  # G and high ignored bits
            m.put(root + 8 * i, root | flags)
        name = out.file("allself-%s.raw" % fmt, bytes(m.b))
        snaps.append(snap("allself-" + fmt, fmt, {"raw": name},
                          [root, root | 0x18, root | 0xfff, root | 0x123],
                          note="every entry points at the root"))
    out.manifest("x86_allself.jsonl", snaps)


def x86_multidepth(out):
    """One table (T) reached at depths 0, 1, 2 and 3, a PT that also holds
    PS entries, entries pointing into unbacked memory, a 1 GiB and 2 MiB leaf
    whose address bits below the page size are set (PAT / reserved)."""
    snaps = []
    for fmt in ("x86_64", "x86_64-la57"):
        m = Mem(0x9000)
        R, P, T, Q, D = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
        m.put(R + 0, T | 0x27)
        m.put(R + 8, P | 0x07)
        m.put(R + 8 * 255, Q | 0x03 | X_NX)
        m.put(R + 8 * 256, P | 0x05)
        m.put(R + 8 * 300, 0x7f000 | 0x07)        # unbacked table
        m.put(R + 8 * 511, R | 0x03)             # self map
        m.put(P + 8 * 5, T | 0x07)
        m.put(P + 8 * 6, Q | 0x07)
        m.put(P + 8 * 7, (0x40000000 | 0x1ff000) | 0xe7)   # PS with low address bits set
        m.put(P + 8 * 8, 0x200000 | 0x3000 | 0x1087 | X_NX)  # PAT bit 12
        m.put(Q + 8 * 7, T | 0x07)
        m.put(Q + 8 * 8, D | 0x267)               # CoW-marked (bits 11:9 = 001)
        m.put(Q + 8 * 9, D | 0x467)               # bits 11:9 = 010: not CoW
        m.put(Q + 8 * 10, 0xdead000 | 0x05)         # leaf or table outside the image
        m.put(Q + 8 * 11, 0x1234567000 | 0x83)      # PS leaf outside
        m.put(Q + 8 * 12, 0xfedcba9876543 << 12 | 0x7 | 0x7ff << 52)  # huge address
        m.put(Q + 8 * 13, 0x6)                      # not present, other bits
        m.put(Q + 8 * 14, 0xfffffffffffffffe)       # not present, all bits
        m.put(T + 0, D | 0x67)
        m.put(T + 8, D | 0xe7)                      # PS: leaf at PDPT/PD, PAT in PT
        m.put(T + 16, T | 0x07)
        m.put(T + 24, Q | 0x07)
        m.put(T + 8 * 400, P | 0x07 | X_NX)
        m.put(T + 8 * 511, 0x6000 | 0x8000000000000003)
        name = out.file("multidepth-%s.raw" % fmt, bytes(m.b))
        snaps.append(snap("multidepth-" + fmt, fmt, {"raw": name}, [R, T, P, R | 0x18, Q, T | 1],
                          note="one table at several depths"))
    out.manifest("x86_multidepth.jsonl", snaps)


def x86_cut(out):
    """Entries cut by region edges and file ends; unbacked gaps; adjacent
    regions splitting one entry (reads as 0: not backed by ONE region)."""
    snaps = []
    for fmt in ("x86_64", "x86_64-la57"):
        m = Mem(0x20000)
        R = 0x1000
        # the root: every entry a table, spread over interesting addresses
        targets = [0x2000, 0x3000, 0x4000, 0x8000, 0x10000, 0x11000, 0x2ff8 & ~0xfff]
        for i in range(512):
            m.put(R + 8 * i, targets[i % len(targets)] | 0x07 | ((i & 1) << 63))
        for t in (0x2000, 0x3000, 0x4000, 0x8000, 0x10000, 0x11000):
            for i in range(512):
                v = (0x5000 + 0x1000 * (i % 5)) | 0x63 | (X_US if i % 3 else 0)
                if i % 7 == 0:
                    v = t | 0x07  # self
                if i % 11 == 0:
                    v |= X_PS
                m.put(t + 8 * i, v)
        data = bytes(m.b)
        a = out.file("cut-%s-a.bin" % fmt, data[0x0:0x2ffc])
        # b.bin carries 0x3000.. at file offset 0x10
        b = out.file("cut-%s-b.bin" % fmt, b"\xee" * 0x10 + data[0x3000:0x5000])
        c = out.file("cut-%s-c.bin" % fmt, data[0x10000:0x12000])
        regions = [
            {"path": a, "gpa": "0x0", "size": hx(0x2ffc)},                           # ends mid-entry
            {"path": b, "gpa": "0x3000", "size": hx(0x804), "offset": "0x10"},      # ends mid-entry
            {"path": b, "gpa": "0x3804", "size": hx(0x17fc), "offset": hx(0x814)},  # adjacent
            # 0x5000..0x10000: unbacked gap
            {"path": c, "gpa": "0x10000", "size": "0x1001"},                         # 1 byte of 0x11000
            {"path": c, "gpa": "0x11008", "size": "0xff0", "offset": "0x1008"},     # 0x11000 entry 0 gone
        ]
        snaps.append(snap("cut-regions-" + fmt, fmt, {"regions": regions},
                          [R, 0x3000, 0x10000, 0x3abc, 0x2000, 0x11000],  # 0x11000: first entry cut
                          note="region edges cut entries"))
        # raw file whose end cuts entry 255 of table 0x2000, at a nonzero base
        base = 0x100000
        mr = Mem(0x3000)
        for i in range(512):
            mr.put(0x1000 + 8 * i, (base + 0x2000) | 0x07)
            mr.put(0x2000 + 8 * i, (base + ((i * 0x1000) % 0x3000)) | 0x27 | ((i % 4 == 1) << 7))
        raw = out.file("cut-%s-odd.raw" % fmt, bytes(mr.b)[:0x27fd])
        snaps.append(snap("cut-oddraw-" + fmt, fmt, {"raw": raw, "base": hx(base)},
                          [base + 0x1000, base + 0x2000], note="raw file ends mid-entry"))
    out.manifest("x86_cut.jsonl", snaps)


def x86_perms(out, rng):
    """Random RW/US/NX/PS/available-bit combinations along many paths (no
    sharing, so every path keeps its own permissions)."""
    snaps = []
    for fmt in ("x86_64", "x86_64-la57"):
        levels = 4 if fmt == "x86_64" else 5
        pages = []
        nxt = [0x1000]

        def alloc():
            a = nxt[0]
            nxt[0] += 0x1000
            pages.append(a)
            return a

        m = Mem(0x400000)

        def rflags():
            f = X_P | rng.choice([0, X_RW]) | rng.choice([0, X_US]) | rng.choice([0, X_NX])
            f |= rng.choice([0, 0x200, 0x400, 0xe00, 0x600]) | rng.choice([0, 0x20, 0x40, 0x100, 0x18])
            return f

        def build(depth, fan):
            t = alloc()
            idxs = rng.sample(range(512), fan)
            for i in idxs:
                f = rflags()
                last = depth == levels - 1
                if last:
                    m.put(t + 8 * i, (rng.randrange(0x100, 0x400) << 12) | f | rng.choice([0, X_PS]))
                elif depth >= levels - 3 and rng.random() < 0.25:
                    sz = 1 << (12 + 9 * (levels - 1 - depth))
                    m.put(t + 8 * i, (rng.randrange(1, 64) * sz) | f | X_PS | rng.choice([0, 0x1000]))
                else:
                    child = build(depth + 1, 3 if depth < levels - 2 else 12)
                    m.put(t + 8 * i, child | f)
            return t

        roots = [build(0, 6) for _ in range(2)]
        name = out.file("perms-%s.raw" % fmt, bytes(m.b[:nxt[0]]))
        snaps.append(snap("perms-" + fmt, fmt, {"raw": name}, roots, note="permission paths"))
    out.manifest("x86_perms.jsonl", snaps)


# ---------------------------------------------------------------------------
# AArch64
# ---------------------------------------------------------------------------

A_TABLE, A_BLOCK, A_PAGE = 3, 1, 3
AP1, AP2, AF, NG, DBM, CONT, PXN, UXN = 1 << 6, 1 << 7, 1 << 10, 1 << 11, 1 << 51, 1 << 52, 1 << 53, 1 << 54
PXNT, UXNT, APT0, APT1, NST = 1 << 59, 1 << 60, 1 << 61, 1 << 62, 1 << 63


def arm_types(out):
    """Every descriptor type (00, 01, 10, 11) at every level of every AArch64
    format; blocks where the granule forbids them (level 0, level 1 under
    16K/64K), level-3 `01`; bits 51:48 / LPA bits set in addresses (ignored);
    TTBR values with ASID and CnP; a shared TTBR1 as one value and as a list
    that partly differs, and a TTBR1 that is another space's TTBR0 table."""
    snaps = []
    for fmt in ARM:
        shift, levels, top, lvl0 = geometry(fmt)
        g = 1 << shift
        ntab = 2 * levels + 3
        m = Mem(g * (ntab + 2))
        # table k lives at g*(k+1); table 0 = TTBR0 root, table 1 = TTBR1 root
        tabs = [g * (k + 1) for k in range(ntab)]
        data = g * (ntab + 1)  # a backed data granule
        for half in (0, 1):
            chain = [tabs[half]] + [tabs[2 + half * levels + d] for d in range(levels - 1)]
            for d in range(levels):
                t = chain[d]
                level = lvl0 + d
                n = top if d == 0 else g // 8
                span_shift = shift + (shift - 3) * (levels - 1 - d)
                blk = (1 << span_shift)
                idx = list(range(min(n, 8))) if n < 64 else [0, 1, 2, 3, 5, 8, n // 2, n - 1]
                kinds = []
                for j, i in enumerate(idx):
                    kind = j % 8
                    if d < levels - 1:
                        # table to the next level (first entry), and more
                        if kind == 0:
                            v = chain[d + 1] | A_TABLE | (half * (UXNT | APT0)) | (0xf << 48)
                        elif kind == 1:
                            v = (7 * blk) | A_BLOCK | AF | AP1 | (d << 12)  # block or invalid
                        elif kind == 2:
                            v = chain[d + 1] | 2  # 10: invalid
                        elif kind == 3:
                            v = tabs[half] | A_TABLE | PXNT  # back to the root at a deeper depth
                        elif kind == 4:
                            v = (0x7fff << shift) | A_TABLE  # table outside the image
                        elif kind == 5:
                            v = (3 * blk) | A_BLOCK | AP2 | UXN | NG | (1 << 55) | CONT
                        elif kind == 6:
                            v = 0xfffffffffffffffc  # x0: invalid with every other bit set
                        else:
                            v = (data | A_TABLE | APT1) | (0x3 << 8)  # LPA2 bits set
                    else:
                        if kind in (0, 4):
                            v = data | A_PAGE | AF | AP1 | NG | (0xf << 48) | (0xf << 12 if shift == 16 else 0)
                        elif kind == 1:
                            v = data | A_BLOCK | AF | AP1  # level-3 01: reserved
                        elif kind == 2:
                            v = data | 2
                        elif kind == 3:
                            v = tabs[0] | A_PAGE | AP2 | NG | (1 << 55) | PXN
                        elif kind == 5:
                            v = (0x12345 << shift) | A_PAGE | DBM | AP2 | (1 << 55) | NG
                        elif kind == 6:
                            v = 0
                        else:
                            v = data | A_PAGE | (0xf << 55) | UXN | PXN | CONT
                    kinds.append(v)
                    m.put(t + 8 * i, v)
        name = out.file("types-%s.raw" % fmt, bytes(m.b))
        r0, r1 = tabs[0], tabs[1]
        asid = lambda a: a << 48
        # Without TTBR1; TTBR1 as one value; TTBR1 as a list that partly differs.
        snaps.append(snap("types-lo-" + fmt, fmt, {"raw": name},
                          [r0 | asid(5) | 1, r0 | asid(9)], note="descriptor types, TTBR0 only"))
        snaps.append(snap("types-shared-" + fmt, fmt, {"raw": name},
                          [r0 | asid(1), r0 | asid(2) | 1, tabs[2]], ttbr1=r1 | asid(3) | 1,
                          note="one TTBR1 for every space"))
        snaps.append(snap("types-list-" + fmt, fmt, {"raw": name},
                          [r0, tabs[2], tabs[3], r1],
                          ttbr1=[r1 | asid(1), r1 | asid(7) | 1, r0, tabs[2 + levels]],
                          note="TTBR1 list, partly shared, one is a TTBR0 table"))
    out.manifest("arm_types.jsonl", snaps)


def arm_small_tops(out):
    """Sub-granule top tables side by side: 16k-48 (2 entries = 16 bytes) and
    64k-48 (64 entries = 512 bytes), TTBR values that align down onto one
    another (SPEC §2.1: align down to the top table's size)."""
    snaps = []
    for fmt, tsz in (("aarch64-16k-48", 16), ("aarch64-64k-48", 512)):
        shift, levels, top, _ = geometry(fmt)
        g = 1 << shift
        m = Mem(g * 8)
        topg = g  # the granule holding the top tables
        nxt = [2 * g]
        lvl1 = []
        for k in range(4):
            t = nxt[0]
            nxt[0] += g
            lvl1.append(t)
        # leaves reachable from each depth-1 table through depth 2 / 3
        mid = nxt[0]; nxt[0] += g
        last = nxt[0]; nxt[0] += g
        for k, t in enumerate(lvl1):
            m.put(t + 8 * k, mid | A_TABLE | (APT1 if k & 1 else 0))
            m.put(t + 8 * (k + 9), topg | A_TABLE)  # the top-table granule as a depth-1 table
            m.put(t + 8 * (k + 17), (k * 2 + 1) << (shift + 2 * (shift - 3)) | A_BLOCK)  # invalid block
        m.put(mid + 8 * 3, last | A_TABLE)
        m.put(mid + 8 * 4, (5 << (shift + (shift - 3))) | A_BLOCK | AF | AP1 | UXN)
        m.put(last + 8 * 0, (6 * g) | A_PAGE | AF | AP1)
        m.put(last + 8 * 1, (6 * g) | A_PAGE | AF | AP2 | NG | (1 << 55))
        m.put(last + 8 * 2, topg | A_PAGE | AF)
        # top tables at every tsz step of the first 4 slots
        for s in range(8):
            base = topg + s * tsz
            for e in range(top):
                if (e + s) % 3 == 0:
                    continue
                m.put(base + 8 * e, lvl1[(s + e) % 4] | A_TABLE | (UXNT if s & 2 else 0))
        name = out.file("smalltop-%s.raw" % fmt, bytes(m.b[:nxt[0]]))
        T = lambda s: topg + s * tsz
        roots = [T(1), T(1) + 8, T(0), T(2) | (3 << 48), T(3) + tsz - 8 | 1, T(1) | (0xffff << 48)]
        ttbr1 = [T(3), T(3) + 8 | (9 << 48), T(2) + 8, T(0), T(4) + 1, T(1)]
        snaps.append(snap("smalltop-" + fmt, fmt, {"raw": name}, roots, ttbr1=ttbr1,
                          note="top tables side by side in one 64-byte line"))
        snaps.append(snap("smalltop-lo-" + fmt, fmt, {"raw": name},
                          [T(0) + 0x18, T(1) + 0x10, T(5), T(7) | 1], note="TTBR0 only"))
    out.manifest("arm_smalltop.jsonl", snaps)


def arm_perms(out, rng):
    """Table attributes (UXNTable, PXNTable, APTable[0], APTable[1]) on every
    path combined with leaf AP[1], AP[2], DBM, PXN, UXN, nG, software bits
    58:55, contiguous and access-flag bits, under 4K and 64K granules."""
    snaps = []
    for fmt in ("aarch64-4k-48", "aarch64-64k-42", "aarch64-16k-47"):
        shift, levels, top, lvl0 = geometry(fmt)
        g = 1 << shift
        ntables = 40
        m = Mem(g * (ntables + 4))
        nxt = [g]
        limit = [ntables // 2]

        def alloc():
            a = nxt[0]
            nxt[0] += g
            return a

        def tattr():
            return rng.choice([0, UXNT, PXNT, APT0, APT1, NST]) | rng.choice([0, UXNT | PXNT, APT0 | APT1, 0])

        def lattr():
            v = AF if rng.random() < 0.8 else 0
            for b in (AP1, AP2, DBM, PXN, UXN, NG, CONT):
                if rng.random() < 0.5:
                    v |= b
            v |= rng.choice([0, 1, 1, 3, 8, 9, 15]) << 55
            return v

        def build(depth, fan):
            t = alloc()
            level = lvl0 + depth
            n = top if depth == 0 else g // 8
            for i in rng.sample(range(n), min(fan, n)):
                if level == 3:
                    m.put(t + 8 * i, (rng.randrange(1, 4096) << shift) | A_PAGE | lattr())
                elif level >= 1 and rng.random() < 0.3:
                    sz = 1 << (shift + (shift - 3) * (3 - level))
                    m.put(t + 8 * i, (rng.randrange(1, 16) * sz) | A_BLOCK | lattr())
                elif nxt[0] + g * (3 - level) <= g * limit[0]:
                    m.put(t + 8 * i, build(depth + 1, 2 if level < 2 else 24) | A_TABLE | tattr())
            return t

        r0 = build(0, 3)
        limit[0] = ntables
        r1 = build(0, 3)
        name = out.file("perms-%s.raw" % fmt, bytes(m.b[:nxt[0]]))
        snaps.append(snap("perms-" + fmt, fmt, {"raw": name}, [r0], ttbr1=r1, note="permission bits"))
    out.manifest("arm_perms.jsonl", snaps)


# ---------------------------------------------------------------------------
# ELF cores (SPEC §5: PT_LOAD segments give physical ranges)
# ---------------------------------------------------------------------------

def elf_core(segments, machine):
    """A minimal little-endian ELF64 ET_CORE file: one PT_LOAD per
    (paddr, bytes), p_memsz = p_filesz, data after the program headers."""
    n = len(segments)
    off = 64 + 56 * n
    hdr = bytearray(b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8))
    hdr += struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 64, 0, 0, 64, 56, n, 64, 0, 0)
    body = b""
    for paddr, data in segments:
        hdr += struct.pack("<IIQQQQQQ", 1, 7, off + len(body), 0, paddr, len(data), len(data), 0x1000)
        body += data
    return bytes(hdr) + body


def elf_cases(out):
    """A page-table image split into PT_LOAD segments, with a gap that cuts a
    table in half and a segment whose end cuts an entry."""
    m = Mem(0x9000)
    R, P, T, D = 0x1000, 0x2000, 0x3000, 0x5000
    for i in range(512):
        m.put(R + 8 * i, (P if i % 2 else T) | 0x07 | ((i % 5 == 0) << 63))
        m.put(P + 8 * i, (T if i % 3 else D) | 0x67 | ((i % 4 == 0) << 7))
        m.put(T + 8 * i, (D + 0x1000 * (i % 3)) | 0x25 | ((i % 7 == 0) << 1))
    b = bytes(m.b)
    core = elf_core([(0x0, b[0:0x2800]), (0x3000, b[0x3000:0x3ffd]), (0x4000, b[0x4000:0x9000])], 62)
    name = out.file("elf-x86.core", core)
    snaps = [snap("elf-x86", "x86_64", {"elf": name}, [R, T, P, R | 0x5]),
             snap("elf-x86-la57", "x86_64-la57", {"elf": name}, [R, P])]
    # AArch64: the same bytes read as 4k-48 descriptors (0x07 / 0x67 / 0x25
    # have bits 1:0 = 11 / 11 / 01), TTBR1 = another table
    snaps.append(snap("elf-arm", "aarch64-4k-48", {"elf": name}, [R, P | (4 << 48)], ttbr1=T | 1))
    snaps.append(snap("elf-arm39", "aarch64-4k-39", {"elf": name}, [R, P], ttbr1=[T, R]))
    out.manifest("elf.jsonl", snaps)


# ---------------------------------------------------------------------------
# Random fuzz images over every format
# ---------------------------------------------------------------------------

def fuzz(out, rng, count, name="fuzz", first=0):
    snaps = []
    for k in range(first, first + count):
        fmt = ALL_FORMATS[k % len(ALL_FORMATS)]
        shift, levels, top, lvl0 = geometry(fmt)
        g = 1 << shift
        x86 = fmt.startswith("x86")
        ntab = rng.randrange(3, 9)
        size = g * (ntab + 1)
        m = Mem(size)
        tabs = [g * (i + 1) for i in range(ntab)]
        tsz = top * 8
        # sub-page top tables: roots may sit anywhere inside a table page
        def any_table_addr():
            t = rng.choice(tabs)
            if not x86 and tsz < g and rng.random() < 0.5:
                t += rng.randrange(0, g // tsz) * tsz
            return t

        def rand_entry():
            r = rng.random()
            if r < 0.08:
                return rng.getrandbits(64)
            if x86:
                lo = rng.getrandbits(12) | 1 if rng.random() < 0.9 else rng.getrandbits(12)
                hi = rng.getrandbits(12) << 52 if rng.random() < 0.3 else 0
                if r < 0.6:
                    return any_table_addr() & ~0xfff | lo | hi
                return (rng.randrange(0, 1 << 20) << 12) | lo | hi
            typ = rng.choice([3, 3, 3, 1, 1, 0, 2])
            attrs = 0
            for b in (AP1, AP2, AF, NG, DBM, CONT, PXN, UXN, PXNT, UXNT, APT0, APT1, NST):
                if rng.random() < 0.3:
                    attrs |= b
            if rng.random() < 0.3:
                attrs |= rng.getrandbits(4) << 55
            if rng.random() < 0.2:
                attrs |= rng.getrandbits(4) << 48 | rng.getrandbits(4) << 12 | rng.getrandbits(2) << 8
            if r < 0.6:
                return any_table_addr() | attrs | typ
            return (rng.randrange(0, 1 << 20) << 12) & ((1 << 48) - 1) | attrs | typ

        for t in tabs:
            n = g // 8
            for _ in range(rng.randrange(4, 28)):
                m.put(t + 8 * rng.randrange(n), rand_entry())
            # and the first few entries (where small top tables are read)
            for i in range(0, min(n, 16)):
                if rng.random() < 0.5:
                    m.put(t + 8 * i, rand_entry())
        nroots = rng.randrange(1, 6)
        roots = []
        for _ in range(nroots):
            if roots and rng.random() < 0.3:
                r = rng.choice(roots)
            else:
                r = any_table_addr()
            if x86:
                r |= rng.getrandbits(12) if rng.random() < 0.5 else 0
            else:
                if rng.random() < 0.5:
                    r |= rng.getrandbits(16) << 48 | rng.getrandbits(1)
                if tsz < g and rng.random() < 0.4:
                    r += rng.randrange(0, tsz) & ~1  # inside the top table: aligned down
            roots.append(r)
        ttbr1 = None
        if not x86:
            c = rng.random()
            if c < 0.35:
                ttbr1 = any_table_addr() | (rng.getrandbits(16) << 48)
            elif c < 0.75:
                shared = any_table_addr()
                ttbr1 = [shared | (rng.getrandbits(8) << 48) if rng.random() < 0.6 else any_table_addr()
                         for _ in roots]
        data = bytes(m.b)
        # memory: raw (maybe cut at an odd length) or regions with holes
        # where each root / TTBR1 table starts (SPEC §2 and §2.1): kept backed
        if x86:
            tstart = lambda r: r & ~0xfff
        else:
            tstart = lambda r: r & ((1 << 48) - 1) & ~1 & ~(tsz - 1)
        t1s = [ttbr1] if isinstance(ttbr1, int) else (ttbr1 or [])
        needed = sorted({tstart(r) for r in roots + t1s})
        fname = "fuzz-%03d.bin" % k
        out.file(fname, data)
        mode = rng.choice(["raw", "rawcut", "regions"])
        if mode == "raw":
            mem = {"raw": fname}
        elif mode == "rawcut":
            cut = rng.randrange(max(needed) + 8, size + 1)
            cname = "fuzz-%03d-cut.bin" % k
            out.file(cname, data[:cut])
            mem = {"raw": cname, "base": "0x0"}
        else:
            # split [0, size) at random points, drop some pieces that hold no root
            pts = sorted({0, size} | {rng.randrange(1, size) for _ in range(rng.randrange(1, 6))})
            regs = []
            for a, b in zip(pts, pts[1:]):
                holds_root = any(a <= r < b for r in needed)
                if holds_root or rng.random() < 0.7:
                    regs.append({"path": fname, "gpa": hx(a), "size": hx(b - a), "offset": hx(a)})
            rng.shuffle(regs)
            mem = {"regions": regs}
        snaps.append(snap("fuzz-%03d" % k, fmt, mem, roots, ttbr1=ttbr1, note="fuzz seed"))
    out.manifest(name + ".jsonl", snaps)

def driver_options(prog, description):
    """The options both checks take: PTWALK (or $PTWALK_BINARY), --workdir,
    --keep, --quick, -v. Add more to the parser, then parse."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("ptwalk", nargs="?", default=os.environ.get("PTWALK_BINARY"),
                        help="the ptwalk binary (default: $PTWALK_BINARY)")
    parser.add_argument("--workdir", help="write inputs and outputs here and keep them")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--quick", action="store_true", help="a subset")
    parser.add_argument("-v", dest="verbose", action="store_true", help="a line per input")
    return parser


def gen_fleets(ptwalk, tmp, fleets, only=None):
    """Writes each (name, shape, seed) of `fleets` (those in `only`, if given)
    with `ptwalk gen` into tmp/gen-NAME; returns ([(name, manifest)], [failed
    names]), printing why each failed."""
    made, failed = [], []
    for name, shape, seed in fleets:
        if only is not None and name not in only:
            continue
        d = os.path.join(tmp, "gen-" + name)
        shutil.rmtree(d, ignore_errors=True)
        p = subprocess.run([ptwalk, "gen", "--out", d, "--shape", shape, "--seed", str(seed)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            print("FAIL gen %s (%s): %s" % (name, shape, p.stderr.strip()))
            failed.append(name)
            continue
        made.append((name, os.path.join(d, "manifest.jsonl")))
    return made, failed



def main(argv):
    if len(argv) < 2:
        raise SystemExit("usage: craft_hostile.py OUTDIR [--seed N] [--fuzz N]")
    d = argv[1]
    seed, nfuzz = 1, 32
    a = argv[2:]
    while a:
        k = a.pop(0)
        if k == "--seed":
            seed = int(a.pop(0))
        elif k == "--fuzz":
            nfuzz = int(a.pop(0))
        else:
            raise SystemExit("craft_hostile.py: unknown option %s" % k)
    os.makedirs(d, exist_ok=True)
    out = Out(d)
    rng = random.Random(seed)
    x86_all_self(out)
    x86_multidepth(out)
    x86_cut(out)
    x86_perms(out, rng)
    arm_types(out)
    arm_small_tops(out)
    arm_perms(out, rng)
    elf_cases(out)
    fuzz(out, rng, nfuzz)
    for p in out.manifests:
        print(p)


if __name__ == "__main__":
    main(sys.argv)
