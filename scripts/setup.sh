#!/usr/bin/env bash
# Installs what ptwalk needs to build and test, from Debian's packages, if
# missing; extra package names given as arguments too (scripts/fuzz.sh's clang).
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config libcli11-dev nlohmann-json3-dev libfmt-dev libgtest-dev
          libbenchmark-dev gnuplot-nox zlib1g-dev liblzo2-dev libsnappy-dev libzstd-dev
          libssl-dev openmpi-bin libopenmpi-dev slurm-wlm munge "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
