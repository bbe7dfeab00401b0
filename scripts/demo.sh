#!/usr/bin/env bash
# The README's first command: installs what is missing, builds ptwalk, and runs
# `ptwalk demo` (generate a small fleet, compact it, verify it, explain it).
# Arguments are passed to the demo, e.g. scripts/demo.sh --keep /tmp/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${PTWALK_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$(nproc)" --target ptwalk
exec build/host/ptwalk demo "$@"
