// host/cli/merge.cpp — `ptwalk merge`: shard parts of a walk, roots, import or compact into the
// single-process output.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "cluster/merge.hpp"
#include "command.hpp"
#include "report_output.hpp"
#include "common/atomic_file.hpp"

namespace ptwalk::cli {
namespace {

struct merge_options {
  std::vector<std::string> parts;
  std::string out;
  std::string report;
  bool force = false;
};

void run_merge(const merge_options& o) {
  if (!o.report.empty() && !std::filesystem::is_directory(o.parts.front()))
    throw input_error(fmt::format("merge: --report is for compact parts (directories); {} is not one", o.parts.front()));
  // Created first so an unwritable report path fails before the merge.
  std::optional<atomic_output_file> report_file;
  if (!o.report.empty()) report_file.emplace(o.report);
  const merge_result result = merge_parts(o.out, o.parts, o.force);
  fmt::print(stderr, "ptwalk merge: {} parts of `{}` over {} snapshots of {} -> {}\n", result.shards, result.command,
             result.snapshots, result.manifest, o.out);
  if (result.report) publish_report(*result.report, report_file);
}

void setup_merge(CLI::App& app) {
  auto o = std::make_shared<merge_options>();
  auto* cmd = app.add_subcommand(
      "merge",
      "Combine the parts the shards of a cluster job wrote (walk JSON Lines files, roots listings,\n"
      "import manifests, or compact output directories) into the bytes one process writes for the\n"
      "whole manifest or list of dumps. Refuses a set that is incomplete or mixes jobs, naming the\n"
      "missing shards; writes nothing then.");
  cmd->add_option("parts", o->parts, "the shards' outputs, in any order")->required();
  cmd->add_option("--out", o->out,
                  "merged output: a file for walk, roots and import parts, a directory for compact parts")
      ->required();
  cmd->add_option("--report", o->report, "compact parts: also write the summed report as JSON to this file");
  cmd->add_flag("--force", o->force, "compact parts: replace --out if it exists and is not empty");
  cmd->callback([o] { run_merge(*o); });
}

}  // namespace

PTWALK_COMMAND(45, setup_merge);

}  // namespace ptwalk::cli
