// host/batch_walk.hpp — one walk contract, several backends (DESIGN "three backends").
//
// walk_snapshots walks every root of every snapshot in a batch and returns,
// per snapshot, the records of SPEC §3. Every backend returns byte-identical
// results; `reference` is the sequential oracle the others are tested against.
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "ptwalk/mapping.hpp"
#include "snapshot.hpp"

namespace ptwalk {

enum class walk_backend { reference, cpu, cuda, automatic };

[[nodiscard]] std::string_view backend_name(walk_backend backend);
[[nodiscard]] std::optional<walk_backend> parse_backend(std::string_view name);

// Walks one snapshot with the reference walker.
[[nodiscard]] snapshot_walk reference_walk(const loaded_snapshot& snapshot, va_range range = {});

// Walks a batch with the chosen backend (automatic: cuda when a GPU is
// visible, else cpu). Throws when the backend is not available.
[[nodiscard]] std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots,
                                                        walk_backend backend, va_range range = {});

}  // namespace ptwalk
