// host/cpu_walk.hpp — the `cpu` backend: the multi-root walk on all cores.
//
// The honest CPU baseline for the GPU walk, with output byte-identical to the
// reference (SPEC §3) at every thread count. Unlike the reference it keeps
// owners in a flat open-addressing table, finds the image region once per
// table instead of once per entry, reads entries straight from the mapped
// image eight at a time, and spreads the work over every core: the upper
// levels of each snapshot are one sequential pass (snapshots in parallel)
// that fixes every owner, and the last-level tables — most of the tables
// and almost all the leaves — are expanded in parallel across the whole
// batch (see cpu_walk.cpp).
#pragma once

#include <span>
#include <vector>

#include "kernels/level_walk.hpp"
#include "ptwalk/mapping.hpp"
#include "input/snapshot.hpp"

namespace ptwalk {

struct cpu_walk_options {
  va_range range{};
  int threads = 0;                  // 0: OpenMP's default (all cores)
  walk_profile* profile = nullptr;  // phases "owners", "upper", "leaves", "splice": host seconds and bytes
};

[[nodiscard]] std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots,
                                                  const cpu_walk_options& options);

}  // namespace ptwalk
