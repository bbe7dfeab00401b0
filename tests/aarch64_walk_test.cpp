// The two-half walk of SPEC §2.1 and §3 on hand-built AArch64 tables, checked
// record by record; map / virt_to_phys / space_aware_map over both halves of
// every format, checked against the reference walk.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "input/table_views.hpp"
#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"
#include "support/sparse_tables.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

constexpr u64 bit(unsigned n) { return u64{1} << n; }

template <class F>
space_aware_mapping leaf(unsigned depth, u64 va, u64 pa, u8 perms, u64 flags) {
  space_aware_mapping r{};
  r.depth = static_cast<u8>(depth);
  r.perms = perms;
  r.size_log2 = static_cast<u8>(F::entry_shift(depth));
  r.va = va;
  r.pa = pa;
  r.flags = flags;
  return r;
}
space_aware_mapping alias(unsigned depth, u32 owner, u64 our_va, u64 their_va) {
  space_aware_mapping r{};
  r.kind = record_kind::another_space;
  r.depth = static_cast<u8>(depth);
  r.owner = owner;
  r.va = our_va;
  r.pa = their_va;
  return r;
}
std::vector<space_aware_mapping> records(const snapshot_walk& w, std::size_t space) {
  return {w.records_of(space).begin(), w.records_of(space).end()};
}

// Two Linux-like processes on 4k-48: private TTBR0s sharing one level-1
// table, one swapper_pg_dir as TTBR1 (given with different ASIDs).
struct linux_like {
  using F = aarch64_4k_48;
  static constexpr u64 table = 0x3;                                 // table descriptor, no attributes
  static constexpr u64 user_page = 0x3 | bit(6) | bit(10) | bit(53);  // AP[1], AF, PXN
  static constexpr u64 user_block = 0x1 | bit(6) | bit(10) | bit(54) | bit(53) | bit(11);
  static constexpr u64 kernel_block = 0x1 | bit(7) | bit(10) | bit(54) | bit(55);  // RO, global, bit 55
  static constexpr u64 ttbr1 = 0x10000;
  testing::sparse_tables t;

  linux_like() {
    t.set(0x1000, 0, 0x2000 | table);
    t.set(0x2000, 0, 0x3000 | table);
    t.set(0x3000, 0, 0x4000 | table);
    t.set(0x4000, 5, 0x9000 | user_page);
    t.set(0x3000, 1, 0x4000'0000 | user_block);
    t.set(ttbr1, 511, 0x11000 | table | bit(60));  // UXNTable over the kernel
    t.set(0x11000, 2, 0x8000'0000 | kernel_block);
    t.set(0x5000, 0, 0x2000 | table);
  }
  snapshot_walk walk(va_range range = {}) const {
    const memory_image image = t.image();
    const std::vector<u64> roots{0x1000, 0x0042'0000'0000'5001};  // ASID and CnP on B's TTBR0
    const std::vector<u64> upper{ttbr1 | (u64{7} << 48), ttbr1 | (u64{9} << 48)};
    return walk_va_spaces<F>(image_table_view(image), roots, upper, range);
  }
};

TEST(aarch64_walk, shared_ttbr1_is_one_owner_and_depth0_aliases) {
  using F = aarch64_4k_48;
  const auto w = linux_like().walk();
  ASSERT_EQ(w.space_count(), 2u);
  EXPECT_EQ(w.roots, (std::vector<u64>{0x1000, 0x5000}));
  const u64 kernel_va = 0xffff'ff80'8000'0000ull;  // index 511 at depth 0, 2 at depth 1
  EXPECT_EQ(records(w, 0),
            (std::vector{
                // PXN only: EL0 may execute, so x.
                leaf<F>(3, 0x5000, 0x9000, perm_writable | perm_user | perm_executable, linux_like::user_page),
                leaf<F>(2, 0x20'0000, 0x4000'0000, perm_writable | perm_user, linux_like::user_block),
                // UXN on the leaf, AP[2]: a read-only kernel page that EL1 may execute;
                // bit 55 set but global, so not CoW.
                leaf<F>(1, kernel_va, 0x8000'0000, perm_executable, linux_like::kernel_block),
            }));
  EXPECT_EQ(records(w, 1), (std::vector{alias(1, 0, 0, 0), alias(0, 0, 0xffff'0000'0000'0000ull,
                                                                   0xffff'0000'0000'0000ull)}));
  EXPECT_EQ(w.stats.tables[0], 3u);  // two TTBR0 tables and one TTBR1 table
  EXPECT_EQ(w.stats.aliases[0], 1u);
  EXPECT_EQ(w.stats.leaves_4k, 1u);
  EXPECT_EQ(w.stats.leaves_2m, 1u);
  EXPECT_EQ(w.stats.leaves_1g, 1u);
}

TEST(aarch64_walk, va_range_skips_a_missed_half) {
  const linux_like fixture;
  const u64 range_start = 0xffff'ff80'0000'0000ull;
  const auto upper_only = fixture.walk({range_start, ~u64{0}});
  ASSERT_EQ(upper_only.records_of(0).size(), 1u);
  EXPECT_EQ(upper_only.records_of(0)[0].va, 0xffff'ff80'8000'0000ull);
  // The alias of the shared TTBR1 starts where the range starts.
  EXPECT_EQ(records(upper_only, 1), (std::vector{alias(0, 0, range_start, range_start)}));
  EXPECT_EQ(upper_only.stats.tables[0], 1u);

  const auto lower_only = fixture.walk({0, 0x3f'ffff});
  EXPECT_EQ(lower_only.records_of(0).size(), 2u);
  EXPECT_EQ(records(lower_only, 1), (std::vector{alias(1, 0, 0, 0)}));
  EXPECT_EQ(lower_only.stats.tables[0], 2u);
}

// 16k-48: two-entry top tables (16 bytes, BADDR bits 47:4) side by side in
// one line, and the upper root beside them reaching the same level-1 table.
TEST(aarch64_walk, small_top_tables_and_a_table_shared_across_halves) {
  using F = aarch64_16k_48;
  testing::sparse_tables t;
  t.set(0x1040, 1, 0x4000 | 0x3);
  t.set(0x1050, 1, 0xc000 | 0x3);  // the next 16 bytes: another space's table
  t.set(0x1080, 0, 0x4000 | 0x3);
  t.set(0x4000, 0, 0x8000 | 0x3);
  t.set(0x8000, 3, 0x1'0000'0000 | 0x1 | bit(6) | bit(10));  // 32 MiB block, EL0 RW
  t.set(0xc000, 0, 0x8000 | 0x3);
  t.set(0x1040, 0, 0xdead'0001);  // 01 at level 0: invalid
  const memory_image image = t.image();
  const std::vector<u64> roots{0x104f, 0x1058}, upper{0x1080, 0x1080};  // aligned down to 16 bytes
  const auto w = walk_va_spaces<F>(image_table_view(image), roots, upper);
  EXPECT_EQ(w.roots, (std::vector<u64>{0x1040, 0x1050}));
  const u64 block_va = bit(47) + 3 * bit(25);
  EXPECT_EQ(records(w, 0),
            (std::vector{leaf<F>(2, block_va, 0x1'0000'0000, perm_writable | perm_user | perm_executable,
                                 0x1 | bit(6) | bit(10)),
                         alias(1, 0, 0xffff'0000'0000'0000ull, bit(47))}));
  EXPECT_EQ(records(w, 1), (std::vector{alias(2, 0, bit(47), bit(47)),
                                        alias(0, 0, 0xffff'0000'0000'0000ull, 0xffff'0000'0000'0000ull)}));
  EXPECT_EQ(w.stats.leaves_32m, 1u);
  EXPECT_EQ(w.stats.tables[0], 3u);
}

TEST(aarch64_walk, every_backend_gives_the_reference_bytes) {
  linux_like fixture;
  std::vector<loaded_snapshot> fleet(1);
  fleet[0].spec.id = "arm";
  fleet[0].spec.format = paging_format::aarch64_4k_48;
  fleet[0].spec.roots = {0x1000, 0x5000};
  fleet[0].spec.upper_roots = {linux_like::ttbr1, linux_like::ttbr1};
  fleet[0].image = fixture.t.image();
  const auto reference = walk_snapshots(fleet, walk_backend::reference);
  EXPECT_EQ(reference[0], fixture.walk());
  EXPECT_EQ(walk_snapshots(fleet, walk_backend::cpu), reference);
  EXPECT_EQ(walk_snapshots(fleet, walk_backend::thrust_cpu), reference);
}

template <class F>
class aarch64_map_test : public ::testing::Test {};
using formats = ::testing::Types<aarch64_4k_48, aarch64_4k_39, aarch64_16k_47, aarch64_16k_48,
                                 aarch64_64k_42, aarch64_64k_48>;
TYPED_TEST_SUITE(aarch64_map_test, formats);

// Random leaves of every size in both halves, mapped into one buffer with
// a root per half, read back by virt_to_phys and by the reference walk.
TYPED_TEST(aarch64_map_test, map_both_halves_and_walk_them_back) {
  using F = TypeParam;
  const u64 granule = F::table_bytes(1);
  page_table_buffer tables(0x40'0000'0000, granule);
  const u64 roots[2] = {tables.alloc_table(), tables.alloc_table()};
  std::mt19937_64 rng(F::va_bits * 100 + F::page_shift);
  std::vector<unsigned> leaf_depths;
  for (unsigned d = 0; d < F::levels; ++d)
    if (F::is_last_depth(d) || F::can_be_large_leaf(d)) leaf_depths.push_back(d);
  std::map<u64, mapping> mapped;  // by canonical VA: lower half first; a remap replaces
  for (unsigned i = 0; i < 64; ++i) {
    const unsigned half = i % 2, depth = leaf_depths[rng() % leaf_depths.size()];
    const u64 span = F::entry_span(depth);
    const u64 va = F::canonical((u64{half} << F::va_bits) | (rng() & (bit(F::va_bits) - 1) & ~(span - 1)));
    const u64 pa = rng() & (bit(40) - 1) & ~(span - 1);
    const u64 flags = (rng() & (bit(6) | bit(7) | bit(10) | bit(11) | bit(51) | bit(53) | bit(54))) |
                      ((rng() % 2) << 55);
    tables.update_root(roots[half]);
    if (map<F>(tables, {va, pa, F::entry_shift(depth), flags, {}}) != map_status::ok)
      continue;  // blocked by an earlier leaf or table of another size
    const auto back = virt_to_phys<F>(tables, va + span - 8);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->va, va);
    EXPECT_EQ(back->pa, pa);
    EXPECT_EQ(back->size, span);
    EXPECT_EQ(back->flags & ~u64{3}, flags);
    mapped[va] = *back;
  }
  ASSERT_GT(mapped.size(), 32u);
  memory_image image;
  std::vector<std::byte> bytes(tables.words().size() * 8);
  std::memcpy(bytes.data(), tables.words().data(), bytes.size());
  image.add_owned_region(tables.base(), std::move(bytes));
  const auto w = walk_va_spaces<F>(image_table_view(image), std::span(&roots[0], 1), std::span(&roots[1], 1));
  std::vector<mapping> walked, expected;
  for (const auto& r : w.records) {
    ASSERT_TRUE(r.is_leaf());
    walked.push_back(r.as_mapping());
  }
  for (const auto& [va, m] : mapped) expected.push_back(m);
  EXPECT_EQ(walked, expected);
}

// A second space links the first one's upper-half tables: the walk reports
// one alias per link.
TYPED_TEST(aarch64_map_test, space_aware_map_in_the_upper_half) {
  using F = TypeParam;
  if (F::levels < 3) GTEST_SKIP() << "no table below depth 1 to share";
  const u64 granule = F::table_bytes(1);
  page_table_buffer tables(0x40'0000'0000, granule);
  const u64 a_upper = tables.alloc_table(), b_upper = tables.alloc_table(), lower = tables.alloc_table();
  const u64 va = F::canonical(bit(F::va_bits) | F::entry_span(0));  // the second top entry's block
  tables.update_root(a_upper);
  ASSERT_EQ(map<F>(tables, {va, 0x1'0000'0000, F::page_shift, bit(10), {}}), map_status::ok);
  const u64 shared = F::table_address(tables.read_entry(a_upper + 8 * F::table_index(F::linear(va), 0)));
  tables.update_root(b_upper);
  ASSERT_EQ(space_aware_map<F>(tables, 1, va, shared, 0), map_status::ok);
  memory_image image;
  std::vector<std::byte> bytes(tables.words().size() * 8);
  std::memcpy(bytes.data(), tables.words().data(), bytes.size());
  image.add_owned_region(tables.base(), std::move(bytes));
  const u64 roots[2] = {lower, lower};  // both spaces share an empty lower root
  const u64 upper[2] = {a_upper, b_upper};
  const auto w = walk_va_spaces<F>(image_table_view(image), std::span(roots), std::span(upper));
  ASSERT_EQ(w.records_of(1).size(), 2u);
  EXPECT_EQ(w.records_of(1)[0], alias(0, 0, 0, 0));  // the shared empty lower root
  EXPECT_EQ(w.records_of(1)[1], alias(1, 0, va, va));
}

}  // namespace
}  // namespace ptwalk
