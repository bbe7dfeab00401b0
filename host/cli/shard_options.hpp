// host/cli/shard_options.hpp — `--shard` and the launcher's variables, one parser for every command.
//
// walk, compact and verify add the option with add_shard_option and call
// resolve_shard once they know their manifest: it reads the launcher's
// variables (cluster/shard.hpp), picks this process's GPU, cuts the
// manifest and logs on stderr which shard, which snapshots and which GPU.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cluster/gpu_choice.hpp"
#include "cluster/shard.hpp"
#include "command.hpp"
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
};

// Resolves this process's share of `manifest` (its snapshots: `specs`).
inline sharding resolve_shard(std::string_view command, const std::string& shard_text,
                              const std::filesystem::path& manifest, const std::vector<snapshot_spec>& specs) {
  const environment env = process_environment();
  sharding out{detect_launch(shard_text, env), std::nullopt};
  const gpu_choice gpu = choose_gpu(out.how.local_rank, env, nvidia_devices_on_node());
  apply_gpu_choice(gpu);
  if (!out.how.shard) return out;
  out.plan = plan_shard(manifest, specs, *out.how.shard);
  fmt::print(stderr, "ptwalk {}: {}; GPU: {}\n", command, describe_shard(*out.plan, out.how.origin, specs),
             gpu.description);
  return out;
}

}  // namespace ptwalk::cli
