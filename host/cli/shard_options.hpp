// host/cli/shard_options.hpp — `--shard` and the launcher's variables, one parser for every command.
//
// walk, compact, verify and archive add add the option with
// add_shard_option and call resolve_shard once they know their manifest
// (roots and import: resolve_dump_shard with their dumps): it reads the
// launcher's variables (cluster/shard.hpp), picks this process's GPU, cuts
// the fleet and logs on stderr which shard, which snapshots and which GPU.
// Commands that write one stream (walk, roots, import) write their share
// with write_share (write_output, or under an MPI launch write_together).
#pragma once

#include <exception>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cluster/gpu_choice.hpp"
#include "cluster/mpi_world.hpp"
#include "cluster/shard.hpp"
#include "cluster/shard_part.hpp"
#include "command.hpp"
#include "common/atomic_file.hpp"
#include "input/manifest.hpp"

namespace ptwalk::cli {

inline void add_shard_option(CLI::App& cmd, std::string& text) {
  cmd.add_option("--shard", text,
                 "take shard I of N (I/N) of the manifest; default: from SLURM_ARRAY_TASK_ID/_COUNT, "
                 "SLURM_PROCID/SLURM_NTASKS (in a step), OMPI_COMM_WORLD_RANK/_SIZE or PMI_RANK/PMI_SIZE; "
                 "\"none\": the whole manifest whatever the launcher says");
}

struct sharding {
  launch how;
  std::optional<shard_plan> plan;  // none: the whole manifest, as one process

  // This process's items [first(), end(count)) of `count`: all unless sharded.
  [[nodiscard]] std::size_t first() const { return plan ? plan->first : 0; }
  [[nodiscard]] std::size_t end(std::size_t count) const { return plan ? plan->end : count; }
};

// The launch, the GPU and, when sharded, the plan `plan` cuts and the line `describe` writes for it.
inline sharding resolve_sharding(std::string_view command, const std::string& shard_text,
                                 const std::function<shard_plan(shard_id)>& plan,
                                 const std::function<std::string(const shard_plan&, std::string_view)>& describe) {
  const environment env = process_environment();
  sharding out{detect_launch(shard_text, env), std::nullopt};
  const gpu_choice gpu = choose_gpu(out.how.local_rank, env, nvidia_devices_on_node());
  apply_gpu_choice(gpu);
  if (!out.how.shard) return out;
  out.plan = plan(*out.how.shard);
  fmt::print(stderr, "ptwalk {}: {}; GPU: {}\n", command, describe(*out.plan, out.how.origin), gpu.description);
  return out;
}

// Resolves this process's share of `manifest` (its snapshots: `specs`).
inline sharding resolve_shard(std::string_view command, const std::string& shard_text,
                              const std::filesystem::path& manifest, const std::vector<snapshot_spec>& specs) {
  return resolve_sharding(
      command, shard_text, [&](shard_id shard) { return plan_shard(manifest, specs, shard); },
      [&](const shard_plan& plan, std::string_view origin) { return describe_shard(plan, origin, specs); });
}

// Resolves this process's share of the dumps `roots` or `import` was given.
inline sharding resolve_dump_shard(std::string_view command, const std::string& shard_text,
                                   const std::vector<std::string>& dumps) {
  return resolve_sharding(
      command, shard_text, [&](shard_id shard) { return plan_dump_shard(dumps, shard); },
      [&](const shard_plan& plan, std::string_view origin) { return describe_dump_shard(plan, origin, dumps); });
}

// Writes to `out`, or stdout when empty (as `-`: a failed write names its
// errno). The file is created first, so an unwritable destination fails
// before a long run, and appears only on commit.
inline void write_output(const std::string& out, const std::function<void(std::ostream&)>& write) {
  atomic_output_file file(out.empty() ? "-" : out);
  write(file.stream());
  file.commit();
}

// The ranks of one MPI launch each `produce` their shard's bytes and rank 0
// writes them, in rank order, to `out` (stdout when empty) as the
// single-process output; if any rank fails, nothing is written.
inline void write_together(std::string_view command, const std::string& out,
                           const std::function<void(std::ostream&)>& produce) {
  const mpi_world world;
  std::string bytes;
  std::exception_ptr error;
  try {
    // Rank 0 opens the output first, so an unwritable destination fails before the work.
    std::optional<atomic_output_file> probe;
    if (world.rank() == 0 && !out.empty()) probe.emplace(out);
    std::ostringstream records;
    produce(records);
    bytes = std::move(records).str();
  } catch (...) {
    error = std::current_exception();
  }
  world.succeed_together(error, fmt::format("{}: rank {} of {}: another rank failed; {} was not written", command,
                                            world.rank(), world.size(), out.empty() ? "stdout" : out));
  world.gather_to_root(bytes);
  if (world.rank() == 0) write_output(out, [&](std::ostream& stream) { stream << bytes; });
}

// The output of a one-stream command (walk, roots, import): under an MPI
// launch every rank's `share` together; else this process's `share` to
// `out`, after a shard record (with `part_options`) when it is one shard.
inline void write_share(std::string_view command, const sharding& shard, const nlohmann::json& part_options,
                        const std::string& out, const std::function<void(std::ostream&)>& share) {
  if (shard.how.mpi) return write_together(command, out, share);
  write_output(out, [&](std::ostream& stream) {
    if (shard.plan) stream << shard_part{std::string(command), *shard.plan, part_options}.to_json().dump() << '\n';
    share(stream);
  });
}

}  // namespace ptwalk::cli
