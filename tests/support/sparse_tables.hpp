// tests/support/sparse_tables.hpp — hand-built page tables for tests.
//
// Tables are set entry by entry at chosen physical addresses, then turned
// into a memory_image (one region per 4 KiB page), so a test states exactly
// the structure it checks.
#pragma once

#include <cstring>
#include <map>
#include <vector>

#include "input/memory_image.hpp"

namespace ptwalk::testing {

class sparse_tables {
 public:
  // Entry `index` of the table at `table_pa` (which becomes backed memory);
  // a table may be of any size and sit at any 8-byte-aligned address.
  void set(u64 table_pa, unsigned index, u64 entry) {
    const u64 pa = table_pa + 8 * u64{index};
    page(pa)[(pa & 0xfff) / 8] = entry;
  }
  // Marks a page as backed (zero-filled) without setting entries.
  void back(u64 pa) { (void)page(pa); }

  [[nodiscard]] memory_image image() const {
    memory_image out;
    for (const auto& [pa, words] : pages_) {
      std::vector<std::byte> bytes(4096);
      std::memcpy(bytes.data(), words.data(), 4096);
      out.add_owned_region(pa, std::move(bytes));
    }
    return out;
  }

 private:
  std::vector<u64>& page(u64 pa) {
    auto& words = pages_[pa & ~u64{0xfff}];
    if (words.empty()) words.resize(512, 0);
    return words;
  }
  std::map<u64, std::vector<u64>> pages_;
};

}  // namespace ptwalk::testing
