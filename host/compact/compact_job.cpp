// host/compact/compact_job.cpp — the walk/compact pipeline and its output directory.
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
                   std::vector<std::string> names, const atomic_output_dir& staging, const compact_options& options,
                   std::size_t batch_size, const progress_callback& progress)
      : manifest_(manifest),
        specs_(std::move(specs)),
        names_(std::move(names)),
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
  std::vector<std::string> names = image_names(specs);
  // A shard's snapshots, named as in the whole manifest.
  const auto end = static_cast<std::ptrdiff_t>(std::min(options.end, specs.size()));
  const auto first = std::min(static_cast<std::ptrdiff_t>(options.first), end);
  specs = {std::make_move_iterator(specs.begin() + first), std::make_move_iterator(specs.begin() + end)};
  names = {std::make_move_iterator(names.begin() + first), std::make_move_iterator(names.begin() + end)};
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
  std::vector<std::filesystem::path> input_files;
  for (const snapshot_spec& spec : specs)
    for (auto& file : memory_files(spec.memory, manifest.parent_path())) input_files.push_back(std::move(file));
  report.disk_in = disk_usage_of(input_files);

  compact_pipeline pipeline(manifest, std::move(specs), std::move(names), staging, options, report.batch_size, progress);
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
  report.disk_out = disk_usage_of_dir(staging.path());  // only the images so far
  const auto commit_start = steady::now();
  write_manifest(staging, pipeline.results());
  report.committed = true;
  if (options.before_commit) {
    report.seconds.total = seconds_since(start);
    options.before_commit(staging.path(), report);
  }
  staging.commit();
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

}  // namespace ptwalk
