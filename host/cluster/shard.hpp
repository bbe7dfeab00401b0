// host/cluster/shard.hpp — which share of a manifest this process takes in a cluster job.
//
// A shard is a contiguous range of the manifest's snapshots (for `roots`
// and `import`, of the dumps named on the command line). The ranges are
// cut where the running sum of the snapshots' work crosses i/N of the total
// (work: guest memory bytes plus a per-root cost), so every process given the same
// manifest and N computes the same ranges without talking to the others,
// shards are balanced by work rather than by line count, and the outputs of
// shards 0..N-1 laid end to end are the single-process output.
//
// The share comes from `--shard I/N` when given, else from the launcher's
// variables: a Slurm job array (SLURM_ARRAY_TASK_ID, _COUNT, _MIN), a Slurm
// step (SLURM_PROCID, SLURM_NTASKS, only inside a step: SLURM_STEP_ID), an
// MPI launch (OMPI_COMM_WORLD_RANK/_SIZE, PMI_RANK/PMI_SIZE). An array task
// that runs a step of several tasks takes task t of T inside array task a
// of A: shard a*T + t of A*T.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "input/snapshot.hpp"

namespace ptwalk {

struct shard_id {
  std::size_t index = 0;
  std::size_t count = 1;
  friend bool operator==(const shard_id&, const shard_id&) = default;
};

// How this process was launched, as its environment says.
struct launch {
  std::optional<shard_id> shard;  // none: not part of a sharded job
  std::string origin;             // "--shard 1/3", "SLURM_ARRAY_TASK_ID=4 of 8", ...
  bool mpi = false;               // started by mpirun/mpiexec with more than one rank
  std::optional<std::size_t> local_rank;  // index among this node's processes, when known
};

// The environment as the launcher left it; tests pass their own.
using environment = std::function<std::optional<std::string>(std::string_view)>;
[[nodiscard]] environment process_environment();

// "I/N" with 0 <= I < N; throws input_error("--shard: ...") otherwise.
[[nodiscard]] shard_id parse_shard(std::string_view text);
// `explicit_shard` ("I/N", "none" or empty) wins over the environment;
// "none" ignores the launcher. Throws input_error naming a malformed variable.
[[nodiscard]] launch detect_launch(std::string_view explicit_shard, const environment& env);

// Work of one snapshot: the bytes of guest memory its source yields (file
// sizes; a compressed kdump's dumped pages, see dump_work) plus root_work per root.
inline constexpr std::uint64_t root_work_bytes = std::uint64_t{1} << 20;
[[nodiscard]] std::uint64_t snapshot_work(const snapshot_spec& spec, const std::filesystem::path& base_dir);

// Work of one dump of `roots` or `import`: the bytes of guest memory it
// yields. ELF cores and raw files: their size. A compressed kdump (known by
// its first bytes, as opening it does): its dumped pages times its page
// size, from its headers and bitmaps without decompressing a page, since
// its file can be a small fraction of the memory it decompresses to. A
// damaged kdump throws input_error naming it.
[[nodiscard]] std::uint64_t dump_work(const std::filesystem::path& dump);

// The N+1 cut points over `work` (cuts[i]..cuts[i+1] is shard i): each cut
// at the snapshot boundary nearest to i/N of the total work, never before the previous one.
[[nodiscard]] std::vector<std::size_t> shard_cuts(std::span<const std::uint64_t> work, std::size_t count);

// One shard of one fleet: what the process walks, compacts, verifies, imports.
struct shard_plan {
  shard_id shard;
  std::size_t first = 0, end = 0;  // manifest indexes [first, end)
  std::size_t snapshots = 0;       // in the whole manifest
  std::string manifest;            // as given; a dump list: "the N dumps FIRST .. LAST"
  std::string manifest_sha256;     // which fleet: SHA-256 of the manifest, or of the dumps' names and sizes
};

// Cuts the manifest whose snapshots are `specs` (read_manifest) by their work.
[[nodiscard]] shard_plan plan_shard(const std::filesystem::path& manifest, std::span<const snapshot_spec> specs,
                                    shard_id shard);
// Cuts a list of dumps (`roots`, `import`) by their dump_work; the fleet's
// identity is the SHA-256 of their names as given and their file sizes.
[[nodiscard]] shard_plan plan_dump_shard(std::span<const std::string> dumps, shard_id shard);

// "shard 1/3 (SLURM_ARRAY_TASK_ID=1 of 3): snapshots 4..7 of 12 in M (a .. d)"
[[nodiscard]] std::string describe_shard(const shard_plan& plan, std::string_view origin,
                                         std::span<const snapshot_spec> specs);
// "shard 1/3 (--shard 1/3): dumps 2..3 of 5 (b.core .. c.core)"
[[nodiscard]] std::string describe_dump_shard(const shard_plan& plan, std::string_view origin,
                                              std::span<const std::string> dumps);

}  // namespace ptwalk
