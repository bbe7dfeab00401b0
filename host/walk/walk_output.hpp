// host/walk_output.hpp — `ptwalk walk` output: JSON Lines records and the stderr summary.
//
// Records are written as SPEC §5 JSON Lines with a fixed key order, one
// line per record: spaces in primacy order, each space's records in VA
// order, snapshots in manifest order. A walk can produce millions of
// records, so lines are formatted with compiled fmt formats into a buffer
// (not built as JSON objects) and written out in large chunks.
#pragma once

#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "ptwalk/mapping.hpp"

namespace ptwalk {

// Writes the lines of every walk, in order, to `out`.
void write_walk_jsonl(std::ostream& out, std::span<const snapshot_walk> walks);

// A few human-readable lines (each ending in a newline): snapshots, spaces,
// leaves by size, distinct tables and aliases per depth (depths 0 ..
// levels-1), dangling reads, backend and time.
[[nodiscard]] std::string format_walk_summary(std::span<const snapshot_walk> walks, unsigned levels,
                                              std::string_view backend, double seconds);

}  // namespace ptwalk
