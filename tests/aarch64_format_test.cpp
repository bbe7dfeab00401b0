// AArch64 stage-1 decoding (SPEC §2.1), table-driven: every descriptor type
// at every level of every granule, output-address masks, and every AP / XN /
// DBM / table-attribute combination. Expectations come from the geometry
// written out below and from the SPEC's rules restated as plain booleans,
// never from the trait under test.
#include <gtest/gtest.h>

#include <array>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {
namespace {

// The geometry of each format as the Arm ARM tables give it.
struct geometry {
  unsigned granule_shift, va_bits, levels, top_entries;
  std::array<unsigned, 4> entry_shift;  // per depth
  std::array<bool, 4> block;            // a 01 descriptor is a block at this depth
};

template <class F>
geometry expected_geometry();
template <>
geometry expected_geometry<aarch64_4k_48>() {
  return {12, 48, 4, 512, {39, 30, 21, 12}, {false, true, true, false}};
}
template <>
geometry expected_geometry<aarch64_4k_39>() {
  return {12, 39, 3, 512, {30, 21, 12}, {true, true, false}};
}
template <>
geometry expected_geometry<aarch64_16k_47>() {
  return {14, 47, 3, 2048, {36, 25, 14}, {false, true, false}};
}
template <>
geometry expected_geometry<aarch64_16k_48>() {
  return {14, 48, 4, 2, {47, 36, 25, 14}, {false, false, true, false}};
}
template <>
geometry expected_geometry<aarch64_64k_42>() {
  return {16, 42, 2, 8192, {29, 16}, {true, false}};
}
template <>
geometry expected_geometry<aarch64_64k_48>() {
  return {16, 48, 3, 64, {42, 29, 16}, {false, true, false}};
}

template <class F>
class aarch64_format_test : public ::testing::Test {};
using formats = ::testing::Types<aarch64_4k_48, aarch64_4k_39, aarch64_16k_47, aarch64_16k_48,
                                 aarch64_64k_42, aarch64_64k_48>;
TYPED_TEST_SUITE(aarch64_format_test, formats);

constexpr u64 bit(unsigned n) { return u64{1} << n; }
constexpr u64 bits(unsigned hi, unsigned lo) { return ((hi == 63 ? ~u64{0} : bit(hi + 1) - 1)) & ~(bit(lo) - 1); }

TYPED_TEST(aarch64_format_test, geometry_per_depth) {
  using F = TypeParam;
  const geometry g = expected_geometry<F>();
  ASSERT_EQ(F::levels, g.levels);
  EXPECT_EQ(F::page_shift, g.granule_shift);
  EXPECT_EQ(F::va_bits, g.va_bits);
  EXPECT_EQ(F::linear_bits, g.va_bits + 1);
  EXPECT_EQ(F::halves, 2u);
  const unsigned full = 1u << (g.granule_shift - 3);
  EXPECT_EQ(F::min_table_span_shift, g.granule_shift + g.granule_shift - 3);
  for (unsigned d = 0; d < g.levels; ++d) {
    EXPECT_EQ(F::entry_shift(d), g.entry_shift[d]) << d;
    EXPECT_EQ(F::entries(d), d == 0 ? g.top_entries : full) << d;
    EXPECT_EQ(F::table_bytes(d), 8u * (d == 0 ? g.top_entries : full)) << d;
    EXPECT_EQ(F::is_last_depth(d), d + 1 == g.levels);
    EXPECT_EQ(F::can_be_large_leaf(d), g.block[d]) << d;
    // The index of a VA is its bits above the entry's span, masked to the table.
    const u64 va = bits(g.va_bits, 0) & 0x5a5a'5a5a'5a5a'5a5aull;
    EXPECT_EQ(F::table_index(va, d), (va >> g.entry_shift[d]) % (d == 0 ? g.top_entries : full));
  }
  // The top table spans one half exactly.
  EXPECT_EQ(u64{g.top_entries} << g.entry_shift[0], bit(g.va_bits));
  EXPECT_EQ(F::leaf_depth_for_shift(g.granule_shift), int(g.levels - 1));
  for (unsigned d = 0; d + 1 < g.levels; ++d)
    EXPECT_EQ(F::leaf_depth_for_shift(g.entry_shift[d]), g.block[d] ? int(d) : -1) << d;
}

TYPED_TEST(aarch64_format_test, descriptor_types_at_every_depth) {
  using F = TypeParam;
  const geometry g = expected_geometry<F>();
  for (unsigned d = 0; d < g.levels; ++d) {
    const bool last = d + 1 == g.levels;
    for (const u64 rest : {u64{0x1234'5000}, u64{0}, ~u64{3}}) {
      EXPECT_EQ(F::classify(rest | 0b00, d), entry_kind::not_present) << d;
      EXPECT_EQ(F::classify(rest | 0b10, d), entry_kind::not_present) << d;
      EXPECT_EQ(F::classify(rest | 0b11, d), last ? entry_kind::leaf : entry_kind::table) << d;
      // 01: a block where the granule has one, otherwise (and always at level 3) invalid.
      EXPECT_EQ(F::classify(rest | 0b01, d), g.block[d] ? entry_kind::leaf : entry_kind::not_present) << d;
    }
  }
}

TYPED_TEST(aarch64_format_test, output_address_and_flags_per_level) {
  using F = TypeParam;
  const geometry g = expected_geometry<F>();
  for (const u64 entry : {~u64{0}, u64{0x00e8'0a5a'1234'5f03ull}, u64{0x0060'0000'8765'4003ull}}) {
    EXPECT_EQ(F::table_address(entry), entry & bits(47, g.granule_shift));
    for (unsigned d = 0; d < g.levels; ++d) {
      if (!(g.block[d] || d + 1 == g.levels)) continue;
      const u64 mask = bits(47, g.entry_shift[d]);
      EXPECT_EQ(F::leaf_address(entry, d), entry & mask) << d;
      EXPECT_EQ(F::leaf_flags(entry, d), entry & ~mask) << d;
      // The encoder keeps the flags, forces the type and round-trips.
      const u64 made = F::make_leaf_entry(entry & mask, d, entry & ~mask);
      EXPECT_EQ(made & 3, d + 1 == g.levels ? 3u : 1u) << d;
      EXPECT_EQ(made & ~u64{3}, entry & ~u64{3}) << d;
      EXPECT_EQ(F::classify(made, d), entry_kind::leaf) << d;
    }
  }
  const u64 table = F::make_table_entry(bit(47) | bit(g.granule_shift), bit(63) | bit(60) | 0x10);
  EXPECT_EQ(table, bit(63) | bit(60) | bit(47) | bit(g.granule_shift) | 0x13);
  // Bits above 47 never reach an address (52-bit output is read as 48-bit).
  EXPECT_EQ(F::table_address(bits(51, 48) | 3), 0u);
}

TYPED_TEST(aarch64_format_test, ttbr_value_names_its_table) {
  using F = TypeParam;
  const geometry g = expected_geometry<F>();
  const u64 align = 8u * g.top_entries;  // SPEC §2.1: aligned down to the top table's size
  const u64 table = 0x0000'8123'4560'0000ull;  // aligned to every top-table size
  const u64 asid = u64{0xbeef} << 48, cnp = 1;
  EXPECT_EQ(F::root_table_address(table | asid | cnp), table);
  EXPECT_EQ(F::root_table_address(table + align - 8), table);
  EXPECT_EQ(F::root_table_address(table + align), table + align);
  EXPECT_EQ(root_table_address<F>(table | asid), table);
}

TYPED_TEST(aarch64_format_test, canonical_and_linear_halves) {
  using F = TypeParam;
  const unsigned n = expected_geometry<F>().va_bits;
  const u64 upper_start = ~(bit(n) - 1);  // 0xffff… with the low n bits clear
  EXPECT_EQ(F::linear(0), 0u);
  EXPECT_EQ(F::linear(bit(n) - 1), bit(n) - 1);
  EXPECT_EQ(F::linear(upper_start), bit(n));
  EXPECT_EQ(F::linear(~u64{0}), bit(n + 1) - 1);
  EXPECT_EQ(F::canonical(bit(n)), upper_start);
  EXPECT_EQ(F::canonical(bit(n) | 0x5000), upper_start | 0x5000);
  EXPECT_EQ(F::canonical(0x5000), 0x5000u);
  EXPECT_TRUE(F::is_canonical(upper_start));
  EXPECT_TRUE(F::is_canonical(bit(n) - 1));
  EXPECT_FALSE(F::is_canonical(bit(n)));
  EXPECT_FALSE(F::is_canonical(upper_start - 1));
  // The half bit is not an index bit.
  EXPECT_EQ(F::table_index(bit(n) | 0x5000, 0), F::table_index(0x5000, 0));
  // Ranges: whole space, a bound in the hole, and one half only.
  const auto whole = to_linear<F>(va_range{});
  EXPECT_EQ(whole.first, 0u);
  EXPECT_EQ(whole.last, bit(n + 1) - 1);
  EXPECT_EQ(to_linear<F>(va_range{bit(n) + 5, ~u64{0}}).first, bit(n));
  EXPECT_EQ(to_linear<F>(va_range{0, bit(n) + 5}).last, bit(n) - 1);
  EXPECT_TRUE(to_linear<F>(va_range{bit(n), bit(n) + 0x1000}).empty());
}

// SPEC §2.1 restated: table attributes OR-ed over the path, then the leaf.
struct table_attributes {
  bool ap_table_no_el0 = false, ap_table_read_only = false, uxn_table = false, pxn_table = false;
};
u8 expected_perms(const std::vector<table_attributes>& path, u64 leaf) {
  bool no_el0 = false, read_only_above = false, uxn_above = false, pxn_above = false;
  for (const auto& t : path) {
    no_el0 = no_el0 || t.ap_table_no_el0;
    read_only_above = read_only_above || t.ap_table_read_only;
    uxn_above = uxn_above || t.uxn_table;
    pxn_above = pxn_above || t.pxn_table;
  }
  const bool ap1 = leaf & bit(6), ap2 = leaf & bit(7), dbm = leaf & bit(51);
  const bool el0_exec = !(leaf & bit(54)) && !uxn_above;
  const bool el1_exec = !(leaf & bit(53)) && !pxn_above;
  const bool u = (ap1 && !no_el0) || el0_exec;
  const bool x = u ? el0_exec : el1_exec;
  const bool w = (!ap2 || dbm) && !read_only_above;
  const bool cow = ((leaf >> 55) & 0xf) == 1 && ap2 && !dbm && (leaf & bit(11));
  return static_cast<u8>((w ? perm_writable : 0) | (u ? perm_user : 0) | (x ? perm_executable : 0) |
                         (cow ? perm_cow : 0));
}
u64 table_descriptor(const table_attributes& t) {
  return 0x8000'0003ull | (t.pxn_table ? bit(59) : 0) | (t.uxn_table ? bit(60) : 0) |
         (t.ap_table_no_el0 ? bit(61) : 0) | (t.ap_table_read_only ? bit(62) : 0);
}
table_attributes attributes_of(unsigned combo) {
  return {(combo & 1) != 0, (combo & 2) != 0, (combo & 4) != 0, (combo & 8) != 0};
}

TYPED_TEST(aarch64_format_test, every_ap_xn_and_table_attribute_combination) {
  using F = TypeParam;
  const geometry g = expected_geometry<F>();
  // Leaf bits that matter: AP[1], AP[2], PXN, UXN, DBM, nG and the software field.
  const unsigned leaf_bits[] = {6, 7, 53, 54, 51, 11};
  unsigned checked = 0;
  for (unsigned leaf_combo = 0; leaf_combo < 64; ++leaf_combo) {
    u64 leaf_flags = bit(10);  // AF
    for (unsigned i = 0; i < 6; ++i)
      if (leaf_combo & (1u << i)) leaf_flags |= bit(leaf_bits[i]);
    for (const u64 software : {u64{0}, u64{1}, u64{3}, u64{8}, u64{9}}) {
      const u64 flags = leaf_flags | (software << 55);
      // Every attribute set on the first table, and (where the walk is deep
      // enough) independently on the second.
      for (unsigned a = 0; a < 16; ++a)
        for (unsigned b = 0; b < (g.levels > 2 ? 16u : 1u); ++b) {
          std::vector<table_attributes> path{attributes_of(a)};
          if (g.levels > 2) path.push_back(attributes_of(b));
          u8 acc = F::perm_path_start;
          for (const auto& t : path) acc = F::accumulate_perms(acc, table_descriptor(t));
          const unsigned leaf_depth = static_cast<unsigned>(path.size());
          const u64 leaf = F::make_leaf_entry(bit(30), leaf_depth, flags);
          const u8 expected = expected_perms(path, leaf);
          ASSERT_EQ(F::leaf_perms(acc, leaf), expected)
              << std::hex << "leaf " << leaf << " tables " << a << "/" << b;
          // The record carries exactly these bits, and no path-only bit.
          EXPECT_EQ(make_leaf_record<F>(leaf, leaf_depth, 0, acc).perms, expected);
          ++checked;
        }
    }
  }
  EXPECT_GT(checked, 5000u);
}

TYPED_TEST(aarch64_format_test, access_flag_and_contiguous_bit_change_nothing_but_flags) {
  using F = TypeParam;
  const unsigned last = F::levels - 1;
  const u64 page = F::make_leaf_entry(bit(32), last, bit(6) | bit(10));
  for (const u64 extra : {bit(10), bit(52), bit(10) | bit(52)}) {
    const u64 other = page ^ extra;
    EXPECT_EQ(F::classify(other, last), entry_kind::leaf);
    EXPECT_EQ(F::leaf_perms(F::perm_path_start, other), F::leaf_perms(F::perm_path_start, page));
    EXPECT_EQ(F::leaf_flags(other, last), F::leaf_flags(page, last) ^ extra);
  }
}

TEST(aarch64_formats, names_parse_and_visit) {
  const std::pair<paging_format, const char*> names[] = {
      {paging_format::aarch64_4k_48, "aarch64-4k-48"},   {paging_format::aarch64_4k_39, "aarch64-4k-39"},
      {paging_format::aarch64_16k_47, "aarch64-16k-47"}, {paging_format::aarch64_16k_48, "aarch64-16k-48"},
      {paging_format::aarch64_64k_42, "aarch64-64k-42"}, {paging_format::aarch64_64k_48, "aarch64-64k-48"},
  };
  const unsigned levels[] = {4, 3, 3, 4, 2, 3};
  for (std::size_t i = 0; i < std::size(names); ++i) {
    EXPECT_EQ(parse_format(names[i].second), names[i].first);
    EXPECT_EQ(format_name(names[i].first), names[i].second);
    EXPECT_TRUE(is_aarch64(names[i].first));
    EXPECT_EQ(format_levels(names[i].first), levels[i]);
    EXPECT_EQ(visit_format(names[i].first, []<class F>() { return F::halves; }), 2u);
  }
  EXPECT_FALSE(is_aarch64(paging_format::x86_64));
  EXPECT_THROW(visit_x86_format(paging_format::aarch64_4k_48, []<class F>() { return 0; }), std::invalid_argument);
}

}  // namespace
}  // namespace ptwalk
