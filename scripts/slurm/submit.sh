#!/usr/bin/env bash
# Submits a ptwalk array job over a manifest and the merge job that depends on it.
#
#   scripts/slurm/submit.sh COMMAND MANIFEST OUT SHARDS [OPTION...]
#
# COMMAND: walk (OUT is a JSON Lines file) or compact (OUT is a directory);
# roots (OUT: the listing) or import (OUT: the manifest), where MANIFEST is a
# file naming the dumps, one per line.
# SHARDS array tasks run at most PTWALK_PARALLEL (default: all) at a time,
# each on PTWALK_GPUS_PER_TASK GPUs (default 1; 0 on a cluster without GPUs)
# and PTWALK_CPUS_PER_TASK cores (default 1; compaction uses every core it gets);
# parts go to OUT.parts/. OPTIONs go to every shard (e.g. --verify, --backend).
# Prints the array job's id and the merge job's id.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command=$1 manifest=$2 out=$3 shards=$4
shift 4
parts="$out.parts"
mkdir -p "$parts"
resources=(--cpus-per-task="${PTWALK_CPUS_PER_TASK:-1}")
((${PTWALK_GPUS_PER_TASK:-1} > 0)) && resources+=(--gpus-per-task="${PTWALK_GPUS_PER_TASK:-1}")
array=$(sbatch --parsable --array="0-$((shards - 1))%${PTWALK_PARALLEL:-$shards}" "${resources[@]}" \
  --chdir="$PWD" "$here/shard.sbatch" "$command" "$manifest" "$parts" "$@")
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=no --chdir="$PWD" \
  "$here/merge.sbatch" "$parts" "$out" $([ "$command" = compact ] && echo --force))
echo "$array $merge"
