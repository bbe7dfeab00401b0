// kernels/walk_steps.hpp — the per-item steps of the level-synchronous walk.
//
// Everything here is PTWALK_HD and allocation-free, so one source serves the
// CUDA kernels (through Thrust) and the CPU builds of the same algorithm
// (Thrust's OMP system, compiled by g++), and the cpu backend's flat owner
// table packs owners the same way. The steps, per level (SPEC §3):
//   expand  — every in-range entry of a frontier table is a leaf record, a
//             child visit (snapshot, child pa, space, block VA, perms), or nothing;
//   resolve — each child key's owner is the visit with the smallest
//             (space index, VA): an open-addressing table with atomic min;
//   split   — owner visits form the next frontier, the others become
//             AnotherSpace records naming the owner.
// Records carry their global space index; each level's leaves and aliases
// come out as runs sorted by (space, VA), merged once per batch.
#pragma once

#include <thrust/tuple.h>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk::kernels {

// Visit ranks: (space index, block VA) packed so that integer order is the
// ownership order. Every table below a root starts on a boundary of what the
// smallest such table spans (Format::min_table_span_shift: 2 MiB on x86-64,
// 2 MiB / 32 MiB / 512 MiB for the AArch64 granules), so the linear VA needs
// linear_bits minus that many bits: 27 for 4-level, 36 for LA57, 28 for
// aarch64-4k-48 (both halves), the rest is the space index (at most 32 bits).
template <class Format>
struct visit_rank {
  static constexpr unsigned va_shift = Format::min_table_span_shift;
  static constexpr unsigned space_shift = Format::linear_bits - va_shift;
  static constexpr u64 max_spaces = u64{1} << (64 - space_shift > 32 ? 32 : 64 - space_shift);

  PTWALK_HD static constexpr u64 pack(u32 space, u64 linear_va) {
    return (u64{space} << space_shift) | (linear_va >> va_shift);
  }
  PTWALK_HD static constexpr u32 space(u64 rank) { return static_cast<u32>(rank >> space_shift); }
  PTWALK_HD static constexpr u64 va(u64 rank) {
    return (rank & ((u64{1} << space_shift) - 1)) << va_shift;
  }
};

// Records travel with their global space index (batch-wide, u32): every
// (level, kind) run of records comes out sorted by (space, linear VA), and
// the runs are merged in this order. No packed key, so no limit on spaces
// or VA bits beyond the u32 index. Within one space no two records share a
// VA: leaves and aliases sit on distinct blocks, and a depth-0 alias is its
// space's only record.
template <class Format>
struct record_before {
  PTWALK_HD bool operator()(const thrust::tuple<space_aware_mapping, u32>& a,
                            const thrust::tuple<space_aware_mapping, u32>& b) const {
    const u32 sa = thrust::get<1>(a), sb = thrust::get<1>(b);
    return sa < sb || (sa == sb && Format::linear(thrust::get<0>(a).va) < Format::linear(thrust::get<0>(b).va));
  }
};

// Child-table keys: (snapshot in batch, table frame). The depth is implied:
// every key of one resolve step has the same depth.
struct table_key_of {
  static constexpr unsigned snapshot_shift = 40;  // frame numbers of bits 51:12
  static constexpr u64 max_snapshots = (u64{1} << (64 - snapshot_shift)) - 1;  // ~0 stays free
  static constexpr u64 empty = ~u64{0};

  PTWALK_HD static constexpr u64 pack(u32 snapshot, u64 table_pa) {
    return (u64{snapshot} << snapshot_shift) | (table_pa >> 12);
  }
  PTWALK_HD static constexpr u32 snapshot(u64 key) { return static_cast<u32>(key >> snapshot_shift); }
  PTWALK_HD static constexpr u64 table_pa(u64 key) {
    return (key & ((u64{1} << snapshot_shift) - 1)) << 12;
  }
};

// Device-wide atomics on 64-bit words, for the owner table. On the host
// (OMP/CPP systems) GCC's builtins give the same semantics. Updates read
// first and skip the atomic where it would change nothing: most visits find
// their key in place and a smaller rank there already.
PTWALK_HD inline u64 atomic_load_u64(const u64* word) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const volatile u64*>(word);
#else
  return __atomic_load_n(word, __ATOMIC_RELAXED);
#endif
}

PTWALK_HD inline u64 atomic_cas_u64(u64* word, u64 expected, u64 desired) {
#if defined(__CUDA_ARCH__)
  return atomicCAS(reinterpret_cast<unsigned long long*>(word), expected, desired);
#else
  __atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
#endif
}

PTWALK_HD inline void atomic_min_u64(u64* word, u64 value) {
#if defined(__CUDA_ARCH__)
  if (value < atomic_load_u64(word))
    atomicMin(reinterpret_cast<unsigned long long*>(word), static_cast<unsigned long long>(value));
#else
  u64 seen = atomic_load_u64(word);
  while (value < seen &&
         !__atomic_compare_exchange_n(word, &seen, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

// A 64-bit finalizer (MurmurHash3 fmix64): table frames are sequential in
// generated and real images, so the low bits alone would cluster.
PTWALK_HD constexpr u64 hash_u64(u64 x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

// Where the expansion reads a chunk's entries: the streaming walk's staging
// buffer, one word per item, uploaded chunk by chunk. A resident walk reads
// them from its resident pages instead (resident_entries, resident_steps.hpp),
// so the one expansion below serves both without a copy in between.
struct staged_entries {
  const u64* d_entries;  // chunk-relative items
  PTWALK_HD u64 operator()(u64 item) const { return d_entries[item]; }
};

// The tables of one frontier chunk, as kernels see them. Frontier arrays are
// indexed by table (chunk-relative); all tables of one step have the same
// depth, so the same entry count Format::entries(depth) (a power of two: 512
// on x86-64, up to 8192 on AArch64, fewer in a top table), and
// item = table * entries + index.
template <class Format, class Entries = staged_entries>
struct frontier_ref {
  Entries entries;  // item → its entry word
  const u32* d_snapshot;
  const u32* d_space;
  const u64* d_va;  // linear block start
  const u8* d_perms;
  const u32* d_space_base;  // first global space index of each snapshot
  linear_va_range<Format> range;
  unsigned depth;
  unsigned index_bits;  // log2 Format::entries(depth)

  PTWALK_HD u64 table(u64 item) const { return item >> index_bits; }
  PTWALK_HD unsigned index(u64 item) const {
    return static_cast<unsigned>(item & (Format::entries(depth) - 1));
  }
  PTWALK_HD u64 entry(u64 item) const { return entries(item); }
  PTWALK_HD bool in_range(u64 item) const {
    const auto bounds = range.entries_in_range(d_va[table(item)], depth);
    return bounds.lo <= index(item) && index(item) <= bounds.hi;
  }
  PTWALK_HD u64 entry_va(u64 item) const {
    return d_va[table(item)] + (u64{index(item)} << Format::entry_shift(depth));
  }
};

// What the expansion makes of an item, read and classified once: nothing
// (out of range or not present), a leaf record, or a child visit (never at
// the last level: Format::classify says leaf or not present there). The
// class rides in the item's low two bits, so one partition of the tagged
// items (System::select_two) writes both outputs in item order from a
// single read of the entries.
enum class item_class : u64 { none = 0, leaf = 1, table = 2 };

struct tagged_item {
  PTWALK_HD static constexpr u64 tag(u64 item, item_class c) { return item << 2 | static_cast<u64>(c); }
  PTWALK_HD static constexpr u64 item(u64 tagged) { return tagged >> 2; }
  PTWALK_HD static constexpr item_class of(u64 tagged) { return static_cast<item_class>(tagged & 3); }
};

template <class Format, class Entries = staged_entries>
struct classify_item {
  frontier_ref<Format, Entries> frontier;
  PTWALK_HD u64 operator()(u64 item) const {
    if (!frontier.in_range(item)) return tagged_item::tag(item, item_class::none);
    const entry_kind kind = Format::classify(frontier.entry(item), frontier.depth);
    return tagged_item::tag(item, kind == entry_kind::leaf    ? item_class::leaf
                                  : kind == entry_kind::table ? item_class::table
                                                              : item_class::none);
  }
};

// Whether a tagged item is of class C (the partition's selectors).
template <item_class C>
struct has_class {
  PTWALK_HD bool operator()(u64 tagged) const { return tagged_item::of(tagged) == C; }
};

// An item's emitter applied to a tagged item.
template <class Emit>
struct untagged {
  Emit emit;
  PTWALK_HD auto operator()(u64 tagged) const { return emit(tagged_item::item(tagged)); }
};

// item → (leaf record, global space).
template <class Format, class Entries = staged_entries>
struct emit_leaf {
  frontier_ref<Format, Entries> frontier;
  PTWALK_HD thrust::tuple<space_aware_mapping, u32> operator()(u64 item) const {
    const u64 table = frontier.table(item);
    const space_aware_mapping record = make_leaf_record<Format>(
        frontier.entry(item), frontier.depth, frontier.entry_va(item), frontier.d_perms[table]);
    return thrust::make_tuple(record, frontier.d_space_base[frontier.d_snapshot[table]] + frontier.d_space[table]);
  }
};

// item → child visit (key, rank, accumulated perms).
template <class Format, class Entries = staged_entries>
struct emit_visit {
  frontier_ref<Format, Entries> frontier;
  PTWALK_HD thrust::tuple<u64, u64, u8> operator()(u64 item) const {
    const u64 table = frontier.table(item);
    const u64 entry = frontier.entry(item);
    return thrust::make_tuple(
        table_key_of::pack(frontier.d_snapshot[table], Format::table_address(entry)),
        visit_rank<Format>::pack(frontier.d_space[table], frontier.entry_va(item)),
        Format::accumulate_perms(frontier.d_perms[table], entry));
  }
};

// Open-addressing owner table: key → smallest rank seen. Capacity is a power
// of two kept at most half full, so linear probing stays short.
struct owner_table_ref {
  u64* d_keys;
  u64* d_ranks;
  u64 mask;

  // Inserts the key if new, lowers its rank to `rank`, returns its slot.
  PTWALK_HD u64 insert_min(u64 key, u64 rank) const {
    for (u64 slot = hash_u64(key) & mask;; slot = (slot + 1) & mask) {
      // A relaxed read first: most visits find their key already in place
      // (shared tables are visited by every space), and a CAS would take
      // the line exclusive on every one of them.
      u64 seen = atomic_load_u64(&d_keys[slot]);
      if (seen == table_key_of::empty) seen = atomic_cas_u64(&d_keys[slot], table_key_of::empty, key);
      if (seen == table_key_of::empty || seen == key) {
        atomic_min_u64(&d_ranks[slot], rank);
        return slot;
      }
    }
  }
  // The smallest rank inserted for `key`, once every insert is done; the
  // key must have been inserted.
  PTWALK_HD u64 rank_of(u64 key) const { return d_ranks[slot_of(key)]; }
  // Where `key` lies; it must have been inserted.
  PTWALK_HD u64 slot_of(u64 key) const {
    u64 slot = hash_u64(key) & mask;
    while (d_keys[slot] != key) slot = (slot + 1) & mask;
    return slot;
  }
};

struct insert_visit {
  owner_table_ref owners;
  const u64* d_key;
  const u64* d_rank;
  u32* d_slot;
  PTWALK_HD void operator()(u64 visit) const {
    d_slot[visit] = static_cast<u32>(owners.insert_min(d_key[visit], d_rank[visit]));
  }
};

// The visit with the smallest rank of its key owns the table.
struct visit_owns {
  const u64* d_owner_rank;  // owner table ranks
  const u64* d_rank;
  const u32* d_slot;
  bool want_owner;
  PTWALK_HD bool operator()(u64 visit) const {
    return (d_owner_rank[d_slot[visit]] == d_rank[visit]) == want_owner;
  }
};

// Owner visit → next frontier entry (snapshot, table pa, space, block VA, perms).
template <class Format>
struct emit_owned_table {
  const u64* d_key;
  const u64* d_rank;
  const u8* d_perms;
  PTWALK_HD thrust::tuple<u32, u64, u32, u64, u8> operator()(u64 visit) const {
    const u64 key = d_key[visit], rank = d_rank[visit];
    return thrust::make_tuple(table_key_of::snapshot(key), table_key_of::table_pa(key),
                              visit_rank<Format>::space(rank), visit_rank<Format>::va(rank),
                              d_perms[visit]);
  }
};

// Non-owner visit → (AnotherSpace record, global space).
template <class Format>
struct emit_alias {
  const u64* d_owner_rank;
  const u64* d_key;
  const u64* d_rank;
  const u32* d_slot;
  const u32* d_space_base;
  unsigned depth;  // of the shared table
  PTWALK_HD thrust::tuple<space_aware_mapping, u32> operator()(u64 visit) const {
    using rank = visit_rank<Format>;
    const u64 ours = d_rank[visit], theirs = d_owner_rank[d_slot[visit]];
    const space_aware_mapping record =
        make_alias_record<Format>(depth, rank::space(theirs), rank::va(ours), rank::va(theirs));
    return thrust::make_tuple(record, d_space_base[table_key_of::snapshot(d_key[visit])] + rank::space(ours));
  }
};

}  // namespace ptwalk::kernels
