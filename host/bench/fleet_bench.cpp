// host/fleet_bench.cpp — runs, checks and reports the fleet benchmark.
#include "bench/fleet_bench.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "compact/compact_job.hpp"
#include "compact/compactor.hpp"
#include "common/parallel_for.hpp"
#if PTWALK_WITH_CUDA
#include "cuda/cuda_walk.hpp"
#endif

namespace ptwalk {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("model name"))
      if (const auto colon = line.find(':'); colon != std::string::npos) return line.substr(colon + 2);
  return "unknown";
}

u64 memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  u64 kib = 0;
  in >> key >> kib;
  return key == "MemTotal:" ? kib * 1024 : 0;
}

u64 total_tables(const walk_stats& s) {
  u64 n = 0;
  for (const u64 t : s.tables) n += t;
  return n;
}
u64 total_aliases(const walk_stats& s) {
  u64 n = 0;
  for (const u64 a : s.aliases) n += a;
  return n;
}

std::string unavailable(walk_backend backend) {
  if (!backend_compiled(backend)) return "not built (configure with -DPTWALK_CUDA=ON)";
  if (backend == walk_backend::cuda && !gpu_visible()) return "no GPU: " + gpu_description();
  return {};
}

std::string human_rate(double per_s) {
  if (per_s >= 1e9) return fmt::format("{:.2f} G", per_s / 1e9);
  if (per_s >= 1e6) return fmt::format("{:.2f} M", per_s / 1e6);
  if (per_s >= 1e3) return fmt::format("{:.2f} k", per_s / 1e3);
  return fmt::format("{:.0f} ", per_s);
}

// The DRAM read bandwidth a backend's walk is measured against: the mean of the probes around it.
double read_bandwidth(const backend_bench& b) {
  return (b.before.read_bytes_per_s + b.after.read_bytes_per_s) / 2;
}

// ... and the scattered-page read bandwidth, the pattern a walk's table reads follow.
double page_read_bandwidth(const backend_bench& b) {
  return (b.before.page_read_bytes_per_s + b.after.page_read_bytes_per_s) / 2;
}

std::string span_text(const phase_times& p) { return fmt::format("[{:.4f} .. {:.4f}]", p.min_s, p.max_s); }

const backend_bench* find_backend(const bench_report& report, std::string_view name) {
  for (const auto& b : report.backends)
    if (b.name == name && !b.skipped) return &b;
  return nullptr;
}

// A scratch directory under `parent` that is removed with its contents.
class scratch_dir {
 public:
  explicit scratch_dir(const std::filesystem::path& parent)
      : path_(parent / fmt::format("ptwalk-bench-{}", ::getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

job_overlap measure_job_overlap(std::span<const loaded_snapshot> fleet, std::span<const snapshot_walk> walks,
                                const bench_options& options) {
  const std::filesystem::path parent =
      options.job_work_dir.empty() ? std::filesystem::temp_directory_path() : options.job_work_dir;
  std::vector<double> job, alone;
  job_overlap out;
  for (unsigned r = 0; r < std::max(options.repeat, 1u); ++r) {
    {
      // The compaction stage with the walk already done: what the job hides its walk behind.
      scratch_dir scratch(parent);
      const auto start = std::chrono::steady_clock::now();
      parallel_for(fleet.size(), 0, [&](std::size_t i) {
        const auto compacted = compact_snapshot(fleet[i], walks[i], compaction_policy{});
        (void)write_compacted_image(compacted, scratch.path() / fmt::format("{}.img", i));
      });
      alone.push_back(seconds_since(start));
    }
    {
      scratch_dir scratch(parent);
      const auto start = std::chrono::steady_clock::now();
      const compact_report report =
          run_compact_job(options.job_manifest, scratch.path() / "out", compact_options{});
      job.push_back(seconds_since(start));
      out.backend = report.backend;
    }
  }
  out.job = phase_times::of(std::move(job));
  out.compaction_alone = phase_times::of(std::move(alone));
  return out;
}

// Uploads the fleet to `backend`'s device once and times `repeat` walks
// from there, each checked by `check`.
template <class Check>
resident_bench measure_resident(std::span<const loaded_snapshot> fleet, walk_backend backend,
                                const bench_options& options, const Check& check) {
  resident_bench out;
  std::unique_ptr<resident_fleet> resident;
  try {
    resident = make_resident_fleet(fleet, backend);
  } catch (const resident_does_not_fit& e) {
    out.skipped = e.what();
    return out;
  }
  out.upload = resident->upload_profile();
  out.upload_s = out.upload.seconds("resident upload");
  out.device_bytes = resident->device_bytes();
  std::vector<double> samples;
  std::vector<walk_profile> profiles;
  for (unsigned r = 0; r < std::max(options.repeat, 1u); ++r) {
    walk_profile profile;
    const auto start = std::chrono::steady_clock::now();
    std::vector<snapshot_walk> walks;
    try {
      walks = resident->walk(level_walk_options{.profile = &profile, .max_batch_spaces = options.max_batch_spaces});
    } catch (const std::runtime_error& e) {
      // Images that fit can leave too little beside them for one snapshot's walk.
      out.skipped = fmt::format("the walk failed with the images resident ({} MB): {}", out.device_bytes / 1e6,
                                e.what());
      return out;
    }
    samples.push_back(seconds_since(start));
    check(walks);
    profiles.push_back(std::move(profile));
  }
  out.walk = phase_times::of(std::move(samples));
  out.profile = median_profile(profiles);
  return out;
}

}  // namespace

double resident_bench::device_seconds() const {
  double seconds = 0;
  for (const walk_phase& p : profile.phases)
    if (p.on_device) seconds += p.seconds;
  return seconds;
}

double h200_counter_seconds(const walk_profile& profile) {
  double seconds = 0;
  for (const walk_phase& p : profile.phases)
    seconds += p.pcie_bytes / pcie5_pinned_bytes_per_s + p.device_bytes / h200_hbm_bytes_per_s;
  return seconds;
}

phase_times phase_times::of(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  const double median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  return {median, samples.front(), samples.back()};
}

walk_profile median_profile(std::span<const walk_profile> profiles) {
  if (profiles.empty()) return {};
  walk_profile out = profiles.back();  // every walk counts the same bytes
  for (walk_phase& phase : out.phases) {
    std::vector<double> seconds;
    for (const walk_profile& p : profiles) seconds.push_back(p.seconds(phase.name));
    phase.seconds = phase_times::of(std::move(seconds)).median_s;
  }
  return out;
}

machine_info measure_machine(const host_bandwidth_probe& probe) {
  machine_info m;
  m.cpu = cpu_model();
  m.hardware_threads = std::thread::hardware_concurrency();
  m.walk_threads = probe.threads();
  m.memory_bytes = memory_bytes();
  m.last_level_cache_bytes = probe.cache_bytes();
  m.read_probe_bytes = probe.read_bytes();
  m.gpu = gpu_description();
#if PTWALK_WITH_CUDA
  if (gpu_visible()) {
    m.device_copy_bytes_per_s = cuda_copy_bandwidth();
    m.upload_bytes_per_s = cuda_upload_bandwidth();
  }
#endif
  return m;
}

bench_report run_fleet_bench(std::span<const loaded_snapshot> fleet, std::string source, double load_s,
                             const bench_options& options, host_bandwidth_probe& probe) {
  bench_report report;
  report.load_s = load_s;
  report.fleet.source = std::move(source);
  report.fleet.snapshots = fleet.size();
  for (const auto& s : fleet) {
    report.fleet.spaces += s.roots().size();
    report.fleet.image_bytes += s.image.backed_bytes();
  }
  std::vector<snapshot_walk> baseline;
  std::string baseline_name;
  for (const walk_backend backend : options.backends) {
    backend_bench& b = report.backends.emplace_back();
    b.name = backend_name(backend);
    std::string why = unavailable(backend);
    if (!why.empty()) {
      b.skipped = std::move(why);
      continue;
    }
    // Every walk is checked against the first backend's output.
    const auto check = [&](const std::vector<snapshot_walk>& walks, std::string_view mode) {
      if (baseline_name.empty()) {
        baseline = walks;
        baseline_name = b.name;
        return;
      }
      for (std::size_t i = 0; i < fleet.size(); ++i)
        if (!(walks[i] == baseline[i]))
          throw std::runtime_error(fmt::format("bench: backend {}{} differs from {} on snapshot {} ({})", b.name,
                                               mode, baseline_name, i, fleet[i].id()));
    };
    const auto timed_walk = [&](walk_profile& profile) {
      const auto start = std::chrono::steady_clock::now();
      auto walks = walk_snapshots(fleet, backend,
                                  walk_options{.profile = &profile, .threads = options.threads,
                                               .max_batch_spaces = options.max_batch_spaces});
      const double seconds = seconds_since(start);
      check(walks, "");
      return seconds;
    };
    std::vector<double> cold, walk, upload, download, gather, kernel;
    std::vector<walk_profile> profiles;
    b.before = probe.measure();
    for (unsigned r = 0; r < std::max(options.repeat, 1u); ++r) {
      // Cold: no page table left in any cache. Warm: right after a walk of the same fleet.
      probe.evict_caches();
      walk_profile cold_profile, profile;
      cold.push_back(timed_walk(cold_profile));
      walk.push_back(timed_walk(profile));
      upload.push_back(profile.seconds("upload"));
      download.push_back(profile.seconds("download"));
      gather.push_back(profile.seconds("gather"));
      kernel.push_back(profile.seconds("kernel"));
      b.batches = profile.batches;
      profiles.push_back(std::move(profile));
    }
    b.profile = median_profile(profiles);
    b.after = probe.measure();
    b.cold_walk = phase_times::of(cold);
    b.walk = phase_times::of(walk);
    b.upload = phase_times::of(upload);
    b.download = phase_times::of(download);
    b.gather = phase_times::of(gather);
    b.kernel = phase_times::of(kernel);
    if (options.resident && (backend == walk_backend::thrust_cpu || backend == walk_backend::cuda))
      b.resident = measure_resident(fleet, backend, options,
                                    [&](const std::vector<snapshot_walk>& walks) { check(walks, " (resident)"); });
  }
  for (std::size_t i = 0; i < baseline.size(); ++i)
    report.fleet.bytes_of_tables += visit_format(fleet[i].format(), [&]<class F>() {
      u64 bytes = 0;
      for (unsigned d = 0; d < F::levels; ++d) bytes += baseline[i].stats.tables[d] * F::table_bytes(d);
      return bytes;
    });
  for (const auto& w : baseline) {
    report.fleet.tables += total_tables(w.stats);
    report.fleet.leaves += w.stats.leaves();
    report.fleet.aliases += total_aliases(w.stats);
  }
  // Relink + compact: the CPU work the walk hides behind in `ptwalk compact`.
  // It depends on the walk's output only, which every backend shares.
  if (options.compaction && !baseline.empty()) {
    std::vector<double> samples;
    for (unsigned r = 0; r < std::max(options.repeat, 1u); ++r) {
      const auto start = std::chrono::steady_clock::now();
      const auto compacted = compact_all(fleet, baseline, compaction_policy{});
      samples.push_back(seconds_since(start));
    }
    report.compaction = phase_times::of(samples);
  }
  if (!options.job_manifest.empty() && !baseline.empty())
    report.job = measure_job_overlap(fleet, baseline, options);
  return report;
}

namespace {

// Per backend and phase: seconds measured here and the bytes the walk
// counted, with the time those bytes take on paper on an H200 (each kind
// of traffic at its published bandwidth; host traffic at this machine's).
std::string format_bytes_moved(const bench_report& report) {
  std::string out;
  for (const auto& b : report.backends) {
    if (b.skipped || b.profile.phases.empty()) continue;
    if (out.empty())
      out = fmt::format("\n{:<19} {:<15} {:>9} {:>10} {:>10} {:>10} {:>14}\n", "bytes moved", "phase", "s here",
                        "PCIe MB", "device MB", "host MB", "H200 PCIe/HBM s");
    const auto rows = [&](const std::string& label, const walk_profile& profile) {
      for (const walk_phase& p : profile.phases)
        out += fmt::format("{:<19} {:<15} {:>9.4f} {:>10.2f} {:>10.2f} {:>10.2f} {:>14.6f}\n", label, p.name,
                           p.seconds, p.pcie_bytes / 1e6, p.device_bytes / 1e6, p.host_bytes / 1e6,
                           p.pcie_bytes / pcie5_pinned_bytes_per_s + p.device_bytes / h200_hbm_bytes_per_s);
    };
    rows(b.name, b.profile);
    if (b.resident && !b.resident->skipped) {
      rows(b.name + " resident", b.resident->upload);
      rows(b.name + " resident", b.resident->profile);
    }
  }
  return out.empty() ? out : out + "\n";
}

// The copy bandwidth a backend's resident walk is measured against: the
// device's (cuda) or this host's DRAM copy, probed around it (thrust-cpu).
double resident_copy_bandwidth(const machine_info& machine, const backend_bench& b) {
  if (b.name == "cuda") return machine.device_copy_bytes_per_s;
  return (b.before.copy_bytes_per_s + b.after.copy_bytes_per_s) / 2;
}

// Resident walks: upload once, then walks from device memory; their rate
// against the copy bandwidth, and what the counted bytes take on an H200
// against the time the goal (half the device's copy bandwidth) allows.
std::string format_resident(const machine_info& machine, const bench_report& report) {
  std::string out;
  const fleet_info& f = report.fleet;
  for (const auto& b : report.backends) {
    if (b.skipped || !b.resident) continue;
    if (out.empty())
      out = fmt::format("\nresident: the images uploaded to the device once, then each walk from device memory "
                        "(records back on the host)\n{:<11} {:>9} {:>10} {:>9} {:>21} {:>9} {:>9} {:>8} {:>13} "
                        "{:>13}\n",
                        "backend", "upload s", "device MB", "walk med", "[min .. max] s", "device s", "PT GB/s",
                        "% copy", "H200 ctr s", "H200 goal s");
    const resident_bench& r = *b.resident;
    if (r.skipped) {
      out += fmt::format("{:<11} skipped: {}\n", b.name, *r.skipped);
      continue;
    }
    const double rate = f.table_bytes() / r.walk.median_s;
    const double copy = resident_copy_bandwidth(machine, b);
    out += fmt::format("{:<11} {:>9.4f} {:>10.2f} {:>9.4f} {:>21} {:>9.4f} {:>9.2f} {:>8} {:>13.6f} {:>13.6f}\n",
                       b.name, r.upload_s, r.device_bytes / 1e6, r.walk.median_s, span_text(r.walk),
                       r.device_seconds(), rate / 1e9,
                       copy > 0 ? fmt::format("{:.1f}", 100 * rate / copy) : std::string("-"),
                       h200_counter_seconds(r.profile),
                       f.table_bytes() / (device_copy_goal_fraction * h200_hbm_bytes_per_s));
  }
  return out;
}

}  // namespace

std::string format_report(const machine_info& machine, const bench_report& report) {
  const fleet_info& f = report.fleet;
  const double mib = 1 << 20;
  std::string out = fmt::format(
      "fleet {}: {} snapshots, {} spaces, {} page tables ({:.1f} MiB), {} leaves, {} aliases; load {:.3f} s\n"
      "machine: {} ({} hardware threads, walk threads {}, last-level cache {:.0f} MiB); GPU: {}",
      f.source, f.snapshots, f.spaces, f.tables, f.table_bytes() / mib, f.leaves, f.aliases, report.load_s,
      machine.cpu, machine.hardware_threads, machine.walk_threads, machine.last_level_cache_bytes / mib,
      machine.gpu);
  if (machine.device_copy_bytes_per_s > 0)
    out += fmt::format(" (device copy {:.0f} GB/s, pinned upload {:.1f} GB/s)", machine.device_copy_bytes_per_s / 1e9,
                       machine.upload_bytes_per_s / 1e9);
  out += fmt::format(
      "\nwarm: each walk right after another of the same fleet; cold: after a streaming read of {:.0f} MiB "
      "that evicts every cache. % read: page-table bytes per second of DRAM read bandwidth.\n\n",
      machine.read_probe_bytes / mib);
  out += fmt::format("{:<11} {:>9} {:>21} {:>9} {:>21} {:>8} {:>8} {:>9} {:>9} {:>13} {:>13} {:>9}\n", "backend",
                     "warm med", "[min .. max] s", "cold med", "[min .. max] s", "h2d s", "d2h s", "tables/s",
                     "leaves/s", "PT GB/s w/c", "% read w/c", "vs ref");
  const backend_bench* reference = find_backend(report, "reference");
  for (const auto& b : report.backends) {
    if (b.skipped) {
      out += fmt::format("{:<11} skipped: {}\n", b.name, *b.skipped);
      continue;
    }
    const double warm = f.table_bytes() / b.walk.median_s, cold = f.table_bytes() / b.cold_walk.median_s;
    out += fmt::format("{:<11} {:>9.4f} {:>21} {:>9.4f} {:>21} {:>8.4f} {:>8.4f} {:>9} {:>9} {:>13} {:>13} {:>9}\n",
                       b.name, b.walk.median_s, span_text(b.walk), b.cold_walk.median_s, span_text(b.cold_walk),
                       b.upload.median_s, b.download.median_s, human_rate(f.tables / b.walk.median_s),
                       human_rate(f.leaves / b.walk.median_s),
                       fmt::format("{:.2f} / {:.2f}", warm / 1e9, cold / 1e9),
                       fmt::format("{:.1f} / {:.1f}", 100 * warm / read_bandwidth(b), 100 * cold / read_bandwidth(b)),
                       reference != nullptr ? fmt::format("{:.2f}x", reference->walk.median_s / b.walk.median_s)
                                            : "-");
  }
  out += fmt::format("memory bandwidth, before -> after each backend's walks (read: {} threads summing 64-bit words "
                     "over {:.0f} MiB; 4 KiB pages: the same, page by page in a shuffled order, as a walk "
                     "reads tables; copy: memcpy, read + write bytes):\n",
                     machine.walk_threads, machine.read_probe_bytes / mib);
  for (const auto& b : report.backends)
    if (!b.skipped)
      out += fmt::format(
          "{:<11} DRAM read {:.1f} -> {:.1f} GB/s, 4 KiB pages {:.1f} -> {:.1f} GB/s (walk at {:.0f}% of it), "
          "copy {:.1f} -> {:.1f} GB/s\n",
          b.name, b.before.read_bytes_per_s / 1e9, b.after.read_bytes_per_s / 1e9,
          b.before.page_read_bytes_per_s / 1e9, b.after.page_read_bytes_per_s / 1e9,
          100 * report.fleet.table_bytes() / b.walk.median_s / page_read_bandwidth(b),
          b.before.copy_bytes_per_s / 1e9, b.after.copy_bytes_per_s / 1e9);
  out += format_resident(machine, report);
  out += format_bytes_moved(report);
  if (report.compaction)
    out += fmt::format("{:<11} {:>9.4f} {:>21}   (relink + compact, CPU, after any backend)\n", "compaction",
                       report.compaction->median_s, span_text(*report.compaction));
  if (report.job)
    out += fmt::format(
        "{:<11} {:>9.4f} {:>21}   (ptwalk compact, walk on {}: {:.2f}x the compaction alone, {:.4f} s)\n",
        "fleet job", report.job->job.median_s, span_text(report.job->job), report.job->backend, report.job->ratio(),
        report.job->compaction_alone.median_s);
  return out;
}

namespace {

nlohmann::json phase_json(const phase_times& p) {
  return {{"median_s", p.median_s}, {"min_s", p.min_s}, {"max_s", p.max_s}};
}

nlohmann::json bandwidth_json(const host_bandwidth& b) {
  return {{"read_bytes_per_s", b.read_bytes_per_s},
          {"page_read_bytes_per_s", b.page_read_bytes_per_s},
          {"copy_bytes_per_s", b.copy_bytes_per_s}};
}

// A walk's timing with its page-table read rate against the bandwidths probed around it.
nlohmann::json walk_json(const fleet_info& f, const backend_bench& b, const phase_times& walk) {
  const double table_bytes_per_s = f.table_bytes() / walk.median_s;
  const double copy = (b.before.copy_bytes_per_s + b.after.copy_bytes_per_s) / 2;
  return {{"median_s", walk.median_s},
          {"min_s", walk.min_s},
          {"max_s", walk.max_s},
          {"tables_per_s", f.tables / walk.median_s},
          {"leaves_per_s", f.leaves / walk.median_s},
          {"table_bytes_per_s", table_bytes_per_s},
          {"read_fraction", table_bytes_per_s / read_bandwidth(b)},
          {"page_read_fraction", table_bytes_per_s / page_read_bandwidth(b)},
          {"copy_fraction", table_bytes_per_s / copy}};
}

nlohmann::json bytes_moved_json(const walk_profile& profile, nlohmann::json moved = nlohmann::json::object()) {
  for (const walk_phase& p : profile.phases)
    moved[p.name] = {{"seconds", p.seconds},     {"on_device", p.on_device},
                     {"pcie_bytes", p.pcie_bytes}, {"device_bytes", p.device_bytes},
                     {"host_bytes", p.host_bytes}};
  return moved;
}

nlohmann::json resident_json(const machine_info& machine, const bench_report& report, const backend_bench& b) {
  const resident_bench& r = *b.resident;
  if (r.skipped) return {{"skipped", *r.skipped}};
  const fleet_info& f = report.fleet;
  const double rate = f.table_bytes() / r.walk.median_s;
  const double copy = resident_copy_bandwidth(machine, b);
  return {{"upload_s", r.upload_s},
          {"device_bytes", r.device_bytes},
          {"walk", phase_json(r.walk)},
          {"device_s", r.device_seconds()},
          {"tables_per_s", f.tables / r.walk.median_s},
          {"table_bytes_per_s", rate},
          {"copy_bytes_per_s", copy},
          {"copy_fraction", copy > 0 ? nlohmann::json(rate / copy) : nlohmann::json(nullptr)},
          {"h200_counter_s", h200_counter_seconds(r.profile)},
          {"h200_goal_s", f.table_bytes() / (device_copy_goal_fraction * h200_hbm_bytes_per_s)},
          {"bytes_moved", bytes_moved_json(r.profile, bytes_moved_json(r.upload))}};
}

nlohmann::json backend_json(const machine_info& machine, const bench_report& report, const backend_bench& b) {
  if (b.skipped) return {{"skipped", *b.skipped}};
  const fleet_info& f = report.fleet;
  const double t = b.walk.median_s;
  const double table_bytes_per_s = f.table_bytes() / t;
  // The top-level walk figures are the warm walk's; "warm" and "cold" say so explicitly.
  nlohmann::json j{
      {"walk_median_s", t},
      {"walk_min_s", b.walk.min_s},
      {"walk_max_s", b.walk.max_s},
      {"phases",
       {{"load", {{"median_s", report.load_s}}},
        {"host_to_device", phase_json(b.upload)},
        {"gather", phase_json(b.gather)},
        {"walk", phase_json(b.walk)},
        {"device_kernels", phase_json(b.kernel)},
        {"device_to_host", phase_json(b.download)},
        {"compaction", report.compaction ? phase_json(*report.compaction) : nlohmann::json(nullptr)}}},
      {"tables_per_s", f.tables / t},
      {"leaves_per_s", f.leaves / t},
      {"table_bytes_per_s", table_bytes_per_s},
      {"warm", walk_json(f, b, b.walk)},
      {"cold", walk_json(f, b, b.cold_walk)},
      {"bandwidth", {{"before", bandwidth_json(b.before)}, {"after", bandwidth_json(b.after)}}},
      {"batches", b.batches},
  };
  // The walk's own counters, per phase (README "Bytes moved").
  j["bytes_moved"] = bytes_moved_json(b.profile);
  if (b.resident) j["resident"] = resident_json(machine, report, b);
  if (b.name == "cuda" && machine.device_copy_bytes_per_s > 0) {
    j["device_copy_fraction"] = table_bytes_per_s / machine.device_copy_bytes_per_s;
    j["upload_fraction"] = table_bytes_per_s / machine.upload_bytes_per_s;
  }
  for (const auto& other : report.backends)
    if (!other.skipped && other.name != b.name)
      j["speedup_vs_" + other.name] = other.walk.median_s / t;
  return j;
}

nlohmann::json report_body(const machine_info& machine, const bench_report& report) {
  const fleet_info& f = report.fleet;
  nlohmann::json backends = nlohmann::json::object();
  for (const auto& b : report.backends) backends[b.name] = backend_json(machine, report, b);
  return {{"input",
           {{"source", f.source},
            {"snapshots", f.snapshots},
            {"spaces", f.spaces},
            {"tables", f.tables},
            {"table_bytes", f.table_bytes()},
            {"leaves", f.leaves},
            {"aliases", f.aliases},
            {"image_bytes", f.image_bytes}}},
          {"load_s", report.load_s},
          {"compaction", report.compaction ? phase_json(*report.compaction) : nlohmann::json(nullptr)},
          {"fleet_job", report.job ? nlohmann::json{{"backend", report.job->backend},
                                                    {"job", phase_json(report.job->job)},
                                                    {"compaction_alone", phase_json(report.job->compaction_alone)},
                                                    {"job_over_compaction", report.job->ratio()}}
                                   : nlohmann::json(nullptr)},
          {"backends", std::move(backends)}};
}

}  // namespace

nlohmann::json report_json(const machine_info& machine, std::span<const bench_report> reports) {
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& r : reports) sizes.push_back(report_body(machine, r));
  nlohmann::json out = reports.empty() ? nlohmann::json::object() : report_body(machine, reports.back());
  out["machine"] = {{"cpu", machine.cpu},
                    {"hardware_threads", machine.hardware_threads},
                    {"walk_threads", machine.walk_threads},
                    {"memory_bytes", machine.memory_bytes},
                    {"last_level_cache_bytes", machine.last_level_cache_bytes},
                    {"read_probe_bytes", machine.read_probe_bytes},
                    {"gpu", machine.gpu},
                    {"device_copy_bytes_per_s", machine.device_copy_bytes_per_s},
                    {"upload_bytes_per_s", machine.upload_bytes_per_s}};
  out["sizes"] = std::move(sizes);
  return out;
}

void write_plot(std::span<const bench_report> reports, const std::filesystem::path& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    throw input_error(fmt::format("{}: gnuplot not found (apt-get install gnuplot-nox)", png.string()));
  // One data block per backend: spaces, tables/s.
  std::map<std::string, std::string> series;
  for (const auto& r : reports)
    for (const auto& b : r.backends)
      if (!b.skipped) series[b.name] += fmt::format("{} {}\n", r.fleet.spaces, r.fleet.tables / b.walk.median_s);
  const std::filesystem::path data = png.string() + ".dat", script = png.string() + ".gp";
  {
    std::ofstream d(data);
    for (const auto& [name, rows] : series) d << "# " << name << "\n" << rows << "\n\n";
  }
  std::string plots;
  int index = 0;
  for (const auto& entry : series) {
    plots += fmt::format("{}'{}' index {} with linespoints title '{}'", index == 0 ? "" : ", ", data.string(),
                         index, entry.first);
    ++index;
  }
  // gnuplot writes a temporary that is renamed on success: no half-written plot.
  const std::filesystem::path partial = png.string() + ".tmp";
  {
    std::ofstream s(script);
    s << fmt::format(
        "set terminal png size 900,600\nset output '{}'\nset logscale xy\nset grid\n"
        "set xlabel 'address spaces in the fleet'\nset ylabel 'page tables walked per second'\n"
        "set title 'ptwalk: walk throughput vs fleet size'\nset key left top\nplot {}\n",
        partial.string(), plots);
  }
  const int status = std::system(fmt::format("gnuplot '{}'", script.string()).c_str());
  std::filesystem::remove(data);
  std::filesystem::remove(script);
  if (status != 0) {
    std::filesystem::remove(partial);
    throw input_error(fmt::format("{}: gnuplot failed (status {})", png.string(), status));
  }
  std::filesystem::rename(partial, png);
}

}  // namespace ptwalk
