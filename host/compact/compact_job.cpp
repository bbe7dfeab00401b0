// host/compact_job.cpp — the walk/compact pipeline, its output directory and its report.
#include "compact/compact_job.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "input/manifest.hpp"
#include "common/parallel_for.hpp"

namespace ptwalk {

namespace {

using steady = std::chrono::steady_clock;

double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

// One image file per snapshot, named after its id (characters a file name
// should not have become '_'), made unique in manifest order.
std::vector<std::string> image_names(const std::vector<snapshot_spec>& specs) {
  std::set<std::string> used;
  std::vector<std::string> names;
  for (const auto& spec : specs) {
    std::string base = spec.id.empty() ? "snapshot" : spec.id;
    for (char& ch : base)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '_';
    std::string name = base + ".img";
    for (unsigned n = 2; !used.insert(name).second; ++n) name = fmt::format("{}-{}.img", base, n);
    names.push_back(std::move(name));
  }
  return names;
}

struct walked_batch {
  std::vector<loaded_snapshot> snapshots;
  std::vector<snapshot_walk> walks;
  std::size_t first = 0;  // manifest index of snapshots[0]
  std::atomic<std::size_t> remaining{0};
};

struct work_item {
  std::shared_ptr<walked_batch> batch;
  std::size_t index = 0;
};

struct snapshot_result {
  std::string manifest_line;
  compaction_stats compaction;
  walk_stats walk;
  unsigned levels = 4;
  verification verify;
};

class compact_pipeline {
 public:
  compact_pipeline(const std::filesystem::path& manifest, std::vector<snapshot_spec> specs,
                   const atomic_output_dir& staging, const compact_options& options,
                   std::size_t batch_size, const progress_callback& progress)
      : manifest_(manifest),
        specs_(std::move(specs)),
        names_(image_names(specs_)),
        staging_(staging),
        options_(options),
        batch_size_(batch_size),
        progress_(progress),
        results_(specs_.size()) {}

  // Runs both stages to the end and rethrows the first error of either.
  void run() {
    start_ = steady::now();
    {
      std::jthread producer([this] { guarded([this] { produce(); }); });
      std::vector<std::jthread> workers;
      for (unsigned t = 0; t < resolve_jobs(options_.jobs); ++t)
        workers.emplace_back([this] { guarded([this] { work(); }); });
    }
    if (error_) std::rethrow_exception(error_);
  }

  [[nodiscard]] const std::vector<snapshot_result>& results() const { return results_; }
  [[nodiscard]] const compact_phase_seconds& seconds() const { return seconds_; }

 private:
  // Loads and walks batch after batch, at most two ahead of the workers.
  void produce() {
    // The first batch is only as big as it takes to give every worker a
    // snapshot: its walk is the one part of the job nothing hides.
    const std::size_t first_batch = std::min<std::size_t>(batch_size_, resolve_jobs(options_.jobs));
    for (std::size_t first = 0, count = 0; first < specs_.size(); first += count) {
      count = std::min(first == 0 ? first_batch : batch_size_, specs_.size() - first);
      {
        std::unique_lock lock(mutex_);
        room_.wait(lock, [this] { return failed_ || batches_in_flight_ < 2; });
        if (failed_) return;
      }
      auto batch = std::make_shared<walked_batch>();
      batch->first = first;
      const auto load_start = steady::now();
      for (std::size_t i = first; i < first + count; ++i)
        batch->snapshots.push_back(load_snapshot(specs_[i], manifest_.parent_path(), manifest_.string()));
      const auto walk_start = steady::now();
      seconds_.load += std::chrono::duration<double>(walk_start - load_start).count();
      batch->walks = walk_snapshots(batch->snapshots, options_.backend);
      seconds_.walk += seconds_since(walk_start);
      batch->remaining = count;
      {
        const std::lock_guard lock(mutex_);
        if (first == 0) seconds_.first_batch = seconds_since(start_);
        ++batches_in_flight_;
        for (std::size_t i = 0; i < count; ++i) queue_.push_back({batch, i});
      }
      ready_.notify_all();
    }
    const std::lock_guard lock(mutex_);
    produced_all_ = true;
    ready_.notify_all();
  }

  void work() {
    compact_phase_seconds mine;
    bool started = false;
    for (work_item item; next(item, started ? &mine.stall : nullptr); item = {}) {
      started = true;
      try {
        process(item, mine);
      } catch (...) {
        fail(std::current_exception());
      }
      finish(item);
    }
    const std::lock_guard lock(mutex_);
    seconds_.relink += mine.relink;
    seconds_.write += mine.write;
    seconds_.verify += mine.verify;
    seconds_.stall += mine.stall;
  }

  void process(const work_item& item, compact_phase_seconds& seconds) {
    const loaded_snapshot& input = item.batch->snapshots[item.index];
    const snapshot_walk& walk = item.batch->walks[item.index];
    const std::size_t i = item.batch->first + item.index;
    snapshot_result& result = results_[i];

    auto mark = steady::now();
    compacted_snapshot compacted = compact_snapshot(input, walk, options_.policy);
    seconds.relink += seconds_since(mark);

    mark = steady::now();
    const std::filesystem::path image = staging_.path() / names_[i];
    compacted.spec.memory = write_compacted_image(compacted, image, staging_.final_path(image).string());
    result.manifest_line = format_manifest_line(compacted.spec);
    seconds.write += seconds_since(mark);

    if (options_.verify) {
      mark = steady::now();
      // The file just written, loaded as a reader of the output would load it.
      const loaded_snapshot written =
          load_snapshot(compacted.spec, staging_.path(), (staging_.path() / "manifest.jsonl").string());
      result.verify = verify_snapshot(input, written);
      seconds.verify += seconds_since(mark);
    }
    result.compaction = compacted.stats;
    result.walk = walk.stats;
    result.levels = format_levels(input.format());
  }

  // The next walked snapshot; false when there is none left or the job failed.
  bool next(work_item& item, double* stall) {
    std::unique_lock lock(mutex_);
    const auto wait_start = steady::now();
    ready_.wait(lock, [this] { return failed_ || !queue_.empty() || produced_all_; });
    if (stall != nullptr) *stall += seconds_since(wait_start);
    if (failed_ || queue_.empty()) return false;
    item = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }

  void finish(const work_item& item) {
    if (--item.batch->remaining == 0) {
      const std::lock_guard lock(mutex_);
      --batches_in_flight_;
      room_.notify_all();
    }
    const std::size_t done = ++done_;
    if (progress_) {
      const std::lock_guard lock(progress_mutex_);
      progress_({done, specs_.size(), seconds_since(start_)});
    }
  }

  template <class Fn>
  void guarded(Fn&& fn) {
    try {
      fn();
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr error) {
    {
      const std::lock_guard lock(mutex_);
      if (!error_) error_ = std::move(error);
      failed_ = true;
    }
    ready_.notify_all();
    room_.notify_all();
  }

  const std::filesystem::path manifest_;
  const std::vector<snapshot_spec> specs_;
  const std::vector<std::string> names_;
  const atomic_output_dir& staging_;
  const compact_options& options_;
  const std::size_t batch_size_;
  const progress_callback& progress_;
  std::vector<snapshot_result> results_;  // by manifest index
  compact_phase_seconds seconds_;
  steady::time_point start_;

  std::mutex mutex_;
  std::condition_variable ready_;  // items queued, or the producer is done, or failure
  std::condition_variable room_;   // a batch finished, or failure
  std::deque<work_item> queue_;
  std::size_t batches_in_flight_ = 0;
  bool produced_all_ = false;
  bool failed_ = false;
  std::exception_ptr error_;
  std::atomic<std::size_t> done_{0};
  std::mutex progress_mutex_;
};

std::size_t default_batch_size(unsigned jobs) { return std::clamp<std::size_t>(2 * std::size_t{jobs}, 4, 256); }

void check_output_dir(const std::filesystem::path& dir, bool replace) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return;
  if (!std::filesystem::is_directory(dir, ec))
    throw input_error(fmt::format("{}: exists and is not a directory", dir.string()));
  if (!replace && !std::filesystem::is_empty(dir, ec))
    throw input_error(fmt::format("{}: exists and is not empty (use --force to replace it)", dir.string()));
}

void write_manifest(const atomic_output_dir& staging, const std::vector<snapshot_result>& results) {
  const std::filesystem::path path = staging.path() / "manifest.jsonl";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const auto& r : results) out << r.manifest_line << '\n';
  out.close();
  if (!out) throw input_error(fmt::format("{}: write failed: {}", staging.final_path(path).string(), std::strerror(errno)));
}

}  // namespace

compact_report run_compact_job(const std::filesystem::path& manifest, const std::filesystem::path& out_dir,
                               const compact_options& options, const progress_callback& progress) {
  const auto start = steady::now();
  std::vector<snapshot_spec> specs = read_manifest(manifest);
  check_output_dir(out_dir, options.replace);
  atomic_output_dir staging(out_dir);

  compact_report report;
  report.out_dir = out_dir.string();
  report.backend = std::string(backend_name(resolve_backend(options.backend)));
  report.jobs = resolve_jobs(options.jobs);
  report.batch_size = options.batch_size != 0 ? options.batch_size : default_batch_size(report.jobs);
  report.policy = options.policy;
  report.snapshots = specs.size();
  report.verified = options.verify;

  compact_pipeline pipeline(manifest, std::move(specs), staging, options, report.batch_size, progress);
  pipeline.run();
  report.seconds = pipeline.seconds();
  for (const snapshot_result& r : pipeline.results()) {
    report.walk += r.walk;
    report.compaction += r.compaction;
    report.levels = std::max(report.levels, r.levels);
    if (!options.verify) continue;
    report.verify.counts += r.verify.counts;
    report.verify.levels = report.levels;
    for (const auto& d : r.verify.differences)
      if (report.verify.differences.size() < 10) report.verify.differences.push_back(d);
  }
  if (options.verify && !report.verify.ok()) {
    report.seconds.total = seconds_since(start);
    return report;  // the staging directory goes with `staging`
  }
  const auto commit_start = steady::now();
  write_manifest(staging, pipeline.results());
  staging.commit();
  report.committed = true;
  report.seconds.commit = seconds_since(commit_start);
  report.seconds.total = seconds_since(start);
  return report;
}

std::vector<compacted_snapshot> compact_all(std::span<const loaded_snapshot> snapshots,
                                            std::span<const snapshot_walk> walks,
                                            const compaction_policy& policy, unsigned jobs) {
  std::vector<compacted_snapshot> out(snapshots.size());
  parallel_for(snapshots.size(), jobs,
               [&](std::size_t i) { out[i] = compact_snapshot(snapshots[i], walks[i], policy); });
  return out;
}

nlohmann::json compact_report::to_json() const {
  nlohmann::ordered_json j;
  j["out_dir"] = out_dir;
  j["committed"] = committed;
  j["backend"] = backend;
  j["jobs"] = jobs;
  j["batch_size"] = batch_size;
  j["policy"] = policy.to_json();
  j["snapshots"] = snapshots;
  j["spaces"] = compaction.spaces;
  auto per_depth = [&](const u64* values) {
    return std::vector<u64>(values, values + levels);
  };
  j["tables_per_depth"] = per_depth(walk.tables);
  j["shared_table_links_per_depth"] = per_depth(walk.aliases);
  j["leaves"] = {{"4k", walk.leaves_4k}, {"2m", walk.leaves_2m}, {"1g", walk.leaves_1g}};
  j["compaction"] = {{"leaves_kept", compaction.leaves_kept},
                     {"leaves_dropped_unbacked", compaction.leaves_dropped_unbacked},
                     {"leaves_kept_unbacked", compaction.leaves_kept_unbacked},
                     {"leaves_made_cow", compaction.leaves_made_cow},
                     {"links", compaction.links},
                     {"empty_shared_tables", compaction.empty_shared_tables},
                     {"os_private_entries", compaction.os_private_entries},
                     {"frames_copied", compaction.frames_copied},
                     {"frames_nested", compaction.frames_nested},
                     {"frames_in_place", compaction.frames_in_place},
                     {"data_bytes", compaction.data_bytes},
                     {"padding_bytes", compaction.padding_bytes},
                     {"tables", compaction.tables}};
  j["bytes_in"] = compaction.bytes_in;
  j["bytes_out"] = compaction.bytes_out;
  j["seconds"] = {{"load", seconds.load},     {"walk", seconds.walk},     {"first_batch", seconds.first_batch},
                  {"relink", seconds.relink}, {"write", seconds.write},   {"verify", seconds.verify},
                  {"stall", seconds.stall},   {"commit", seconds.commit}, {"total", seconds.total}};
  if (verified) {
    nlohmann::json differences = nlohmann::json::array();
    for (const auto& d : verify.differences)
      differences.push_back({{"snapshot", d.snapshot}, {"space", hex(d.space)}, {"va", hex(d.va)}, {"what", d.what}});
    j["verify"] = {{"ok", verify.ok()},
                   {"differences", verify.counts.difference_count},
                   {"first_differences", std::move(differences)},
                   {"leaves_checked", verify.counts.leaves_checked},
                   {"bytes_compared", verify.counts.bytes_compared},
                   {"links_checked", verify.counts.links_checked}};
  } else {
    j["verify"] = nullptr;
  }
  return j;
}

std::string compact_report::format() const {
  auto mib = [](u64 bytes) { return static_cast<double>(bytes) / (1 << 20); };
  std::string text;
  text += fmt::format("compacted {} snapshots ({} spaces); walker {}, {} jobs\n", snapshots,
                      compaction.spaces, backend, jobs);
  for (unsigned d = 0; d < levels; ++d)
    text += fmt::format("  depth {}: {} distinct tables, {} links to a table another space (or VA) owns\n", d,
                        walk.tables[d], walk.aliases[d]);
  text += fmt::format("  frames: {} copied, {} inside a larger copied frame, {} left at their address\n",
                      compaction.frames_copied, compaction.frames_nested, compaction.frames_in_place);
  text += fmt::format("  leaves: {} kept, {} unbacked dropped, {} unbacked kept, {} made CoW; "
                      "{} OS-private entries kept\n",
                      compaction.leaves_kept, compaction.leaves_dropped_unbacked, compaction.leaves_kept_unbacked,
                      compaction.leaves_made_cow, compaction.os_private_entries);
  text += fmt::format("  size: {:.1f} MiB in, {:.1f} MiB out", mib(compaction.bytes_in), mib(compaction.bytes_out));
  if (compaction.bytes_in > 0)
    text += fmt::format(" ({:.1f}%)", 100.0 * static_cast<double>(compaction.bytes_out) /
                                          static_cast<double>(compaction.bytes_in));
  text += "\n";
  text += fmt::format("  time: total {:.3f} s; load {:.3f} s, walk {:.3f} s (first batch ready at {:.3f} s); "
                      "relink {:.3f} s, write {:.3f} s, verify {:.3f} s, stalled {:.3f} s (summed over jobs)\n",
                      seconds.total, seconds.load, seconds.walk, seconds.first_batch, seconds.relink,
                      seconds.write, seconds.verify, seconds.stall);
  if (verified) text += verify.ok() ? "  verify: OK\n" : format_verification(verify);
  text += committed ? fmt::format("  output: {}/manifest.jsonl\n", out_dir) : "  output: none written\n";
  return text;
}

}  // namespace ptwalk
