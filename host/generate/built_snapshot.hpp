// host/generate/built_snapshot.hpp — what one snapshot builder hands the fleet writer (internal).
//
// The x86 builder (fleet_generator.cpp) and the AArch64 builder
// (aarch64_fleet.cpp) both return this: the snapshot in memory, what its walk
// must report, and the byte ranges worth writing (the rest stays a hole).
#pragma once

#include <utility>
#include <vector>

#include "generate/fleet_generator.hpp"

namespace ptwalk {

struct built_snapshot {
  loaded_snapshot snapshot;
  snapshot_expectation expected;
  std::vector<std::pair<u64, u64>> extents;  // [begin, end) ranges holding non-zero bytes
};

// Snapshot `index` of an AArch64 fleet of `shape`, in `format`.
[[nodiscard]] built_snapshot build_aarch64_snapshot(const fleet_shape& shape, u32 index, paging_format format);

}  // namespace ptwalk
