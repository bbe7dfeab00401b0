// The level-synchronous walk (thrust-cpu build) at its limits: more spaces
// in one batch than a packed (space, VA) key could hold, a device too small
// for the whole fleet or for one snapshot, and the byte counters of its
// profile checked against the walk's own output.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "support/backend_compare.hpp"
#include "support/random_forest.hpp"
#include "support/sparse_tables.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

// Space A (root 0x1000): a chain along entry 511 of every level to one 4 KiB
// leaf at the top of the VA space. Space B (root 0x100000) shares A's
// depth-1 table under its entry 0 and has its own chain under entry 300.
loaded_snapshot two_chains(unsigned levels, std::vector<u64> roots) {
  testing::sparse_tables t;
  for (unsigned d = 0; d + 1 < levels; ++d) t.set(0x1000 * (d + 1), 511, (0x1000 * (d + 2)) | 0x7);
  t.set(0x1000 * levels, 511, 0x1234'5000 | 0x7);
  t.set(0x10'0000, 0, 0x2000 | 0x7);
  t.set(0x10'0000, 300, 0x11'0000 | 0x7);
  for (unsigned d = 1; d + 1 < levels; ++d) t.set(0x10'0000 + 0x1'0000 * d, 7, (0x10'0000 + 0x1'0000 * (d + 1)) | 0x7);
  t.set(0x10'0000 + 0x1'0000 * (levels - 1), 5, 0x5678'9000 | 0x7);
  loaded_snapshot s;
  s.spec.id = fmt::format("chains-{}", levels);
  s.spec.format = levels == 5 ? paging_format::x86_64_la57 : paging_format::x86_64;
  s.spec.roots = std::move(roots);
  s.image = t.image();
  return s;
}

// 2^19 + 2 spaces in one snapshot (one batch): under LA57 a key of 64 bits
// with 45 bits of VA page keeps 19 bits of space, so the last spaces'
// records, at the top of the VA space, would land in space 0's place. Both
// formats, against the reference and the cpu backend.
TEST(level_walk_limits, more_spaces_than_a_packed_key_holds) {
  constexpr u64 copies = u64{1} << 19;
  for (const unsigned levels : {4u, 5u}) {
    SCOPED_TRACE(fmt::format("levels {}", levels));
    std::vector<u64> roots(copies, 0x1000);
    roots.push_back(0x10'0000);
    roots.push_back(0x1000 | 0x18);
    std::vector<loaded_snapshot> fleet;
    fleet.push_back(two_chains(levels, std::move(roots)));
    const auto expected = walk_snapshots(fleet, walk_backend::reference);
    const snapshot_walk& w = expected[0];
    ASSERT_EQ(w.offsets.size(), copies + 3);
    // Space 2^19 (B) has an alias to A's depth-1 table and its own leaf.
    EXPECT_EQ(w.offsets[copies + 1] - w.offsets[copies], 2u);
    testing::expect_same_walks(expected, walk_snapshots(fleet, walk_backend::thrust_cpu));
    testing::expect_same_walks(expected, walk_snapshots(fleet, walk_backend::cpu));
  }
}

std::vector<loaded_snapshot> small_forests(unsigned count) {
  testing::forest_shape shape;
  shape.roots = 6;
  shape.entries_per_table = 40;
  std::vector<loaded_snapshot> fleet;
  for (unsigned i = 0; i < count; ++i)
    fleet.push_back(testing::random_forest(shape, 900 + i).snapshot(fmt::format("forest-{}", i)));
  return fleet;
}

// A device that holds a few snapshots at a time: the first batch runs out
// of memory and is split, later batches are sized from the first's peak;
// the output is still the reference's.
TEST(level_walk_limits, small_device_splits_and_sizes_batches) {
  const auto fleet = small_forests(16);
  walk_profile whole;
  (void)walk_snapshots(fleet, walk_backend::thrust_cpu, walk_options{.profile = &whole});
  EXPECT_EQ(whole.batches, 1u);
  // The smallest power of two one snapshot fits in, found by trying.
  u64 one = 4096;
  for (;; one *= 2) {
    try {
      (void)walk_snapshots(std::span(fleet).first(1), walk_backend::thrust_cpu,
                           walk_options{.device_memory_limit = one});
      break;
    } catch (const std::runtime_error&) {
      ASSERT_LT(one, u64{1} << 30);
    }
  }
  walk_profile split;
  const auto actual =
      walk_snapshots(fleet, walk_backend::thrust_cpu, walk_options{.profile = &split, .device_memory_limit = 4 * one});
  testing::expect_same_walks(walk_snapshots(fleet, walk_backend::reference), actual);
  EXPECT_GT(split.batches, 1u);
  EXPECT_LT(split.batches, fleet.size());
}

TEST(level_walk_limits, one_snapshot_too_big_for_the_device_is_named) {
  const auto fleet = small_forests(3);
  try {
    (void)walk_snapshots(fleet, walk_backend::thrust_cpu, walk_options{.device_memory_limit = 2048});
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_TRUE(message.starts_with("thrust-omp: snapshot 0 (")) << message;
    EXPECT_NE(message.find(" spaces) does not fit in device memory on its own (std::bad_alloc); walk it with "
                           "--backend cpu"),
              std::string::npos)
        << message;
  }
}

// The counters follow from the walk's output: every table crosses PCIe once
// and is read from the image and written to staging once on the host; every
// record comes back once.
TEST(level_walk_limits, byte_counters_match_the_output) {
  const auto fleet = small_forests(5);
  walk_profile profile;
  const auto walks = walk_snapshots(fleet, walk_backend::thrust_cpu, walk_options{.profile = &profile, .chunk_tables = 4});
  u64 tables = 0, records = 0;
  for (const auto& w : walks) {
    for (const u64 t : w.stats.tables) tables += t;
    records += w.records.size();
  }
  EXPECT_EQ(profile.tables, tables);
  EXPECT_EQ(profile.records, records);
  const walk_phase& upload = profile.phase("upload");
  EXPECT_TRUE(upload.on_device);
  EXPECT_GE(upload.pcie_bytes, tables * 4096);
  EXPECT_LT(upload.pcie_bytes, tables * 4096 + 64 * tables + 1024);
  EXPECT_GE(profile.phase("gather").host_bytes, 2 * tables * 4096);
  EXPECT_FALSE(profile.phase("gather").on_device);
  EXPECT_GE(profile.phase("download").pcie_bytes, records * sizeof(space_aware_mapping));
  // Every table is read at least by the counting pass (a table with neither
  // leaves nor child tables is read by nothing else).
  EXPECT_GE(profile.phase("kernel").device_bytes, tables * 4096);
  for (const char* device : {"upload", "kernel", "download"}) EXPECT_TRUE(profile.phase(device).on_device);
}

}  // namespace
}  // namespace ptwalk
