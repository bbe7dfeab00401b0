// host/cli/archive.cpp — `ptwalk archive add|merge|restore|ls|check|rm|gc`: fleet archives (docs/ARCHIVE.md).
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "archive/archive_add.hpp"
#include "archive/archive_maintenance.hpp"
#include "archive/archive_read.hpp"
#include "cluster/archive_merge.hpp"
#include "common/atomic_file.hpp"
#include "cluster/distributed_add.hpp"
#include "command.hpp"
#include "compact/compact_job.hpp"
#include "input/manifest.hpp"
#include "shard_options.hpp"

namespace ptwalk::cli {
namespace {

namespace fs = std::filesystem;

struct archive_cli_options {
  std::string archive, manifest, snapshot, out, shard, report;
  std::vector<std::string> ids, parts;
  std::string backend = "auto";
  unsigned jobs = 0;
  int level = 3;
  bool compact = false, keep_pa = false, as_manifest = false;
};

double mib(u64 bytes) { return static_cast<double>(bytes) / (1 << 20); }

void print_add_report(const archive::add_report& r, std::optional<atomic_output_file>& report_file) {
  const double gbps = r.seconds > 0 ? static_cast<double>(r.input_bytes) / r.seconds / 1e9 : 0;
  fmt::print("archive add: {} snapshots, {:.1f} MiB of images in {:.2f} s ({:.2f} GB/s)\n", r.snapshots,
             mib(r.input_bytes), r.seconds, gbps);
  fmt::print("  pages in {}: zero {}, already stored {}, newly stored {}\n", r.pages, r.zero_pages, r.already_stored,
             r.newly_stored);
  fmt::print("  written {:.1f} MiB; archive {:.1f} MiB on disk\n", mib(r.written_bytes), mib(r.archive_bytes));
  fmt::print("  fleet dedup: {} non-zero pages held as {} distinct ({:.2f}x)\n", r.archive_nonzero_pages,
             r.archive_stored_pages,
             r.archive_stored_pages ? static_cast<double>(r.archive_nonzero_pages) / r.archive_stored_pages : 0.0);
  fmt::print("  pages hashed by {}\n", r.hash_backend.describe());
  std::fflush(stdout);
  if (report_file) {
    report_file->stream() << r.to_json().dump(2) << '\n';
    report_file->commit();
  }
}

void print_add_report(const archive::add_report& r) {
  std::optional<atomic_output_file> none;
  print_add_report(r, none);
}

void run_add(const archive_cli_options& o) {
  archive::add_options options;
  options.level = o.level;
  options.jobs = o.jobs;
  options.hash_backend = *parse_scan_backend(o.backend);
  // Opened first, so an unwritable --report fails before the archive changes.
  std::optional<atomic_output_file> report_file;
  if (!o.report.empty()) report_file.emplace(o.report);
  if (!o.compact) {
    const auto specs = read_manifest(o.manifest);
    const fs::path base_dir = fs::path(o.manifest).parent_path();
    const sharding shard = resolve_shard("archive add", o.shard, o.manifest, specs);
    if (shard.how.mpi) {
      const mpi_world world;
      const auto report = add_snapshots_distributed(world, o.archive, specs, *shard.plan, base_dir, options);
      if (world.rank() == 0) print_add_report(report, report_file);
      return;
    }
    if (!shard.plan) return print_add_report(archive::add_snapshots(o.archive, specs, base_dir, options), report_file);
    return print_add_report(add_shard_archive(o.archive, specs, *shard.plan, base_dir, options), report_file);
  }
  if (!o.shard.empty() && o.shard != "none")
    throw input_error("archive add: --compact takes the whole manifest (no --shard); compact by shard first");
  // The compacted images are staged beside the archive and removed afterwards.
  const fs::path archive = fs::absolute(o.archive).lexically_normal();
  const fs::path staging = archive.parent_path() / fmt::format(".{}.compact-{}", archive.filename().string(), ::getpid());
  struct remove_staging {
    fs::path path;
    ~remove_staging() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{staging};
  compact_options compact;
  compact.policy = {o.keep_pa, o.keep_pa, false};
  compact.jobs = o.jobs;
  const compact_report compacted = run_compact_job(o.manifest, staging, compact);
  fmt::print("compact: {} snapshots\n", compacted.snapshots);
  print_add_report(archive::add_snapshots(o.archive, read_manifest(staging / "manifest.jsonl"), staging, options),
                   report_file);
}

void run_ls(const archive_cli_options& o) {
  if (o.as_manifest) {
    // Manifest lines that read each snapshot in place (SPEC §5 extension).
    archive::archive_reader reader(o.archive);
    for (const auto& entry : reader.contents().snapshots) {
      snapshot_spec spec = parse_manifest_line(reader.read_index(entry).spec_line, o.archive, 1);
      spec.memory = archive_source{fs::absolute(o.archive).lexically_normal().string(), spec.id};
      fmt::print("{}\n", format_manifest_line(spec));
    }
    return;
  }
  fmt::print("{:<24} {:>12} {:>10} {:>10} {:>10} {:>10}\n", "snapshot", "image MiB", "pages", "zero", "shared", "own");
  for (const auto& s : archive::list_snapshots(o.archive))
    fmt::print("{:<24} {:>12.1f} {:>10} {:>10} {:>10} {:>10}\n", s.id, mib(s.file_bytes), s.pages, s.zero_pages,
               s.shared_pages, s.own_pages);
  const auto contents = archive::read_catalog(o.archive);
  u64 stored = 0;
  for (const auto& p : contents.packs) stored += p.pages;
  fmt::print("{} snapshots, {} distinct pages stored, {:.1f} MiB on disk\n", contents.snapshots.size(), stored,
             mib(contents.stored_bytes()));
}

void run_check(const archive_cli_options& o) {
  const auto report = archive::check_archive(o.archive, o.jobs);
  for (const auto& line : report.problems) fmt::print("damaged: {}\n", line);
  for (const auto& line : report.damaged) fmt::print("snapshot {}\n", line);
  if (!report.ok())
    throw input_error(fmt::format("{}: check failed: {} problems, {} of {} snapshots damaged", o.archive,
                                  report.problems.size(), report.damaged.size(), report.snapshots));
  fmt::print("check: OK, {} packs, {} pages, {} snapshots\n", report.packs, report.pages, report.snapshots);
}

void setup_archive(CLI::App& app) {
  auto o = std::make_shared<archive_cli_options>();
  auto* cmd = app.add_subcommand("archive", "store fleets with each distinct page once; restore, list, check")
                  ->require_subcommand(1);

  auto* add = cmd->add_subcommand("add", "add a manifest's snapshots (raw or ELF images) to an archive");
  add->add_option("archive", o->archive, "archive directory (created if missing)")->required();
  add->add_option("manifest", o->manifest, "fleet manifest (JSON Lines)")->required();
  add->add_flag("--compact", o->compact, "walk and compact the snapshots first; archive the compacted images");
  add->add_flag("--keep-pa", o->keep_pa, "with --compact: keep physical addresses (see `ptwalk compact`)");
  add->add_option("--level", o->level, "zstd level of a new archive (default 3)");
  add->add_option("--jobs", o->jobs, "threads (default: every core; with cuda, the threads gathering pages)");
  add->add_option("--backend", o->backend,
                  "who hashes the pages: cpu (every core), cuda (the GPU), auto (cuda when a GPU is visible)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  add->add_option("--report", o->report, "also write the report as JSON to this file (hash_backend included)");
  add_shard_option(*add, o->shard);
  add->callback([o] { run_add(*o); });

  auto* merge = cmd->add_subcommand("merge", "merge the shard archives of `archive add --shard` into one");
  merge->add_option("out", o->out, "archive directory (created if missing)")->required();
  merge->add_option("parts", o->parts, "the shards' archives, one per shard")->required();
  merge->add_option("--jobs", o->jobs, "threads (default: every core)");
  merge->callback([o] { print_add_report(merge_archives(o->out, o->parts, o->jobs)); });

  auto* restore = cmd->add_subcommand("restore", "write a snapshot's image file back, byte-identical, sparse");
  restore->add_option("archive", o->archive, "archive directory")->required();
  restore->add_option("snapshot", o->snapshot, "snapshot id")->required();
  restore->add_option("--out", o->out, "image file to write")->required();
  restore->add_option("--jobs", o->jobs, "threads (default: every core)");
  restore->callback([o] { archive::archive_reader(o->archive).restore(o->snapshot, o->out, o->jobs); });

  auto* ls = cmd->add_subcommand("ls", "list snapshots with their sizes and sharing");
  ls->add_option("archive", o->archive, "archive directory")->required();
  ls->add_flag("--manifest", o->as_manifest, "print a manifest that reads the snapshots from the archive");
  ls->callback([o] { run_ls(*o); });

  auto* check = cmd->add_subcommand("check", "re-hash every stored page and index; report damage by snapshot");
  check->add_option("archive", o->archive, "archive directory")->required();
  check->add_option("--jobs", o->jobs, "threads (default: every core)");
  check->callback([o] { run_check(*o); });

  auto* rm = cmd->add_subcommand("rm", "remove snapshots (gc reclaims their pages)");
  rm->add_option("archive", o->archive, "archive directory")->required();
  rm->add_option("ids", o->ids, "snapshot ids")->required();
  rm->callback([o] { archive::remove_snapshots(o->archive, o->ids); });

  auto* gc = cmd->add_subcommand("gc", "reclaim pages no snapshot uses and files no catalog names");
  gc->add_option("archive", o->archive, "archive directory")->required();
  gc->add_option("--jobs", o->jobs, "threads (default: every core)");
  gc->callback([o] {
    const auto r = archive::collect_garbage(o->archive, o->jobs);
    fmt::print("gc: {} packs dropped, {} rewritten, {} pages reclaimed, {} files deleted; {:.1f} -> {:.1f} MiB\n",
               r.packs_dropped, r.packs_rewritten, r.pages_dropped, r.files_deleted, mib(r.bytes_before),
               mib(r.bytes_after));
  });
}

}  // namespace

PTWALK_COMMAND(58, setup_archive);

}  // namespace ptwalk::cli
