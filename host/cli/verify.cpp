// host/cli/verify.cpp — `ptwalk verify ORIGINAL COMPACTED`: prove a compaction changed nothing it should not.
#include <algorithm>
#include <memory>
#include <span>

#include <fmt/format.h>

#include "command.hpp"
#include "common/disk_usage.hpp"
#include "input/manifest.hpp"
#include "compact/verifier.hpp"
#include "shard_options.hpp"

namespace ptwalk::cli {
namespace {

struct verify_cli_options {
  std::string original;
  std::string compacted;
  unsigned jobs = 0;
  std::size_t max_differences = 10;
  std::string shard;
};

// The files behind a loaded manifest's snapshots, each once.
disk_usage fleet_disk_usage(std::span<const loaded_snapshot> fleet, const std::filesystem::path& manifest) {
  std::vector<std::filesystem::path> files;
  for (const auto& snapshot : fleet)
    for (auto& file : memory_files(snapshot.spec.memory, manifest.parent_path())) files.push_back(std::move(file));
  return disk_usage_of(files);
}

void run_verify(const verify_cli_options& o) {
  const std::vector<snapshot_spec> specs = read_manifest(o.original);
  const sharding shard = resolve_shard("verify", o.shard, o.original, specs);
  const std::size_t first = shard.first(), end = shard.end(specs.size());
  const std::vector<loaded_snapshot> original = load_specs(std::span(specs).subspan(first, end - first), o.original);
  // A shard checks its originals against their namesakes (verify_fleet pairs by id).
  std::vector<snapshot_spec> partners = read_manifest(o.compacted);
  if (shard.plan)
    std::erase_if(partners, [&](const snapshot_spec& s) {
      return std::none_of(original.begin(), original.end(), [&](const auto& x) { return x.id() == s.id; });
    });
  const std::vector<loaded_snapshot> compacted = load_specs(partners, o.compacted);
  verification result = verify_fleet(original, compacted, o.jobs, o.max_differences);
  result.disk_before = fleet_disk_usage(original, o.original);
  result.disk_after = fleet_disk_usage(compacted, o.compacted);
  fmt::print("{}", format_verification(result));
  std::fflush(stdout);
  if (!result.ok())
    throw input_error(fmt::format("{}: {} difference{} from {}", o.compacted, result.counts.difference_count,
                                  result.counts.difference_count == 1 ? "" : "s", o.original));
}

void setup_verify(CLI::App& app) {
  auto o = std::make_shared<verify_cli_options>();
  auto* cmd = app.add_subcommand(
      "verify",
      "Check a compacted fleet against its original, independently of the compactor: every space,\n"
      "every mapped VA: same page size, permissions, CoW flag and bytes (as the recorded policy\n"
      "allows); every shared table still shared. Prints sizes before and after; exits non-zero\n"
      "naming the first differences.");
  cmd->add_option("original", o->original, "manifest of the original fleet")->required();
  cmd->add_option("compacted", o->compacted, "manifest of the compacted fleet")->required();
  cmd->add_option("--jobs", o->jobs, "threads (default: every core)");
  cmd->add_option("--max-differences", o->max_differences, "differences to list")->capture_default_str();
  add_shard_option(*cmd, o->shard);
  cmd->callback([o] { run_verify(*o); });
}

}  // namespace

PTWALK_COMMAND(50, setup_verify);

}  // namespace ptwalk::cli
