// host/fleet_generator.hpp — synthetic fleets of guest images for tests, benchmarks and demos.
//
// A fleet is built from a `fleet_shape` and a seed, deterministically: same
// shape, same bytes. Each snapshot is one image laid out like a small guest:
// a reserved zero page, a pool of 4 KiB data frames, a pool of 2 MiB frames
// (with large pages), then the page tables. Spaces look like Linux processes
// (a PIE binary, heap, mmapped libraries, stack in the lower half; the kernel
// in the upper half), and the features of the shape add the sharing and the
// oddities the walker must handle. Tables are built only through the core
// write API (map, space_aware_map, the format's encoders) into a
// page_table_buffer.
//
// Unlike a walk, the generator knows what it built: every table it allocates,
// every extra link to an existing table and every leaf is counted as it is
// written, so `snapshot_expectation` is an independent prediction of what
// walk_va_spaces must report — the oracle the walker tests use.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "ptwalk/mapping.hpp"
#include "input/snapshot.hpp"

namespace ptwalk {

// Which snapshots use 5-level paging (LA57).
enum class la57_mode : u8 { off, some, all };  // some: every odd-numbered snapshot
// AArch64 fleets: off (x86-64), one format for every snapshot, or mixed
// (snapshot i uses the (i mod 6)-th, so a fleet of six covers every granule).
enum class arm_mode : u8 { off, k4_48, k4_39, k16_47, k16_48, k64_42, k64_48, mixed };

struct fleet_shape {
  u32 snapshots = 2;
  u32 spaces_per_snapshot = 8;
  u32 user_pages_per_space = 64;  // 4 KiB pages in the lower half of each space
  u32 kernel_pages = 256;         // 4 KiB pages of the kernel half (the same in every space)
  // Linux-like: every space's upper-half top-level entries point at the same
  // PDPTs (AnotherSpace records at depth 1).
  bool share_kernel_half = true;
  // Nanvix-like, when > 0 (needs share_kernel_half off): spaces form this many
  // groups (space i in group i % n); a group shares the kernel's page tables
  // at the last depth, each space has its own tables above them.
  u32 nanvix_groups = 0;
  bool large_pages = false;  // 2 MiB leaves (kernel text, a THP per space) and one 1 GiB leaf (direct map)
  bool cow = false;  // Hyperlight CoW: about half the writable user leaves read-only with bits 11:9 = 0b001
  bool self_reference = false;  // every space's top table maps itself (Windows-style self-map, index 493)
  u32 duplicate_roots = 0;      // extra roots per snapshot repeating earlier ones, with PCID bits
  la57_mode la57 = la57_mode::off;
  // AArch64 (aarch64_fleet.cpp): share_kernel = Linux-like (per-process
  // TTBR0, one shared TTBR1), else Hyperlight-like (TTBR0 only); large =
  // 2 or 32 MiB blocks (none for 64 KiB granules); heaps in contiguous-bit
  // runs. nanvix, self_ref, dups, hostile and la57 are x86-only.
  arm_mode arm = arm_mode::off;
  // Adds three roots per snapshot: one whose 512 entries all point at itself,
  // one with tables outside the image, an unbacked leaf, swap-like
  // not-present entries and a table used as both PD and PT, and one whose
  // PDPT lies in the cut-off last page (the image size is not a multiple of
  // 4 KiB; the root is whole, as load_snapshot requires of root tables).
  bool hostile = false;
  u32 data_frames = 0;  // 4 KiB data frames per image; 0: min(4096, enough for one per page), at least 64
  u64 seed = 1;

  friend bool operator==(const fleet_shape&, const fleet_shape&) = default;
};

// Throws input_error when the shape is out of range or inconsistent.
void validate_shape(const fleet_shape& shape);
// The paging format of snapshot `index` of a fleet of this shape.
[[nodiscard]] paging_format snapshot_format(const fleet_shape& shape, u32 index);

// Parses "PRESET,key=value,flag,...": an optional preset first (small, linux,
// nanvix, hyperlight, recursive, everything, bench, bench-arm, bench-arm64k), then overrides. Keys:
// snapshots, spaces, pages, kernel, share_kernel, nanvix, large, cow,
// self_ref, dups, la57 (off|some|all; bare: all), arm (off|4k-48|4k-39|
// 16k-47|16k-48|64k-42|64k-48|mixed; bare: 4k-48), hostile, frames, seed. A bare
// boolean key means =1. Throws input_error naming the bad item.
[[nodiscard]] fleet_shape parse_fleet_shape(std::string_view text);
// The canonical "key=value,..." form; parse_fleet_shape reads it back exactly.
[[nodiscard]] std::string format_fleet_shape(const fleet_shape& shape);
// Preset names, for help texts.
[[nodiscard]] std::vector<std::string_view> fleet_presets();

// What the walk of one generated snapshot over the whole VA range must
// report, recorded while building it.
struct snapshot_expectation {
  walk_stats stats;         // tables and aliases per depth, leaves by size, dangling and entries read
  u64 unbacked_leaves = 0;  // leaves whose frame the image does not back (hostile only)
  u64 table_pages = 0;      // 4 KiB page-table pages written into the image
  u64 image_bytes = 0;      // size of the image (its one region, at guest-physical 0)
};

struct generated_fleet {
  std::vector<loaded_snapshot> snapshots;  // each names its raw image file "<id>.img", base 0
  std::vector<snapshot_expectation> expected;
};

// Builds the fleet in memory.
[[nodiscard]] generated_fleet generate_fleet(const fleet_shape& shape);

struct fleet_summary {
  u64 snapshots = 0;
  u64 la57_snapshots = 0;
  u64 spaces = 0;  // roots listed, duplicates included
  u64 image_bytes = 0;
  u64 table_pages = 0;
};

// Writes manifest.jsonl and one raw image per snapshot into `dir`, with the
// shape and the expectations in each line's "meta". Everything is written to a
// temporary sibling directory first and renamed onto `dir` at the end, so a
// failed run leaves nothing. An existing non-empty `dir` is an error unless
// `replace` is set. Images are sparse where they are zero.
fleet_summary write_fleet(const fleet_shape& shape, const std::filesystem::path& dir, bool replace = false);

}  // namespace ptwalk
