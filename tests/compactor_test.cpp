// compact_snapshot on the hand-built fixture (every odd case on purpose) and
// on placement corner cases: what is kept, where frames go, how sharing is
// relinked, and that every policy's output verifies.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "compact/compact_job.hpp"
#include "compact/compactor.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "walk/owned_tables.hpp"
#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"
#include "support/compact_fixtures.hpp"
#include "compact/verifier.hpp"

namespace ptwalk {
namespace {

using namespace ptwalk::testing;

template <class F>
class compactor_test : public ::testing::Test {
 protected:
  using L = fixture_layout<F>;
  loaded_snapshot input = fixture_snapshot<F>();
  snapshot_walk walk = reference_walk(input);

  static std::vector<space_aware_mapping> links_of(const snapshot_walk& w, std::size_t space) {
    std::vector<space_aware_mapping> out;
    for (const auto& r : w.records_of(space))
      if (!r.is_leaf()) out.push_back(r);
    return out;
  }
  static std::optional<mapping> lookup(const loaded_snapshot& s, std::size_t space, u64 va) {
    return virt_to_phys<F>(image_table_view(s.image, root_table_address<F>(s.roots()[space])), va);
  }
  static void expect_verified(const loaded_snapshot& before, const loaded_snapshot& after) {
    const verification v = verify_snapshot(before, after);
    EXPECT_TRUE(v.ok()) << format_verification(v);
  }
};
using formats = ::testing::Types<x86_64_4level, x86_64_5level>;
TYPED_TEST_SUITE(compactor_test, formats);

TYPED_TEST(compactor_test, round_trip_keeps_every_mapping_and_every_shared_table) {
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, {});
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  this->expect_verified(this->input, out);

  const snapshot_walk after = reference_walk(out);
  ASSERT_EQ(after.space_count(), 4u);
  // Every link stays but the two to tables that map nothing after: the
  // all-zero PT (space 1's link) and the APIC's PT, empty once its unbacked
  // leaf is dropped (space 2's link). They go with the tables (SPEC §4:
  // "minus tables that became empty").
  for (std::size_t space = 0; space < 4; ++space) {
    std::vector<space_aware_mapping> expected;
    for (const auto& r : this->links_of(this->walk, space))
      if (r.va != TestFixture::L::zero_table + gib1 && r.va != TestFixture::L::empty_link) expected.push_back(r);
    EXPECT_EQ(this->links_of(after, space), expected) << "space " << space;
  }
  // Kernel shared at depth 1 twice, space 0's user PT, the self-shared PT.
  EXPECT_EQ(c.stats.links, 4u);
  EXPECT_EQ(c.stats.links_to_empty_tables, 2u);
  EXPECT_EQ(after.stats.aliases[0], 1u);
  EXPECT_EQ(after.stats.aliases[1], 2u);
  EXPECT_EQ(after.stats.aliases[TypeParam::levels - 1], 2u);
  // Gone: the two empty PTs, and the four PDs that held nothing else (space
  // 0's above each of them, spaces 1 and 2's above their links).
  for (unsigned d = 0; d < TypeParam::levels; ++d) {
    const u64 gone = d == TypeParam::levels - 1 ? 2 : d == TypeParam::levels - 2 ? 4 : 0;
    EXPECT_EQ(after.stats.tables[d], this->walk.stats.tables[d] - gone) << "depth " << d;
  }
  // The duplicate root is the same rebuilt root, with its PCID.
  EXPECT_EQ(out.roots()[3], out.roots()[0] | 0x001);
  EXPECT_EQ(out.spec.labels, this->input.spec.labels);
  EXPECT_EQ(out.spec.meta["built_by"], "compact_fixtures");
  EXPECT_EQ(compaction_policy::from_meta(out.spec.meta), compaction_policy{});
}

TYPED_TEST(compactor_test, unbacked_leaves_are_dropped_and_counted) {
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, {});
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  EXPECT_EQ(c.stats.leaves_dropped_unbacked, 2u);  // the APIC page and the 1 GiB leaf
  EXPECT_EQ(c.stats.spaces, 4u);
  EXPECT_FALSE(this->lookup(out, 0, TestFixture::L::apic).has_value());
  EXPECT_FALSE(this->lookup(out, 0, TestFixture::L::kernel_1g).has_value());
  EXPECT_EQ(c.spec.meta["compaction"]["unbacked_leaves_dropped"], 2u);
}

TYPED_TEST(compactor_test, os_private_entries_are_kept_verbatim) {
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, {});
  EXPECT_EQ(c.stats.os_private_entries, 4u);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  using F = TypeParam;
  auto entry_at = [&](u64 va) {
    const image_table_view view(out.image);
    u64 table = root_table_address<F>(out.roots()[0]);
    for (unsigned d = 0; d + 1 < F::levels; ++d)
      table = F::table_address(view.read_entry(view.entry_addr(table, F::table_index(F::linear(va), d))));
    return view.read_entry(view.entry_addr(table, F::table_index(F::linear(va), F::levels - 1)));
  };
  using L = typename TestFixture::L;
  EXPECT_EQ(entry_at(L::user + 5 * kib4), swap_entry);
  EXPECT_EQ(entry_at(L::user + 6 * kib4), prot_none_entry);
  EXPECT_EQ(entry_at(L::swap_only), swap_entry + 0x1000);  // a table with nothing else in it
  EXPECT_EQ(entry_at(L::swap_only + kib4), swap_entry + 0x2000);
}

TYPED_TEST(compactor_test, frames_are_copied_once_densely_large_ones_first_and_aligned) {
  using L = typename TestFixture::L;
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, {});
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  // Two 2 MiB frames at 0 and 2 MiB, then the 4 KiB frames, then the tables.
  EXPECT_EQ(this->lookup(out, 0, L::kernel)->pa, 0u);
  EXPECT_EQ(this->lookup(out, 0, L::kernel + mib2)->pa, mib2);
  EXPECT_EQ(c.stats.frames_copied, 2u + 12u);  // frames 0..11; frame 9 is mapped twice
  EXPECT_EQ(c.stats.frames_nested, 1u);
  EXPECT_EQ(c.stats.padding_bytes, 0u);
  EXPECT_EQ(c.stats.data_bytes, 2 * mib2 + 12 * kib4);
  EXPECT_EQ(c.tables.base(), c.stats.data_bytes);
  EXPECT_EQ(c.stats.bytes_out, c.stats.data_bytes + c.stats.tables * kib4);
  EXPECT_LT(c.stats.bytes_out, c.stats.bytes_in);
  EXPECT_EQ(c.runs().size(), 1u);
  // A frame mapped twice has one copy; a 4 KiB page inside a 2 MiB frame
  // points into that frame's copy.
  EXPECT_EQ(this->lookup(out, 1, L::twice_a)->pa, this->lookup(out, 1, L::twice_b)->pa);
  EXPECT_EQ(this->lookup(out, 1, L::nested)->pa, this->lookup(out, 0, L::kernel)->pa + 0x3000);
  std::set<u64> pages;
  for (const auto& r : reference_walk(out).records)
    if (r.is_leaf()) {
      EXPECT_EQ(r.pa % r.size(), 0u);
      EXPECT_LT(r.pa, c.tables.base());
      if (r.size_log2 == 12) pages.insert(r.pa);
    }
  EXPECT_EQ(pages.size(), 12u + 1u);  // 12 frames, plus the one inside the 2 MiB copy
}

TYPED_TEST(compactor_test, keep_unbacked_keeps_them_at_their_address_and_unbacked) {
  using L = typename TestFixture::L;
  compaction_policy policy;
  policy.keep_unbacked = true;
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, policy);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  this->expect_verified(this->input, out);
  EXPECT_EQ(c.stats.leaves_dropped_unbacked, 0u);
  EXPECT_EQ(c.stats.leaves_kept_unbacked, 2u);
  EXPECT_EQ(c.stats.links_to_empty_tables, 1u);  // to the all-zero table; the APIC's PT keeps its leaf
  EXPECT_EQ(this->lookup(out, 0, L::apic)->pa, apic_pa);
  EXPECT_EQ(this->lookup(out, 0, L::kernel_1g)->pa, unbacked_1g_pa);
  EXPECT_EQ(out.image.find(apic_pa, 1), nullptr);
  EXPECT_EQ(out.image.find(unbacked_1g_pa, 1), nullptr);
  EXPECT_TRUE(c.spec.meta["compaction"]["keep_unbacked"].get<bool>());
}

TYPED_TEST(compactor_test, keep_pa_moves_nothing_and_drops_unmapped_frames) {
  compaction_policy policy;
  policy.keep_pa = true;
  const compacted_snapshot c = compact_snapshot(this->input, this->walk, policy);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  this->expect_verified(this->input, out);
  const snapshot_walk after = reference_walk(out);
  // Every record stays as it was, but space 1's link to the all-zero PT,
  // which maps nothing and goes (the APIC's PT keeps its unbacked leaf here).
  for (std::size_t space = 0; space < 4; ++space) {
    std::vector<space_aware_mapping> expected;
    for (const auto& r : this->walk.records_of(space))
      if (r.is_leaf() || r.va != TestFixture::L::zero_table + gib1) expected.push_back(r);
    const auto a = after.records_of(space);
    EXPECT_EQ(std::vector<space_aware_mapping>(a.begin(), a.end()), expected) << "space " << space;
  }
  EXPECT_EQ(c.stats.links_to_empty_tables, 1u);
  // Sparse: the mapped frames' pieces of the data region, then the tables
  // above the highest address any leaf maps (the unbacked 1 GiB frame).
  EXPECT_GT(c.runs().size(), 1u);
  EXPECT_EQ(c.tables.base(), unbacked_1g_pa + gib1);
  EXPECT_EQ(c.stats.data_bytes, 2 * mib2 + 12 * kib4);
  EXPECT_EQ(c.stats.leaves_kept_unbacked, 2u);
  EXPECT_EQ(out.image.find(data_base + 12 * kib4, 1), nullptr);  // never mapped: dropped
}

TYPED_TEST(compactor_test, cow_writable_turns_writable_leaves_into_cow_and_says_so) {
  compaction_policy policy;
  policy.cow_writable = true;
  compacted_snapshot c = compact_snapshot(this->input, this->walk, policy);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  this->expect_verified(this->input, out);
  u64 writable_leaf_entries = 0;
  for (const auto& r : this->walk.records)
    if (r.is_leaf() && (r.flags & TypeParam::bit_writable) && r.pa != apic_pa && r.pa != unbacked_1g_pa)
      ++writable_leaf_entries;
  EXPECT_EQ(c.stats.leaves_made_cow, writable_leaf_entries);
  for (const auto& r : reference_walk(out).records)
    if (r.is_leaf()) {
      EXPECT_EQ(r.flags & TypeParam::bit_writable, 0u);
      EXPECT_FALSE(r.perms & perm_writable);
    }
  EXPECT_EQ(c.spec.meta["compaction"]["leaves_made_cow"], writable_leaf_entries);
  // Without the recorded policy the same output is a difference.
  loaded_snapshot unrecorded = load_written(c, write_to_memory(c));
  unrecorded.spec.meta.erase("compaction");
  EXPECT_FALSE(verify_snapshot(this->input, unrecorded).ok());
}

TYPED_TEST(compactor_test, output_is_deterministic) {
  const compacted_snapshot a = compact_snapshot(this->input, this->walk, {});
  const compacted_snapshot b = compact_snapshot(this->input, reference_walk(this->input), {});
  EXPECT_EQ(write_to_memory(a).bytes, write_to_memory(b).bytes);
  EXPECT_EQ(format_manifest_line(a.spec), format_manifest_line(b.spec));
}

TYPED_TEST(compactor_test, compacting_a_compacted_snapshot_changes_nothing_more) {
  const loaded_snapshot once = compacted_copy(this->input, this->walk, {});
  const compacted_snapshot twice = compact_snapshot(once, reference_walk(once), {});
  const loaded_snapshot out = load_written(twice, write_to_memory(twice));
  this->expect_verified(once, out);
  EXPECT_EQ(write_to_memory(twice).bytes.size(), write_to_memory(compact_snapshot(this->input, this->walk, {})).bytes.size());
}

TYPED_TEST(compactor_test, a_walk_that_does_not_match_the_image_is_refused) {
  snapshot_walk wrong = this->walk;
  wrong.records.erase(wrong.records.begin() + static_cast<std::ptrdiff_t>(wrong.offsets[1]) - 1);
  for (std::size_t i = 1; i < wrong.offsets.size(); ++i) --wrong.offsets[i];
  EXPECT_THROW((void)compact_snapshot(this->input, wrong, {}), walk_mismatch);
}

// Placement around a frame that must stay where it is: 2 MiB frames cannot
// start at 0, so they go up one alignment step and 4 KiB frames fill the hole.
TEST(compactor_placement, small_frames_fill_the_gaps_around_kept_frames) {
  using F = x86_64_4level;
  page_table_buffer tables(0x100'0000);
  const u64 root = tables.alloc_table();
  tables.update_root(root);
  ASSERT_EQ(map<F>(tables, {0x1000, 0x1000, 12, 0x3, {}}), map_status::ok);  // unbacked, kept
  ASSERT_EQ(map<F>(tables, {0x40'0000, 0x40'0000, 21, 0x3, {}}), map_status::ok);
  ASSERT_EQ(map<F>(tables, {0x60'0000, 0x60'0000, 21, 0x3, {}}), map_status::ok);
  for (u64 i = 0; i < 3; ++i)
    ASSERT_EQ(map<F>(tables, {0x80'0000 + i * kib4, 0x20'0000 + i * kib4, 12, 0x3, {}}), map_status::ok);
  loaded_snapshot input;
  input.spec.id = "gaps";
  input.spec.roots = {root};
  std::vector<std::byte> data(0x60'0000);
  for (std::size_t i = 0; i < data.size(); i += 4096) data[i] = static_cast<std::byte>(i >> 12);
  input.image.add_owned_region(0x20'0000, std::move(data));
  std::vector<std::byte> table_bytes(tables.words().size() * 8);
  std::memcpy(table_bytes.data(), tables.words().data(), table_bytes.size());
  input.image.add_owned_region(tables.base(), std::move(table_bytes));

  compaction_policy policy;
  policy.keep_unbacked = true;
  const compacted_snapshot c = compact_snapshot(input, reference_walk(input), policy);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  const verification v = verify_snapshot(input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
  std::vector<u64> pas;
  for (const auto& r : reference_walk(out).records) pas.push_back(r.pa);
  EXPECT_EQ(pas, (std::vector<u64>{0x1000, mib2, 2 * mib2, 0x0, 0x2000, 0x3000}));
  EXPECT_EQ(c.stats.padding_bytes, mib2 - 4 * kib4);
  EXPECT_EQ(c.tables.base(), 3 * mib2);
  EXPECT_EQ(out.image.find(0x1000, 1), nullptr);
}

// A 2 MiB frame the image backs only in part stays at its address under
// --keep-unbacked, with the bytes the image has; a 4 KiB frame inside it
// that the image backs whole stays there too (one copy per frame, SPEC §4),
// not copied into the data region beside it. Without --keep-unbacked the
// large frame is dropped and the small one copied.
TEST(compactor_placement, a_backed_frame_inside_a_partly_backed_kept_frame_stays_in_it) {
  using F = x86_64_4level;
  page_table_buffer tables(0x100'0000);
  const u64 root = tables.alloc_table();
  tables.update_root(root);
  ASSERT_EQ(map<F>(tables, {0x4000'0000, 0x0, 21, 0x3, {}}), map_status::ok);        // partly backed
  ASSERT_EQ(map<F>(tables, {0x4020'0000, 0x1000, 12, 0x3, {}}), map_status::ok);     // inside it, backed
  ASSERT_EQ(map<F>(tables, {0x4020'1000, 0x40'0000, 12, 0x3, {}}), map_status::ok);  // elsewhere, backed
  loaded_snapshot input;
  input.spec.id = "partly";
  input.spec.roots = {root};
  std::vector<std::byte> low(0x3000), high(kib4);
  for (std::size_t i = 0; i < low.size(); ++i) low[i] = static_cast<std::byte>(i * 7 + 1);
  high[5] = std::byte{0x55};
  input.image.add_owned_region(0x1000, std::move(low));  // 0x1000..0x4000 of the 2 MiB frame at 0
  input.image.add_owned_region(0x40'0000, std::move(high));
  std::vector<std::byte> table_bytes(tables.words().size() * 8);
  std::memcpy(table_bytes.data(), tables.words().data(), table_bytes.size());
  input.image.add_owned_region(tables.base(), std::move(table_bytes));
  const snapshot_walk walk = reference_walk(input);

  for (const bool keep_unbacked : {true, false}) {
    SCOPED_TRACE(keep_unbacked ? "--keep-unbacked" : "default");
    compaction_policy policy;
    policy.keep_unbacked = keep_unbacked;
    const compacted_snapshot c = compact_snapshot(input, walk, policy);
    const loaded_snapshot out = load_written(c, write_to_memory(c));
    const verification v = verify_snapshot(input, out);
    EXPECT_TRUE(v.ok()) << format_verification(v);
    std::vector<u64> pas;
    for (const auto& r : reference_walk(out).records) pas.push_back(r.pa);
    if (keep_unbacked) {
      EXPECT_EQ(pas, (std::vector<u64>{0x0, 0x1000, mib2}));  // the first free 4 KiB after the kept frame
      EXPECT_EQ(c.stats.frames_in_place, 2u);
      EXPECT_EQ(c.stats.data_bytes, 0x3000 + kib4);
    } else {
      EXPECT_EQ(pas, (std::vector<u64>{0x0, 0x1000}));  // the 2 MiB leaf dropped, the pages packed from 0
      EXPECT_EQ(c.stats.frames_copied, 2u);
    }
  }
}

// A backed 1 GiB frame keeps its size and alignment. The frame comes from a
// sparse file and is checked in the plan (where its copy comes from), so the
// test never touches a GiB of memory.
TEST(compactor_placement, a_backed_1gib_frame_keeps_size_and_alignment) {
  using F = x86_64_4level;
  const auto path = std::filesystem::temp_directory_path() / fmt::format("ptwalk-1g-{}.img", ::getpid());
  {
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(gib1)), 0);
    ::close(fd);
  }
  page_table_buffer tables(0x100'0000);
  const u64 root = tables.alloc_table();
  tables.update_root(root);
  ASSERT_EQ(map<F>(tables, {0x4000'0000, 0x4000'0000, 30, 0x3, {}}), map_status::ok);
  ASSERT_EQ(map<F>(tables, {0x8000'0000, 0x10'0000, 12, 0x3, {}}), map_status::ok);
  ASSERT_EQ(map<F>(tables, {0x8020'0000, 0x4020'0000, 21, 0x3, {}}), map_status::ok);  // inside the 1 GiB frame
  loaded_snapshot input;
  input.spec.id = "one-gib";
  input.spec.roots = {root};
  input.image.add_file_region(std::make_shared<mapped_file>(path), 0, gib1, 0x4000'0000);
  input.image.add_owned_region(0x10'0000, std::vector<std::byte>(kib4, std::byte{7}));
  std::vector<std::byte> table_bytes(tables.words().size() * 8);
  std::memcpy(table_bytes.data(), tables.words().data(), table_bytes.size());
  input.image.add_owned_region(tables.base(), std::move(table_bytes));
  std::filesystem::remove(path);  // the mapping keeps the bytes

  const compacted_snapshot c = compact_snapshot(input, reference_walk(input), {});
  auto lookup = [&](u64 va) {
    page_table_buffer view = c.tables;
    view.update_root(root_table_address<F>(c.spec.roots[0]));
    return virt_to_phys<F>(view, va);
  };
  EXPECT_EQ(lookup(0x4000'0000)->pa, 0u);
  EXPECT_EQ(lookup(0x4000'0000)->size, gib1);
  EXPECT_EQ(lookup(0x8000'0000)->pa, gib1);
  EXPECT_EQ(lookup(0x8020'0000)->pa, mib2);  // shares the 1 GiB copy
  EXPECT_EQ(c.stats.frames_nested, 1u);
  ASSERT_EQ(c.data.size(), 2u);
  EXPECT_EQ(c.data[0].gpa, 0u);
  EXPECT_EQ(c.data[0].size, gib1);
  EXPECT_EQ(c.data[0].bytes, input.image.bytes_at(0x4000'0000, gib1));
  EXPECT_EQ(c.tables.base(), gib1 + kib4);
  EXPECT_EQ(c.stats.padding_bytes, 0u);
  EXPECT_EQ(c.runs().size(), 1u);
}

// Issue 9, case 6: an unbacked 1 GiB leaf at 0xfffffc0000000, kept in place
// by --keep-pa, ends at 2^52; the tables used to go above it, where no entry
// can point. They go into a free gap now (here above the image's region,
// below the kept frame), and the result verifies.
TEST(compactor_placement, keep_pa_tables_go_into_a_gap_when_nothing_fits_above) {
  using F = x86_64_4level;
  constexpr u64 top_frame = 0xf'ffff'c000'0000;  // its last byte is 2^52 - 1
  page_table_buffer tables(0x10'0000);
  const u64 root = tables.alloc_table();
  tables.update_root(root);
  ASSERT_EQ(map<F>(tables, {0x4000'0000, top_frame, 30, 0x3, {}}), map_status::ok);
  for (u64 i = 0; i < 4; ++i)
    ASSERT_EQ(map<F>(tables, {0x1000 * (i + 1), 0x1000 * (i + 1), 12, 0x3, {}}), map_status::ok);
  loaded_snapshot input;
  input.spec.id = "top";
  input.spec.roots = {root};
  std::vector<std::byte> data(0x10'0000);
  for (std::size_t i = 0; i < data.size(); i += 4096) data[i + 1] = static_cast<std::byte>(0x40 + (i >> 12));
  input.image.add_owned_region(0, std::move(data));
  std::vector<std::byte> table_bytes(tables.words().size() * 8);
  std::memcpy(table_bytes.data(), tables.words().data(), table_bytes.size());
  input.image.add_owned_region(tables.base(), std::move(table_bytes));

  compaction_policy policy;
  policy.keep_pa = true;
  const compacted_snapshot c = compact_snapshot(input, reference_walk(input), policy);
  const u64 image_end = input.image.regions().back().end();
  EXPECT_EQ(c.tables.base(), image_end);  // the lowest gap no region or kept frame covers
  EXPECT_LE(c.tables.base() + c.tables.table_count() * kib4, top_frame);
  const loaded_snapshot out = load_written(c, write_to_memory(c));
  const verification v = verify_snapshot(input, out);
  EXPECT_TRUE(v.ok()) << format_verification(v);
}

// The compaction stage alone on generated fleets (in memory): every
// snapshot verifies, and 1 or 4 threads give the same bytes.
TEST(compact_all, generated_fleets_verify_and_any_thread_count_gives_the_same_bytes) {
  for (const char* shape : {"small", "nanvix,snapshots=2,spaces=6,pages=16,kernel=64",
                            "hyperlight,snapshots=3,pages=16",
                            "everything,snapshots=3,spaces=4,pages=16,kernel=64,large=0"}) {
    SCOPED_TRACE(shape);
    const generated_fleet fleet = generate_fleet(parse_fleet_shape(shape));
    const std::vector<snapshot_walk> walks = walk_snapshots(fleet.snapshots, walk_backend::reference);
    const auto serial = compact_all(fleet.snapshots, walks, {}, 1);
    const auto parallel = compact_all(fleet.snapshots, walks, {}, 4);
    ASSERT_EQ(serial.size(), fleet.snapshots.size());
    for (std::size_t i = 0; i < serial.size(); ++i) {
      const written_image a = write_to_memory(serial[i]);
      EXPECT_EQ(a.bytes, write_to_memory(parallel[i]).bytes);
      EXPECT_EQ(format_manifest_line(serial[i].spec), format_manifest_line(parallel[i].spec));
      const verification v = verify_snapshot(fleet.snapshots[i], load_written(serial[i], a));
      EXPECT_TRUE(v.ok()) << format_verification(v);
      // No table is added: nothing shared became a copy.
      for (unsigned d = 0; d < max_levels; ++d) EXPECT_LE(v.counts.tables_after[d], v.counts.tables_before[d]);
      // Every AnotherSpace record below the root became a link (a shared root is reused, not linked).
      u64 aliases_below_root = 0;
      for (unsigned d = 1; d < max_levels; ++d) aliases_below_root += walks[i].stats.aliases[d];
      EXPECT_EQ(serial[i].stats.links, aliases_below_root);
    }
  }
}

}  // namespace
}  // namespace ptwalk
