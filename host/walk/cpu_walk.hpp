// host/cpu_walk.hpp — the `cpu` backend: the multi-root walk on all cores.
//
// The honest CPU baseline for the GPU walk, with output byte-identical to the
// reference (SPEC §3) at every thread count. Unlike the reference it keeps
// owners in flat open-addressing tables, finds the image region once per
// table instead of once per entry, reads entries straight from the mapped
// image eight at a time, and spreads every step over every core, within a
// snapshot as well as across the batch: owners level by level, the upper
// records by slices of spaces, the last-level tables (most of the tables
// and almost all the leaves) table by table, and the splice of the two by
// chunks of records (see cpu_walk.cpp).
#pragma once

#include <span>
#include <vector>

#include "kernels/level_walk.hpp"
#include "ptwalk/mapping.hpp"
#include "input/snapshot.hpp"

namespace ptwalk {

struct cpu_walk_options {
  va_range range{};
  int threads = 0;                  // 0: all cores
  walk_profile* profile = nullptr;  // phases "owners", "upper", "leaves", "splice": host seconds and bytes
  u64 splice_items = 0;             // items per splice task; 0: the default (tests cross many task boundaries)
};

[[nodiscard]] std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots,
                                                  const cpu_walk_options& options);

}  // namespace ptwalk
