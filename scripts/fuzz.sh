#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan, seeds
# them from the tests' builders, and runs each for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: manifest elf_core kdump walker
#
# The corpus grows in $FUZZ_DIR/corpus/TARGET (default build-fuzz/) across
# runs; a crash, leak, sanitizer report or timeout leaves its input in
# $FUZZ_DIR/artifacts/ and makes the script fail. Reproduce one with
# build-fuzz/tests/fuzz/fuzz_TARGET ARTIFACT.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(manifest elf_core kdump walker)
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}

# clang 14 with its fuzzer runtime and OpenMP (Thrust's OMP system), from Debian.
scripts/setup.sh clang-14 libclang-rt-14-dev libomp-14-dev

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
start=$SECONDS
# Only the fuzz targets and the libraries they link are built.
cmake -S . -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 \
  -DPTWALK_CUDA=OFF -DPTWALK_FUZZ=ON -DPTWALK_BUILD_TESTS=OFF -DPTWALK_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$FUZZ_DIR" -j "$(nproc)" --target ptwalk_fuzz
echo "fuzz: built in $((SECONDS - start)) s" >&2

seeds="$FUZZ_DIR/seeds"
rm -rf "$seeds"
"$FUZZ_DIR/tests/fuzz/ptwalk_fuzz_seeds" "$seeds"
mkdir -p "$FUZZ_DIR/artifacts"
failed=()
for t in "${targets[@]}"; do
  corpus="$FUZZ_DIR/corpus/$t"
  mkdir -p "$corpus"
  echo "fuzz: $t for ${seconds} s" >&2
  # One process: inputs are files in /dev/shm named by pid, and the walker
  # target starts its own threads. Leaks are reported (the run fails).
  # The walker's AArch64 seeds (64 KiB granules) reach about 550 KiB.
  max_len=262144
  [ "$t" = walker ] && max_len=1048576
  if ! "$FUZZ_DIR/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len="$max_len" \
      -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/artifacts/$t-" "$corpus" "$seeds/$t" \
      >"$FUZZ_DIR/$t.log" 2>&1; then
    failed+=("$t")
    tail -n 60 "$FUZZ_DIR/$t.log" >&2
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$FUZZ_DIR/$t.log" | sed "s/^/fuzz: $t: /" >&2 || true
done
echo "fuzz: done in $((SECONDS - start)) s" >&2
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $FUZZ_DIR/artifacts/)" >&2
  exit 1
fi
