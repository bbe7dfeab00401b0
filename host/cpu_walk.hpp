// host/cpu_walk.hpp — the `cpu` backend: the multi-root walk on all cores.
//
// The honest CPU baseline for the GPU walk, with output byte-identical to the
// reference (SPEC §3) at every thread count. Unlike the reference it keeps
// owners in a flat open-addressing table, looks up the image region once per
// table instead of once per entry, and reads entries straight from the
// mapped image. Work is spread over threads in one of two ways:
//   per snapshot — each snapshot is one depth-first walk that claims owners
//                  as it goes (the reference order), snapshots in parallel;
//   two-phase    — a depth-first pass over the upper levels only (no leaf
//                  tables read) fixes every owner, then spaces are walked in
//                  parallel, in pieces of root entries, against the now
//                  read-only owner table. This parallelizes a batch of few
//                  snapshots with many spaces.
// `automatic` picks per snapshot when there are enough snapshots to keep every
// thread busy (see cpu_walk.cpp for the measurement behind it).
#pragma once

#include <span>
#include <vector>

#include "ptwalk/mapping.hpp"
#include "snapshot.hpp"

namespace ptwalk {

enum class cpu_walk_mode { automatic, per_snapshot, two_phase };

struct cpu_walk_options {
  va_range range{};
  cpu_walk_mode mode = cpu_walk_mode::automatic;
  int threads = 0;  // 0: OpenMP's default (all cores)
};

[[nodiscard]] std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots,
                                                  const cpu_walk_options& options);

}  // namespace ptwalk
