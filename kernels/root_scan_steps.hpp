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

#include "ptwalk/format.hpp"
#include "ptwalk/root_candidate.hpp"

namespace ptwalk {

// What a scan tests each page for.
enum class page_test : u8 {
  root_candidate,  // test_root_candidate: shares a reference kernel half
  top_table,       // looks_like_top_table: the census, when no root is known
};

// Everything a page test reads besides the page.
struct page_test_ref {
  page_test test = page_test::root_candidate;
  kernel_halves_ref halves;     // root_candidate
  backed_ranges_ref backed;
  unsigned min_kernel_entries = 0;  // top_table
};

// A page that passed, and the verdict.
struct root_scan_hit {
  u64 pa = 0;
  int reference = -1;  // root_candidate: the matching kernel half; top_table: 0; -1: no hit
  bool user_half_empty = false;
};

}  // namespace ptwalk

namespace ptwalk::kernels {

template <class Format>
PTWALK_HD root_scan_hit test_page(const page_test_ref& t, u64 pa, const std::byte* page) {
  if (t.test == page_test::top_table)
    return {pa, looks_like_top_table<Format>(page, t.backed, t.min_kernel_entries) ? 0 : -1, false};
  const root_candidate verdict = test_root_candidate<Format>(page, t.halves, t.backed);
  return {pa, verdict.reference, verdict.user_half_empty};
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
    return test_page<Format>(test, first_pa + item * Format::table_bytes(0),
                             reinterpret_cast<const std::byte*>(d_pages + item * Format::entries_per_table));
  }
};

struct is_hit {
  PTWALK_HD bool operator()(const root_scan_hit& hit) const { return hit.reference >= 0; }
};

}  // namespace ptwalk::kernels
