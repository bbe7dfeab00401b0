// host/compact/compact_job.hpp — the fleet job behind `ptwalk compact`: load → walk → relink/compact → write → verify.
//
// The job is a two-stage pipeline over batches of snapshots: one thread
// loads and walks batch k+1 (on the chosen backend) while `jobs` worker
// threads compact, write and optionally verify the snapshots of batch k,
// so the walk hides behind the compaction that must be done anyway. At
// most two walked batches wait at a time, which bounds memory. Every
// snapshot's output depends only on its input, so any thread count gives
// the same bytes. The output directory appears whole or not at all.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/disk_usage.hpp"
#include "walk/batch_walk.hpp"
#include "compact/compactor.hpp"
#include "compact/verifier.hpp"

namespace ptwalk {

struct compact_report;

struct compact_options {
  compaction_policy policy;
  walk_backend backend = walk_backend::automatic;
  unsigned jobs = 0;           // compaction threads; 0: every core
  std::size_t batch_size = 0;  // snapshots per walk batch (the first: one per job); 0: 2 per job, 4..256
  bool verify = false;         // verify every written snapshot against its original
  bool replace = false;        // an existing non-empty output directory may be replaced
  // Only the manifest's snapshots [first, end): one shard of a cluster job.
  // Images keep the names the whole manifest gives them, so shards merge
  // into the single-process directory.
  std::size_t first = 0;
  std::size_t end = SIZE_MAX;
  // Called with the staging directory and the report just before the output
  // is put in place: a shard adds its record here, in the same atomic step.
  std::function<void(const std::filesystem::path&, const compact_report&)> before_commit;
};

// Wall seconds of the walk stage, and thread-seconds (summed over the
// workers) of the compaction stage. first_batch is the part of the walk
// nothing can hide: until it is done the workers have nothing to do.
struct compact_phase_seconds {
  double load = 0;
  double walk = 0;
  double first_batch = 0;
  double relink = 0;  // planning, relinking and building tables
  double write = 0;
  double verify = 0;
  double stall = 0;   // workers waiting for walked snapshots, after the first batch
  double commit = 0;  // manifest and directory rename
  double total = 0;
};

struct compact_report {
  std::string out_dir;
  std::string backend;  // as resolved (auto: cpu or cuda)
  unsigned jobs = 0;
  std::size_t batch_size = 0;
  compaction_policy policy;
  u64 snapshots = 0;
  unsigned levels = 4;  // the deepest format in the fleet
  walk_stats walk;      // summed over the fleet: tables and links per depth, leaves
  compaction_stats compaction;  // bytes_in/out: guest memory the images back
  disk_usage disk_in;           // the input's files (each once)
  disk_usage disk_out;          // the written images
  bool verified = false;
  verification verify;  // when verified
  bool committed = false;  // false when verification failed: nothing was written
  compact_phase_seconds seconds;

  [[nodiscard]] nlohmann::json to_json() const;
  // What to_json wrote (the fields it has); throws input_error naming `where`.
  [[nodiscard]] static compact_report from_json(const nlohmann::json& j, std::string_view where);
  // A few lines for people.
  [[nodiscard]] std::string format() const;
  // Adds another shard's report of the same job: counts summed, thread-seconds
  // summed, total the slowest shard's, the first differences kept in order.
  void add_shard(const compact_report& shard);
};

struct compact_progress {
  std::size_t done = 0;
  std::size_t total = 0;
  double elapsed = 0;  // seconds since the job started
};
using progress_callback = std::function<void(const compact_progress&)>;

// Runs the job. Bad input throws input_error before anything is in place;
// a verification failure returns a report with committed == false.
// `progress` is called (from worker threads, one call at a time) after each snapshot.
[[nodiscard]] compact_report run_compact_job(const std::filesystem::path& manifest,
                                             const std::filesystem::path& out_dir,
                                             const compact_options& options,
                                             const progress_callback& progress = {});

// The compaction stage alone, in memory, on `jobs` threads: what the
// pipeline hides the walk behind. For benchmarks and tests.
[[nodiscard]] std::vector<compacted_snapshot> compact_all(std::span<const loaded_snapshot> snapshots,
                                                          std::span<const snapshot_walk> walks,
                                                          const compaction_policy& policy, unsigned jobs = 0);

}  // namespace ptwalk
