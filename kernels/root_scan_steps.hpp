// kernels/root_scan_steps.hpp — the per-page step of root discovery's scan, for every backend.
//
// One PTWALK_HD function decides a page (test_page), whoever runs it: the
// host's OpenMP scan over mapped pages, or one item of the Thrust scan over
// a chunk of pages in device memory (test_chunk_page), on the GPU and in
// its Thrust-OMP build. Everything it reads besides the page is a trivially
// copyable view (page_test_ref), so a copy in device memory is just the
// same struct with device pointers.
#pragma once

#include <cstddef>

#include <stdexcept>
#include <string>

#include "ptwalk/aarch64_root_candidate.hpp"
#include "ptwalk/format.hpp"
#include "ptwalk/root_candidate.hpp"

namespace ptwalk {

// What a scan tests each page for.
enum class page_test : u8 {
  root_candidate,  // test_root_candidate: shares a reference kernel half
  top_table,       // looks_like_top_table: the census, when no root is known
  aarch64_upper_level_table,  // looks_like_aarch64_upper_level_table: TTBR0 candidates
};

// Scans step over 4 KiB pages of 512 entries.
inline constexpr unsigned scan_page_entries = 512;

// Calls fn.template operator()<Format>() for a format root discovery scans:
// x86-64, and AArch64 with a 4 KiB granule, whose top table is one page.
[[nodiscard]] constexpr bool is_scanned_format(paging_format f) {
  return !is_aarch64(f) || f == paging_format::aarch64_4k_48 || f == paging_format::aarch64_4k_39;
}

template <class Fn>
decltype(auto) visit_scan_format(paging_format f, Fn&& fn) {
  switch (f) {
    case paging_format::aarch64_4k_48: return fn.template operator()<aarch64_4k_48>();
    case paging_format::aarch64_4k_39: return fn.template operator()<aarch64_4k_39>();
    case paging_format::x86_64: return fn.template operator()<x86_64_4level>();
    case paging_format::x86_64_la57: return fn.template operator()<x86_64_5level>();
    default:
      throw std::invalid_argument("root scan: no scan for " + std::string(format_name(f)));
  }
}

// Everything a page test reads besides the page.
struct page_test_ref {
  page_test test = page_test::root_candidate;
  kernel_halves_ref halves;     // root_candidate
  backed_ranges_ref backed;
  unsigned min_kernel_entries = 0;  // top_table
};

// A page that passed, and the verdict (AArch64: reference 0 for a hit).
struct root_scan_hit {
  u64 pa = 0;
  int reference = -1;  // root_candidate: the matching kernel half; top_table: 0; -1: no hit
  bool user_half_empty = false;
};

}  // namespace ptwalk

namespace ptwalk::kernels {

template <class Format>
PTWALK_HD root_scan_hit test_x86_page(const page_test_ref& t, u64 pa, const std::byte* page) {
  if (t.test == page_test::top_table)
    return {pa, looks_like_top_table<Format>(page, t.backed, t.min_kernel_entries) ? 0 : -1, false};
  const root_candidate verdict = test_root_candidate<Format>(page, t.halves, t.backed);
  return {pa, verdict.reference, verdict.user_half_empty};
}

template <class Format>
PTWALK_HD root_scan_hit test_page(const page_test_ref& t, u64 pa, const std::byte* page) {
  if constexpr (Format::halves == 2) {
    return {pa, looks_like_aarch64_upper_level_table<Format>(page, t.backed) ? 0 : -1, false};
  } else {
    return test_x86_page<Format>(t, pa, page);
  }
}

// Chunk item (page index) → verdict. A chunk's pages are consecutive both
// in the chunk buffer and in physical memory.
//
// One thread per page, not a warp: the test exits at the first kernel-half
// entry that differs, compared from entry 511 down, so most pages cost one
// 8-byte load (one 32-byte sector) and the device reads well under 1% of
// the bytes that crossed PCIe. A warp per page would read 32 entries to
// decide on one and need a second, cooperative copy of the predicate; the
// device side is not what bounds the scan (the host gather and PCIe are).
template <class Format>
struct test_chunk_page {
  const u64* d_pages;
  u64 first_pa;
  page_test_ref test;  // device pointers

  PTWALK_HD root_scan_hit operator()(u64 item) const {
    return test_page<Format>(test, first_pa + item * 8 * scan_page_entries,
                             reinterpret_cast<const std::byte*>(d_pages + item * scan_page_entries));
  }
};

struct is_hit {
  PTWALK_HD bool operator()(const root_scan_hit& hit) const { return hit.reference >= 0; }
};

}  // namespace ptwalk::kernels
