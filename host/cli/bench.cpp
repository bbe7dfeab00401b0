// host/cli/bench.cpp — `ptwalk bench`: every backend on the same fleet, timed per phase.
//
// The fleet comes from a manifest or from the generator (--gen SHAPE); with
// --sizes the generated shape is scaled to each total number of spaces and
// the run repeated, which is what --plot draws.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "command.hpp"
#include "bench/archive_bench.hpp"
#include "bench/fleet_bench.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"

namespace ptwalk::cli {
namespace {

struct bench_cli {
  std::string manifest;
  std::string gen;
  std::vector<u64> sizes;
  std::string backends = "reference,cpu,cuda";
  unsigned repeat = 5;
  int threads = 0;
  u64 max_batch_spaces = 0;
  bool no_compaction = false;
  bool no_resident = false;
  bool job = false;
  std::string job_dir;
  std::string json, plot;
  bool archive = false;
};

std::vector<walk_backend> parse_backends(const std::string& list) {
  std::vector<walk_backend> out;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');) {
    const auto b = parse_backend(name);
    if (!b || *b == walk_backend::automatic)
      throw input_error(fmt::format("--backends: unknown backend \"{}\" (reference, cpu, cuda, thrust-cpu)", name));
    out.push_back(*b);
  }
  if (out.empty()) throw input_error("--backends: empty list");
  return out;
}

// `spaces` address spaces in the shape's snapshots: one snapshot when they
// fit in one, else as many snapshots of the shape's size as needed.
fleet_shape scaled(fleet_shape shape, u64 spaces) {
  if (spaces <= shape.spaces_per_snapshot) {
    shape.snapshots = 1;
    shape.spaces_per_snapshot = static_cast<u32>(spaces);
  } else {
    shape.snapshots = static_cast<u32>((spaces + shape.spaces_per_snapshot - 1) / shape.spaces_per_snapshot);
  }
  validate_shape(shape);
  return shape;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bench_report bench_generated(const fleet_shape& shape, bench_options options, host_bandwidth_probe& probe) {
  const std::string source = "gen:" + format_fleet_shape(shape);
  if (options.job_work_dir.empty()) {
    const auto start = std::chrono::steady_clock::now();
    generated_fleet fleet = generate_fleet(shape);
    return run_fleet_bench(fleet.snapshots, source, seconds_since(start), options, probe);
  }
  // The fleet job reads a manifest: write the fleet, and walk what was written.
  const auto fleet_dir = options.job_work_dir / fmt::format("ptwalk-bench-fleet-{}", ::getpid());
  struct remove_on_exit {
    std::filesystem::path dir;
    ~remove_on_exit() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } cleanup{fleet_dir};
  (void)write_fleet(shape, fleet_dir, true);
  options.job_manifest = fleet_dir / "manifest.jsonl";
  const auto start = std::chrono::steady_clock::now();
  const auto fleet = load_manifest(options.job_manifest);
  return run_fleet_bench(fleet, source, seconds_since(start), options, probe);
}

void run_bench(const bench_cli& o) {
  if (o.manifest.empty() == o.gen.empty()) throw input_error("bench: give a MANIFEST or --gen SHAPE (one of them)");
  if (!o.sizes.empty() && o.gen.empty()) throw input_error("bench: --sizes needs --gen");
  bench_options options;
  options.backends = parse_backends(o.backends);
  options.repeat = o.repeat;
  options.threads = o.threads;
  options.max_batch_spaces = o.max_batch_spaces;
  options.compaction = !o.no_compaction;
  options.resident = !o.no_resident;
  if (o.job)
    options.job_work_dir = o.job_dir.empty() ? std::filesystem::temp_directory_path()
                                             : std::filesystem::path(o.job_dir);
  host_bandwidth_probe probe(o.threads);
  const machine_info machine = measure_machine(probe);
  std::vector<bench_report> reports;
  if (!o.manifest.empty()) {
    if (o.job) options.job_manifest = o.manifest;
    const auto start = std::chrono::steady_clock::now();
    const auto fleet = load_manifest(o.manifest);
    reports.push_back(run_fleet_bench(fleet, o.manifest, seconds_since(start), options, probe));
    fmt::print("{}\n", format_report(machine, reports.back()));
  } else {
    const fleet_shape shape = parse_fleet_shape(o.gen);
    if (o.sizes.empty()) {
      validate_shape(shape);
      reports.push_back(bench_generated(shape, options, probe));
      fmt::print("{}\n", format_report(machine, reports.back()));
    }
    for (const u64 spaces : o.sizes) {
      reports.push_back(bench_generated(scaled(shape, spaces), options, probe));
      fmt::print("{}\n", format_report(machine, reports.back()));
      std::fflush(stdout);
    }
  }
  if (!o.json.empty()) {
    atomic_output_file out(o.json);
    out.stream() << report_json(machine, reports).dump(2) << "\n";
    out.commit();
  }
  if (!o.plot.empty()) write_plot(reports, o.plot);
}

// `bench --archive`: the fleet archive against zstd, on the manifest's images.
void run_archive_bench_cli(const bench_cli& o) {
  if (o.manifest.empty()) throw input_error("bench --archive: give a fleet manifest");
  const auto scratch = std::filesystem::path(o.job_dir.empty() ? std::filesystem::temp_directory_path().string() : o.job_dir) /
                       fmt::format("ptwalk-archive-bench-{}", ::getpid());
  const unsigned jobs = o.threads > 0 ? static_cast<unsigned>(o.threads) : 0;
  fmt::print("{}", format_archive_bench(run_archive_bench(o.manifest, scratch, jobs), jobs));
}

void setup_bench(CLI::App& app) {
  auto o = std::make_shared<bench_cli>();
  auto* cmd = app.add_subcommand(
      "bench", "Benchmark the walk backends on one fleet (or generated fleets of several sizes), per phase.");
  cmd->add_option("manifest", o->manifest, "fleet manifest (JSON Lines)");
  cmd->add_option("--gen", o->gen, "generate the fleet: a shape such as bench or linux,spaces=100 (see ptwalk gen)");
  cmd->add_option("--sizes", o->sizes, "with --gen: total address spaces per run, e.g. 100,1000,10000")
      ->delimiter(',');
  cmd->add_option("--backends", o->backends, "backends to run, in order; the first is the one others must match")
      ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "warm and cold walks per backend (median and spread of each)")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "threads for the cpu backends (default: all cores)");
  cmd->add_option("--max-batch-spaces", o->max_batch_spaces,
                  "cuda: at most this many spaces per device batch (default: as memory allows)");
  cmd->add_flag("--no-compaction", o->no_compaction, "skip timing relink + compaction");
  cmd->add_flag("--no-resident", o->no_resident,
                "skip the resident walks of thrust-cpu and cuda (images uploaded to the device once, then walked "
                "--repeat times from there)");
  cmd->add_flag("--job", o->job,
                "also time the whole `ptwalk compact` job against its compaction stage alone "
                "(writes the fleet and the outputs to --job-dir)");
  cmd->add_option("--job-dir", o->job_dir, "with --job: where scratch output goes (default: the temp directory)");
  cmd->add_option("--json", o->json, "write the results as JSON to this file");
  cmd->add_option("--plot", o->plot, "with --sizes: plot throughput vs fleet size to this PNG (gnuplot)");
  cmd->add_flag("--archive", o->archive,
                "time archive add, restore and loading from the archive against zstd -3 of each image and "
                "zstd --long of all (scratch in --job-dir)");
  cmd->callback([o] { o->archive ? run_archive_bench_cli(*o) : run_bench(*o); });
}

}  // namespace

PTWALK_COMMAND(70, setup_bench);

}  // namespace ptwalk::cli
