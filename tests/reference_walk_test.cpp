// The ownership rule of SPEC §3 on hand-built tables, checked against
// expectations written out record by record.
#include <gtest/gtest.h>

#include "ptwalk/walk.hpp"
#include "support/sparse_tables.hpp"
#include "input/table_views.hpp"

namespace ptwalk {
namespace {

using F = x86_64_4level;
constexpr u64 gib = u64{1} << 30, tib512 = u64{1} << 39, mib2 = u64{1} << 21;

space_aware_mapping leaf(unsigned depth, u64 va, u64 pa, u8 perms, u64 flags) {
  space_aware_mapping r{};
  r.kind = record_kind::this_space;
  r.depth = static_cast<u8>(depth);
  r.perms = perms;
  r.size_log2 = static_cast<u8>(F::entry_shift(depth));
  r.va = va;
  r.pa = pa;
  r.flags = flags;
  return r;
}
space_aware_mapping alias(unsigned depth, u32 owner, u64 our_va, u64 their_va) {
  return make_alias_record<F>(depth, owner, our_va, their_va);
}

snapshot_walk walk(const testing::sparse_tables& t, std::vector<u64> roots, va_range range = {}) {
  const memory_image image = t.image();
  return walk_va_spaces<F>(image_table_view(image), roots, range);
}

constexpr u8 rwux = perm_writable | perm_user | perm_executable;

TEST(reference_walk, alias_at_every_depth_across_roots) {
  testing::sparse_tables t;
  // Space A (root 0x1000): PML4[0] -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 -> page.
  t.set(0x1000, 0, 0x2007);
  t.set(0x2000, 0, 0x3007);
  t.set(0x3000, 0, 0x4007);
  t.set(0x4000, 0, 0x10'0007);
  // Space B (root 0x5000) shares the PDPT at PML4[1], and has its own PDPT at [2]
  // sharing the PD; its own PD at [3] shares the PT.
  t.set(0x5000, 1, 0x2007);
  t.set(0x5000, 2, 0x6007);
  t.set(0x6000, 5, 0x3007);
  t.set(0x5000, 3, 0x7007);
  t.set(0x7000, 0, 0x8007);
  t.set(0x8000, 4, 0x4007);
  const auto w = walk(t, {0x1000, 0x5000});
  ASSERT_EQ(w.space_count(), 2u);
  const std::vector<space_aware_mapping> a(w.records_of(0).begin(), w.records_of(0).end());
  const std::vector<space_aware_mapping> b(w.records_of(1).begin(), w.records_of(1).end());
  EXPECT_EQ(a, (std::vector{leaf(3, 0, 0x10'0000, rwux, 0x7)}));
  EXPECT_EQ(b, (std::vector{alias(1, 0, tib512, 0), alias(2, 0, 2 * tib512 + 5 * gib, 0),
                            alias(3, 0, 3 * tib512 + 4 * mib2, 0)}));
  EXPECT_EQ(w.stats.tables[0], 2u);
  EXPECT_EQ(w.stats.tables[1], 3u);  // 0x2000, 0x6000, 0x7000
  EXPECT_EQ(w.stats.aliases[1], 1u);
  EXPECT_EQ(w.stats.aliases[2], 1u);
  EXPECT_EQ(w.stats.aliases[3], 1u);
}

TEST(reference_walk, alias_within_one_root_at_a_higher_va) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x2007);
  t.set(0x2000, 0, 0x3007);
  t.set(0x2000, 7, 0x3005);  // same PD again, read-only path
  t.set(0x3000, 0, 0x9000'0000 | 0x83);  // 2 MiB leaf
  const auto w = walk(t, {0x1000});
  EXPECT_EQ(std::vector(w.records.begin(), w.records.end()),
            (std::vector{leaf(2, 0, 0x9000'0000, perm_writable | perm_executable, 0x83),
                         alias(2, 0, 7 * gib, 0)}));
}

TEST(reference_walk, duplicate_root_is_a_depth0_alias) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x2007);
  t.set(0x2000, 3, 0x4000'0000 | 0x87);  // 1 GiB leaf
  const auto w = walk(t, {0x1000, 0x1000 | 0x5 /* PCID bits */, 0x3000});
  ASSERT_EQ(w.space_count(), 3u);
  EXPECT_EQ(w.roots[1], 0x1000u);
  ASSERT_EQ(w.records_of(1).size(), 1u);
  EXPECT_EQ(w.records_of(1)[0], alias(0, 0, 0, 0));
  EXPECT_EQ(w.records_of(2).size(), 0u);  // an empty (zero) root
  // With a range, the depth-0 alias names the range start.
  const auto r = walk(t, {0x1000, 0x1000}, va_range{3 * gib, 4 * gib - 1});
  ASSERT_EQ(r.records_of(0).size(), 1u);
  EXPECT_EQ(r.records_of(1)[0], alias(0, 0, 3 * gib, 3 * gib));
}

TEST(reference_walk, one_table_at_two_depths_is_two_keys) {
  testing::sparse_tables t;
  // Table 0x3000 is a PD under PDPT entry 0 and a PT under PD entry 1 of itself.
  t.set(0x1000, 0, 0x2007);
  t.set(0x2000, 0, 0x3007);
  t.set(0x3000, 1, 0x3007);
  t.set(0x3000, 2, 0x5007);  // as a PD: a table pointer; as a PT: a 4 KiB page
  t.set(0x5000, 0, 0xa000 | 0x7);
  const auto w = walk(t, {0x1000});
  EXPECT_EQ(w.stats.tables[2], 1u);
  EXPECT_EQ(w.stats.tables[3], 2u);  // 0x3000 (as a PT) and 0x5000
  EXPECT_EQ(std::vector(w.records.begin(), w.records.end()),
            (std::vector{leaf(3, mib2 + 4096, 0x3000, rwux, 0x7),
                         leaf(3, mib2 + 2 * 4096, 0x5000, rwux, 0x7),
                         leaf(3, 2 * mib2, 0xa000, rwux, 0x7)}));
}

TEST(reference_walk, self_reference_terminates_by_depth) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x1007);    // PML4[0] -> PML4 itself (the "recursive" slot)
  t.set(0x1000, 511, 0x1003);  // and again in the kernel half
  const auto w = walk(t, {0x1000});
  // Depth 1: 0x1000 owned via entry 0; entry 511 aliases it. Below, the same
  // table is a PD (depth 2) and a PT (depth 3): its entries become 4 KiB leaves.
  EXPECT_EQ(w.stats.tables[1], 1u);
  EXPECT_EQ(w.stats.tables[2], 1u);
  EXPECT_EQ(w.stats.tables[3], 1u);
  EXPECT_EQ(w.stats.aliases[1], 1u);
  EXPECT_EQ(w.stats.aliases[2], 1u);  // PDPT[511] -> 0x1000 as PD again
  EXPECT_EQ(w.stats.aliases[3], 1u);
  EXPECT_EQ(w.stats.leaves_4k, 2u);
  EXPECT_EQ(w.records.back(), alias(1, 0, F::canonical(511 * tib512), 0));
}

TEST(reference_walk, empty_shared_table_still_aliases) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x2007);
  t.set(0x5000, 0, 0x2007);
  t.back(0x2000);  // all zero
  const auto w = walk(t, {0x1000, 0x5000});
  EXPECT_EQ(w.records_of(0).size(), 0u);
  ASSERT_EQ(w.records_of(1).size(), 1u);
  EXPECT_EQ(w.records_of(1)[0], alias(1, 0, 0, 0));
}

TEST(reference_walk, unbacked_reads_are_dangling_not_errors) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x7777'7000 | 0x7);  // points outside the image
  t.set(0x1000, 1, 0x2007);
  const auto w = walk(t, {0x1000, 0x9000});
  EXPECT_EQ(w.stats.tables[1], 2u);
  // Both depth-1 tables and the second root are wholly unbacked.
  EXPECT_EQ(w.stats.dangling_reads, 3 * 512u);
  EXPECT_EQ(w.records.size(), 0u);
}

TEST(reference_walk, range_limits_entries_and_keeps_block_starts) {
  testing::sparse_tables t;
  t.set(0x1000, 0, 0x2007);
  t.set(0x2000, 0, 0x3007);
  for (unsigned i = 0; i < 4; ++i) t.set(0x3000, i, (0x40'0000 + i * mib2) | 0x83);
  const auto w = walk(t, {0x1000}, va_range{mib2 + 5, 3 * mib2 - 1});
  ASSERT_EQ(w.records.size(), 2u);
  EXPECT_EQ(w.records[0].va, mib2);
  EXPECT_EQ(w.records[1].va, 2 * mib2);
  EXPECT_EQ(w.stats.entries_read, 1u + 1u + 2u);
}

TEST(reference_walk, la57_kernel_half_is_canonical) {
  using F5 = x86_64_5level;
  testing::sparse_tables t;
  t.set(0x1000, 511, 0x2007);
  t.set(0x2000, 511, 0x3007);
  t.set(0x3000, 511, 0x4000'0000 | 0x83);
  const memory_image image = t.image();
  const u64 root = 0x1000;
  const auto w = walk_va_spaces<F5>(image_table_view(image), std::span(&root, 1));
  ASSERT_EQ(w.records.size(), 1u);
  EXPECT_EQ(w.records[0].va, 0xffff'ffff'c000'0000ull);
  EXPECT_EQ(w.records[0].size(), gib);
}

}  // namespace
}  // namespace ptwalk
