// host/bench/archive_bench.cpp — timing archive add/restore/load against libzstd on the same images.
#include "bench/archive_bench.hpp"

#include <zstd.h>

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "archive/archive_add.hpp"
#include "archive/archive_read.hpp"
#include "common/parallel_for.hpp"
#include "input/manifest.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {

namespace {

template <class Fn>
double seconds_of(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Compressed size of `inputs` as one zstd stream at level 3 on `jobs` workers.
u64 zstd_stream_bytes(const std::vector<std::shared_ptr<const mapped_file>>& inputs, bool long_distance, unsigned jobs) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_nbWorkers, static_cast<int>(resolve_jobs(jobs)));
  if (long_distance) {
    ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_enableLongDistanceMatching, 1);
    ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_windowLog, 27);
  }
  std::vector<std::byte> buffer(ZSTD_CStreamOutSize());
  u64 total = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    ZSTD_inBuffer in{inputs[i]->bytes().data(), inputs[i]->bytes().size(), 0};
    const auto mode = i + 1 == inputs.size() ? ZSTD_e_end : ZSTD_e_continue;
    for (std::size_t left = 1; in.pos < in.size || (mode == ZSTD_e_end && left != 0);) {
      ZSTD_outBuffer out{buffer.data(), buffer.size(), 0};
      left = ZSTD_compressStream2(ctx.get(), &out, &in, mode);
      if (ZSTD_isError(left)) throw input_error(fmt::format("zstd: {}", ZSTD_getErrorName(left)));
      total += out.pos;
    }
  }
  return total;
}

// A /proc/self/status field in bytes (VmRSS, VmHWM), 0 when unknown.
u64 status_bytes(std::string_view field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':')
      return std::stoull(line.substr(field.size() + 1)) * 1024;
  return 0;
}

// How far the resident memory rises above where it is now while `fn` runs
// (clear_refs 5 restarts VmHWM from VmRSS); 0 when unknown.
template <class Fn>
u64 peak_rss_rise(Fn&& fn) {
  std::ofstream("/proc/self/clear_refs") << "5";
  const u64 before = status_bytes("VmRSS");
  fn();
  const u64 peak = status_bytes("VmHWM");
  return peak > before ? peak - before : 0;
}

// Walks every snapshot of `specs`, read from `archive` the way `mode` says;
// returns whether it was lazy (false: userfaultfd refused, `refused` says why).
bool walk_from_archive(const std::filesystem::path& archive, const std::vector<snapshot_spec>& specs, unsigned jobs,
                       archive::archive_read_mode mode, std::string& refused) {
  const auto reader = std::make_shared<archive::archive_reader>(archive);
  walk_options options;
  options.threads = static_cast<int>(jobs);
  for (const auto& spec : specs) {
    loaded_snapshot snapshot{spec, {}};
    try {
      archive::add_archived_regions(snapshot.image, archive_source{archive.string(), spec.id}, {}, mode);
    } catch (const std::runtime_error& e) {
      if (mode != archive::archive_read_mode::lazy) throw;
      refused = e.what();
      return false;
    }
    (void)walk_snapshots(std::span(&snapshot, 1), walk_backend::cpu, options);
  }
  return true;
}

}  // namespace

archive_bench_report run_archive_bench(const std::filesystem::path& manifest, const std::filesystem::path& scratch,
                                       unsigned jobs) {
  const auto specs = read_manifest(manifest);
  const auto base_dir = manifest.parent_path();
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
  struct remove_scratch {
    const std::filesystem::path& path;
    ~remove_scratch() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } cleanup{scratch};
  const auto archive = scratch / "archive";

  archive_bench_report r;
  r.snapshots = specs.size();
  std::vector<std::shared_ptr<const mapped_file>> files;
  for (const auto& spec : specs) files.push_back(archive::lay_out_image_file(spec, base_dir).file);
  for (const auto& f : files) r.image_bytes += f->bytes().size();

  archive::add_options options;
  options.jobs = jobs;
  r.add_seconds = seconds_of([&] { r.archive_bytes = archive::add_snapshots(archive, specs, base_dir, options).archive_bytes; });
  archive::archive_reader reader(archive);
  r.restore_seconds = seconds_of([&] {
    // One file each: replacing a restored file would time the file system's unlink too.
    for (std::size_t i = 0; i < specs.size(); ++i)
      reader.restore(specs[i].id, scratch / fmt::format("restored-{}", i), jobs);
  });
  r.load_seconds = seconds_of([&] {
    for (const auto& spec : specs) (void)reader.load(spec.id, jobs);
  });
  r.walk_eager_peak_rss = peak_rss_rise([&] {
    r.walk_eager_seconds = seconds_of([&] {
      (void)walk_from_archive(archive, specs, jobs, archive::archive_read_mode::eager, r.lazy_refused);
    });
  });
  r.walk_lazy_peak_rss = peak_rss_rise([&] {
    r.walk_lazy_seconds = seconds_of([&] {
      (void)walk_from_archive(archive, specs, jobs, archive::archive_read_mode::lazy, r.lazy_refused);
    });
  });
  r.zstd_each_seconds = seconds_of([&] {
    for (const auto& f : files) r.zstd_each_bytes += zstd_stream_bytes({f}, false, jobs);
  });
  r.zstd_long_seconds = seconds_of([&] { r.zstd_long_bytes = zstd_stream_bytes(files, true, jobs); });
  return r;
}

std::string format_archive_bench(const archive_bench_report& r, unsigned jobs) {
  const auto gbps = [&](double s) { return s > 0 ? static_cast<double>(r.image_bytes) / s / 1e9 : 0.0; };
  const auto ratio = [&](u64 bytes) { return bytes ? static_cast<double>(r.image_bytes) / static_cast<double>(bytes) : 0.0; };
  std::string out = fmt::format("archive bench: {} snapshots, {:.1f} MB of images, {} threads, one run each\n",
                                r.snapshots, static_cast<double>(r.image_bytes) / 1e6, resolve_jobs(jobs));
  out += fmt::format("  {:<28} {:>12} {:>8} {:>10}\n", "", "bytes", "ratio", "GB/s");
  const auto row = [&](std::string_view name, u64 bytes, double seconds) {
    out += fmt::format("  {:<28} {:>12} {:>8.1f} {:>10.2f}\n", name, bytes, ratio(bytes), gbps(seconds));
  };
  row("archive add", r.archive_bytes, r.add_seconds);
  row("zstd -3, each image", r.zstd_each_bytes, r.zstd_each_seconds);
  row("zstd -3 --long=27, concat", r.zstd_long_bytes, r.zstd_long_seconds);
  out += fmt::format("  {:<28} {:>12} {:>8} {:>10.2f}\n", "archive restore (all)", "", "", gbps(r.restore_seconds));
  out += fmt::format("  {:<28} {:>12} {:>8} {:>10.2f}\n", "load from archive (whole)", "", "", gbps(r.load_seconds));
  const auto walk_row = [&](std::string_view name, double seconds, u64 peak) {
    out += fmt::format("  {:<28} {:>12} {:>8} {:>10.2f}  {:.2f} s, peak RSS +{:.0f} MiB\n", name, "", "", gbps(seconds),
                       seconds, static_cast<double>(peak) / (1 << 20));
  };
  walk_row("walk from archive (eager)", r.walk_eager_seconds, r.walk_eager_peak_rss);
  if (r.lazy_refused.empty()) walk_row("walk from archive (lazy)", r.walk_lazy_seconds, r.walk_lazy_peak_rss);
  else out += fmt::format("  {:<28} not measured: {}\n", "walk from archive (lazy)", r.lazy_refused);
  return out;
}

}  // namespace ptwalk
