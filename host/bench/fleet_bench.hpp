// host/fleet_bench.hpp — the end-to-end fleet benchmark behind `ptwalk bench`.
//
// Runs every requested backend on the same loaded fleet, in one process,
// N times; checks every backend's output is identical to the first's; and
// reports per phase (load, host→device, walk, device→host, compaction)
// the median and spread, throughput (tables/s, leaves/s), page-table bytes
// read per second against the host's DRAM read bandwidth, probed right
// before and after each backend's walks (bandwidth_probe.hpp; copy
// bandwidth beside it; on a GPU, device-to-device copy and pinned
// host-to-device copy), and each backend's speedup over the others. Walks
// are timed warm (right after another walk of the same fleet) and cold (after
// a streaming pass that evicts every cache), and labelled so. The device
// backends (thrust-cpu, cuda) are also timed resident: the fleet's images
// uploaded to the device once, then walked N times from device memory
// (README "Resident walks"), which is what the device-copy goal is about.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bandwidth_probe.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {

struct bench_options {
  std::vector<walk_backend> backends{walk_backend::reference, walk_backend::cpu, walk_backend::cuda};
  unsigned repeat = 5;
  int threads = 0;               // cpu backends; 0 = all cores
  u64 max_batch_spaces = 0;      // cuda: 0 = as device memory allows
  bool compaction = true;        // time relink+compact (compact_all) on the walk
  bool resident = true;          // thrust-cpu and cuda: also time resident walks
  // When set (the fleet's manifest on disk), also time the whole `ptwalk
  // compact` job on it against its compaction stage alone, output written
  // under `job_work_dir` (removed after each run).
  std::filesystem::path job_manifest;
  std::filesystem::path job_work_dir;
};

// Seconds of one phase over the repeats.
struct phase_times {
  double median_s = 0, min_s = 0, max_s = 0;
  static phase_times of(std::vector<double> samples);
};

// A backend's resident walks: one upload, then the timed walks.
struct resident_bench {
  std::optional<std::string> skipped;  // why not (the images do not fit)
  double upload_s = 0;
  u64 device_bytes = 0;  // the resident pages and their lookup tables
  phase_times walk;      // each from device memory, records back on the host
  walk_profile upload;   // "resident upload"
  walk_profile profile;  // per phase: the median seconds over the walks, and the bytes of one walk
  // Seconds the device phases of a walk took (kernels, device gather; medians).
  [[nodiscard]] double device_seconds() const;
};

struct backend_bench {
  std::string name;
  std::optional<std::string> skipped;  // why it did not run here
  phase_times walk, upload, download, gather, kernel;  // warm walks
  phase_times cold_walk;                               // caches evicted before each
  host_bandwidth before, after;                        // probed around this backend's walks
  u64 batches = 0;
  walk_profile profile;  // per phase: the median seconds over the warm walks, and the bytes each moved
  std::optional<resident_bench> resident;  // device backends, unless bench_options::resident is off
};

struct machine_info {
  std::string cpu;
  unsigned hardware_threads = 0;
  int walk_threads = 0;
  u64 memory_bytes = 0;
  u64 last_level_cache_bytes = 0;
  u64 read_probe_bytes = 0;  // the DRAM read probe's buffer (also the cache flush)
  std::string gpu;
  double device_copy_bytes_per_s = 0;  // read+write, device to device
  double upload_bytes_per_s = 0;       // pinned host to device
};

struct fleet_info {
  std::string source;  // manifest path or "gen:SHAPE"
  u64 snapshots = 0, spaces = 0, tables = 0, leaves = 0, aliases = 0;
  u64 image_bytes = 0;
  u64 bytes_of_tables = 0;  // per format and depth (AArch64: 16/64 KiB tables, small top tables)
  [[nodiscard]] u64 table_bytes() const { return bytes_of_tables; }
};

// The fleet job (load, walk, compact, write; the walk of batch k+1 hidden
// behind the compaction of batch k) against the same compaction and writes
// with the walks already done: the target is job ≤ 1.2 × alone.
struct job_overlap {
  std::string backend;  // the walk backend the job resolved to
  phase_times job, compaction_alone;
  [[nodiscard]] double ratio() const { return job.median_s / compaction_alone.median_s; }
};

struct bench_report {
  fleet_info fleet;
  double load_s = 0;
  std::optional<phase_times> compaction;
  std::optional<job_overlap> job;
  std::vector<backend_bench> backends;
};

// Describes this machine (once per process run; a GPU's bandwidth is measured when visible).
[[nodiscard]] machine_info measure_machine(const host_bandwidth_probe& probe);

// Benchmarks one loaded fleet; `probe` (made once per process, with the walk's
// threads) measures bandwidth around each backend and flushes caches before
// cold walks. Throws std::runtime_error when two backends disagree (naming
// them and the snapshot).
[[nodiscard]] bench_report run_fleet_bench(std::span<const loaded_snapshot> fleet, std::string source,
                                           double load_s, const bench_options& options,
                                           host_bandwidth_probe& probe);

// Published bandwidths the byte counters are turned into times with
// (README "Bytes moved"): H200 HBM3e and PCIe Gen5 x16 from pinned memory.
inline constexpr double h200_hbm_bytes_per_s = 4.8e12;
inline constexpr double pcie5_pinned_bytes_per_s = 50e9;
// The goal for a resident walk: page-table bytes per second at least
// half the device's copy bandwidth (here the H200's published HBM figure).
inline constexpr double device_copy_goal_fraction = 0.5;

// Each phase of the last profile with its median seconds over all of them.
[[nodiscard]] walk_profile median_profile(std::span<const walk_profile> profiles);

// Seconds `profile`'s counted bytes take at the H200's published bandwidths.
[[nodiscard]] double h200_counter_seconds(const walk_profile& profile);

// Stdout table for one fleet.
[[nodiscard]] std::string format_report(const machine_info& machine, const bench_report& report);
// JSON: machine, input, phases; `backends` at the top level describes the
// last (largest) fleet, `sizes` every fleet run.
[[nodiscard]] nlohmann::json report_json(const machine_info& machine, std::span<const bench_report> reports);
// Throughput against fleet size, one line per backend, through gnuplot.
// Throws when gnuplot is missing or fails.
void write_plot(std::span<const bench_report> reports, const std::filesystem::path& png);

}  // namespace ptwalk
