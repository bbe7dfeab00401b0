// host/compactor.hpp — relink and compact one snapshot (SPEC §4).
//
// From a loaded snapshot and its (full-range) walk, compact_snapshot plans a
// new image: one copy of every frame some leaf maps, packed into a dense
// data region from physical address 0 (1 GiB frames first, then 2 MiB, each
// aligned, 4 KiB frames filling the gaps), and page tables rebuilt after it
// through the table-write interface: one new root per original root, every
// AnotherSpace record relinked to the owner's rebuilt table so every shared
// table stays shared, every entry keeping its original non-address bits.
// The plan borrows the frame bytes from the input image; write_compacted_image
// streams it to a file, materialize builds it in memory.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ptwalk/mapping.hpp"
#include "input/snapshot.hpp"
#include "input/table_views.hpp"

namespace ptwalk {

struct compaction_policy {
  // No relocation: frames stay at their physical address (general OS images).
  bool keep_pa = false;
  // Leaves whose frame the image does not back keep their physical address
  // instead of being dropped.
  bool keep_unbacked = false;
  // Leaf entries with RW set become read-only CoW leaves (bits 11:9 = 0b001).
  bool cow_writable = false;

  [[nodiscard]] bool keeps_unbacked() const { return keep_pa || keep_unbacked; }
  // As recorded in a compacted manifest's meta.compaction.
  [[nodiscard]] nlohmann::json to_json() const;
  // The policy a compacted snapshot's meta records; the default when none.
  [[nodiscard]] static compaction_policy from_meta(const nlohmann::json& meta);
  friend bool operator==(const compaction_policy&, const compaction_policy&) = default;
};

struct compaction_stats {
  u64 spaces = 0;
  u64 leaves_kept = 0;
  u64 leaves_dropped_unbacked = 0;  // their frame is not (wholly) backed by the image
  u64 leaves_kept_unbacked = 0;     // --keep-unbacked / --keep-pa: left at their PA
  u64 leaves_made_cow = 0;          // --cow-writable
  u64 links = 0;                    // AnotherSpace records relinked (shared tables kept shared)
  u64 links_to_empty_tables = 0;    // AnotherSpace records dropped: the table maps nothing now
  u64 os_private_entries = 0;       // not-present entries with bits set, kept verbatim
  u64 frames_copied = 0;            // distinct frames given their own copy
  u64 frames_nested = 0;            // frames inside a larger copied frame: reuse its copy
  u64 frames_in_place = 0;          // frames left at their original PA
  u64 data_bytes = 0;               // bytes of frames written
  u64 padding_bytes = 0;            // zeros between aligned frames
  u64 tables = 0;                   // page tables in the output
  u64 bytes_in = 0;                 // bytes the input image backs
  u64 bytes_out = 0;                // bytes the output image backs

  compaction_stats& operator+=(const compaction_stats& o);
  friend bool operator==(const compaction_stats&, const compaction_stats&) = default;
};

// A piece of the output image: `size` bytes at `gpa`, copied from `bytes`
// (borrowed from the input image) or zeros when `bytes` is null.
struct output_piece {
  u64 gpa = 0;
  u64 size = 0;
  const std::byte* bytes = nullptr;
};

// A contiguous backed range of the output image.
struct output_run {
  u64 gpa = 0;
  u64 size = 0;
};

struct compacted_snapshot {
  // id, format, labels of the input; the new roots; meta with the policy.
  // `memory` is filled in by whoever writes the image.
  snapshot_spec spec;
  std::vector<output_piece> data;  // ascending gpa, disjoint, below or beside the tables
  page_table_buffer tables{0};
  compaction_stats stats;

  // The output image as maximal contiguous runs, ascending.
  [[nodiscard]] std::vector<output_run> runs() const;
};

// Plans the compacted snapshot. `walk` must be the full-range walk of
// `input`; the result borrows bytes from `input.image` and must not outlive it.
[[nodiscard]] compacted_snapshot compact_snapshot(const loaded_snapshot& input,
                                                  const snapshot_walk& walk,
                                                  const compaction_policy& policy);

// The compacted image in memory (owned copies of every run).
[[nodiscard]] memory_image materialize(const compacted_snapshot& snapshot);

// Writes the image's runs back to back to `file` and returns the memory
// source that describes them, naming the file by its file name (the
// manifest lives beside it). One run is a raw file at its base; several are
// regions of it. All-zero 4 KiB blocks are left as holes, so a sparse input
// gives a sparse output. Errors name `shown_as` when given (where a staged
// file will be once committed), else `file`.
[[nodiscard]] memory_source write_compacted_image(const compacted_snapshot& snapshot,
                                                  const std::filesystem::path& file,
                                                  std::string_view shown_as = {});

}  // namespace ptwalk
