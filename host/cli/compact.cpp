// host/cli/compact.cpp — `ptwalk compact`: relink and compact every snapshot of a fleet.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "cluster/shard_part.hpp"
#include "common/atomic_file.hpp"
#include "command.hpp"
#include "report_output.hpp"
#include "compact/compact_job.hpp"
#include "progress_line.hpp"
#include "shard_options.hpp"

namespace ptwalk::cli {
namespace {

struct compact_cli_options {
  std::string manifest;
  std::string out;
  std::string backend = "auto";
  std::string report;
  unsigned jobs = 0;
  std::size_t batch = 0;
  bool verify = false, keep_pa = false, keep_unbacked = false, cow_writable = false;
  bool progress = false, force = false;
  std::string shard;
};

void run_compact(const compact_cli_options& o) {
  compact_options options;
  options.policy = {o.keep_pa, o.keep_unbacked || o.keep_pa, o.cow_writable};
  options.backend = *parse_backend(o.backend);
  options.jobs = o.jobs;
  options.batch_size = o.batch;
  options.verify = o.verify;
  options.replace = o.force;
  const sharding shard = resolve_shard("compact", o.shard, o.manifest, read_manifest(o.manifest));
  if (shard.plan) {
    options.first = shard.plan->first;
    options.end = shard.plan->end;
    // The shard's record and report go into the part, in its atomic commit.
    options.before_commit = [part = shard_part{"compact", *shard.plan, options.policy.to_json()}](
                                const std::filesystem::path& staging, const compact_report& report) {
      atomic_output_file record(staging / shard_record_file);
      record.stream() << nlohmann::ordered_json{{"shard", part.to_json()}, {"report", report.to_json()}}.dump(2)
                      << '\n';
      record.commit();
    };
  }
  // Created first so an unwritable report path fails before a long job.
  std::optional<atomic_output_file> report_file;
  if (!o.report.empty()) report_file.emplace(o.report);

  progress_line progress("compact", o.progress);
  const compact_report report = run_compact_job(o.manifest, o.out, options, progress.callback());
  progress.finish();

  publish_report(report, report_file);
  if (!report.committed)
    throw input_error(fmt::format("{}: verification found {} difference{}; nothing was written", o.out,
                                  report.verify.counts.difference_count,
                                  report.verify.counts.difference_count == 1 ? "" : "s"));
}

void setup_compact(CLI::App& app) {
  auto o = std::make_shared<compact_cli_options>();
  auto* cmd = app.add_subcommand(
      "compact",
      "Rebuild every snapshot of a fleet as a compact image: one copy of each mapped frame,\n"
      "page tables rebuilt after them with every shared table still shared (SPEC §4).\n"
      "Writes OUT/manifest.jsonl and one image per snapshot, all or nothing.");
  cmd->add_option("manifest", o->manifest, "fleet manifest (JSON Lines)")->required();
  cmd->add_option("--out", o->out, "output directory (built beside it, then renamed into place)")->required();
  cmd->add_flag("--verify", o->verify, "verify every compacted snapshot against its original before committing");
  cmd->add_option("--jobs", o->jobs, "compaction threads (default: every core)");
  cmd->add_option("--batch", o->batch, "snapshots per walk batch (default: 2 per job, 4..256)");
  cmd->add_option("--backend", o->backend, "walker")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_flag("--keep-pa", o->keep_pa,
                "no relocation: every mapped frame stays at its physical address, unmapped ones are dropped\n"
                "(for general OS images, which keep physical addresses in their own data); implies --keep-unbacked");
  cmd->add_flag("--keep-unbacked", o->keep_unbacked,
                "keep leaves whose frame the image does not back, at their physical address (default: drop them)");
  cmd->add_flag("--cow-writable", o->cow_writable,
                "make writable leaves read-only copy-on-write leaves (bits 11:9 = 0b001), as Hyperlight does");
  cmd->add_flag("--progress", o->progress, "show progress on stderr even when it is not a terminal");
  cmd->add_option("--report", o->report, "also write the final report as JSON to this file");
  cmd->add_flag("--force", o->force, "replace --out if it exists and is not empty (a rerun shard does)");
  add_shard_option(*cmd, o->shard);
  cmd->callback([o] { run_compact(*o); });
}

}  // namespace

PTWALK_COMMAND(40, setup_compact);

}  // namespace ptwalk::cli
