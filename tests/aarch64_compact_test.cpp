// Compaction and verification of AArch64 snapshots (SPEC §2.1, §4), every
// granule: TTBR1 tables rebuilt and a shared TTBR1 kept as one table named by
// the new manifest's "ttbr1", a depth-1 table shared between processes,
// --keep-pa, --cow-writable (AP[2] + software 0b0001 + nG), OS-private
// invalid descriptors kept verbatim, unbacked blocks dropped. Expectations
// are re-derived from the input's records and raw entries, and the verifier
// must catch a planted difference in the upper half.
#include <gtest/gtest.h>

#include <cstring>

#include "compact/compactor.hpp"
#include "compact/verifier.hpp"
#include "input/image_ranges.hpp"
#include "input/manifest.hpp"
#include "input/table_views.hpp"
#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"
#include "support/compact_fixtures.hpp"
#include "support/sparse_tables.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

using namespace ptwalk::testing;
constexpr u64 bit(unsigned n) { return u64{1} << n; }

// Linux-like descriptor bits.
constexpr u64 af = bit(10), ng = bit(11), ap_el0 = bit(6), ap_ro = bit(7), pxn = bit(53), uxn = bit(54);
constexpr u64 contiguous = bit(52);
constexpr u64 user_rw = ap_el0 | af | ng | pxn | uxn;
constexpr u64 kernel_ro = ap_ro | af | uxn | bit(55);  // global: bit 55 is no CoW marker
// Not-valid descriptors Linux keeps: a swap entry and a PROT_NONE page
// (valid clear, PTE_PRESENT_INVALID = bit 59 on recent kernels), and a
// reserved 01 at level 3.
constexpr u64 swap_entry = 0x0000'0012'3450'0040ull << 2;
constexpr u64 prot_none = 0x0000'0000'0777'0000ull | bit(59) | ap_el0 | af | 0x2;
constexpr u64 reserved_level3 = 0x0000'0000'0888'0000ull | 0x1;

template <class F>
struct arm_fixture {
  static constexpr u64 granule = u64{1} << F::page_shift;
  static constexpr unsigned last = F::levels - 1;
  static constexpr unsigned block_depth = F::levels - 2;  // level 2 allows a block in every granule
  static constexpr u64 block = F::entry_span(block_depth);
  // Data frames: 64 granules at 0, then one block-aligned block, backed
  // where it is small (a 64 KiB granule's 512 MiB block stays unbacked).
  static constexpr u64 data_pages = 64;
  static constexpr u64 block_pa = block;
  static constexpr bool block_backed = block <= (u64{32} << 20);
  static constexpr u64 tables_pa = 2 * block;
  static constexpr u64 unbacked_pa = u64{1} << 40;
  static constexpr u64 upper = ~((u64{1} << F::va_bits) - 1);
  static constexpr u64 user_va = 0x10 * granule;

  loaded_snapshot build() const {
    page_table_buffer tables(tables_pa, granule);
    const u64 a = tables.alloc_table(), b = tables.alloc_table(), kernel = tables.alloc_table();
    tables.update_root(a);
    // A: 16 contiguous user pages, one a CoW candidate, then the OS-private entries.
    for (u64 i = 0; i < 16; ++i)
      expect_ok(map<F>(tables, {user_va + i * granule, i * granule, F::page_shift, user_rw | contiguous, {}}));
    const u64 private_va = user_va + 16 * granule;
    expect_ok(write_entry_at<F>(tables, private_va, last, swap_entry));
    expect_ok(write_entry_at<F>(tables, private_va + granule, last, prot_none));
    expect_ok(write_entry_at<F>(tables, private_va + 2 * granule, last, reserved_level3));
    // A: a block of user memory and an unbacked (device) page.
    expect_ok(map<F>(tables, {block * 2, block_pa, F::entry_shift(block_depth), user_rw | 0x1, {}}));
    expect_ok(map<F>(tables, {block * 3, unbacked_pa, F::page_shift, af | uxn | pxn, {}}));
    // B: its own page, and A's last-level table holding the user pages.
    tables.update_root(b);
    expect_ok(map<F>(tables, {user_va + block, 20 * granule, F::page_shift, user_rw | ap_ro, {}}));
    const u64 a_user_table = table_of(tables, a, user_va, last);
    expect_ok(space_aware_map<F>(tables, last, user_va & ~(block - 1), a_user_table, 0x3));
    // The shared TTBR1: a read-only global kernel page and a kernel block.
    tables.update_root(kernel);
    expect_ok(map<F>(tables, {upper | 0x100 * granule, 30 * granule, F::page_shift, kernel_ro, {}}));
    expect_ok(map<F>(tables, {upper | block, block_pa, F::entry_shift(block_depth), af | uxn | 0x1, {}}));

    loaded_snapshot s;
    s.spec.id = std::string(format_name(format()));
    s.spec.format = format();
    s.spec.roots = {a | (u64{3} << 48), b};  // an ASID on A's TTBR0
    s.spec.upper_roots = {kernel | (u64{5} << 48), kernel | (u64{6} << 48)};
    s.image.add_owned_region(0, patterned(data_pages * granule));
    if (block_backed) s.image.add_owned_region(block_pa, patterned(block));
    std::vector<std::byte> table_bytes(tables.words().size() * 8);
    std::memcpy(table_bytes.data(), tables.words().data(), table_bytes.size());
    s.image.add_owned_region(tables_pa, std::move(table_bytes));
    return s;
  }

  static std::vector<std::byte> patterned(u64 size) {
    std::vector<std::byte> data(size);
    for (std::size_t i = 0; i < data.size(); i += 8) data[i] = static_cast<std::byte>(i / granule + 1);
    return data;
  }
  static paging_format format() {
    for (const paging_format f : all_formats)
      if (visit_format(f, []<class G>() { return std::is_same_v<G, F>; })) return f;
    throw std::logic_error("no such format");
  }
  static u64 table_of(const page_table_buffer& t, u64 root, u64 va, unsigned depth) {
    u64 table = root;
    for (unsigned d = 0; d < depth; ++d) table = F::table_address(t.read_entry(table + 8 * F::table_index(F::linear(va), d)));
    return table;
  }
  static void expect_ok(map_status s) { EXPECT_EQ(s, map_status::ok); }
};

// The raw descriptor a space's tables hold for `va` at `depth`, 0 when the path ends above.
template <class F>
u64 entry_at(const loaded_snapshot& s, std::size_t space, u64 va, unsigned depth) {
  const image_table_view view(s.image);
  u64 table = half_of<F>(va) == 0 ? root_table_address<F>(s.roots()[space])
                                   : root_table_address<F>(s.upper_roots()[space]);
  for (unsigned d = 0; d < depth; ++d) {
    const u64 entry = view.read_entry(table + 8 * F::table_index(F::linear(va), d));
    if (F::classify(entry, d) != entry_kind::table) return 0;
    table = F::table_address(entry);
  }
  return view.read_entry(table + 8 * F::table_index(F::linear(va), depth));
}

template <class F>
class aarch64_compact_test : public ::testing::Test {
 protected:
  using X = arm_fixture<F>;
  loaded_snapshot input = X().build();
  snapshot_walk walk = reference_walk(input);

  loaded_snapshot compacted(const compaction_policy& policy, compacted_snapshot* raw = nullptr) {
    compacted_snapshot c = compact_snapshot(input, walk, policy);
    loaded_snapshot out = load_written(c, write_to_memory(c));
    if (raw != nullptr) *raw = std::move(c);
    return out;
  }
};
using formats = ::testing::Types<aarch64_4k_48, aarch64_4k_39, aarch64_16k_47, aarch64_16k_48,
                                 aarch64_64k_42, aarch64_64k_48>;
TYPED_TEST_SUITE(aarch64_compact_test, formats);

TYPED_TEST(aarch64_compact_test, fixture_has_the_cases) {
  using F = TypeParam;
  // One owned TTBR1 table and one depth-0 alias; B's link to A's page table.
  EXPECT_EQ(this->walk.stats.aliases[0], 1u);
  EXPECT_EQ(this->walk.stats.aliases[F::levels - 1], 1u);
  const auto b = this->walk.records_of(1);
  EXPECT_EQ(b.back().depth, 0u);
  EXPECT_EQ(b.back().va, arm_fixture<F>::upper);
}

TYPED_TEST(aarch64_compact_test, default_policy_rebuilds_both_halves_and_verifies) {
  using F = TypeParam;
  using X = arm_fixture<F>;
  compacted_snapshot raw;
  const loaded_snapshot out = this->compacted({}, &raw);
  const verification v = verify_snapshot(this->input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
  EXPECT_GE(v.counts.os_private_entries, 3u);

  // One TTBR1 table for both spaces, ASIDs kept, named once in the manifest.
  ASSERT_EQ(out.upper_roots().size(), 2u);
  EXPECT_EQ(root_table_address<F>(out.upper_roots()[0]), root_table_address<F>(out.upper_roots()[1]));
  EXPECT_EQ(out.upper_roots()[0] >> 48, 5u);
  EXPECT_EQ(out.upper_roots()[1] >> 48, 6u);
  EXPECT_EQ(out.roots()[0] >> 48, 3u);
  EXPECT_NE(format_manifest_line(raw.spec).find("\"ttbr1\":[\""), std::string::npos);

  // Same records (links and leaves, minus the unbacked page), new addresses.
  const snapshot_walk after = reference_walk(out);
  for (std::size_t space = 0; space < 2; ++space) {
    std::vector<space_aware_mapping> expected;
    for (const auto& r : this->walk.records_of(space))
      if (!r.is_leaf() || fully_backed(this->input.image, r.pa, r.size())) expected.push_back(r);
    const auto got = after.records_of(space);
    ASSERT_EQ(got.size(), expected.size()) << space;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].va, expected[i].va);
      EXPECT_EQ(got[i].kind, expected[i].kind);
      EXPECT_EQ(got[i].perms, expected[i].perms);
      EXPECT_EQ(got[i].flags, expected[i].flags);
      if (!got[i].is_leaf()) {
        EXPECT_EQ(got[i].pa, expected[i].pa);
      }
    }
  }
  for (unsigned d = 0; d < F::levels; ++d) EXPECT_EQ(after.stats.aliases[d], this->walk.stats.aliases[d]);
  // OS-private descriptors are where they were, bit for bit.
  const u64 private_va = X::user_va + 16 * X::granule;
  EXPECT_EQ(entry_at<F>(out, 0, private_va, X::last), swap_entry);
  EXPECT_EQ(entry_at<F>(out, 0, private_va + X::granule, X::last), prot_none);
  EXPECT_EQ(entry_at<F>(out, 0, private_va + 2 * X::granule, X::last), reserved_level3);
  // Tables are whole granules, granule-aligned.
  EXPECT_EQ(raw.tables.base() % X::granule, 0u);
  EXPECT_EQ(raw.tables.table_bytes(), X::granule);
}

TYPED_TEST(aarch64_compact_test, keep_pa_keeps_every_frame_and_the_unbacked_page) {
  using X = arm_fixture<TypeParam>;
  compaction_policy policy;
  policy.keep_pa = true;
  const loaded_snapshot out = this->compacted(policy);
  const verification v = verify_snapshot(this->input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
  const snapshot_walk after = reference_walk(out);
  std::vector<u64> before_pas, after_pas;
  for (const auto& r : this->walk.records) if (r.is_leaf()) before_pas.push_back(r.pa);
  for (const auto& r : after.records) if (r.is_leaf()) after_pas.push_back(r.pa);
  EXPECT_EQ(after_pas, before_pas);
  EXPECT_NE(std::find(after_pas.begin(), after_pas.end(), X::unbacked_pa), after_pas.end());
  EXPECT_NE(std::find(after_pas.begin(), after_pas.end(), X::block_pa), after_pas.end());
}

TYPED_TEST(aarch64_compact_test, cow_writable_sets_ap2_software_value_and_ng) {
  compaction_policy policy;
  policy.cow_writable = true;
  const loaded_snapshot out = this->compacted(policy);
  const verification v = verify_snapshot(this->input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
  const snapshot_walk after = reference_walk(out);
  std::size_t made_cow = 0;
  for (std::size_t space = 0; space < 2; ++space) {
    std::vector<space_aware_mapping> before_leaves, after_leaves;
    for (const auto& r : this->walk.records_of(space))
      if (r.is_leaf() && fully_backed(this->input.image, r.pa, r.size())) before_leaves.push_back(r);
    for (const auto& r : after.records_of(space)) if (r.is_leaf()) after_leaves.push_back(r);
    ASSERT_EQ(after_leaves.size(), before_leaves.size());
    for (std::size_t i = 0; i < before_leaves.size(); ++i) {
      const u64 b = before_leaves[i].flags, a = after_leaves[i].flags;
      const bool was_writable = (b & ap_ro) == 0;
      if (!was_writable) {
        EXPECT_EQ(a, b);
        continue;
      }
      ++made_cow;
      EXPECT_EQ(a, (b | ap_ro | ng | bit(55)) & ~(u64{0xf} << 55 & ~bit(55)));
      EXPECT_EQ(after_leaves[i].perms & (perm_writable | perm_cow), perm_cow);
    }
  }
  EXPECT_GE(made_cow, 16u);
}

// 16k-48 top tables are 16 bytes (SPEC §2.1: a TTBR is aligned down to the
// top table's size), so two spaces' tables can share one line: TTBRs 0x104f
// and 0x1058 name 0x1040 and 0x1050. Both are rebuilt as their own tables,
// the low TTBR bits outside the address survive, and the result verifies.
TEST(aarch64_compact, side_by_side_16k_48_top_tables) {
  using F = aarch64_16k_48;
  constexpr u64 table = 0x3, page = 0x3 | ap_el0 | af;
  testing::sparse_tables t;
  t.set(0x1040, 0, 0x4000 | table);
  t.set(0x1050, 0, 0x8000 | table);
  t.set(0x1050, 1, 0x4000 | table);
  t.set(0x4000, 0, 0xc000 | table);
  t.set(0xc000, 0, 0x1'0000 | table);
  t.set(0x1'0000, 5, 0x2'0000 | page);
  t.set(0x8000, 1, 0xc000 | table);
  for (u64 pa = 0x2'0000; pa < 0x2'4000; pa += 0x1000) t.back(pa);  // the 16 KiB data page
  loaded_snapshot input;
  input.spec.id = "sixteen";
  input.spec.format = paging_format::aarch64_16k_48;
  input.spec.roots = {0x104f, 0x1058};
  input.image = t.image();
  const snapshot_walk walk = reference_walk(input);
  ASSERT_EQ(walk.roots, (std::vector<u64>{0x1040, 0x1050}));
  ASSERT_EQ(walk.records_of(0).size(), 1u);
  ASSERT_EQ(walk.records_of(1).size(), 2u);  // an alias at depth 2, then one at depth 1

  const compacted_snapshot c = compact_snapshot(input, walk, {});
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  const verification v = verify_snapshot(input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
  ASSERT_EQ(out.roots().size(), 2u);
  EXPECT_NE(root_table_address<F>(out.roots()[0]), root_table_address<F>(out.roots()[1]));
  EXPECT_EQ(out.roots()[0] & 0xf, 0xfu);  // CnP and the bits below the 16-byte alignment kept
  EXPECT_EQ(out.roots()[1] & 0xf, 0x8u);
  const snapshot_walk after = reference_walk(out);
  for (std::size_t space = 0; space < 2; ++space) {
    const auto before = walk.records_of(space), now = after.records_of(space);
    ASSERT_EQ(now.size(), before.size()) << space;
    for (std::size_t i = 0; i < now.size(); ++i) {
      EXPECT_EQ(now[i].va, before[i].va);
      EXPECT_EQ(now[i].kind, before[i].kind);
      EXPECT_EQ(now[i].depth, before[i].depth);
    }
  }
}

TYPED_TEST(aarch64_compact_test, verify_catches_a_changed_upper_half_entry) {
  using F = TypeParam;
  using X = arm_fixture<F>;
  compacted_snapshot c = compact_snapshot(this->input, this->walk, {});
  written_image w = write_to_memory(c);
  loaded_snapshot out = load_written(c, w);
  // Clear AP[2] of the kernel's read-only page in the written image.
  const u64 va = X::upper | 0x100 * X::granule;
  const u64 entry = entry_at<F>(out, 0, va, X::last);
  ASSERT_NE(entry & ap_ro, 0u);
  u64 table = root_table_address<F>(out.upper_roots()[0]);
  const image_table_view view(out.image);
  for (unsigned d = 0; d < X::last; ++d)
    table = F::table_address(view.read_entry(table + 8 * F::table_index(F::linear(va), d)));
  const u64 at = table + 8 * F::table_index(F::linear(va), X::last);
  const auto* region = out.image.find(at, 8);
  ASSERT_NE(region, nullptr);
  const auto* raw = std::get_if<raw_source>(&w.source);
  const u64 file_offset = raw != nullptr ? at - raw->base : [&] {
    for (const auto& r : std::get<region_source>(w.source).regions)
      if (at >= r.gpa && at < r.gpa + r.size) return r.offset + (at - r.gpa);
    return u64{0};
  }();
  const u64 changed = entry & ~ap_ro;
  std::memcpy(w.bytes.data() + file_offset, &changed, 8);
  out = load_written(c, w);
  const verification v = verify_snapshot(this->input, out);
  EXPECT_FALSE(v.ok());
  EXPECT_NE(format_verification(v).find("permissions"), std::string::npos) << format_verification(v);
}

}  // namespace
}  // namespace ptwalk
