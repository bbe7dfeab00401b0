// map / virt_to_phys / space_aware_map over the three host table-ops types,
// and the update_parent chain of the copy-on-write view.
#include <gtest/gtest.h>

#include <random>

#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"
#include "support/sparse_tables.hpp"
#include "input/table_views.hpp"

namespace ptwalk {
namespace {

template <class F>
class table_ops_test : public ::testing::Test {};
using formats = ::testing::Types<x86_64_4level, x86_64_5level>;
TYPED_TEST_SUITE(table_ops_test, formats);

TYPED_TEST(table_ops_test, map_and_translate_every_page_size) {
  using F = TypeParam;
  page_table_buffer tables(0x4000'0000);
  tables.update_root(tables.alloc_table());
  const u64 nx = u64{1} << 63;
  struct page {
    u64 va, pa;
    unsigned shift;
    u64 flags;
  };
  const u64 high = F::canonical(u64{1} << (F::va_bits - 1));  // first upper-half VA
  const page pages[] = {
      {0x1000, 0x5000, 12, 0x7},
      {0x3fff'f000, 0x9000, 12, 0x5 | nx},
      {0x20'0000, 0x40'0000, 21, 0x3 | (1u << 9)},
      {0x4000'0000, 0x8000'0000, 30, 0x7 | (1u << 12)},
      {high, 0x6000, 12, 0x3},
      {high + 0x4000'0000, 0xc000'0000, 30, 0x1},
  };
  for (const auto& p : pages)
    ASSERT_EQ(map<F>(tables, {p.va, p.pa, p.shift, p.flags, {}}), map_status::ok);
  for (const auto& p : pages) {
    const u64 offset = (u64{1} << p.shift) - 8;
    auto m = virt_to_phys<F>(tables, p.va + offset);
    ASSERT_TRUE(m.has_value()) << std::hex << p.va;
    EXPECT_EQ(m->va, p.va);
    EXPECT_EQ(m->pa + offset, p.pa + offset);
    EXPECT_EQ(m->size, u64{1} << p.shift);
    EXPECT_EQ(m->writable, (p.flags & 2) != 0);
    EXPECT_EQ(m->user, (p.flags & 4) != 0);
    EXPECT_EQ(m->executable, (p.flags & nx) == 0);
    EXPECT_EQ(m->cow, ((p.flags >> 9) & 7) == 1);
    EXPECT_EQ(m->flags & ~u64{F::bit_page_size}, p.flags | 1);
  }
  EXPECT_FALSE(virt_to_phys<F>(tables, 0x2000).has_value());
  EXPECT_EQ(map<F>(tables, {0x1000, 0x5000, 13, 0x3, {}}), map_status::bad_page_size);
  EXPECT_EQ(map<F>(tables, {0x1800, 0x5000, 12, 0x3, {}}), map_status::misaligned);
  // A 4 KiB page inside the 2 MiB leaf cannot get a table.
  EXPECT_EQ(map<F>(tables, {0x20'1000, 0x5000, 12, 0x3, {}}), map_status::blocked_by_leaf);
  // A large leaf cannot replace a table that holds other pages.
  EXPECT_EQ(map<F>(tables, {0, 0xc000'0000, 30, 0x3, {}}), map_status::blocked_by_table);
}

TYPED_TEST(table_ops_test, map_agrees_with_the_reference_walk) {
  using F = TypeParam;
  page_table_buffer tables(0x10'0000'0000);
  tables.update_root(tables.alloc_table());
  std::mt19937_64 rng(7);
  std::map<u64, u64> expected;  // linear va -> pa
  for (int i = 0; i < 500; ++i) {
    const u64 va = (rng() & F::max_va_linear) & ~u64{0xfff};
    const u64 pa = (rng() & 0xff'ffff'f000ull);
    if (map<F>(tables, {va, pa, 12, 0x7, {}}) == map_status::ok) expected[va] = pa;
  }
  memory_image image;
  std::vector<std::byte> bytes(tables.words().size() * 8);
  std::memcpy(bytes.data(), tables.words().data(), bytes.size());
  image.add_owned_region(tables.base(), std::move(bytes));
  const u64 root = tables.root_table();
  const auto walk = walk_va_spaces<F>(image_table_view(image), std::span(&root, 1));
  ASSERT_EQ(walk.records.size(), expected.size());
  auto it = expected.begin();
  for (const auto& r : walk.records) {
    EXPECT_TRUE(r.is_leaf());
    EXPECT_EQ(F::linear(r.va), it->first);
    EXPECT_EQ(r.pa, it->second);
    ++it;
  }
}

// A write deep in a read-only tree copies the leaf table and every ancestor
// up to a new root; the base image is never written.
TYPED_TEST(table_ops_test, cow_write_moves_tables_up_to_a_new_root) {
  using F = TypeParam;
  testing::sparse_tables base_tables;
  // One path of tables at 0x1000, 0x2000, … down to the leaf table.
  for (unsigned d = 0; d + 1 < F::levels; ++d)
    base_tables.set(0x1000 * (d + 1), 0, F::make_table_entry(0x1000 * (d + 2), 0x7));
  const u64 leaf_table = 0x1000 * F::levels;
  base_tables.set(leaf_table, 0, F::make_leaf_entry(0x80'0000, F::levels - 1, 0x7));
  const memory_image image = base_tables.image();
  std::vector<u64> before;
  for (unsigned d = 0; d < F::levels; ++d)
    for (unsigned i = 0; i < 2; ++i) before.push_back(image_table_view(image).read_entry(0x1000 * (d + 1) + 8 * i));

  cow_table_view view(image, 0x1000, 0x1000'0000);
  ASSERT_EQ(map<F>(view, {0x1000, 0x90'0000, 12, 0x3, {}}), map_status::ok);

  // Every table on the path moved into scratch, the root too.
  EXPECT_EQ(view.scratch().table_count(), F::levels);
  EXPECT_TRUE(view.scratch().contains(view.root_table()));
  u64 table = view.root_table();
  for (unsigned d = 0; d + 1 < F::levels; ++d) {
    EXPECT_TRUE(view.scratch().contains(table)) << d;
    table = F::table_address(view.read_entry(table));
  }
  // Old and new pages are both reachable through the new root.
  EXPECT_EQ(virt_to_phys<F>(view, 0x0)->pa, 0x80'0000u);
  EXPECT_EQ(virt_to_phys<F>(view, 0x1000)->pa, 0x90'0000u);
  EXPECT_FALSE(virt_to_phys<F>(view, 0x1000)->user);
  // The base is untouched.
  std::vector<u64> after;
  for (unsigned d = 0; d < F::levels; ++d)
    for (unsigned i = 0; i < 2; ++i) after.push_back(image_table_view(image).read_entry(0x1000 * (d + 1) + 8 * i));
  EXPECT_EQ(before, after);
  // A second write to the same leaf table moves nothing more.
  ASSERT_EQ(map<F>(view, {0x2000, 0xa0'0000, 12, 0x3, {}}), map_status::ok);
  EXPECT_EQ(view.scratch().table_count(), F::levels);
}

TYPED_TEST(table_ops_test, space_aware_map_links_a_shared_table) {
  using F = TypeParam;
  page_table_buffer tables(0x100'0000);
  const u64 owner_root = tables.alloc_table();
  tables.update_root(owner_root);
  const u64 va = F::entry_span(0) * 3;  // block of the depth-1 table
  ASSERT_EQ(map<F>(tables, {va + 0x5000, 0x77000, 12, 0x7, {}}), map_status::ok);
  const u64 shared = F::table_address(tables.read_entry(tables.entry_addr(owner_root, 3)));

  const u64 our_root = tables.alloc_table();
  tables.update_root(our_root);
  const u64 our_va = F::entry_span(0) * 9;
  ASSERT_EQ(space_aware_map<F>(tables, 1, our_va, shared, 0x5), map_status::ok);
  auto m = virt_to_phys<F>(tables, our_va + 0x5000);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->pa, 0x77000u);
  EXPECT_FALSE(m->writable);  // the link's own bits count on our path
  EXPECT_EQ(space_aware_map<F>(tables, 1, our_va + 0x1000, shared, 0x5), map_status::misaligned);
  EXPECT_EQ(space_aware_map<F>(tables, 0, 0, shared, 0x5), map_status::bad_page_size);
}

}  // namespace
}  // namespace ptwalk
