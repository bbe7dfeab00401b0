#!/usr/bin/env bash
# bench/gpu-check.sh — the one script to run on a GPU machine (H100/H200, CUDA 13, no network).
#
#   1. uses the binaries of a build made elsewhere and carried along
#      ($BUILD_DIR/host/ptwalk, $BUILD_DIR/tests/ptwalk_gpu_tests) if they run
#      here, else configures and builds just those two for sm_90;
#   2. runs the GPU tests (what `ctest -L gpu` runs) under compute-sanitizer
#      memcheck when it is installed, then once more plainly;
#   3. runs the fleet benchmark on generated fleets of 100, 1,000 and 10,000
#      spaces (the largest over a million page-table pages), and a fleet of
#      ten snapshots streamed through the GPU in small batches; the yardsticks
#      are the device's copy bandwidth (device to device, max(1 GiB, 16x L2),
#      far above L2) and pinned host-to-device bandwidth (1 GiB copies), and
#      the host's DRAM read and copy bandwidth probed before and after each
#      backend's cold and warm walks (ptwalk bench);
#   3b. times root discovery's page scan (`ptwalk roots`) with --backend cpu
#      and --backend cuda on one generated 1 GiB image (10,000 roots), with a
#      known root and as a census;
#   4. writes bench/results/<date>-<device>.json, .md and .png naming the device.
#
# Environment: BUILD_DIR (default build-gpu), SHAPE (bench,pages=3072), SIZES
# (100,1000,10000), REPEAT (3), RESULTS_DIR (bench/results). For a dry run on a
# machine without a GPU: GPU_CHECK_ALLOW_NO_GPU=1 (tests skip, cuda is
# reported as skipped, everything else runs).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build-gpu}
SHAPE=${SHAPE:-bench,pages=3072}
SIZES=${SIZES:-100,1000,10000}
REPEAT=${REPEAT:-3}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
STREAM_SHAPE=${STREAM_SHAPE:-bench,pages=1024,snapshots=10,spaces=1000}
SCAN_SHAPE=${SCAN_SHAPE:-bench,spaces=10000,large}

log() { printf '\n== %s\n' "$*" >&2; }

# 1. Binaries: carried or built here.
ptwalk=$BUILD_DIR/host/ptwalk
gpu_tests=$BUILD_DIR/tests/ptwalk_gpu_tests
if [[ -x $ptwalk && -x $gpu_tests ]] && "$ptwalk" --version >/dev/null 2>&1 && "$gpu_tests" --gtest_list_tests >/dev/null 2>&1; then
  log "using the binaries in $BUILD_DIR"
else
  log "building ptwalk and the GPU tests in $BUILD_DIR (sm_90)"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPTWALK_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DPTWALK_BUILD_BENCH=OFF >&2
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target ptwalk ptwalk_gpu_tests >&2
fi
version=$("$ptwalk" --version)
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
slug=$(tr '[:upper:]' '[:lower:]' <<<"$device_name" | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
stamp=$(date -u +%Y-%m-%d)
mkdir -p "$RESULTS_DIR"
base=$RESULTS_DIR/$stamp-${slug:-no-gpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 2. GPU tests: under compute-sanitizer when there is one, then plainly.
sanitizer=$(command -v compute-sanitizer || true)
[[ -z $sanitizer && -x /usr/local/cuda/bin/compute-sanitizer ]] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
sanitizer_status="not installed"
if [[ -n $sanitizer ]]; then
  log "GPU tests under compute-sanitizer memcheck"
  if timeout 600 "$sanitizer" --tool memcheck --error-exitcode 3 "$gpu_tests" >"$work/sanitizer.txt" 2>&1; then
    sanitizer_status="clean"
  else
    sanitizer_status="FAILED (status $?)"
  fi
  tail -5 "$work/sanitizer.txt" >&2
fi
log "GPU tests"
tests_status=passed
"$gpu_tests" >"$work/tests.txt" 2>&1 || tests_status="FAILED (status $?)"
tail -8 "$work/tests.txt" >&2

# 3. The fleet benchmark: sizes sweep, then a fleet streamed in batches.
log "fleet benchmark: $SHAPE at $SIZES spaces"
# No gnuplot on the GPU machine: no plot (ptwalk bench would fail on --plot).
plot_args=()
command -v gnuplot >/dev/null 2>&1 && plot_args=(--plot "$base.png")
# Compaction is CPU work, measured on the CPU machines; here it would only spend device time.
"$ptwalk" bench --gen "$SHAPE" --sizes "$SIZES" --backends reference,cpu,cuda --repeat "$REPEAT" \
  --no-compaction --json "$base.json" "${plot_args[@]}" | tee "$work/bench.txt" >&2
log "streaming: $STREAM_SHAPE in batches of at most 2000 spaces"
"$ptwalk" bench --gen "$STREAM_SHAPE" --backends cpu,cuda --repeat "$REPEAT" --max-batch-spaces 2000 \
  --no-compaction --json "$base-streamed.json" | tee "$work/stream.txt" >&2

# 3b. Root discovery's page scan, cpu against cuda, on one image: each run's
# summary line (pages/s of the scan, device setup apart, phases on cuda).
log "root scan: $SCAN_SHAPE, backends cpu and cuda"
scan_status=passed
"$ptwalk" gen --out "$work/scan" --shape "$SCAN_SHAPE" >/dev/null
scan_image=$(ls "$work"/scan/*.img | head -1)
scan_hint=$(sed -n '1s/.*"roots":\["\(0x[0-9a-f]*\)".*/\1/p' "$work/scan/manifest.jsonl")
scan_backends=(cpu)
grep -q '^GPU: none' <<<"$version" || scan_backends+=(cuda)
for backend in "${scan_backends[@]}"; do
  for _ in $(seq "$REPEAT"); do
    "$ptwalk" roots "$scan_image" --hint "$scan_hint" --backend "$backend" 2>&1 >/dev/null | tail -1 ||
      scan_status="FAILED ($backend)"
  done
  census=$("$ptwalk" roots "$scan_image" --backend "$backend" 2>&1 >/dev/null | tail -1) ||
    scan_status="FAILED ($backend census)"
  echo "census: $census"
done > "$work/scan.txt"
cat "$work/scan.txt" >&2
rm -rf "$work/scan"

# 4. The human-readable record.
{
  echo "# GPU check $stamp: ${device_name:-no GPU}"
  echo
  echo '```'
  echo "$version"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
    --format=csv 2>/dev/null || echo "(nvidia-smi not available)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo '```'
  echo
  echo "- GPU tests: $tests_status ($(grep -Eo '\[ +(PASSED|SKIPPED|FAILED) +\] [0-9]+ tests?' "$work/tests.txt" | tr '\n' ' '))"
  echo "- compute-sanitizer memcheck: $sanitizer_status"
  echo "- root scan: $scan_status"
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
  echo "Files: $(basename "$base").json (all sizes, machine, phases), $(basename "$base")-streamed.json, $(basename "$base").png."
} >"$base.md"
log "wrote $base.md, $base.json, $base-streamed.json, $base.png"
[[ $tests_status == passed && $sanitizer_status != FAILED* && $scan_status == passed ]]
