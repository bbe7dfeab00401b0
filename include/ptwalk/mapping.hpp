// ptwalk/mapping.hpp — what a walk reports (SPEC §3).
//
// `mapping` (ThisSpace) and `space_reference_mapping` (AnotherSpace) are the
// user-facing views. `space_aware_mapping` is the one flat, trivially
// copyable record every backend produces — the same 32 bytes on host and
// device, so results can be sorted on the GPU and compared byte for byte.
#pragma once

#include <span>
#include <vector>

#include "ptwalk/bulk_allocator.hpp"
#include "ptwalk/config.hpp"
#include "ptwalk/format.hpp"

namespace ptwalk {

// A leaf of this space.
struct mapping {
  u64 va = 0;     // canonical start
  u64 pa = 0;
  u64 size = 0;   // x86: 4 KiB, 2 MiB or 1 GiB; AArch64 also 16/64 KiB, 32/512 MiB
  bool writable = false;
  bool user = false;
  bool executable = false;
  bool cow = false;
  u64 flags = 0;  // the leaf entry with its address bits cleared
  friend bool operator==(const mapping&, const mapping&) = default;
};

// Our depth-`depth` table block at `our_va` is the table that space `space`
// reached first at `their_va`; it is shared, not walked again.
struct space_reference_mapping {
  unsigned depth = 0;
  u64 space = 0;  // SpaceId of the owner: its root's physical address
  u64 our_va = 0;
  u64 their_va = 0;
  friend bool operator==(const space_reference_mapping&, const space_reference_mapping&) = default;
};

enum class record_kind : u8 { this_space = 0, another_space = 1 };

struct space_aware_mapping {
  record_kind kind = record_kind::this_space;
  u8 depth = 0;      // leaf: depth of the leaf entry; alias: depth of the shared table
  u8 perms = 0;      // leaf: perm_bits
  u8 size_log2 = 0;  // leaf: 12, 21, 30 (x86); 12..30 (AArch64 pages and blocks)
  u32 owner = 0;     // alias: primacy index of the owner space within its snapshot
  u64 va = 0;        // canonical: leaf va or our_va
  u64 pa = 0;        // leaf: physical address; alias: their_va (canonical)
  u64 flags = 0;     // leaf: raw non-address bits

  PTWALK_HD constexpr bool is_leaf() const { return kind == record_kind::this_space; }
  PTWALK_HD constexpr u64 size() const { return u64{1} << size_log2; }

  [[nodiscard]] mapping as_mapping() const {
    return {va, pa, size(), (perms & perm_writable) != 0, (perms & perm_user) != 0,
            (perms & perm_executable) != 0, (perms & perm_cow) != 0, flags};
  }
  [[nodiscard]] space_reference_mapping as_reference(std::span<const u64> roots) const {
    return {depth, roots[owner], va, pa};
  }
  friend bool operator==(const space_aware_mapping&, const space_aware_mapping&) = default;
};
static_assert(sizeof(space_aware_mapping) == 32);

// Builders shared by every backend so records are bit-identical.
//
// A leaf record written field by field where it goes: the cpu walker's leaf
// pass writes hundreds of thousands, and one built in a local and then
// copied was stored in bytes and reloaded in 16-byte halves, which stalls
// store-to-load forwarding on every record.
template <class Format>
PTWALK_HD constexpr void write_leaf_record(space_aware_mapping& r, u64 entry, unsigned depth, u64 va,
                                           u8 path_perms) {
  r.kind = record_kind::this_space;
  r.depth = static_cast<u8>(depth);
  r.perms = Format::leaf_perms(path_perms, entry);
  r.size_log2 = static_cast<u8>(Format::entry_shift(depth));
  r.owner = 0;
  r.va = Format::canonical(va);
  r.pa = Format::leaf_address(entry, depth);
  r.flags = Format::leaf_flags(entry, depth);
}

template <class Format>
PTWALK_HD constexpr space_aware_mapping make_leaf_record(u64 entry, unsigned depth, u64 va,
                                                         u8 path_perms) {
  space_aware_mapping r{};
  write_leaf_record<Format>(r, entry, depth, va, path_perms);
  return r;
}

template <class Format>
PTWALK_HD constexpr space_aware_mapping make_alias_record(unsigned depth, u32 owner, u64 our_va,
                                                          u64 their_va) {
  space_aware_mapping r{};
  r.kind = record_kind::another_space;
  r.depth = static_cast<u8>(depth);
  r.owner = owner;
  r.va = Format::canonical(our_va);
  r.pa = Format::canonical(their_va);
  return r;
}

// Counts a walk reports besides its records (SPEC §5 summary).
struct walk_stats {
  u64 tables[max_levels] = {};   // distinct (pa, depth) keys owned, per depth
  u64 aliases[max_levels] = {};  // AnotherSpace records, per depth
  u64 leaves_4k = 0, leaves_2m = 0, leaves_1g = 0;
  u64 leaves_16k = 0, leaves_64k = 0, leaves_32m = 0, leaves_512m = 0;  // AArch64 granules and blocks
  u64 dangling_reads = 0;        // entries read that no single region backs
  u64 entries_read = 0;

  walk_stats& operator+=(const walk_stats& o) {
    for (unsigned d = 0; d < max_levels; ++d) {
      tables[d] += o.tables[d];
      aliases[d] += o.aliases[d];
    }
    leaves_4k += o.leaves_4k;
    leaves_2m += o.leaves_2m;
    leaves_1g += o.leaves_1g;
    leaves_16k += o.leaves_16k;
    leaves_64k += o.leaves_64k;
    leaves_32m += o.leaves_32m;
    leaves_512m += o.leaves_512m;
    dangling_reads += o.dangling_reads;
    entries_read += o.entries_read;
    return *this;
  }
  // The counter of a leaf size; a size no format has (never produced) is null.
  u64* leaves_of_size(unsigned size_log2) {
    switch (size_log2) {
      case 12: return &leaves_4k;
      case 14: return &leaves_16k;
      case 16: return &leaves_64k;
      case 21: return &leaves_2m;
      case 25: return &leaves_32m;
      case 29: return &leaves_512m;
      case 30: return &leaves_1g;
      default: return nullptr;
    }
  }
  void count_leaf(unsigned size_log2) {
    if (u64* counter = leaves_of_size(size_log2)) ++*counter;
  }
  [[nodiscard]] u64 leaves() const {
    return leaves_4k + leaves_16k + leaves_64k + leaves_2m + leaves_32m + leaves_512m + leaves_1g;
  }
  friend bool operator==(const walk_stats&, const walk_stats&) = default;
};

// The walk of one snapshot: for each root in primacy order, its records in
// ascending VA order (records[offsets[i] .. offsets[i+1])).
struct snapshot_walk {
  std::vector<u64> roots;
  std::vector<u64> offsets;  // roots.size() + 1 entries
  bulk_vector<space_aware_mapping> records;  // grown without zero-filling
  walk_stats stats;

  [[nodiscard]] std::size_t space_count() const { return roots.size(); }
  [[nodiscard]] std::span<const space_aware_mapping> records_of(std::size_t space) const {
    return std::span(records).subspan(offsets[space], offsets[space + 1] - offsets[space]);
  }
  friend bool operator==(const snapshot_walk&, const snapshot_walk&) = default;
};

// An inclusive range of canonical virtual addresses. The default is all of them.
struct va_range {
  u64 first = 0;
  u64 last = ~u64{0};
};

// The range in linear VAs for a format (format.hpp: lower half, then the
// upper half); a bound inside the non-canonical hole is clamped to the
// nearest canonical VA in range.
template <class Format>
struct linear_va_range {
  u64 first = 0;
  u64 last = Format::max_va_linear;

  PTWALK_HD constexpr bool empty() const { return first > last; }
  PTWALK_HD constexpr bool overlaps(u64 start, u64 span) const {
    return start <= last && start + span - 1 >= first;
  }
  // The entries [lo, hi] of a depth-`depth` table at `block_va` whose span
  // meets the range; lo > hi when none does.
  struct index_bounds {
    unsigned lo, hi;
  };
  PTWALK_HD constexpr index_bounds entries_in_range(u64 block_va, unsigned depth) const {
    const unsigned shift = Format::entry_shift(depth);
    const u64 block_last = block_va + ((u64{Format::entries(depth)} << shift) - 1);
    if (empty() || block_va > last || block_last < first) return {1, 0};
    const unsigned lo = first > block_va ? static_cast<unsigned>((first - block_va) >> shift) : 0;
    const unsigned hi = last < block_last ? static_cast<unsigned>((last - block_va) >> shift)
                                          : Format::entries(depth) - 1;
    return {lo, hi};
  }
};

template <class Format>
constexpr linear_va_range<Format> to_linear(va_range r) {
  // The upper half starts at linear 2^(linear_bits-1) in both families.
  constexpr u64 half = u64{1} << (Format::linear_bits - 1);
  // A bound in the non-canonical hole moves to the upper half's start (first)
  // or the lower half's end (last).
  linear_va_range<Format> out;
  out.first = Format::is_canonical(r.first) ? Format::linear(r.first) : half;
  out.last = Format::is_canonical(r.last) ? Format::linear(r.last) : half - 1;
  return out;
}

}  // namespace ptwalk
