#!/usr/bin/env python3
"""An independent walker of docs/SPEC.md §3 (the multi-root walk), written
from docs/SPEC.md and README.md alone, without reading ptwalk's sources.

    python3 spec_walker.py MANIFEST [--va-range LO:HI] [--snapshot ID]

prints exactly what `ptwalk walk MANIFEST` prints on stdout (SPEC §5): one
JSON object per line, snapshots in manifest order, spaces in primacy order,
each space's records in ascending VA order.

Python 3.11 standard library only.  Points where the SPEC is silent and this
walker had to choose are marked "CHOICE:" below and listed in README.md.
"""

import json
import mmap
import os
import struct
import sys

U64 = (1 << 64) - 1


def hx(v):
    # SPEC §2: lowercase, 0x prefix, no leading zeros (so zero is "0x0").
    return "0x%x" % v


def parse_hex(s, what):
    if not isinstance(s, str):
        raise SystemExit("spec_walker: %s: expected a hex string, got %r" % (what, s))
    t = s.strip()
    if t[:2] in ("0x", "0X"):
        t = t[2:]
    try:
        return int(t, 16)
    except ValueError:
        raise SystemExit("spec_walker: %s: bad hex %r" % (what, s))


# --------------------------------------------------------------------------
# Guest-physical memory (SPEC §1 "image", §5 memory sources)
# --------------------------------------------------------------------------

class Image:
    """A list of regions (gpa, size, buffer, file offset).

    SPEC §1: an 8-byte entry that is not entirely backed by ONE region reads
    as 0.  An entry that straddles two adjacent regions therefore reads as 0
    even though every byte is backed.
    CHOICE: if regions overlap, the first region (manifest / PT_LOAD order)
    that holds all 8 bytes is used.
    CHOICE: a `regions` entry whose file is shorter than offset+size is
    backed only by the bytes the file has (the rest reads as unbacked).
    """

    def __init__(self):
        self.regions = []  # (gpa, end, buf, off)
        self.paths = []    # the file of each region (same order)
        self._files = {}

    def _map(self, path):
        if path not in self._files:
            f = open(path, "rb")
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self._files[path] = (f, buf, size)
        return self._files[path]

    def add(self, path, gpa, size, offset):
        _, buf, fsize = self._map(path)
        avail = max(0, min(size, fsize - offset)) if offset <= fsize else 0
        if avail > 0:
            self.regions.append((gpa, gpa + avail, buf, offset))
            self.paths.append(path)

    def close(self):
        self.regions = []
        for f, buf, _ in self._files.values():
            if isinstance(buf, mmap.mmap):
                buf.close()
            f.close()
        self._files = {}

    def add_whole_file(self, path, base):
        _, buf, fsize = self._map(path)
        if fsize > 0:
            self.regions.append((base, base + fsize, buf, 0))
            self.paths.append(path)

    def pieces(self, pa, n):
        """[pa, pa+n) cut into (start, end, region index or None): which
        region backs each byte (the first that holds it, as read_entries)."""
        out = []
        a, end = pa, pa + n
        while a < end:
            best = None
            nxt = end
            for k, (g, e, _, _) in enumerate(self.regions):
                if g <= a < e:
                    best = k
                    break
                if a < g < nxt:
                    nxt = g
            if best is None:
                out.append((a, nxt, None))
                a = nxt
            else:
                b = min(end, self.regions[best][1])
                out.append((a, b, best))
                a = b
        return out

    def backed_bytes(self, pa, n):
        """How many of the bytes [pa, pa+n) some region backs."""
        return sum(b - a for a, b, k in self.pieces(pa, n) if k is not None)

    def read_bytes(self, pa, n):
        """The bytes [pa, pa+n), unbacked ones as 0."""
        parts = []
        for a, b, k in self.pieces(pa, n):
            if k is None:
                parts.append(bytes(b - a))
            else:
                g, _, buf, off = self.regions[k]
                parts.append(buf[off + a - g:off + b - g])
        return b"".join(parts)

    def file_offset(self, pa):
        """(file path, offset in it) of the byte at pa, or None if unbacked."""
        for (g, e, _, off), path in zip(self.regions, self.paths):
            if g <= pa < e:
                return path, off + pa - g
        return None

    def table_start_backed(self, pa):
        return any(g <= pa < e for g, e, _, _ in self.regions)

    def read_entries(self, pa, n):
        """n little-endian u64 entries starting at pa; unbacked ones are 0."""
        end = pa + 8 * n
        for g, e, buf, off in self.regions:
            if g <= pa and end <= e:
                o = off + (pa - g)
                return struct.unpack_from("<%dQ" % n, buf, o)
        out = [0] * n
        for i in range(n):
            a = pa + 8 * i
            for g, e, buf, off in self.regions:
                if g <= a and a + 8 <= e:
                    out[i] = struct.unpack_from("<Q", buf, off + (a - g))[0]
                    break
        return out


def load_elf(img, path):
    # PT_LOAD segments give physical ranges (SPEC §5).
    # CHOICE: a segment is backed by its p_filesz bytes at p_paddr (bytes
    # between p_filesz and p_memsz are not in the file, so unbacked).
    with open(path, "rb") as f:
        hdr = f.read(64)
    if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
        raise SystemExit("spec_walker: %s: not a little-endian ELF64 file" % path)
    e_phoff, = struct.unpack_from("<Q", hdr, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", hdr, 0x36)
    with open(path, "rb") as f:
        f.seek(e_phoff)
        ph = f.read(e_phentsize * e_phnum)
    for i in range(e_phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, _memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", ph, i * e_phentsize)
        if p_type == 1 and p_filesz:
            img.add(path, p_paddr, p_filesz, p_offset)


def load_memory(mem, mdir):
    img = Image()

    def rel(p):
        return p if os.path.isabs(p) else os.path.join(mdir, p)

    if "raw" in mem:
        img.add_whole_file(rel(mem["raw"]), parse_hex(mem.get("base", "0x0"), "memory.base"))
    elif "regions" in mem:
        for r in mem["regions"]:
            img.add(rel(r["path"]), parse_hex(r["gpa"], "gpa"), parse_hex(r["size"], "size"),
                    parse_hex(r.get("offset", "0x0"), "offset"))
    elif "elf" in mem:
        load_elf(img, rel(mem["elf"]))
    else:
        raise SystemExit("spec_walker: unsupported memory source %r" % sorted(mem))
    return img


# --------------------------------------------------------------------------
# Paging formats (SPEC §2, §2.1)
# --------------------------------------------------------------------------

class X86:
    """x86-64 4-level (48-bit VA) and 5-level (LA57, 57-bit VA), SPEC §2."""

    def __init__(self, la57):
        self.levels = 5 if la57 else 4
        self.va_bits = 57 if la57 else 48
        self.aarch64 = False

    def entries(self, depth):
        return 512

    def span(self, depth):
        # VA bytes one entry at `depth` covers.
        return 1 << (12 + 9 * (self.levels - 1 - depth))

    def halves(self, has_ttbr1):
        # One table covers the whole canonical space; positions 0 .. 2^va_bits
        # are turned into canonical VAs by sign extension from bit va_bits-1.
        yield "x86", 0

    def canon(self, half, raw):
        if raw >> (self.va_bits - 1) & 1:
            return (raw | (U64 << self.va_bits)) & U64
        return raw

    def root_table(self, value):
        # SPEC §2: a CR3 value has its low 12 bits masked off.
        # CHOICE: only those 12 bits; higher bits (e.g. CR3 bit 63, the PCID
        # no-flush bit) are kept as given, i.e. they name an unbacked table.
        return value & ~0xFFF & U64

    def path_init(self):
        return (True, True, False)  # (w AND, u AND, nx OR)

    def decode(self, e, depth, path):
        """-> None | ('table', addr, path) | ('leaf', pa, size, w, u, x, cow, flags)"""
        if not e & 1:
            return None
        w, u, nx = path
        w = w and bool(e & 2)
        u = u and bool(e & 4)
        nx = nx or bool(e >> 63 & 1)
        last = self.levels - 1
        if depth == last:
            size = 1 << 12
        elif e & 0x80 and depth == last - 1:
            size = 1 << 21  # PS in a PDE
        elif e & 0x80 and depth == last - 2:
            size = 1 << 30  # PS in a PDPTE
        else:
            # PS is ignored in PML5E/PML4E.
            return ("table", e & 0x000FFFFFFFFFF000, (w, u, nx))
        amask = 0x000FFFFFFFFFF000 & ~(size - 1)
        pa = e & amask
        flags = e & ~amask & U64
        cow = (e >> 9 & 7) == 1
        return ("leaf", pa, size, w, u, not nx, cow, flags)


ARM_FORMATS = {
    # name: (granule shift, va bits)
    "aarch64-4k-48": (12, 48),
    "aarch64-4k-39": (12, 39),
    "aarch64-16k-47": (14, 47),
    "aarch64-16k-48": (14, 48),
    "aarch64-64k-42": (16, 42),
    "aarch64-64k-48": (16, 48),
}

PA48 = (1 << 48) - 1


class AArch64:
    """AArch64 stage-1, EL1&0, SPEC §2.1."""

    def __init__(self, name):
        self.shift, self.va_bits = ARM_FORMATS[name]
        self.bits = self.shift - 3  # log2(entries per granule table)
        above = self.va_bits - self.shift  # VA bits resolved by tables
        self.levels = -(-above // self.bits)
        self.top_bits = above - (self.levels - 1) * self.bits
        self.first_level = 4 - self.levels  # level of depth 0; last depth = level 3
        self.aarch64 = True
        self.upper_base = (U64 << self.va_bits) & U64

    def entries(self, depth):
        return 1 << (self.top_bits if depth == 0 else self.bits)

    def span(self, depth):
        return 1 << (self.shift + self.bits * (self.levels - 1 - depth))

    def halves(self, has_ttbr1):
        yield "lo", 0
        if has_ttbr1:
            yield "hi", self.upper_base

    def canon(self, half, raw):
        return raw if half != "hi" else raw | self.upper_base

    def root_table(self, value):
        # SPEC §2.1: clear bits 63:48 (ASID) and bit 0 (CnP), then align down
        # to the top table's size.
        v = value & PA48 & ~1
        return v & ~(self.entries(0) * 8 - 1)

    def path_init(self):
        # (UXNTable seen, PXNTable seen, APTable[0] seen, APTable[1] seen)
        return (False, False, False, False)

    def block_ok(self, level):
        if self.shift == 12:
            return level in (1, 2)
        return level == 2  # 16K: 32 MiB, 64K: 512 MiB at level 2

    def decode(self, e, depth, path):
        t = e & 3
        if t in (0, 2):
            return None  # x0: invalid
        level = self.first_level + depth
        if level == 3:
            if t != 3:
                return None  # level-3 `01` is reserved: invalid
            size = 1 << self.shift
        elif t == 3:
            uxnt, pxnt, ap0, ap1 = path
            return ("table", e & PA48 & ~((1 << self.shift) - 1),
                    (uxnt or bool(e >> 60 & 1), pxnt or bool(e >> 59 & 1),
                     ap0 or bool(e >> 61 & 1), ap1 or bool(e >> 62 & 1)))
        else:
            if not self.block_ok(level):
                return None
            size = self.span(depth)
        uxnt, pxnt, ap0, ap1 = path
        amask = PA48 & ~(size - 1)
        pa = e & amask
        flags = e & ~amask & U64
        el0x = not (e >> 54 & 1) and not uxnt
        el1x = not (e >> 53 & 1) and not pxnt
        u = (bool(e >> 6 & 1) and not ap0) or el0x
        x = el0x if u else el1x
        ap2 = bool(e >> 7 & 1)
        dbm = bool(e >> 51 & 1)
        w = ((not ap2) or dbm) and not ap1
        cow = (e >> 55 & 0xF) == 1 and ap2 and not dbm and bool(e >> 11 & 1)
        return ("leaf", pa, size, w, u, x, cow, flags)


def make_format(name):
    if name == "x86_64":
        return X86(False)
    if name == "x86_64-la57":
        return X86(True)
    if name in ARM_FORMATS:
        return AArch64(name)
    raise SystemExit("spec_walker: unknown format %r" % name)


# --------------------------------------------------------------------------
# The multi-root walk (SPEC §3)
# --------------------------------------------------------------------------

def jbool(b):
    return "true" if b else "false"


def walk_events(fmt, img, roots, ttbr1s, lo, hi, sink):
    """The walk of SPEC §3, reporting what it meets to `sink`:

    sink.leaf(idx, space, depth, va, decoded, entry_addr, parent_key)
        a leaf; decoded = ('leaf', pa, size, w, u, x, cow, flags)
    sink.alias(idx, space, depth, owner_idx, owner_space, our_va, their_va)
        an AnotherSpace record (owner_idx: the owner's index in `roots`)
    sink.table(idx, depth, va, entry, entry_addr, parent_key, child_key)
        a table descriptor at `depth` (optional: sink.table may be None)
    sink.private(idx, depth, va, entry, entry_addr, parent_key)
        a nonzero entry that maps nothing (not present / invalid / reserved;
        SPEC §4's OS-private entries) (optional: may be None)
    sink.own(idx, key, va)
        key (pa, depth) is owned (first visit, descended) (optional)
    sink.end_space(idx, space)
        after each root.

    roots: root table addresses in primacy order; ttbr1s: per root a TTBR1
    table address or None.  Range [lo, hi) over full 64-bit canonical VAs
    (hi may be 2^64).  Keys are (table pa, depth), SPEC §3."""
    owner = {}  # (pa, depth) -> (root index, space id, va) of the first visit
    levels = fmt.levels
    on_leaf, on_alias = sink.leaf, sink.alias
    on_table = getattr(sink, "table", None)
    on_private = getattr(sink, "private", None)
    on_own = getattr(sink, "own", None)

    def walk_table(pa, depth, half, raw_base, path, idx, space):
        n = fmt.entries(depth)
        span = fmt.span(depth)
        ents = img.read_entries(pa, n)
        # Entries whose VA block [start, start+span) meets [lo, hi).
        # CHOICE (SPEC: "walks only the half-open range"): an entry is visited
        # when its block overlaps the range at all; a leaf that the range cuts
        # is reported whole, with its own start VA, size and pa.
        for i in range(n):
            e = ents[i]
            if not e:
                continue
            raw = raw_base + i * span
            start = fmt.canon(half, raw)
            if start + span <= lo or start >= hi:
                continue
            d = fmt.decode(e, depth, path)
            if d is None:
                if on_private is not None:
                    on_private(idx, depth, start, e, pa + 8 * i, (pa, depth))
                continue
            if d[0] == "leaf":
                on_leaf(idx, space, depth, start, d, pa + 8 * i, (pa, depth))
                continue
            _, child, cpath = d
            if depth + 1 >= levels:
                continue  # cannot happen: the last depth has no tables
            key = (child, depth + 1)
            if on_table is not None:
                on_table(idx, depth, start, e, pa + 8 * i, (pa, depth), key)
            if key in owner:
                oidx, ospace, ova = owner[key]
                on_alias(idx, space, depth + 1, oidx, ospace, start, ova)
            else:
                owner[key] = (idx, space, start)
                if on_own is not None:
                    on_own(idx, key, start)
                walk_table(child, depth + 1, half, raw, cpath, idx, space)

    for idx, root in enumerate(roots):
        space = root  # SpaceId = root (TTBR0 table) physical address
        for half, hstart in fmt.halves(ttbr1s[idx] is not None):
            table = root if half != "hi" else ttbr1s[idx]
            # Which part of the 64-bit space this half's table translates.
            if fmt.aarch64:
                hend = hstart + (1 << fmt.va_bits)
                segs = [(hstart, hend)]
            else:
                segs = [(0, 1 << (fmt.va_bits - 1)),
                        ((U64 << (fmt.va_bits - 1)) & U64, 1 << 64)]
            # SPEC §2.1: a half that the range misses is not visited.
            # CHOICE (x86): likewise, a range that lies wholly in the
            # non-canonical hole visits no table, not even the root.
            if not any(s < hi and lo < e for s, e in segs):
                continue
            # Depth-0 visit VA: SPEC §3 "start of the walked range"; §2.1 for
            # the upper half: the larger of the range's start and the half's.
            # A range that starts in the non-canonical hole starts, as walked,
            # at the first canonical address above it (SPEC §2: VAs are
            # reported canonical; §3: our_va is a canonical address), i.e. the
            # larger of the range's start and the first half it meets.
            va0 = max(lo, min(s for s, e in segs if s < hi and lo < e))
            key = (table, 0)
            if key in owner:
                oidx, ospace, ova = owner[key]
                on_alias(idx, space, 0, oidx, ospace, va0, ova)
                continue
            owner[key] = (idx, space, va0)
            if on_own is not None:
                on_own(idx, key, va0)
            walk_table(table, 0, half, 0, fmt.path_init(), idx, space)
        sink.end_space(idx, space)


class _PrintSink:
    """Formats the events of walk_events as `ptwalk walk` prints them."""

    def __init__(self, out):
        self.out = out
        self.recs = []

    def leaf(self, idx, space, depth, va, d, eaddr, pkey):
        _, lpa, size, w, u, x, cow, flags = d
        self.recs.append('{"space":"%s","type":"leaf","va":"%s","pa":"%s","size":%d,'
                         '"w":%s,"u":%s,"x":%s,"cow":%s,"flags":"%s"}'
                         % (hx(space), hx(va), hx(lpa), size, jbool(w), jbool(u),
                            jbool(x), jbool(cow), hx(flags)))

    def alias(self, idx, space, depth, oidx, ospace, our_va, their_va):
        self.recs.append('{"space":"%s","type":"alias","depth":%d,"owner":"%s",'
                         '"our_va":"%s","their_va":"%s"}'
                         % (hx(space), depth, hx(ospace), hx(our_va), hx(their_va)))

    table = private = own = None

    def end_space(self, idx, space):
        # Spaces with no records print nothing.
        if self.recs:
            self.out.write("\n".join(self.recs))
            self.out.write("\n")
        self.recs = []


def walk_snapshot(fmt, img, roots, ttbr1s, lo, hi, out):
    """Writes the walk of one snapshot to `out` as `ptwalk walk` prints it."""
    walk_events(fmt, img, roots, ttbr1s, lo, hi, _PrintSink(out))


def parse_range(s):
    if s is None:
        return 0, 1 << 64
    if ":" not in s:
        raise SystemExit("spec_walker: --va-range: expected LO:HI or LO:")
    a, b = s.split(":", 1)
    lo = parse_hex(a, "--va-range LO")
    hi = parse_hex(b, "--va-range HI") if b.strip() else 1 << 64
    if hi <= lo:
        raise SystemExit("spec_walker: --va-range: empty range")
    return lo, hi


def open_snapshot(snap, mdir, manifest="", lineno=0):
    """One parsed manifest line -> (fmt, img, roots, ttbr1s): root and TTBR1
    table addresses (SPEC §2, §2.1).  The caller closes img."""
    fmt = make_format(snap["format"])
    img = load_memory(snap["memory"], mdir)
    try:
        roots = [fmt.root_table(parse_hex(r, "roots")) for r in snap["roots"]]
        t1 = snap.get("ttbr1")
        if t1 is None:
            ttbr1s = [None] * len(roots)
        elif isinstance(t1, str):
            ttbr1s = [fmt.root_table(parse_hex(t1, "ttbr1"))] * len(roots)
        else:
            ttbr1s = [fmt.root_table(parse_hex(v, "ttbr1")) for v in t1]
            if len(ttbr1s) != len(roots):
                raise SystemExit("spec_walker: %s:%d: ttbr1 list length differs from roots"
                                 % (manifest, lineno))
        # README: "a root whose table does not start inside a region" is an error.
        for r in roots + [t for t in ttbr1s if t is not None]:
            if not img.table_start_backed(r):
                raise SystemExit("spec_walker: %s:%d: root table 0x%x outside every region"
                                 % (manifest, lineno, r))
    except BaseException:
        img.close()
        raise
    return fmt, img, roots, ttbr1s


def manifest_lines(manifest):
    """(line number, parsed snapshot) for every non-blank line of MANIFEST."""
    with open(manifest) as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        if line.strip():  # README: blank lines are skipped
            yield lineno, json.loads(line)


def walk_manifest(manifest, va_range=None, snapshot=None, out=None):
    """Walk every snapshot of MANIFEST (or only snapshot ID) into `out`
    (a text stream; default stdout), as `ptwalk walk` prints it."""
    out = out or sys.stdout
    lo, hi = parse_range(va_range)
    mdir = os.path.dirname(os.path.abspath(manifest))
    for lineno, snap in manifest_lines(manifest):
        if snapshot is not None and snap.get("id") != snapshot:
            continue
        fmt, img, roots, ttbr1s = open_snapshot(snap, mdir, manifest, lineno)
        try:
            walk_snapshot(fmt, img, roots, ttbr1s, lo, hi, out)
        finally:
            img.close()
    out.flush()


def main(argv):
    usage = "usage: spec_walker.py MANIFEST [--va-range LO:HI] [--snapshot ID]"
    args = list(argv[1:])
    rng = None
    only = None
    manifest = None
    while args:
        a = args.pop(0)
        if a == "--va-range" and args:
            rng = args.pop(0)
        elif a.startswith("--va-range="):
            rng = a.split("=", 1)[1]
        elif a == "--snapshot" and args:
            only = args.pop(0)
        elif manifest is None and not a.startswith("--"):
            manifest = a
        else:
            raise SystemExit(usage)
    if manifest is None:
        raise SystemExit(usage)
    walk_manifest(manifest, rng, only, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
