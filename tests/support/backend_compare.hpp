// tests/support/backend_compare.hpp — record-for-record comparison of two batch walks.
//
// Fails with the first difference spelled out (snapshot, space, record
// index, both records, or the differing stat), not a byte dump.
#pragma once

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <span>
#include <string>

#include "ptwalk/mapping.hpp"

namespace ptwalk::testing {

inline std::string describe(const space_aware_mapping& r) {
  if (r.is_leaf())
    return fmt::format("leaf depth {} va {:#x} pa {:#x} size 2^{} perms {:#x} flags {:#x}", r.depth, r.va, r.pa,
                       r.size_log2, r.perms, r.flags);
  return fmt::format("alias depth {} owner {} our_va {:#x} their_va {:#x}", r.depth, r.owner, r.va, r.pa);
}

inline std::string describe(const walk_stats& s) {
  std::string out;
  for (unsigned d = 0; d < max_levels; ++d) out += fmt::format("t{}={} a{}={} ", d, s.tables[d], d, s.aliases[d]);
  return out + fmt::format("4k={} 2m={} 1g={} dangling={} read={}", s.leaves_4k, s.leaves_2m, s.leaves_1g,
                           s.dangling_reads, s.entries_read);
}

inline void expect_same_walk(const snapshot_walk& expected, const snapshot_walk& actual, std::size_t snapshot) {
  if (expected == actual) return;
  SCOPED_TRACE(fmt::format("snapshot {}", snapshot));
  EXPECT_EQ(expected.roots, actual.roots);
  EXPECT_EQ(expected.offsets, actual.offsets);
  EXPECT_EQ(describe(expected.stats), describe(actual.stats));
  const std::size_t n = std::min(expected.records.size(), actual.records.size());
  for (std::size_t i = 0; i < n; ++i)
    if (!(expected.records[i] == actual.records[i])) {
      ADD_FAILURE() << "first differing record " << i << ":\n  expected " << describe(expected.records[i])
                    << "\n  actual   " << describe(actual.records[i]);
      return;
    }
  EXPECT_EQ(expected.records.size(), actual.records.size());
}

inline void expect_same_walks(std::span<const snapshot_walk> expected, std::span<const snapshot_walk> actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (std::size_t b = 0; b < expected.size(); ++b) expect_same_walk(expected[b], actual[b], b);
}

}  // namespace ptwalk::testing
