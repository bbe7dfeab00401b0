#!/usr/bin/env python3
"""Checks `ptwalk walk` (backends reference and cpu) byte for byte against
spec_walker.py, the independent walker written from docs/SPEC.md alone.

    python3 compare.py [PTWALK] [--backends reference,cpu] [--workdir DIR] [--keep] [--quick] [-v]

PTWALK defaults to $PTWALK_BINARY; --backends names the `ptwalk walk`
backends to hold to it (bench/gpu-check.sh adds cuda).  For a temporary directory (or --workdir),
it generates fleets with `ptwalk gen` over many shapes and writes the
hand-made hostile images of craft_hostile.py, then for every manifest and
every VA range (the whole space; fixed ranges: unaligned, across the x86
hole, across / between / inside the AArch64 halves; ranges derived from the
walk that cut large leaves and shared blocks) it compares the output of
`ptwalk walk --backend B` for each backend B with spec_walker's.
On a mismatch it prints the manifest, the range, the command and the first
differing line of each, and exits 1.  Python 3.11 standard library only.
"""

import io
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

ARM_FORMATS = ["4k-48", "4k-39", "16k-47", "16k-48", "64k-42", "64k-48"]

# (name, shape, seed): small but diverse `ptwalk gen` fleets (README "Generating fleets").
GEN = [
    ("small-1", "small,spaces=4,pages=8,kernel=16", 1),
    ("small-2", "small,spaces=3,pages=4,kernel=8,dups=2", 2),
    ("linux", "linux,snapshots=1,spaces=6,pages=16,kernel=32", 3),
    ("nanvix", "nanvix,snapshots=1,spaces=8,pages=8,kernel=16", 4),
    ("hyperlight", "hyperlight,snapshots=3,pages=16", 5),
    ("recursive", "recursive,snapshots=1,spaces=3,pages=8,kernel=8", 6),
    ("everything", "everything,snapshots=2,spaces=4,pages=8,kernel=16", 7),
    ("hostile", "small,hostile,dups=2,spaces=3,pages=8,kernel=8", 8),
    ("la57", "small,la57=all,large,cow,self_ref,spaces=3,pages=8,kernel=16", 9),
    ("arm-mixed", "small,arm=mixed,snapshots=6,spaces=3,pages=8,kernel=16", 10),
    ("arm-mixed-hl", "hyperlight,arm=mixed,snapshots=6,pages=8,cow", 11),
    ("la57-some", "small,la57=some,large,snapshots=2,spaces=3,pages=8,kernel=8", 12),
    ("everything-2", "everything,snapshots=2,spaces=3,pages=4,kernel=8", 13),
    ("hostile-la57", "small,hostile,la57=all,spaces=2,pages=4,kernel=8", 14),
    ("arm-mixed-large", "small,arm=mixed,large,cow,snapshots=6,spaces=3,pages=8,kernel=16", 15),
] + [("arm-" + f, "small,arm=%s,snapshots=1,spaces=3,pages=8,kernel=8,cow%s"
      % (f, ",large" if f.startswith(("4k", "16k")) else ""), 20 + i)
     for i, f in enumerate(ARM_FORMATS)]

QUICK = {"small-1", "hostile", "everything", "arm-mixed", "arm-16k-48"}

# Fixed ranges, applied to every manifest (x86 and AArch64 alike).
FIXED_RANGES = [
    "0x1000:0x40000123",                       # low VAs, unaligned end
    "0x7f0000001234:0x7fffffffffff",           # top of the lower half, unaligned
    "0x7fff00000000:0xffff800040000123",       # across the x86 hole (and the AArch64 one)
    "0xffff800000000000:",                     # x86 kernel half; inside / below AArch64 upper halves
    "0x1000000000000:",                        # starts in the hole: AArch64 lower half missed
    "0x7ffffffff000:0xffff000000200001",       # AArch64 48-bit: end of lower, start of upper half
    "0xffffff8000001000:",                     # AArch64 39-bit upper half, unaligned
    "0xfffffffffff00000:",                     # the very top
]


def derived_ranges(text, rng):
    """Ranges cutting a large leaf, a page, and a shared (aliased) block of
    this manifest's whole-space walk."""
    leaves, aliases = [], []
    for line in text.splitlines():
        r = json.loads(line)
        if r["type"] == "leaf":
            leaves.append((int(r["va"], 16), r["size"]))
        elif r["depth"] > 0:
            aliases.append(int(r["our_va"], 16))
    out = []
    if leaves:
        big = [l for l in leaves if l[1] > 4096] or leaves
        va, size = rng.choice(big)
        va2, size2 = rng.choice(leaves)
        lo = va + size // 2 + 0x123
        hi = va2 + size2 // 3 + 5
        if hi <= lo:
            hi = lo + size + 0x1000
        out.append("0x%x:0x%x" % (lo, min(hi, (1 << 64) - 1)))
        va, size = rng.choice(leaves)
        out.append("0x%x:" % (va + 8))
    if aliases:
        a = rng.choice(aliases)
        out.append("0x%x:0x%x" % (a + 0x10, min(a + 0x40000010, (1 << 64) - 1)))
    return out


def py_walk(manifest, rng):
    buf = io.StringIO()
    spec_walker.walk_manifest(manifest, rng, None, buf)
    return buf.getvalue()


def first_diff(a, b):
    al, bl = a.splitlines(), b.splitlines()
    for i in range(max(len(al), len(bl))):
        x = al[i] if i < len(al) else "<end of output>"
        y = bl[i] if i < len(bl) else "<end of output>"
        if x != y:
            return i + 1, x, y
    return None


def main(argv):
    parser = craft_hostile.driver_options("compare.py", "ptwalk walk against spec_walker.py, byte for byte")
    parser.add_argument("--backends", default="reference,cpu", help="ptwalk walk backends (comma-separated)")
    o = parser.parse_args(argv[1:])
    if not o.ptwalk:
        parser.error("give the ptwalk binary as argument or in PTWALK_BINARY")
    ptwalk, workdir, keep, quick, verbose = o.ptwalk, o.workdir, o.keep, o.quick, o.verbose
    backends = o.backends.split(",")
    ptwalk = os.path.abspath(ptwalk)
    t0 = time.time()
    tmp = workdir or tempfile.mkdtemp(prefix="ptwalk-independent-")
    os.makedirs(tmp, exist_ok=True)
    failures = []
    cases = 0
    try:
        manifests, failed = craft_hostile.gen_fleets(ptwalk, tmp, GEN, QUICK if quick else None)
        failures += [("gen " + name, None) for name in failed]
        cdir = os.path.join(tmp, "crafted")
        shutil.rmtree(cdir, ignore_errors=True)
        os.makedirs(cdir)
        out = craft_hostile.Out(cdir)
        crng = random.Random(1)
        craft_hostile.x86_all_self(out)
        craft_hostile.x86_multidepth(out)
        craft_hostile.x86_cut(out)
        craft_hostile.x86_perms(out, crng)
        craft_hostile.arm_types(out)
        craft_hostile.arm_small_tops(out)
        craft_hostile.arm_perms(out, crng)
        craft_hostile.elf_cases(out)
        craft_hostile.fuzz(out, crng, 16 if quick else 64)
        if not quick:
            craft_hostile.fuzz(out, random.Random(2), 64, "fuzz2", 64)
        for p in out.manifests:
            manifests.append(("crafted/" + os.path.basename(p)[:-6], p))
        t_setup = time.time() - t0

        # The plain command once, to hold it to the in-process walker.
        name0, m0 = manifests[0]
        p = subprocess.run([sys.executable, os.path.join(HERE, "spec_walker.py"), m0,
                            "--va-range", FIXED_RANGES[2]], capture_output=True, text=True)
        if p.returncode != 0 or p.stdout != py_walk(m0, FIXED_RANGES[2]):
            print("FAIL spec_walker.py as a command on %s: rc %d %s" % (m0, p.returncode, p.stderr))
            failures.append(("command", m0))

        for name, m in manifests:
            full = py_walk(m, None)
            rr = random.Random(name)
            ranges = [None] + FIXED_RANGES + derived_ranges(full, rr)
            mfail = 0
            for r in ranges:
                expect = full if r is None else py_walk(m, r)
                for backend in backends:
                    cmd = [ptwalk, "walk", m, "--backend", backend]
                    if r is not None:
                        cmd += ["--va-range", r]
                    cases += 1
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        print("FAIL %s: exit %d: %s\n  command: %s"
                              % (name, p.returncode, p.stderr.strip()[:500], " ".join(cmd)))
                        failures.append((name, r))
                        mfail += 1
                        continue
                    if p.stdout != expect:
                        ln, want, got = first_diff(expect, p.stdout)
                        print("FAIL %s, range %s, backend %s: outputs differ at line %d\n"
                              "  manifest: %s\n  command:  %s\n  spec_walker: %s\n  ptwalk:      %s"
                              % (name, r or "(whole space)", backend, ln, m, " ".join(cmd), want, got))
                        failures.append((name, r))
                        mfail += 1
            if verbose or mfail:
                print("%-28s %s: %d ranges x %d backends, %d lines in the whole walk"
                      % (name, "ok" if not mfail else "%d FAILED" % mfail, len(ranges), len(backends),
                         full.count("\n")))
        dt = time.time() - t0
        print("independent spec walker: %d manifests, %d comparisons, %d failed (setup %.1f s, total %.1f s)"
              % (len(manifests), cases, len(failures), t_setup, dt))
    finally:
        if not keep and not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
