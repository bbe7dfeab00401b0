// host/batch_walk.hpp — one walk contract, several backends (DESIGN "three backends").
//
// walk_snapshots walks every root of every snapshot in a batch and returns,
// per snapshot, the records of SPEC §3. Every backend returns byte-identical
// results (records, offsets, roots and stats) at every thread count;
// `reference` is the sequential oracle the others are tested against.
//   reference  — walk_va_spaces per snapshot (include/ptwalk/walk.hpp)
//   cpu        — all cores, flat owner tables (cpu_walk.hpp)
//   cuda       — the level-synchronous walk on the GPU (cuda/cuda_walk.hpp)
//   automatic  — cuda when a GPU is visible, else cpu
// The level-synchronous algorithm's CPU build (Thrust OMP) is reachable as
// `thrust-cpu` for tests and benchmarks; it is not a user-facing choice.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/level_walk.hpp"
#include "ptwalk/mapping.hpp"
#include "input/snapshot.hpp"

namespace ptwalk {

enum class walk_backend { reference, cpu, cuda, automatic, thrust_cpu };

[[nodiscard]] std::string_view backend_name(walk_backend backend);
[[nodiscard]] std::optional<walk_backend> parse_backend(std::string_view name);

// Whether this binary has the backend, and (for cuda) whether it can run here.
[[nodiscard]] bool backend_compiled(walk_backend backend);
[[nodiscard]] bool gpu_visible();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)", or why there is none.
[[nodiscard]] std::string gpu_description();
// What `automatic` resolves to on this machine.
[[nodiscard]] walk_backend resolve_backend(walk_backend backend);

struct walk_options {
  va_range range{};
  walk_profile* profile = nullptr;  // level-synchronous backends fill it
  int threads = 0;                  // cpu backends; 0 = all cores
  u64 max_batch_spaces = 0;         // level-synchronous: 0 = as device memory allows
  std::size_t chunk_tables = 0;     // level-synchronous: tables per upload, 0 = default
  u64 device_memory_limit = 0;      // level-synchronous: device bytes to use, 0 = what is free
};

// Walks one snapshot with the reference walker.
[[nodiscard]] snapshot_walk reference_walk(const loaded_snapshot& snapshot, va_range range = {});

// Walks a batch with the chosen backend. Throws when the backend is not
// available (not compiled in, or no GPU for cuda).
[[nodiscard]] std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots,
                                                        walk_backend backend, va_range range = {});
[[nodiscard]] std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots,
                                                        walk_backend backend, const walk_options& options);

// Uploads the snapshots' images to the backend's device once, for repeated
// resident walks (`ptwalk bench`; kernels/level_walk.hpp): thrust-cpu or
// cuda (automatic resolves as for walk_snapshots). The snapshots must
// outlive it. Throws resident_does_not_fit when the images do not fit in
// `device_memory_limit` bytes (0 = what the device has free).
[[nodiscard]] std::unique_ptr<resident_fleet> make_resident_fleet(std::span<const loaded_snapshot> snapshots,
                                                                  walk_backend backend,
                                                                  u64 device_memory_limit = 0);

}  // namespace ptwalk
