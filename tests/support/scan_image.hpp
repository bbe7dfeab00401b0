// tests/support/scan_image.hpp — random guest images for comparing root-scan backends, and the comparison.
//
// A Linux-like guest in a few MiB: a kernel top table, processes whose top
// tables copy its kernel half (Accessed bits flipped as a CPU would), PTI
// pairs, exited processes (empty user halves), and decoys that the test must
// reject (one kernel entry off, a user entry outside the image or with PS
// set), among zero pages, random bytes and table-like pages. Its memory is
// split into regions the way dumps split it: a second region starting
// mid-page, a gap, and a last page cut short, so whole-page runs and chunk
// boundaries fall everywhere. Every backend must select the same pages.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "input/manifest.hpp"
#include "input/memory_image.hpp"
#include "ptwalk/root_candidate.hpp"
#include "discovery/root_discovery.hpp"

namespace ptwalk::testing {

struct scan_image_shape {
  u64 pages = 4096;       // 16 MiB of guest memory
  unsigned processes = 120;
  bool pti = false;
};

struct scan_image {
  memory_image image;
  u64 kernel_root = 0;     // a known root: the kernel's own table (a PTI pair's kernel table under pti)
  unsigned live_processes = 0;  // tables (pairs under pti) with a plausible, non-empty user half
};

class scan_image_builder {
 public:
  scan_image_builder(const scan_image_shape& shape, u64 seed)
      : shape_(shape), rng_(seed), bytes_(shape.pages * page, std::byte{0}), used_(shape.pages, false) {
    // Tables go only where the scans look: not into the page the middle
    // region starts inside, the gap or the cut-off last page.
    used_[half_page()] = true;
    for (u64 p = gap_page(); p < gap_page() + 3; ++p) used_[p] = true;
    used_.back() = true;
  }

  scan_image build() {
    scan_image out;
    fill_background();
    // The kernel's table and its PUDs; under PTI its pair and trampoline PUD.
    const u64 kernel = claim(2);
    for (const unsigned i : {256u, 273u, 300u, 508u, 511u}) set(kernel, i, table_entry(claim(1), false));
    if (shape_.pti) {
      set(kernel + page, 508, get(kernel, 508));
      set(kernel + page, 511, table_entry(claim(1), false));
    }
    out.kernel_root = kernel;
    for (unsigned p = 0; p < shape_.processes; ++p) {
      const u64 table = claim(2);
      copy_kernel_half(table, kernel);
      if (shape_.pti) copy_kernel_half(table + page, kernel + page);
      switch (p % 8) {
        case 0: break;  // exited: the user half is empty
        case 1: set(table, 256 + p % 256, get(table, 256 + p % 256) ^ 0x1000); break;  // one kernel entry off
        case 2: user_entry(table, 3, u64{1} << 40); break;  // a user table outside the image
        case 3: user_entry(table, 5, claim(1) | 0x80); break;  // PS in a top-level entry
        case 4: user_entry(table, 9, (gap_page() + 1) * page); break;  // a user table in the gap
        default:
          for (unsigned e = 0, n = 1 + p % 5; e < n; ++e) user_entry(table, 7 * e + p % 7, claim(1));
          ++out.live_processes;
      }
    }
    split_into_regions(out.image);
    return out;
  }

 private:
  static constexpr u64 page = 4096;
  static constexpr u64 kernel_flags = 0x63;  // present, writable, accessed, dirty
  static constexpr u64 user_flags = 0x67;    // … and user

  // Zero pages, random bytes and table-like pages (present entries pointing
  // inside the image), so both the root test and the census see near misses.
  void fill_background() {
    for (u64 p = 0; p < shape_.pages; ++p) {
      switch (rng_() % 3) {
        case 0: break;
        case 1:
          for (unsigned i = 0; i < 512; ++i) set(p * page, i, rng_());
          break;
        default:
          for (unsigned i = 0; i < 512; i += 1 + rng_() % 64)
            set(p * page, i, table_entry(rng_() % shape_.pages * page, rng_() % 2 == 0));
      }
    }
  }

  // `count` consecutive unused pages, aligned to `count` (a PTI pair is 8 KiB aligned), zeroed.
  u64 claim(u64 count) {
    for (;;) {
      const u64 first = (rng_() % (shape_.pages - count)) / count * count;
      if (std::any_of(used_.begin() + static_cast<std::ptrdiff_t>(first),
                      used_.begin() + static_cast<std::ptrdiff_t>(first + count), [](bool u) { return u; }))
        continue;
      std::fill_n(used_.begin() + static_cast<std::ptrdiff_t>(first), count, true);
      std::fill_n(bytes_.begin() + static_cast<std::ptrdiff_t>(first * page), count * page, std::byte{0});
      return first * page;
    }
  }

  static u64 table_entry(u64 pa, bool user) { return pa | (user ? user_flags : kernel_flags); }

  void copy_kernel_half(u64 table, u64 from) {
    for (unsigned i = half_entries; i < 2 * half_entries; ++i) {
      const u64 e = get(from, i);
      set(table, i, e != 0 && rng_() % 4 == 0 ? e ^ entry_accessed : e);
    }
  }
  // A user entry, mirrored into the user table under PTI (NX on the kernel copy).
  void user_entry(u64 table, unsigned index, u64 pa) {
    set(table, index, table_entry(pa, true) | (shape_.pti ? u64{1} << 63 : 0));
    if (shape_.pti) set(table + page, index, table_entry(pa, true));
  }

  // [0, half) at 0; [half + 0x800, 3/4) at its own address (its first page
  // is not whole); a gap of three pages; the rest, its last page cut short.
  [[nodiscard]] u64 half_page() const { return shape_.pages / 2; }
  [[nodiscard]] u64 gap_page() const { return shape_.pages / 4 * 3; }

  void split_into_regions(memory_image& image) const {
    const u64 total = shape_.pages * page;
    const u64 half = half_page() * page, three_quarters = gap_page() * page;
    const auto slice = [&](u64 from, u64 to) {
      return std::vector<std::byte>(bytes_.begin() + static_cast<std::ptrdiff_t>(from),
                                    bytes_.begin() + static_cast<std::ptrdiff_t>(to));
    };
    image.add_owned_region(0, slice(0, half), "low");
    image.add_owned_region(half + 0x800, slice(half + 0x800, three_quarters), "mid");
    image.add_owned_region(three_quarters + 3 * page, slice(three_quarters + 3 * page, total - 0x100), "high");
  }

  void set(u64 table, unsigned index, u64 entry) { std::memcpy(bytes_.data() + table + 8 * index, &entry, 8); }
  [[nodiscard]] u64 get(u64 table, unsigned index) const {
    u64 entry;
    std::memcpy(&entry, bytes_.data() + table + 8 * index, 8);
    return entry;
  }

  scan_image_shape shape_;
  std::mt19937_64 rng_;
  std::vector<std::byte> bytes_;
  std::vector<bool> used_;
};

inline scan_image make_scan_image(const scan_image_shape& shape, u64 seed) {
  return scan_image_builder(shape, seed).build();
}

inline root_discovery_options with_backend(root_discovery_options options, scan_backend backend,
                                           std::size_t chunk_pages = 0) {
  options.backend = backend;
  options.chunk_pages = chunk_pages;
  return options;
}

// Same candidates in, same discovery out: roots with labels and evidence,
// references, skipped tables, pages.
inline void expect_same_discovery(const root_discovery_result& expected, const root_discovery_result& actual) {
  EXPECT_EQ(actual.roots.size(), expected.roots.size());
  for (std::size_t i = 0; i < std::min(actual.roots.size(), expected.roots.size()); ++i)
    EXPECT_EQ(actual.roots[i], expected.roots[i])
        << "root " << i << ": " << hex(actual.roots[i].root) << " " << actual.roots[i].label << " "
        << actual.roots[i].evidence << ", expected " << hex(expected.roots[i].root) << " "
        << expected.roots[i].label << " " << expected.roots[i].evidence;
  EXPECT_EQ(actual.references, expected.references);
  EXPECT_EQ(actual.kernel_only_skipped, expected.kernel_only_skipped);
  EXPECT_EQ(actual.pages_scanned, expected.pages_scanned);
}

}  // namespace ptwalk::testing
