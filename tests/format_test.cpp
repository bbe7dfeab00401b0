// Decoding and encoding of x86-64 entries (SPEC §2), both formats.
#include <gtest/gtest.h>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk {
namespace {

template <class F>
class format_test : public ::testing::Test {};
using formats = ::testing::Types<x86_64_4level, x86_64_5level>;
TYPED_TEST_SUITE(format_test, formats);

TYPED_TEST(format_test, levels_and_spans) {
  using F = TypeParam;
  EXPECT_EQ(F::entry_shift(F::levels - 1), 12u);
  EXPECT_EQ(F::entry_shift(F::levels - 2), 21u);
  EXPECT_EQ(F::entry_shift(F::levels - 3), 30u);
  EXPECT_EQ(F::entry_shift(0), F::va_bits - 9);
  EXPECT_EQ(F::leaf_depth_for_shift(12), int(F::levels - 1));
  EXPECT_EQ(F::leaf_depth_for_shift(21), int(F::levels - 2));
  EXPECT_EQ(F::leaf_depth_for_shift(30), int(F::levels - 3));
  EXPECT_EQ(F::leaf_depth_for_shift(39), -1);
}

TYPED_TEST(format_test, page_size_bit_only_counts_in_pdpt_and_pd) {
  using F = TypeParam;
  const u64 with_ps = 0x1000 | 0x81;
  for (unsigned d = 0; d < F::levels; ++d) {
    const bool leaf_level = d + 1 == F::levels || d + 2 == F::levels || d + 3 == F::levels;
    EXPECT_EQ(F::classify(with_ps, d), leaf_level ? entry_kind::leaf : entry_kind::table) << d;
    EXPECT_EQ(F::classify(0x1000 | 0x1, d),
              d + 1 == F::levels ? entry_kind::leaf : entry_kind::table);
    EXPECT_EQ(F::classify(0x1000 | 0x80, d), entry_kind::not_present);
  }
}

TYPED_TEST(format_test, leaf_address_and_flags_by_size) {
  using F = TypeParam;
  const u64 entry = 0x8000'0012'3456'7867ull;  // NX, address bits, PAT-in-large, A/D
  const unsigned pt = F::levels - 1, pd = F::levels - 2, pdpt = F::levels - 3;
  EXPECT_EQ(F::leaf_address(entry, pt), 0x0000'0012'3456'7000ull);
  EXPECT_EQ(F::leaf_flags(entry, pt), 0x8000'0000'0000'0867ull);
  EXPECT_EQ(F::leaf_address(entry, pd), 0x0000'0012'3440'0000ull);
  EXPECT_EQ(F::leaf_flags(entry, pd), 0x8000'0000'0016'7867ull);
  EXPECT_EQ(F::leaf_address(entry, pdpt), 0x0000'0012'0000'0000ull);
  EXPECT_EQ(F::leaf_flags(entry, pdpt), 0x8000'0000'3456'7867ull);
  // The encoders round-trip.
  for (unsigned d : {pt, pd, pdpt}) {
    const u64 made = F::make_leaf_entry(F::leaf_address(entry, d), d, F::leaf_flags(entry, d));
    EXPECT_EQ(F::leaf_address(made, d), F::leaf_address(entry, d));
    EXPECT_EQ(F::classify(made, d), entry_kind::leaf);
  }
  EXPECT_EQ(F::table_address(F::make_table_entry(0xabc000, 0x8000000000000007ull)), 0xabc000u);
}

TYPED_TEST(format_test, effective_permissions_along_a_path) {
  using F = TypeParam;
  const u64 rw_user = 0x7, ro_user = 0x5, rw_kernel = 0x3, nx = u64{1} << 63;
  u8 path = F::perm_path_start;
  path = F::accumulate_perms(path, rw_user);
  EXPECT_EQ(path, perm_writable | perm_user | perm_executable);
  EXPECT_EQ(F::accumulate_perms(path, ro_user), perm_user | perm_executable);
  EXPECT_EQ(F::accumulate_perms(path, rw_kernel), perm_writable | perm_executable);
  EXPECT_EQ(F::accumulate_perms(path, rw_user | nx), perm_writable | perm_user);
  // CoW is bits 11:9 == 0b001 exactly.
  EXPECT_EQ(F::leaf_perms(path, 0x7 | (1u << 9)) & perm_cow, perm_cow);
  EXPECT_EQ(F::leaf_perms(path, 0x7 | (3u << 9)) & perm_cow, 0);
  EXPECT_EQ(F::leaf_perms(path, 0x7 | (1u << 10)) & perm_cow, 0);
}

TYPED_TEST(format_test, canonical_addresses) {
  using F = TypeParam;
  const u64 top_bit = u64{1} << (F::va_bits - 1);
  EXPECT_EQ(F::canonical(top_bit), ~(top_bit - 1));
  EXPECT_EQ(F::canonical(top_bit - 1), top_bit - 1);
  EXPECT_EQ(F::linear(F::canonical(top_bit | 0x1000)), top_bit | 0x1000);
  EXPECT_TRUE(F::is_canonical(0xffff'ffff'ffff'f000ull));
  EXPECT_FALSE(F::is_canonical(top_bit));
  // Sign extension keeps the order of linear addresses.
  EXPECT_LT(F::canonical(top_bit - 1), F::canonical(top_bit));
}

TYPED_TEST(format_test, va_range_clamps_the_hole) {
  using F = TypeParam;
  const u64 half = u64{1} << (F::va_bits - 1);
  const auto whole = to_linear<F>(va_range{});
  EXPECT_EQ(whole.first, 0u);
  EXPECT_EQ(whole.last, F::max_va_linear);
  const auto lower = to_linear<F>(va_range{0, half + 5});  // last in the hole
  EXPECT_EQ(lower.last, half - 1);
  const auto hole_only = to_linear<F>(va_range{half, half + 0x1000});
  EXPECT_TRUE(hole_only.empty());
  const auto b = whole.entries_in_range(0, 0);
  EXPECT_EQ(b.lo, 0u);
  EXPECT_EQ(b.hi, 511u);
  const auto part = to_linear<F>(va_range{F::entry_span(0) * 3 + 5, F::entry_span(0) * 7});
  const auto pb = part.entries_in_range(0, 0);
  EXPECT_EQ(pb.lo, 3u);
  EXPECT_EQ(pb.hi, 7u);
}

TEST(format_names, parse_and_print) {
  EXPECT_EQ(parse_format("x86_64"), paging_format::x86_64);
  EXPECT_EQ(parse_format("x86_64-la57"), paging_format::x86_64_la57);
  EXPECT_FALSE(parse_format("aarch64").has_value());
  EXPECT_EQ(format_name(paging_format::x86_64_la57), "x86_64-la57");
  EXPECT_EQ(visit_format(paging_format::x86_64_la57, []<class F>() { return F::levels; }), 5u);
}

}  // namespace
}  // namespace ptwalk
