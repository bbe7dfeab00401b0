// verify_snapshot catches every kind of planted difference between a
// compacted snapshot and its original, and honours the recorded policy.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "compact/compactor.hpp"
#include "ptwalk/walk.hpp"
#include "support/compact_fixtures.hpp"
#include "compact/verifier.hpp"

namespace ptwalk {
namespace {

using namespace ptwalk::testing;
using F = x86_64_4level;
using L = fixture_layout<F>;

class verifier_test : public ::testing::Test {
 protected:
  loaded_snapshot input = fixture_snapshot<F>();
  compacted_snapshot compacted = compact_snapshot(input, reference_walk(input), {});
  written_image written = write_to_memory(compacted);

  // The compacted snapshot after the test's changes to `written`.
  loaded_snapshot after() const { return load_written(compacted, written); }

  // Where guest-physical `gpa` of the compacted image lies in `written`.
  std::byte* at(u64 gpa) {
    const auto& raw = std::get<raw_source>(written.source);
    return written.bytes.data() + (gpa - raw.base);
  }
  // The address of space `space`'s depth-`depth` entry for `va`, in the compacted image.
  u64 entry_address(std::size_t space, u64 va, unsigned depth) const {
    const loaded_snapshot out = after();
    const image_table_view view(out.image);
    u64 table = root_table_address<F>(out.roots()[space]);
    for (unsigned d = 0; d < depth; ++d)
      table = F::table_address(view.read_entry(view.entry_addr(table, F::table_index(F::linear(va), d))));
    return view.entry_addr(table, F::table_index(F::linear(va), depth));
  }
  u64& entry(std::size_t space, u64 va, unsigned depth) {
    return *reinterpret_cast<u64*>(at(entry_address(space, va, depth)));
  }
  u64 frame_of(std::size_t space, u64 va) const {
    const loaded_snapshot out = after();
    return virt_to_phys<F>(image_table_view(out.image, root_table_address<F>(out.roots()[space])), va)->pa;
  }

  // Verifies and returns the report, which must name `expected`.
  std::string expect_difference(const std::string& expected) {
    const verification v = verify_snapshot(input, after());
    const std::string report = format_verification(v);
    EXPECT_FALSE(v.ok());
    EXPECT_NE(report.find(expected), std::string::npos) << report;
    EXPECT_NE(report.find("FAILED"), std::string::npos);
    return report;
  }
};

TEST_F(verifier_test, an_untouched_compaction_verifies) {
  const verification v = verify_snapshot(input, after());
  EXPECT_TRUE(v.ok()) << format_verification(v);
  EXPECT_EQ(v.counts.spaces, 4u);
  EXPECT_EQ(v.counts.leaves_dropped, 2u);
  EXPECT_EQ(v.counts.links_checked, 5u);  // the shared root, 2 kernel links, 2 page-table links
  EXPECT_EQ(v.counts.links_to_empty_tables, 2u);  // to the all-zero PT and the APIC's emptied PT
  EXPECT_EQ(v.counts.os_private_entries, 4u);
  EXPECT_EQ(v.counts.frames_compared, 14u + 1u);
  EXPECT_EQ(v.counts.bytes_before, input.image.backed_bytes());
  EXPECT_EQ(v.counts.bytes_after, written.bytes.size());
  EXPECT_NE(format_verification(v).find("verify: OK"), std::string::npos);
}

TEST_F(verifier_test, a_flipped_byte_in_a_data_frame) {
  at(frame_of(0, L::user + kib4))[100] ^= std::byte{0x40};
  expect_difference(fmt::format("space {:#x} va {:#x}: byte at offset 0x64", input.roots()[0], L::user + kib4 + 100));
}

TEST_F(verifier_test, a_changed_permission_bit_on_a_leaf) {
  entry(0, L::user, F::levels - 1) |= nx_bit;
  expect_difference("permissions wux expected, wu- after");
}

TEST_F(verifier_test, a_changed_bit_above_a_shared_table) {
  // Space 2's link to the kernel half loses its RW bit: the kernel is still
  // shared, but every page under it changed permissions in space 2.
  entry(2, L::upper, 0) &= ~F::bit_writable;
  expect_difference(fmt::format("space {:#x} va {:#x}: depth-0 entry bits 0x3 before, 0x1 after",
                                input.roots()[2], L::upper));
}

TEST_F(verifier_test, a_broken_alias_link) {
  // Space 1's kernel link now points at a private copy of the shared PDPT:
  // the same pages, but the sharing is gone.
  const u64 pdpt = F::table_address(entry(1, L::upper, 0));
  const u64 copy = written.bytes.size() + std::get<raw_source>(written.source).base;
  written.bytes.insert(written.bytes.end(), at(pdpt), at(pdpt) + kib4);
  entry(1, L::upper, 0) = F::make_table_entry(copy, entry(1, L::upper, 0));
  const std::string report = expect_difference("shared table link lost: was the depth-1 table of space");
  EXPECT_NE(report.find("depth 1 has 5 tables after, 4 before: sharing lost"), std::string::npos) << report;
}

// A link may go only with a table that maps nothing after: dropping space
// 1's link to space 0's user PT, which still maps pages, is a difference.
TEST_F(verifier_test, a_dropped_link_to_a_table_that_still_maps_pages) {
  entry(1, L::user_shared_pt, F::levels - 2) = 0;
  expect_difference(fmt::format("va {:#x}: shared table link lost: was the depth-{} table of space",
                                L::user_shared_pt, F::levels - 1));
}

TEST_F(verifier_test, a_missing_page) {
  entry(0, L::user + kib4, F::levels - 1) = 0;
  expect_difference(fmt::format("va {:#x}: page missing after", L::user + kib4));
}

TEST_F(verifier_test, an_extra_page) {
  entry(0, L::user + 7 * kib4, F::levels - 1) = F::make_leaf_entry(0, F::levels - 1, 0x3);
  expect_difference(fmt::format("va {:#x}: page mapped after, not before", L::user + 7 * kib4));
}

TEST_F(verifier_test, a_lost_swap_entry) {
  entry(0, L::user + 5 * kib4, F::levels - 1) = 0;
  expect_difference(fmt::format("not-present depth-3 entry {:#x} (OS-private bits) lost", swap_entry));
}

TEST_F(verifier_test, a_page_that_moved_although_the_policy_keeps_addresses) {
  compacted.spec.meta["compaction"]["keep_pa"] = true;
  expect_difference("frame moved from");
}

TEST_F(verifier_test, an_unbacked_page_dropped_although_the_policy_keeps_them) {
  compacted.spec.meta["compaction"]["keep_unbacked"] = true;
  expect_difference(fmt::format("va {:#x}: page missing after", L::apic));
}

TEST_F(verifier_test, a_malformed_policy_is_bad_input) {
  compacted.spec.meta["compaction"]["cow_writable"] = "yes";
  EXPECT_THROW((void)verify_snapshot(input, after()), input_error);
}

TEST_F(verifier_test, the_first_few_differences_are_kept_and_all_are_counted) {
  for (u64 i = 0; i < 5; ++i) at(frame_of(0, L::user + i * kib4))[0] ^= std::byte{1};
  const verification v = verify_snapshot(input, after(), 3);
  EXPECT_EQ(v.counts.difference_count, 5u);
  EXPECT_EQ(v.differences.size(), 3u);
}

TEST_F(verifier_test, fleets_are_matched_by_id) {
  std::vector<loaded_snapshot> before, compacted_fleet;
  before.push_back(fixture_snapshot<F>());
  before.push_back(fixture_snapshot<x86_64_5level>());
  compacted_fleet.push_back(compacted_copy(before[1], reference_walk(before[1]), {}));
  compacted_fleet.push_back(compacted_copy(before[0], reference_walk(before[0]), {}));
  const verification ok = verify_fleet(before, compacted_fleet, 2);
  EXPECT_TRUE(ok.ok()) << format_verification(ok);
  EXPECT_EQ(ok.counts.snapshots, 2u);
  EXPECT_EQ(ok.levels, 5u);

  compacted_fleet.pop_back();
  const verification missing = verify_fleet(before, compacted_fleet, 2);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(format_verification(missing).find("fixture space 0x0 va 0x0: no compacted snapshot"), std::string::npos)
      << format_verification(missing);
}

}  // namespace
}  // namespace ptwalk
