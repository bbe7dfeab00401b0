// ptwalk/root_candidate.hpp — is this 4 KiB page a top-level table? The per-page test of root discovery.
//
// Root discovery (host/root_discovery.hpp) tests every page of an image with
// these predicates: the OpenMP scan on the host, and the level of Thrust
// scans in kernels/root_scan.hpp (CUDA, and its Thrust-OMP build for CI).
// They are the one copy of the test, so they take raw page bytes and
// trivially copyable views (pointers + counts) that work in host and device
// memory alike, and allocate nothing.
#pragma once

#include <cstddef>
#include <cstring>

#include "ptwalk/config.hpp"

namespace ptwalk {

inline constexpr unsigned half_entries = 256;  // entries in each half of a top-level table
inline constexpr u64 entry_accessed = u64{1} << 5;

// Sorted, disjoint [start, end) physical ranges the image backs.
struct backed_ranges_ref {
  const u64* starts = nullptr;
  const u64* ends = nullptr;
  u32 count = 0;

  PTWALK_HD constexpr bool contains(u64 pa, u64 len) const {
    u32 lo = 0, hi = count;  // first range with start > pa, by binary search
    while (lo < hi) {
      const u32 mid = (lo + hi) / 2;
      if (starts[mid] <= pa) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && pa + len <= ends[lo - 1] && pa + len >= pa;
  }
};

// The kernel halves a scan compares pages against: count × 256 entries.
struct kernel_halves_ref {
  const u64* entries = nullptr;
  u32 count = 0;
};

struct root_candidate {
  int reference = -1;         // index of the matching kernel half; -1: not a root
  bool user_half_empty = true;
};

// Entry `index` of a page. Host pages come from mapped files at any offset,
// hence memcpy; device pages sit in 8-byte-aligned chunk buffers, where a
// plain 64-bit load is one instruction (nvcc cannot prove the alignment a
// memcpy would need and may split it into byte loads).
PTWALK_HD inline u64 load_entry(const std::byte* page, unsigned index) {
#if defined(__CUDA_ARCH__)
  return reinterpret_cast<const u64*>(page)[index];
#else
  u64 entry;
  std::memcpy(&entry, page + 8 * index, sizeof(entry));
  return entry;
#endif
}

PTWALK_HD constexpr bool same_ignoring_accessed(u64 a, u64 b) {
  return ((a ^ b) & ~entry_accessed) == 0;
}

// Is the 4 KiB `page` a top-level table whose kernel half equals one of
// `halves`, with a user half whose present entries are plausible (a table
// inside the image; PS is reserved at the top level)?
template <class Format>
PTWALK_HD root_candidate test_root_candidate(const std::byte* page, kernel_halves_ref halves,
                                             backed_ranges_ref backed) {
  static_assert(Format::entries_per_table == 2 * half_entries);
  root_candidate out;
  for (u32 r = 0; r < halves.count && out.reference < 0; ++r) {
    const u64* half = halves.entries + u64{r} * half_entries;
    // From the top down: entry 511 maps the kernel image in Linux, so most
    // pages differ on the first compare.
    unsigned i = half_entries;
    while (i > 0 && same_ignoring_accessed(load_entry(page, half_entries + i - 1), half[i - 1])) --i;
    if (i == 0) out.reference = static_cast<int>(r);
  }
  if (out.reference < 0) return out;
  for (unsigned i = 0; i < half_entries; ++i) {
    const u64 entry = load_entry(page, i);
    if (!Format::present(entry)) continue;
    if ((entry & Format::bit_page_size) != 0 ||
        !backed.contains(Format::table_address(entry), Format::table_bytes(0)))
      return {};
    out.user_half_empty = false;
  }
  return out;
}

// Census predicate, for images without a known root: could `page` be a
// top-level table at all? At least `min_kernel_entries` present kernel-half
// entries and every present entry a plausible table pointer.
template <class Format>
PTWALK_HD bool looks_like_top_table(const std::byte* page, backed_ranges_ref backed,
                                    unsigned min_kernel_entries) {
  unsigned kernel_present = 0;
  for (unsigned i = 0; i < Format::entries_per_table; ++i) {
    const u64 entry = load_entry(page, i);
    if (!Format::present(entry)) {
      if (entry != 0) return false;  // top-level tables hold no swap or PROT_NONE entries
      continue;
    }
    if ((entry & Format::bit_page_size) != 0 ||
        !backed.contains(Format::table_address(entry), Format::table_bytes(0)))
      return false;
    if (i >= half_entries) ++kernel_present;
  }
  return kernel_present >= min_kernel_entries;
}

}  // namespace ptwalk
