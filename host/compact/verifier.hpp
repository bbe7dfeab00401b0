// host/verifier.hpp — proves a compacted snapshot equivalent to its original (SPEC §4).
//
// Deliberately independent of the compactor: both snapshots are walked with
// the reference walker and compared space by space, VA by VA: same leaves
// (page size, effective w/u/x, cow, non-address bits, physical address where
// the policy keeps it), the same bytes behind them (and the same holes),
// the same non-address bits on every entry along every path, the same
// AnotherSpace links (so every shared table is still shared), the same
// OS-private not-present entries. The only differences allowed are the
// ones the policy recorded in the compacted snapshot's meta permits.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/disk_usage.hpp"
#include "compact/compactor.hpp"
#include "input/snapshot.hpp"

namespace ptwalk {

struct verify_difference {
  std::string snapshot;
  u64 space = 0;  // SpaceId in the original
  u64 va = 0;
  std::string what;
};

struct verification_counts {
  u64 snapshots = 0;
  u64 spaces = 0;
  u64 leaves_checked = 0;   // leaves in both, compared
  u64 leaves_dropped = 0;   // unbacked leaves the policy drops
  u64 frames_compared = 0;  // distinct (before, after) frame pairs whose bytes were compared
  u64 bytes_compared = 0;
  u64 links_checked = 0;
  u64 links_to_empty_tables = 0;  // links gone with the table they named, which maps nothing after
  u64 os_private_entries = 0;
  u64 tables_before[max_levels] = {};
  u64 tables_after[max_levels] = {};
  u64 links_per_depth[max_levels] = {};  // AnotherSpace records per depth, before
  u64 bytes_before = 0;
  u64 bytes_after = 0;
  u64 difference_count = 0;

  verification_counts& operator+=(const verification_counts& o);
};

struct verification {
  verification_counts counts;
  std::vector<verify_difference> differences;  // the first few, in order
  unsigned levels = 4;                         // deepest format seen, for printing per depth
  // The files on disk, when whoever verifies knows them (ptwalk verify): printed beside the sizes.
  std::optional<disk_usage> disk_before, disk_after;

  [[nodiscard]] bool ok() const { return counts.difference_count == 0; }
};

// Compares one compacted snapshot with its original.
[[nodiscard]] verification verify_snapshot(const loaded_snapshot& original,
                                           const loaded_snapshot& compacted,
                                           std::size_t max_differences = 10);

// Matches snapshots by id and verifies each pair on `jobs` threads (0: all
// cores); a snapshot missing on either side is a difference.
[[nodiscard]] verification verify_fleet(std::span<const loaded_snapshot> original,
                                        std::span<const loaded_snapshot> compacted, unsigned jobs = 0,
                                        std::size_t max_differences = 10);

// A few lines for people: sizes before and after (and on disk), tables per depth, what
// was compared, and the differences (each "id space va: what").
[[nodiscard]] std::string format_verification(const verification& result);

}  // namespace ptwalk
