#!/usr/bin/env python3
"""An independent check of compaction (docs/SPEC.md §4), written from
docs/SPEC.md and README.md alone, without reading ptwalk's sources.

    python3 check_compaction.py [PTWALK] [--workdir DIR] [--keep] [--quick] [--limit N] [-v]

PTWALK defaults to $PTWALK_BINARY; --limit: differences listed per run (12).

For small `ptwalk gen` fleets and the hand-made images of craft_hostile.py it
runs `ptwalk compact MANIFEST --out DIR` under each policy (default,
--keep-unbacked, --keep-pa, --cow-writable, --cow-writable --keep-pa), walks
the input and the output with spec_walker (not with ptwalk), reads both images
itself and checks SPEC §4:

 1. the same snapshots, spaces (same number, same order), labels and meta;
 2. per space the same leaves (VA, size, effective w/u/x/cow, flags), except
    what the policy changes (--cow-writable) and minus unbacked leaves
    (dropped by default, kept at their pa under --keep-unbacked / --keep-pa);
 3. the same bytes behind every kept leaf;
 4. one copy per frame (shared input frame -> shared output frame, distinct
    -> distinct and disjoint, large pages aligned); --keep-pa: pa unchanged;
 5. the same AnotherSpace records (depth, owner space index, our_va,
    their_va) and the same number of distinct tables per depth, minus tables
    that became empty; every table entry keeps its non-address bits;
 6. OS-private entries (nonzero, mapping nothing) kept verbatim at the same
    (space, depth, VA);
 7. `ptwalk verify INPUT OUTPUT` exits 0; and a planted corruption (a data
    byte, a permission bit of a leaf entry) is found by this check AND makes
    `ptwalk verify` fail.

On a failure it prints the manifest, policy, snapshot, space, VA, expected
and actual, and exits 1.  Points where the SPEC is silent are marked CHOICE:
(and listed in README.md).  Python 3.11 standard library only.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean under ctest
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import spec_walker  # noqa: E402
import craft_hostile  # noqa: E402

U64 = (1 << 64) - 1
hx = spec_walker.hx

# (name, shape, seed): small `ptwalk gen` fleets (README "Generating fleets").
GEN = [
    ("x86", "small,spaces=3,pages=8,kernel=16,dups=1", 1),
    ("la57-large", "small,la57=all,large,cow,self_ref,snapshots=1,spaces=2,pages=4,kernel=8", 2),
    ("hyperlight-cow", "hyperlight,snapshots=3,pages=8,cow", 3),
    ("nanvix", "nanvix,snapshots=1,spaces=4,pages=4,kernel=8", 4),
    ("everything", "everything,snapshots=1,spaces=3,pages=4,kernel=8", 5),
    ("hostile", "small,hostile,dups=2,spaces=3,pages=8,kernel=8", 6),
    ("arm-mixed", "small,arm=mixed,snapshots=6,spaces=2,pages=4,kernel=8", 7),
    ("arm-mixed-hl-cow", "hyperlight,arm=mixed,snapshots=6,pages=4,cow", 8),
    ("arm-4k-48", "small,arm=4k-48,large,cow,snapshots=1,spaces=3,pages=8,kernel=8", 9),
    ("arm-16k-48", "small,arm=16k-48,large,cow,snapshots=1,spaces=3,pages=8,kernel=8", 10),
    ("arm-64k-42", "small,arm=64k-42,cow,snapshots=1,spaces=3,pages=8,kernel=8", 11),
]
QUICK = {"x86", "hostile", "arm-mixed", "hyperlight-cow"}

POLICIES = [
    ("default", []),
    ("keep-unbacked", ["--keep-unbacked"]),
    ("keep-pa", ["--keep-pa"]),
    ("cow-writable", ["--cow-writable"]),
    ("cow-writable+keep-pa", ["--cow-writable", "--keep-pa"]),
]

# AArch64 leaf bits (SPEC §2.1)
AP2, NG, DBM = 1 << 7, 1 << 11, 1 << 51
SW_MASK = 0xF << 55


# ---------------------------------------------------------------------------
# A walk with everything §4 talks about, by (space index, depth, VA)
# ---------------------------------------------------------------------------

class Leaf:
    __slots__ = ("idx", "depth", "va", "pa", "size", "w", "u", "x", "cow", "flags", "eaddr")

    def __init__(self, idx, depth, va, d, eaddr):
        _, self.pa, self.size, self.w, self.u, self.x, self.cow, self.flags = d
        self.idx, self.depth, self.va, self.eaddr = idx, depth, va, eaddr

    def perms(self):
        return (self.w, self.u, self.x, self.cow)


class Walk:
    """One snapshot walked by spec_walker.walk_events over the whole space."""

    def __init__(self, snap, mdir, where):
        self.snap = snap
        self.fmt, self.img, self.roots, self.ttbr1s = spec_walker.open_snapshot(snap, mdir, where)
        n = len(self.roots)
        self.leaves = [[] for _ in range(n)]
        self.aliases = [[] for _ in range(n)]
        self.tables = {}    # (idx, depth, va) -> (entry, entry addr, child key)
        self.privs = {}     # (idx, depth, va) -> (entry, entry addr)
        self.owned = {}     # key -> (idx, va) of the owning visit
        self.children = {}  # key -> [("leaf", Leaf) | ("table", key) | ("private", None)]
        spec_walker.walk_events(self.fmt, self.img, self.roots, self.ttbr1s, 0, 1 << 64, self)

    # sink of spec_walker.walk_events
    def leaf(self, idx, space, depth, va, d, eaddr, pkey):
        lf = Leaf(idx, depth, va, d, eaddr)
        self.leaves[idx].append(lf)
        self.children.setdefault(pkey, []).append(("leaf", lf))

    def alias(self, idx, space, depth, oidx, ospace, our_va, their_va):
        self.aliases[idx].append((depth, oidx, our_va, their_va))

    def table(self, idx, depth, va, e, eaddr, pkey, ckey):
        self.tables[(idx, depth, va)] = (e, eaddr, ckey)
        self.children.setdefault(pkey, []).append(("table", ckey))

    def private(self, idx, depth, va, e, eaddr, pkey):
        self.privs[(idx, depth, va)] = (e, eaddr)
        self.children.setdefault(pkey, []).append(("private", None))

    def own(self, idx, key, va):
        self.owned[key] = (idx, va)

    def end_space(self, idx, space):
        pass

    def table_flags(self, e):
        """Non-address bits of a table descriptor.
        CHOICE: as SPEC §2 / §2.1 define a leaf's flags: x86 bits 51:12 are
        the address; AArch64 bits 47:granule-shift (bits 51:48 are read as
        ignored by the 48-bit format, so they count as non-address bits)."""
        if self.fmt.aarch64:
            return e & ~(spec_walker.PA48 & ~((1 << self.fmt.shift) - 1)) & U64
        return e & ~0x000FFFFFFFFFF000 & U64

    def table_bytes(self, depth):
        return self.fmt.entries(depth) * 8

    def close(self):
        self.img.close()


# ---------------------------------------------------------------------------
# Bytes: frames compared chunk by chunk, holes of sparse files skipped
# ---------------------------------------------------------------------------

_extents = {}


def data_extents(path):
    """[(start, end)] of the file's data (SEEK_DATA / SEEK_HOLE); the rest
    of a sparse file reads as zeros."""
    if path not in _extents:
        ext = []
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            off = 0
            while off < size:
                try:
                    d = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:
                    break
                h = os.lseek(fd, d, os.SEEK_HOLE)
                ext.append((d, h))
                off = h
        except (AttributeError, OSError):
            ext = [(0, 1 << 62)]
        finally:
            os.close(fd)
        _extents[path] = ext
    return _extents[path]


def known_zero(img, pa, n):
    """True if every byte of [pa, pa+n) is unbacked or lies in a hole of a
    sparse file: it reads as zero without touching it."""
    for a, b, k in img.pieces(pa, n):
        if k is None:
            continue
        g, _, _, off = img.regions[k]
        fa, fb = off + a - g, off + b - g
        for s, e in data_extents(img.paths[k]):
            if s < fb and fa < e:
                return False
    return True


def unbacked_runs(img, pa, n):
    """Offsets (relative to pa) of the unbacked runs of [pa, pa+n)."""
    return [(a - pa, b - pa) for a, b, k in img.pieces(pa, n) if k is None]


def first_byte_diff(img_a, pa_a, img_b, pa_b, size, chunk=1 << 20):
    """None if the two frames hold the same bytes and the same unbacked
    runs; else (offset, what before, what after)."""
    ua, ub = unbacked_runs(img_a, pa_a, size), unbacked_runs(img_b, pa_b, size)
    if ua != ub:
        return (ua[0][0] if ua else (ub[0][0] if ub else 0),
                "unbacked runs %s" % [(hx(a), hx(b)) for a, b in ua[:4]],
                "unbacked runs %s" % [(hx(a), hx(b)) for a, b in ub[:4]])
    off = 0
    while off < size:
        n = min(chunk, size - off)
        # (the unbacked runs are the same: bytes that read as zero on both sides are equal)
        if not (known_zero(img_a, pa_a + off, n) and known_zero(img_b, pa_b + off, n)):
            a = img_a.read_bytes(pa_a + off, n)
            b = img_b.read_bytes(pa_b + off, n)
            if a != b:
                i = next(i for i in range(n) if a[i] != b[i])
                return off + i, hx(a[i]), hx(b[i])
        off += n
    return None


# ---------------------------------------------------------------------------
# The check of one (input snapshot, output snapshot, policy)
# ---------------------------------------------------------------------------

class Report:
    def __init__(self, manifest, policy, limit=12):
        self.manifest, self.policy, self.limit = manifest, policy, limit
        self.count = 0
        self.lines = []
        # tables empty in the input / that became empty: kept or dropped
        self.empty = {"was kept": 0, "was dropped": 0, "became kept": 0, "became dropped": 0}

    def fail(self, snap, idx, va, what, expected, actual):
        self.count += 1
        if len(self.lines) < self.limit:
            where = "snapshot %s" % snap
            if idx is not None:
                where += ", space #%d" % idx
            if va is not None:
                where += ", va %s" % hx(va)
            self.lines.append("  %s: %s\n    expected: %s\n    actual:   %s" % (where, what, expected, actual))

    def dump(self):
        print("FAIL %s, policy %s: %d difference(s)" % (self.manifest, self.policy, self.count))
        for line in self.lines:
            print(line)
        if self.count > len(self.lines):
            print("  ... %d more" % (self.count - len(self.lines)))


def cow_flags(fmt, flags):
    """--cow-writable on one leaf entry's non-address bits -> (new flags,
    changed?).  README: x86: "every leaf entry with RW set becomes a
    read-only CoW leaf (bits 11:9 = 0b001)"; AArch64: "a leaf writable by
    its own bits (AP[2] clear or DBM set)" becomes "AP[2] set, DBM cleared,
    software bits 58:55 = 0b0001, nG set".
    CHOICE: decided on the leaf entry's own bits (not the path), as README
    words it: a leaf entry in a table several spaces share is one entry."""
    if fmt.aarch64:
        if (flags & AP2) and not (flags & DBM):
            return flags, False
        return ((flags | AP2 | NG) & ~DBM & ~SW_MASK) | (1 << 55), True
    if not flags & 2:
        return flags, False
    return (flags & ~0x2 & ~0xE00) | 0x200, True


def check_snapshot(rep, wi, wo, pol):
    """wi: input Walk, wo: output Walk; pol: set of policy names."""
    sid = wi.snap["id"]
    keep_pa = "keep-pa" in pol
    keep_unbacked = keep_pa or "keep-unbacked" in pol
    cow = "cow-writable" in pol
    fmt = wi.fmt
    n = len(wi.roots)

    # 1. spaces
    if len(wo.roots) != n:
        rep.fail(sid, None, None, "number of spaces", n, len(wo.roots))
        return
    if (wi.ttbr1s[0] is None) != (wo.ttbr1s[0] is None):
        rep.fail(sid, None, None, "ttbr1 present", wi.snap.get("ttbr1"), wo.snap.get("ttbr1"))
    if fmt.aarch64:
        # README: "each root keeps its ASID" (TTBR bits 63:48); one TTBR1
        # value for every space stays one value ("the new manifest's ttbr1
        # names it").  CHOICE: TTBR1 values keep their ASID too.
        def asids(v):
            if v is None:
                return None
            if isinstance(v, str):
                return spec_walker.parse_hex(v, "ttbr1") >> 48
            return [spec_walker.parse_hex(x, "ttbr") >> 48 for x in v]
        if asids(wi.snap["roots"]) != asids(wo.snap["roots"]):
            rep.fail(sid, None, None, "root ASIDs", wi.snap["roots"], wo.snap["roots"])
        t1i, t1o = wi.snap.get("ttbr1"), wo.snap.get("ttbr1")
        if isinstance(t1i, str) and not isinstance(t1o, str):
            rep.fail(sid, None, None, "one ttbr1 for every space stays one value", t1i, t1o)
        elif t1i is not None and t1o is not None:
            ai, ao = asids(t1i), asids(t1o)
            ai = ai if isinstance(ai, list) else [ai] * n
            ao = ao if isinstance(ao, list) else [ao] * n
            if ai != ao:
                rep.fail(sid, None, None, "ttbr1 ASIDs", t1i, t1o)

    # Leaves: backed, unbacked, or partly backed (SPEC §1, §4)
    backed = {}
    for lst in wi.leaves:
        for lf in lst:
            k = (lf.pa, lf.size)
            if k not in backed:
                backed[k] = wi.img.backed_bytes(lf.pa, lf.size)

    def full(lf):
        return backed[(lf.pa, lf.size)] == lf.size

    def kept(lf):
        # CHOICE: "a leaf frame whose bytes the image backs" is one whose
        # every byte some region backs (several adjacent regions may);
        # a frame with an unbacked byte is one "the image does not back", by
        # analogy with SPEC §1 (an entry "not entirely backed ... reads as
        # 0").  Kept under --keep-unbacked / --keep-pa at its pa, with the
        # bytes the input backs there backed the same (README: "the compacted
        # image does not back it either").
        return full(lf) or keep_unbacked

    # Tables and what becomes of them.  SPEC §4: "same count of distinct
    # tables per depth, minus tables that became empty".
    # CHOICE: a table "became empty" when it held something in the input (a
    # leaf, an OS-private entry, a table that was not empty) and holds
    # nothing after compaction (its leaves dropped as unbacked, its tables
    # became empty or were dropped): it must be dropped, and the entry
    # pointing at it with it.  A table that was empty in the input already
    # (all entries 0, or outside the image: read as 0, SPEC §1) did not
    # "become" empty and the SPEC does not say; keeping or dropping it
    # changes no mapping.  ptwalk's rule (README: no table but a root is
    # rebuilt empty) drops it too, and this check holds it to that.  Depth
    # grows down a path: the recursions end.
    was = {}

    def was_empty(key):
        if key not in was:
            was[key] = all(kind == "table" and was_empty(x) for kind, x in wi.children.get(key, ()))
        return was[key]

    def present_out(key):
        """Is the table key (depth >= 1) in the output: at its owner's visit."""
        idx, va = wi.owned[key]
        return (idx, key[1] - 1, va) in wo.tables

    must = {}

    def must_keep(key):
        """True: the output must keep it; False: it is empty after
        compaction (it became empty, or was already) and must be dropped."""
        if key not in must:
            if was_empty(key):
                must[key] = False
            else:
                r = False
                for kind, x in wi.children.get(key, ()):
                    if kind == "private" or (kind == "leaf" and kept(x)):
                        r = True
                    elif kind == "table":
                        m = must_keep(x)
                        r = m is True or (m is None and present_out(x))
                    if r:
                        break
                must[key] = r
        return must[key]

    # 5a. table entries at the same (space, depth, VA) with the same
    # non-address bits (SPEC §4 "every rebuilt entry keeps the original
    # entry's non-address bits at the same (space, depth, VA) position").
    for pos, (e, _, ckey) in wi.tables.items():
        o = wo.tables.get(pos)
        m = must_keep(ckey)
        if o is None:
            if m:
                rep.fail(sid, pos[0], pos[2], "table entry at depth %d missing (the table it points "
                         "at keeps mappings)" % pos[1], "flags %s" % hx(wi.table_flags(e)), "none")
            continue
        if m is False:
            rep.fail(sid, pos[0], pos[2], "table entry at depth %d to a table that became empty "
                     "(every leaf below it dropped): SPEC \"minus tables that became empty\""
                     % pos[1], "none", "entry %s" % hx(o[0]))
        if wi.table_flags(e) != wo.table_flags(o[0]):
            rep.fail(sid, pos[0], pos[2], "non-address bits of the depth-%d table entry" % pos[1],
                     hx(wi.table_flags(e)), hx(wo.table_flags(o[0])))
    for pos, (e, _, _) in wo.tables.items():
        if pos not in wi.tables:
            rep.fail(sid, pos[0], pos[2], "table entry at depth %d that the input does not have"
                     % pos[1], "none", hx(e))

    # 5b. AnotherSpace records, and distinct tables per depth
    def visit_kept(depth, idx, va):
        return depth == 0 or (idx, depth - 1, va) in wo.tables

    for idx in range(n):
        exp = [a for a in wi.aliases[idx] if visit_kept(a[0], idx, a[2])]
        got = wo.aliases[idx]
        if exp != got:
            for i in range(max(len(exp), len(got))):
                x = exp[i] if i < len(exp) else None
                y = got[i] if i < len(got) else None
                if x != y:
                    fx = lambda r: "none" if r is None else \
                        "depth %d owner #%d our_va %s their_va %s" % (r[0], r[1], hx(r[2]), hx(r[3]))
                    rep.fail(sid, idx, (x or y)[2], "AnotherSpace record #%d" % i, fx(x), fx(y))
                    break
    levels = fmt.levels
    cin, cout = [0] * levels, [0] * levels
    became, dropped_was = [0] * levels, [0] * levels
    for key, (idx, va) in wi.owned.items():
        d = key[1]
        m = must_keep(key) if d > 0 else True  # CHOICE: every root stays (one new root per root)
        if m is False:
            became[d] += 1
        elif m is None and not present_out(key):
            dropped_was[d] += 1
        else:
            cin[d] += 1
    for key in wo.owned:
        cout[key[1]] += 1
    if cin != cout:
        rep.fail(sid, None, None, "distinct tables per depth (input %s, minus became empty %s, minus "
                 "empty in the input and dropped %s)"
                 % ([sum(1 for k in wi.owned if k[1] == d) for d in range(levels)], became,
                    dropped_was), cin, cout)
    # For the record (-v): what was done with the empty ones.
    for key, (idx, va) in wi.owned.items():
        if key[1] > 0:
            m = must_keep(key)
            if m is None:
                rep.empty["was " + ("kept" if present_out(key) else "dropped")] += 1
            elif m is False:
                rep.empty["became " + ("kept" if present_out(key) else "dropped")] += 1

    # 6. OS-private entries, verbatim
    for pos, (e, _) in wi.privs.items():
        o = wo.privs.get(pos)
        if o is None or o[0] != e:
            rep.fail(sid, pos[0], pos[2], "OS-private entry at depth %d" % pos[1], hx(e),
                     "none" if o is None else hx(o[0]))
    for pos, (e, _) in wo.privs.items():
        if pos not in wi.privs:
            rep.fail(sid, pos[0], pos[2], "nonzero entry mapping nothing at depth %d, not in the input"
                     % pos[1], "none (0)", hx(e))

    # 2. leaves
    made_cow = dropped = 0
    pairs = []  # (input leaf, output leaf)
    for idx in range(n):
        outl = {lf.va: lf for lf in wo.leaves[idx]}
        seen = set()
        for lf in wi.leaves[idx]:
            if not kept(lf):
                dropped += 1
                if lf.va in outl:
                    rep.fail(sid, idx, lf.va, "unbacked leaf (pa %s size %#x) should be dropped"
                             % (hx(lf.pa), lf.size), "no leaf", "leaf pa %s" % hx(outl[lf.va].pa))
                    seen.add(lf.va)
                continue
            flags, perms = lf.flags, lf.perms()
            if cow:
                flags, changed = cow_flags(fmt, flags)
                if changed:
                    made_cow += 1
                    perms = (False, lf.u, lf.x, True)
            o = outl.get(lf.va)
            if o is None:
                rep.fail(sid, idx, lf.va, "leaf missing", "size %#x pa %s flags %s" %
                         (lf.size, hx(lf.pa), hx(flags)), "none")
                continue
            seen.add(lf.va)
            if o.size != lf.size or o.flags != flags or o.perms() != perms:
                rep.fail(sid, idx, lf.va, "leaf (input pa %s)" % hx(lf.pa),
                         "size %#x w/u/x/cow %s flags %s" % (lf.size, perms, hx(flags)),
                         "size %#x w/u/x/cow %s flags %s" % (o.size, o.perms(), hx(o.flags)))
            pairs.append((lf, o))
        for lf in wo.leaves[idx]:
            if lf.va not in seen:
                rep.fail(sid, idx, lf.va, "leaf the input does not have", "none",
                         "size %#x pa %s" % (lf.size, hx(lf.pa)))

    # meta: the policy and the counts (SPEC: "dropped and counted",
    # "opt-in and reported")
    meta = wo.snap.get("meta") or {}
    mc = meta.get("compaction")
    want_pol = {"keep_pa": keep_pa, "keep_unbacked": keep_unbacked, "cow_writable": cow}
    if not isinstance(mc, dict):
        rep.fail(sid, None, None, "meta.compaction", want_pol, mc)
    else:
        for k, v in want_pol.items():
            if mc.get(k) != v:
                rep.fail(sid, None, None, "meta.compaction.%s" % k, v, mc.get(k))
        # CHOICE: counted per rebuilt leaf entry, i.e. per leaf record of the
        # whole walk (a leaf in a shared table is one entry and one record).
        if mc.get("unbacked_leaves_dropped") != dropped:
            rep.fail(sid, None, None, "meta.compaction.unbacked_leaves_dropped", dropped,
                     mc.get("unbacked_leaves_dropped"))
        if mc.get("leaves_made_cow") != made_cow:
            rep.fail(sid, None, None, "meta.compaction.leaves_made_cow", made_cow,
                     mc.get("leaves_made_cow"))
    for k, v in (wi.snap.get("meta") or {}).items():
        if k != "compaction" and meta.get(k) != v:
            rep.fail(sid, None, None, "meta.%s kept from the input" % k, v, meta.get(k))
    if wo.snap.get("labels") != wi.snap.get("labels"):
        rep.fail(sid, None, None, "labels", wi.snap.get("labels"), wo.snap.get("labels"))
    if wo.snap.get("format") != wi.snap.get("format"):
        rep.fail(sid, None, None, "format", wi.snap.get("format"), wo.snap.get("format"))

    # 3. bytes and 4. frames
    out_tables = []  # (start, end) of every rebuilt table
    for key in wo.owned:
        out_tables.append((key[0], key[0] + wo.table_bytes(key[1])))
    frame_out = {}  # (in pa, size) -> out pa
    checked = set()
    partial_checked = set()
    kept_partial = []  # kept leaves with some bytes backed, some not
    for lf, o in pairs:
        if o.pa % o.size:
            rep.fail(sid, lf.idx, lf.va, "output pa not aligned to the page size", "aligned",
                     hx(o.pa))
        if keep_pa or not full(lf):
            if o.pa != lf.pa:
                rep.fail(sid, lf.idx, lf.va, "pa (%s)" % ("--keep-pa" if keep_pa else
                         "unbacked leaf, --keep-unbacked"), hx(lf.pa), hx(o.pa))
                continue
        if not full(lf):
            # README --keep-unbacked: "the compacted image does not back it
            # either": it backs what the input backed there, the same bytes.
            k = (lf.pa, lf.size)
            if k in partial_checked:
                continue
            partial_checked.add(k)
            d = first_byte_diff(wi.img, lf.pa, wo.img, o.pa, lf.size)
            if d is not None:
                rep.fail(sid, lf.idx, lf.va + d[0], "unbacked leaf kept at pa %s size %#x: offset %#x"
                         % (hx(o.pa), o.size, d[0]), d[1], d[2])
            if backed[k]:
                kept_partial.append(lf)
            continue
        k = (lf.pa, lf.size)
        if k in frame_out:
            if frame_out[k] != o.pa:
                rep.fail(sid, lf.idx, lf.va, "one copy per frame: input frame %s size %#x"
                         % (hx(lf.pa), lf.size), "output pa %s (as elsewhere)" % hx(frame_out[k]),
                         hx(o.pa))
            continue
        frame_out[k] = o.pa
        if (k, o.pa) in checked:
            continue
        checked.add((k, o.pa))
        d = first_byte_diff(wi.img, lf.pa, wo.img, o.pa, lf.size)
        if d is not None:
            rep.fail(sid, lf.idx, lf.va + d[0], "byte at offset %#x of the frame (input pa %s, "
                     "output pa %s, size %#x)" % (d[0], hx(lf.pa), hx(o.pa), lf.size), d[1], d[2])
        for s, e in out_tables:
            if s < o.pa + o.size and o.pa < e:
                rep.fail(sid, lf.idx, lf.va, "data frame overlaps a rebuilt table",
                         "frame %s..%s apart from tables" % (hx(o.pa), hx(o.pa + o.size)),
                         "table %s..%s" % (hx(s), hx(e)))
                break
    # One copy per frame: frames nested in a larger mapped frame point into
    # its copy (README); frames that do not overlap in the input do not
    # overlap in the output (SPEC "one copy per original frame").
    # A partly backed frame kept at its pa keeps its backed bytes there: a
    # copied frame inside it must point there too (one copy of those bytes).
    for lf in kept_partial:
        frame_out.setdefault((lf.pa, lf.size), lf.pa)
    frames = sorted(frame_out, key=lambda k: (k[0], -k[1]))
    tops = []  # (in pa, size, out pa) of frames not inside another
    for pa, size in frames:
        if tops and pa < tops[-1][0] + tops[-1][1]:
            tpa, tsize, tout = tops[-1]
            if pa + size > tpa + tsize:
                continue  # cannot happen: aligned powers of two nest or are disjoint
            want = tout + (pa - tpa)
            if frame_out[(pa, size)] != want:
                # CHOICE (README: "a small frame inside a larger copied frame
                # points into that copy"; SPEC: "one copy per original frame,
                # however many spaces or VAs map it")
                rep.fail(sid, None, None, "frame %s size %#x inside frame %s size %#x (output pa %s)"
                         % (hx(pa), size, hx(tpa), tsize, hx(tout)), "output pa %s (inside that copy)"
                         % hx(want), hx(frame_out[(pa, size)]))
            continue
        tops.append((pa, size, frame_out[(pa, size)]))
    outs = sorted((o, o + s, p) for p, s, o in tops)
    for (a0, a1, p0), (b0, b1, p1) in zip(outs, outs[1:]):
        if b0 < a1:
            rep.fail(sid, None, None, "distinct input frames %s and %s share output bytes"
                     % (hx(p0), hx(p1)), "disjoint", "%s..%s and %s..%s"
                     % (hx(a0), hx(a1), hx(b0), hx(b1)))
    # SPEC: frames are copied "into a dense data region"; "page tables are
    # rebuilt after the data region".  CHOICE: dense = the copies of the
    # frames (those not inside another) tile one range without gaps; checked
    # when nothing stays at its own address (no --keep-unbacked/--keep-pa).
    # --keep-pa (README): "tables go above the highest original address",
    # i.e. above every byte the input image backs.
    first_table = min((s for s, _ in out_tables), default=None)
    if outs and not keep_unbacked:
        span = outs[-1][1] - outs[0][0]
        total = sum(b - a for a, b, _ in outs)
        if span != total:
            rep.fail(sid, None, None, "dense data region: %d frame bytes span %s..%s"
                     % (total, hx(outs[0][0]), hx(outs[-1][1])), "no gap", "%#x bytes of gaps"
                     % (span - total))
        if first_table is not None and first_table < outs[-1][1]:
            rep.fail(sid, None, None, "page tables after the data region (which ends at %s)"
                     % hx(outs[-1][1]), "first table at or above it", hx(first_table))
    if keep_pa and first_table is not None:
        top = max(e for _, e, _, _ in wi.img.regions)
        if first_table < top:
            rep.fail(sid, None, None, "--keep-pa: tables above the highest original address %s"
                     % hx(top), "first table at or above it", hx(first_table))
    if keep_pa:
        # SPEC: --keep-pa "only drops frames that no space maps (a sparse
        # output image)": what the output backs is mapped frames and tables.
        # CHOICE: a rebuilt table may take a whole granule.
        g = 1 << (fmt.shift if fmt.aarch64 else 12)
        allowed = sorted([(p, p + s) for p, s, _ in tops] +
                         [(s & ~(g - 1), ((e + g - 1) & ~(g - 1))) for s, e in out_tables])
        for rg, re_, _, _ in wo.img.regions:
            a = rg
            for s, e in allowed:
                if e <= a:
                    continue
                if s > a:
                    break
                a = max(a, e)
                if a >= re_:
                    break
            if a < re_:
                rep.fail(sid, None, None, "--keep-pa: output backs %s (no leaf maps it, no table)"
                         % hx(a), "only mapped frames and tables", "backed")
                break


def compaction_manifest_check(rep, in_manifest, out_manifest, pol, cache):
    """Check every snapshot; cache holds the input walks across policies."""
    idir = os.path.dirname(os.path.abspath(in_manifest))
    odir = os.path.dirname(os.path.abspath(out_manifest))
    ins = list(spec_walker.manifest_lines(in_manifest))
    try:
        outs = list(spec_walker.manifest_lines(out_manifest))
    except (OSError, ValueError) as e:
        rep.fail("-", None, None, "output manifest readable", "JSON Lines", repr(e))
        return
    if [s["id"] for _, s in ins] != [s["id"] for _, s in outs]:
        rep.fail("-", None, None, "snapshot ids in order", [s["id"] for _, s in ins],
                 [s["id"] for _, s in outs])
        return
    for (li, si), (lo, so) in zip(ins, outs):
        key = (in_manifest, li)
        if key not in cache:
            cache[key] = Walk(si, idir, in_manifest)
        wi = cache[key]
        try:
            wo = Walk(so, odir, out_manifest)
        except SystemExit as e:
            rep.fail(si["id"], None, None, "output snapshot valid for spec_walker", "valid", str(e))
            continue
        try:
            check_snapshot(rep, wi, wo, pol)
        finally:
            wo.close()


# ---------------------------------------------------------------------------
# Planted corruption: the check and `ptwalk verify` must both fail
# ---------------------------------------------------------------------------

def plant(out_manifest, kind):
    """Flip one byte of a data frame ("data") or one permission bit of a
    leaf entry ("perm") in the output, in place.  -> (file, offset, old byte,
    description) to undo it, or None if there is nothing to flip."""
    odir = os.path.dirname(os.path.abspath(out_manifest))
    for _, so in spec_walker.manifest_lines(out_manifest):
        w = Walk(so, odir, out_manifest)
        try:
            for lst in w.leaves:
                for lf in lst:
                    if kind == "data":
                        if w.img.backed_bytes(lf.pa, lf.size) != lf.size:
                            continue
                        addr = lf.pa + 0x123
                        bit = 0x10
                    else:
                        addr = lf.eaddr
                        # x86 US (bit 2); AArch64 AP[1] (bit 6): `u` (or flags) changes
                        bit = 0x40 if w.fmt.aarch64 else 0x04
                    loc = w.img.file_offset(addr)
                    if loc is None:
                        continue
                    path, off = loc
                    with open(path, "r+b") as f:
                        f.seek(off)
                        old = f.read(1)[0]
                        f.seek(off)
                        f.write(bytes([old ^ bit]))
                    return (path, off, old, "%s: snapshot %s space #%d va %s: %s at pa %s"
                            % (kind, so["id"], lf.idx, hx(lf.va),
                               "data byte" if kind == "data" else "bit %#x of the leaf entry" % bit,
                               hx(addr)))
        finally:
            w.close()
    return None


def unplant(p):
    path, off, old, _ = p
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(bytes([old]))
    _extents.pop(path, None)


# ---------------------------------------------------------------------------

def crafted_inputs(d, quick):
    out = craft_hostile.Out(d)
    rng = random.Random(1)
    craft_hostile.x86_all_self(out)
    craft_hostile.x86_multidepth(out)
    craft_hostile.x86_cut(out)
    craft_hostile.x86_perms(out, rng)
    craft_hostile.arm_types(out)
    craft_hostile.arm_small_tops(out)
    craft_hostile.arm_perms(out, rng)
    craft_hostile.elf_cases(out)
    craft_hostile.fuzz(out, rng, 8 if quick else 24)
    return [("crafted/" + os.path.basename(p)[:-6], p) for p in out.manifests]


def main(argv):
    parser = craft_hostile.driver_options("check_compaction.py", "ptwalk compact checked against SPEC §4")
    parser.add_argument("--limit", type=int, default=12, help="failures printed per run")
    o = parser.parse_args(argv[1:])
    if not o.ptwalk:
        parser.error("give the ptwalk binary as argument or in PTWALK_BINARY")
    ptwalk, workdir, keep, quick, verbose, limit = o.ptwalk, o.workdir, o.keep, o.quick, o.verbose, o.limit
    ptwalk = os.path.abspath(ptwalk)
    t0 = time.time()
    tmp = workdir or tempfile.mkdtemp(prefix="ptwalk-compaction-")
    os.makedirs(tmp, exist_ok=True)
    failures = 0
    runs = 0
    try:
        inputs, failed = craft_hostile.gen_fleets(ptwalk, tmp, GEN, QUICK if quick else None)
        failures += len(failed)
        cdir = os.path.join(tmp, "crafted")
        shutil.rmtree(cdir, ignore_errors=True)
        os.makedirs(cdir)
        inputs += crafted_inputs(cdir, quick)

        planted_on = {"x86": "default", "arm-mixed": "cow-writable",
                      "crafted/x86_multidepth": "keep-pa",
                      "crafted/arm_types": "cow-writable+keep-pa"}
        planted = 0
        for name, m in inputs:
            cache = {}
            for pname, flags in POLICIES:
                runs += 1
                od = os.path.join(tmp, "out", name.replace("/", "_"), pname)
                shutil.rmtree(od, ignore_errors=True)
                os.makedirs(os.path.dirname(od), exist_ok=True)
                cmd = [ptwalk, "compact", m, "--out", od, "--jobs", "1"] + flags
                rep = Report(m, pname, limit)
                tc = time.time()
                p = subprocess.run(cmd, capture_output=True, text=True)
                tc = time.time() - tc
                if p.returncode != 0:
                    rep.fail("-", None, None, "exit status of %s" % " ".join(cmd), 0,
                             "%d: %s" % (p.returncode, p.stderr.strip()[-300:]))
                else:
                    om = os.path.join(od, "manifest.jsonl")
                    tk = time.time()
                    compaction_manifest_check(rep, m, om, set(pname.split("+")), cache)
                    tk = time.time() - tk
                    tv = time.time()
                    v = subprocess.run([ptwalk, "verify", m, om, "--jobs", "1"],
                                       capture_output=True, text=True)
                    if v.returncode != 0:
                        rep.fail("-", None, None, "exit status of ptwalk verify %s %s" % (m, om), 0,
                                 "%d: %s" % (v.returncode, v.stdout.strip()[-400:] + v.stderr.strip()[-300:]))
                    tv = time.time() - tv
                    if planted_on.get(name) == pname:
                        for kind in ("data", "perm"):
                            pl = plant(om, kind)
                            if pl is None:
                                print("FAIL %s %s: nothing to corrupt (%s)" % (name, pname, kind))
                                failures += 1
                                continue
                            try:
                                r2 = Report(m, pname + " (corrupted)")
                                compaction_manifest_check(r2, m, om, set(pname.split("+")), cache)
                                v2 = subprocess.run([ptwalk, "verify", m, om, "--jobs", "1"],
                                                    capture_output=True, text=True)
                            finally:
                                unplant(pl)
                            planted += 1
                            # more differences than without the fault (and verify fails)
                            ok = r2.count > rep.count and v2.returncode != 0
                            if verbose or not ok:
                                print("%s planted %s: this check found %d difference(s)%s; ptwalk verify "
                                      "exit %d" % ("ok" if ok else "FAIL", pl[3], r2.count - rep.count,
                                                   (" (" + r2.lines[0].strip().split("\n")[0] + ")")
                                                   if r2.lines else "", v2.returncode))
                            if not ok:
                                failures += 1
                if rep.count:
                    rep.dump()
                    print("  command: %s" % " ".join(cmd))
                    failures += 1
                if verbose:
                    e = rep.empty
                    print("%-24s %-20s %-6s empty tables kept/dropped: in the input %d/%d, became %d/%d; "
                          "compact %.2f s, check %.2f s, verify %.2f s"
                          % (name, pname, "ok" if not rep.count else "FAILED", e["was kept"],
                             e["was dropped"], e["became kept"], e["became dropped"], tc,
                             tk if p.returncode == 0 else 0, tv if p.returncode == 0 else 0))
            for w in cache.values():
                w.close()
        dt = time.time() - t0
        print("independent compaction check: %d inputs x %d policies = %d compactions, %d corruptions "
              "planted, %d failed (%.1f s)" % (len(inputs), len(POLICIES), runs, planted, failures, dt))
    finally:
        if not keep and not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
