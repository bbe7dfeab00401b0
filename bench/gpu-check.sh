#!/usr/bin/env bash
# bench/gpu-check.sh — the one script to run on a GPU machine (H100/H200, CUDA 13, no network).
#
# Two halves, because the GPU machine can neither fetch packages nor build ptwalk
# (no fmt, CLI11, zstd, ... there):
#
#   bench/gpu-check.sh --prepare   on the build machine: builds ptwalk and the GPU
#       tests for sm_90 in $BUILD_DIR (MPI off: nothing to carry for it), copies
#       the two stripped binaries and every shared library they need that is not
#       the C/C++ runtime or the driver into $BUILD_DIR/carry (a few MiB), runs
#       them from there once, and prints the device call to make;
#   bench/gpu-check.sh             on the GPU machine, from the carried
#       $BUILD_DIR/carry, in this order so that the most telling numbers come
#       back even when a later step fails or runs out of time:
#     1. the GPU tests (what `ctest -L gpu` runs), plainly, and the cuda walk
#        held to the independent SPEC walker (tests/independent, --quick);
#     2. the fleet benchmark on generated fleets of 100, 1,000 and 10,000 spaces
#        (the largest over a million page-table pages), then ten snapshots
#        streamed through the GPU in small batches; the yardsticks are the
#        device's copy bandwidth (device to device, max(1 GiB, 16x L2)), pinned
#        host-to-device bandwidth (1 GiB copies) and the host's DRAM read and
#        copy bandwidth probed around each backend's cold and warm walks;
#     3. root discovery's page scan (`ptwalk roots`), cpu against cuda, on one
#        generated 1 GiB image (10,000 roots), with a known root and as a census;
#     4. the GPU tests again under compute-sanitizer memcheck, in the time left;
#     5. <date>-<device>.md, the record, beside .json, -streamed.json,
#        -tests.txt and -memcheck.txt.
#   Every step has its own time limit and a failing step is recorded, not fatal;
#   the exit status says whether everything passed.
#
# Environment: BUILD_DIR (build-gpu), PTWALK_CMAKE_ARGS (--prepare: more cmake options), SHAPE (bench,pages=3072), SIZES
# (100,1000,10000), REPEAT (3), RESULTS_DIR ($OUT when set, else bench/results),
# GPU_CHECK_BUDGET_S (500: seconds the whole check may take; memcheck gets what
# steps 1-3 leave). For a dry run on a machine without a GPU:
# GPU_CHECK_ALLOW_NO_GPU=1 (tests skip, cuda is reported as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build-gpu}
SHAPE=${SHAPE:-bench,pages=3072}
SIZES=${SIZES:-100,1000,10000}
REPEAT=${REPEAT:-3}
RESULTS_DIR=${RESULTS_DIR:-${OUT:-bench/results}}
STREAM_SHAPE=${STREAM_SHAPE:-bench,pages=1024,snapshots=10,spaces=1000}
SCAN_SHAPE=${SCAN_SHAPE:-bench,spaces=10000,large}
BUDGET=${GPU_CHECK_BUDGET_S:-500}

carry=$BUILD_DIR/carry
ptwalk=$carry/bin/ptwalk
gpu_tests=$carry/bin/ptwalk_gpu_tests

log() { printf '\n== %s (%d s)\n' "$*" "$SECONDS" >&2; }

if [[ ${1:-} == --prepare ]]; then
  log "building ptwalk and the GPU tests in $BUILD_DIR (sm_90, no MPI)"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPTWALK_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DPTWALK_MPI=OFF -DPTWALK_BUILD_BENCH=OFF \
        '-DCMAKE_BUILD_RPATH=$ORIGIN/../lib' ${PTWALK_CMAKE_ARGS:-} >&2
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target ptwalk ptwalk_gpu_tests >&2
  rm -rf "$carry" && mkdir -p "$carry/bin" "$carry/lib"
  strip -o "$ptwalk" "$BUILD_DIR/host/ptwalk"
  strip -o "$gpu_tests" "$BUILD_DIR/tests/ptwalk_gpu_tests"
  # The C and C++ runtimes and the driver come with the GPU machine (newer
  # there; nvcc needs them); every other library travels, found through the
  # binaries' RUNPATH ($ORIGIN/../lib), so no LD_LIBRARY_PATH reaches
  # nvidia-smi or compute-sanitizer.
  ldd "$ptwalk" "$gpu_tests" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|ld-linux[^/]*)\.so' |
    xargs -r cp -L -t "$carry/lib"
  "$ptwalk" --version >&2
  log "carry $carry ($(du -sh "$carry" | cut -f1)): run, with carry [\"$carry\"] and timeout_s $((BUDGET + 60)):"
  echo "bench/gpu-check.sh"
  exit 0
fi

# The archive's GPU test runs the CLI: the carried one, not the build path baked in.
export PTWALK_BINARY=$PWD/$ptwalk
if ! version=$("$ptwalk" --version 2>&1); then
  echo "gpu-check: $ptwalk does not run here: $version" >&2
  echo "gpu-check: run 'bench/gpu-check.sh --prepare' on the build machine and carry $carry" >&2
  exit 1
fi
printf '%s\n' "$version" >&2
if ! grep -q '^backends:.*cuda' <<<"$version"; then
  echo "gpu-check: $ptwalk was built without the cuda backend" >&2
  exit 1
fi
if grep -q '^GPU: none' <<<"$version" && [[ -z ${GPU_CHECK_ALLOW_NO_GPU:-} ]]; then
  echo "gpu-check: no GPU visible ($(grep '^GPU:' <<<"$version")); set GPU_CHECK_ALLOW_NO_GPU=1 for a dry run" >&2
  exit 1
fi

device=$(sed -n 's/^GPU: //p' <<<"$version")
device_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
device_name=${device_name:-${device%% (*}}
[[ $device_name == none ]] && device_name=""
slug=$(tr '[:upper:]' '[:lower:]' <<<"$device_name" | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
stamp=$(date -u +%Y-%m-%d)
mkdir -p "$RESULTS_DIR"
base=$RESULTS_DIR/$stamp-${slug:-no-gpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs "$@" with at most $1 seconds. Status: the command's, 124 or 137 when it ran out of time.
limited() { local seconds=$1; shift; timeout -k 10 "$seconds" "$@"; }
# A step: "$@" with at most $1 seconds, its output into file $2; prints
# passed, TIMED OUT or FAILED (status N).
step() {
  local seconds=$1 out=$2 rc=0
  shift 2
  limited "$seconds" "$@" >"$out" 2>&1 || rc=$?
  case $rc in
    0) echo passed ;;
    124 | 137) echo "TIMED OUT" ;;
    *) echo "FAILED (status $rc)" ;;
  esac
}

# 1. GPU tests, plainly.
log "GPU tests"
tests_status=$(step 150 "$base-tests.txt" "$gpu_tests")
tail -8 "$base-tests.txt" >&2
log "cuda walk against the independent SPEC walker"
independent_backends=reference
grep -q '^GPU: none' <<<"$version" || independent_backends=cuda
independent_status=$(step 60 "$base-independent.txt" python3 tests/independent/compare.py "$ptwalk" --quick \
  --backends "$independent_backends")
tail -1 "$base-independent.txt" >&2

# 2. The fleet benchmark: sizes sweep, then a fleet streamed in batches.
log "fleet benchmark: $SHAPE at $SIZES spaces"
# No gnuplot on the GPU machine: no plot (ptwalk bench would fail on --plot).
plot_args=()
command -v gnuplot >/dev/null 2>&1 && plot_args=(--plot "$base.png")
# Compaction is CPU work, measured on the CPU machines; here it would only spend device time.
bench_status=$(step 300 "$work/bench.txt" "$ptwalk" bench --gen "$SHAPE" --sizes "$SIZES" \
  --backends reference,cpu,cuda --repeat "$REPEAT" --no-compaction --json "$base.json" "${plot_args[@]}")
cat "$work/bench.txt" >&2
log "streaming: $STREAM_SHAPE in batches of at most 2000 spaces"
stream_status=$(step 90 "$work/stream.txt" "$ptwalk" bench --gen "$STREAM_SHAPE" --backends cpu,cuda \
  --repeat "$REPEAT" --max-batch-spaces 2000 --no-compaction --json "$base-streamed.json")
cat "$work/stream.txt" >&2

# 3. Root discovery's page scan, cpu against cuda, on one image: each run's
# summary line (pages/s of the scan, device setup apart, phases on cuda).
log "root scan: $SCAN_SHAPE, backends cpu and cuda"
scan_status=passed
if limited 90 "$ptwalk" gen --out "$work/scan" --shape "$SCAN_SHAPE" >/dev/null 2>"$work/scan.txt"; then
  scan_image=$(ls "$work"/scan/*.img | head -1)
  scan_hint=$(sed -n '1s/.*"roots":\["\(0x[0-9a-f]*\)".*/\1/p' "$work/scan/manifest.jsonl")
  scan_backends=(cpu)
  grep -q '^GPU: none' <<<"$version" || scan_backends+=(cuda)
  for backend in "${scan_backends[@]}"; do
    for _ in $(seq "$REPEAT"); do
      limited 60 "$ptwalk" roots "$scan_image" --hint "$scan_hint" --backend "$backend" 2>&1 >/dev/null | tail -1 ||
        scan_status="FAILED ($backend)"
    done
    census=$(limited 60 "$ptwalk" roots "$scan_image" --backend "$backend" 2>&1 >/dev/null | tail -1) ||
      scan_status="FAILED ($backend census)"
    echo "census: $census"
  done >>"$work/scan.txt"
else
  scan_status="FAILED (gen)"
fi
cat "$work/scan.txt" >&2
rm -rf "$work/scan"

# 4. The GPU tests under compute-sanitizer memcheck, in the time left.
sanitizer=$(command -v compute-sanitizer || true)
for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z $sanitizer && -x $candidate ]] && sanitizer=$candidate
done
sanitizer_status="not installed"
left=$((BUDGET - SECONDS))
if [[ -n $sanitizer ]] && ((left < 60)); then
  sanitizer_status="not run ($left s of the budget left)"
elif [[ -n $sanitizer ]]; then
  log "GPU tests under compute-sanitizer memcheck ($left s left)"
  sanitizer_status=$(step "$left" "$base-memcheck.txt" "$sanitizer" --tool memcheck --error-exitcode 3 \
    --print-limit 50 "$gpu_tests" --gtest_brief=1)
  case $sanitizer_status in
    passed) sanitizer_status=clean ;;
    "FAILED (status 3)") sanitizer_status="FAILED (memcheck found errors)" ;;
  esac
  tail -5 "$base-memcheck.txt" >&2
fi

# 5. The human-readable record.
files=("$(basename "$base").json (all sizes, machine, phases)" "$(basename "$base")-streamed.json"
       "$(basename "$base")-tests.txt" "$(basename "$base")-independent.txt")
[[ -f $base-memcheck.txt ]] && files+=("$(basename "$base")-memcheck.txt")
[[ -f $base.png ]] && files+=("$(basename "$base").png")
{
  echo "# GPU check $stamp: ${device_name:-no GPU}"
  echo
  echo '```'
  echo "$version"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
    --format=csv 2>/dev/null || echo "(nvidia-smi not available)"
  "${sanitizer:-false}" --version 2>/dev/null | tail -1 || true
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $SECONDS s"
  echo '```'
  echo
  echo "- independent SPEC walker (--quick, backend $independent_backends): $independent_status ($(tail -1 "$base-independent.txt"))"
  echo "- GPU tests: $tests_status ($(grep -Eo '\[ +(PASSED|SKIPPED|FAILED) +\] [0-9]+ tests?' "$base-tests.txt" | tr '\n' ' '))"
  echo "- fleet benchmark: $bench_status; streamed: $stream_status"
  echo "- root scan: $scan_status"
  echo "- compute-sanitizer memcheck: $sanitizer_status"
  echo
  echo "## Fleet benchmark ($SHAPE; sizes $SIZES; repeat $REPEAT)"
  echo
  echo '```'
  cat "$work/bench.txt"
  echo '```'
  echo
  echo "## Streamed through the GPU in batches of at most 2000 spaces ($STREAM_SHAPE)"
  echo
  echo '```'
  cat "$work/stream.txt"
  echo '```'
  echo
  echo "## Root discovery's page scan ($SCAN_SHAPE; cpu, then cuda; $REPEAT runs with a known root, then a census)"
  echo
  echo '```'
  cat "$work/scan.txt"
  echo '```'
  echo
  printf -v list '%s, ' "${files[@]}"
  echo "Files: ${list%, }."
} >"$base.md"
log "wrote $base.md"
[[ $tests_status == passed && $bench_status == passed && $stream_status == passed && $scan_status == passed &&
   $sanitizer_status != FAILED* && $sanitizer_status != TIMED* ]]
