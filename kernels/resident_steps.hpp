// kernels/resident_steps.hpp — reading page tables from images resident in device memory.
//
// A resident walk (detail/resident_image.hpp) uploads a fleet's images once:
// every non-zero 4 KiB page into one buffer of page slots (each word as the
// host gather reads it: 0 where no one region holds all 8 bytes), each snapshot's
// non-zero page frames as a sorted run (a page's slot is its index among all
// runs), and each snapshot's backed regions as a sorted run of [start, end).
// Zero pages and unbacked memory take no storage. The walk then resolves
// each frontier table's page slots on the device and its expansion reads the
// entries from there (resident_entries): the same words and the same
// dangling counts as the host gather (gather_tables), which reads
// through memory_image::bytes_at — an 8-byte entry is backed when one
// region holds all of it, else it reads as 0 (SPEC §1). Everything here is
// PTWALK_HD and allocation-free, so the CPU build runs it in CI.
#pragma once

#include <thrust/tuple.h>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk::kernels {

inline constexpr u64 resident_page_bytes = 4096;
inline constexpr u64 resident_page_words = resident_page_bytes / 8;

// Index of the first element of sorted [first, last) greater than `value`.
PTWALK_HD inline u64 upper_bound_u64(const u64* sorted, u64 first, u64 last, u64 value) {
  while (first < last) {
    const u64 mid = first + (last - first) / 2;
    if (sorted[mid] <= value) first = mid + 1;
    else last = mid;
  }
  return first;
}

struct resident_image_ref {
  static constexpr u64 zero_page = ~u64{0};

  const u64* d_words;         // page slots, resident_page_words each
  const u64* d_page_frame;    // per snapshot, its non-zero page frames, ascending
  const u64* d_page_begin;    // snapshot s: frames [d_page_begin[s], d_page_begin[s + 1])
  const u64* d_region_start;  // per snapshot, its backed regions, ascending and disjoint
  const u64* d_region_end;
  const u64* d_region_begin;  // snapshot s: regions [d_region_begin[s], d_region_begin[s + 1])
  // Steps of a binary search over the longest run, for the byte counters.
  unsigned search_steps;

  // The slot of the page at `frame`, or zero_page when it holds only zeros
  // (or nothing: whether it is backed is `backed`'s question).
  PTWALK_HD u64 page_slot(u32 snapshot, u64 frame) const {
    const u64 first = d_page_begin[snapshot], last = d_page_begin[snapshot + 1];
    const u64 at = upper_bound_u64(d_page_frame, first, last, frame);
    return at != first && d_page_frame[at - 1] == frame ? at - 1 : zero_page;
  }
  // Whether one region holds all of [pa, pa + len) (memory_image::find).
  PTWALK_HD bool backed(u32 snapshot, u64 pa, u64 len) const {
    const u64 first = d_region_begin[snapshot];
    const u64 at = upper_bound_u64(d_region_start, first, d_region_begin[snapshot + 1], pa);
    if (at == first) return false;
    const u64 start = d_region_start[at - 1], size = d_region_end[at - 1] - start;
    return len <= size && pa - start <= size - len;
  }
  // The word at `pa` of the page in `slot`; pa is 8-byte aligned.
  PTWALK_HD u64 word(u64 slot, u64 pa) const {
    return slot == zero_page ? 0 : d_words[slot * resident_page_words + (pa % resident_page_bytes) / 8];
  }
  // Where the word at `pa` (8-byte aligned) lies in d_words, or zero_page
  // when its page holds only zeros.
  PTWALK_HD u64 word_index(u32 snapshot, u64 pa) const {
    const u64 slot = page_slot(snapshot, pa / resident_page_bytes);
    return slot == zero_page ? zero_page : slot * resident_page_words + (pa % resident_page_bytes) / 8;
  }
};

// 4 KiB pages one table at `depth` spans: tables of a 16/64 KiB granule span
// several; small top tables (aligned to their size) lie inside one.
template <class Format>
PTWALK_HD constexpr u64 pages_per_table(unsigned depth) {
  return Format::table_bytes(depth) > resident_page_bytes ? Format::table_bytes(depth) / resident_page_bytes : 1;
}

// Per frontier table of a chunk: where each of its pages starts in the
// resident words (resident_image_ref::word_index), and the counts the host
// gather keeps per table (in-range entries read, those of them no one
// region backs — none when one region backs the whole table).
template <class Format>
struct resolve_resident_table {
  resident_image_ref image;
  const u32* d_resident_index;  // batch snapshot → snapshot of the resident image
  const u32* d_snapshot;        // frontier, indexed from the chunk's first table
  const u64* d_pa;
  const u64* d_va;
  linear_va_range<Format> range;
  unsigned depth;
  u64* d_page_words;  // chunk-relative: table i's pages at [i * pages_per_table, ...)
  u32* d_entries_read;
  u32* d_dangling;

  PTWALK_HD void operator()(u64 table) const {
    const u32 snapshot = d_resident_index[d_snapshot[table]];
    const u64 pa = d_pa[table];
    const u64 pages = pages_per_table<Format>(depth);
    for (u64 p = 0; p < pages; ++p)
      d_page_words[table * pages + p] = image.word_index(snapshot, pa + p * resident_page_bytes);
    const bool whole = image.backed(snapshot, pa, Format::table_bytes(depth));
    const auto bounds = range.entries_in_range(d_va[table], depth);
    u32 unbacked = 0;
    if (!whole && bounds.lo <= bounds.hi)
      for (unsigned e = bounds.lo; e <= bounds.hi; ++e)
        if (!image.backed(snapshot, pa + 8 * u64{e}, 8)) ++unbacked;
    d_entries_read[table] = bounds.lo <= bounds.hi ? bounds.hi - bounds.lo + 1 : 0;
    d_dangling[table] = unbacked;
  }
};

// The expansion's entry source in a resident walk (walk_steps.hpp's
// staged_entries reads a staging buffer instead): item = table * entries +
// index of a chunk → its word, read straight from the table's resident page
// through where resolve_resident_table found it, so no copy of the tables
// is made. A zero page reads as 0; an unbacked word needs no test: the
// upload stored it as 0, as the host gather reads it. Tables are aligned to
// their size (a granule, or a small top table inside one page), so entry i
// lies in the table's page i / 512, at word i % 512 from where that page's
// part of the table starts. Kept to four fields: the expansion's functors
// are copied per item by Thrust's CPU scatter.
struct resident_entries {
  const u64* d_words;       // resident_image_ref::d_words
  const u64* d_page_words;  // chunk-relative, as resolve_resident_table wrote them
  u64 pages_per_table;
  unsigned index_bits;  // log2 Format::entries(depth)

  PTWALK_HD u64 operator()(u64 item) const {
    const u64 table = item >> index_bits;
    const u64 index = item & ((u64{1} << index_bits) - 1);
    const u64 first = d_page_words[table * pages_per_table + index / resident_page_words];
    return first == resident_image_ref::zero_page ? 0 : d_words[first + index % resident_page_words];
  }
};

// Per frontier table: (tables, in-range entries read, dangling reads), summed
// per snapshot on the device at the end of each level.
struct table_counts {
  const u32* d_entries_read;
  const u32* d_dangling;
  PTWALK_HD thrust::tuple<u64, u64, u64> operator()(u64 table) const {
    return thrust::make_tuple(u64{1}, u64{d_entries_read[table]}, u64{d_dangling[table]});
  }
};

struct add_table_counts {
  PTWALK_HD thrust::tuple<u64, u64, u64> operator()(const thrust::tuple<u64, u64, u64>& a,
                                                    const thrust::tuple<u64, u64, u64>& b) const {
    return thrust::make_tuple(thrust::get<0>(a) + thrust::get<0>(b), thrust::get<1>(a) + thrust::get<1>(b),
                              thrust::get<2>(a) + thrust::get<2>(b));
  }
};

}  // namespace ptwalk::kernels
