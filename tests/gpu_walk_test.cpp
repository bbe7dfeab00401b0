// The cuda backend on a real GPU: against the reference on random forests,
// streamed through many small batches and chunks, with its profile checked.
// Every test skips, saying why, when no CUDA device is visible; they are
// labelled `gpu` (ctest -L gpu), which bench/gpu-check.sh runs.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "support/backend_compare.hpp"
#include "support/random_forest.hpp"
#include "support/require_gpu.hpp"

namespace ptwalk {
namespace {

std::vector<loaded_snapshot> forest_fleet(const testing::forest_shape& shape, u64 seed, unsigned count) {
  std::vector<loaded_snapshot> fleet;
  for (unsigned i = 0; i < count; ++i)
    fleet.push_back(testing::random_forest(shape, seed * 1000 + i).snapshot(fmt::format("gpu-{}-{}", seed, i)));
  return fleet;
}

TEST(gpu_walk, matches_reference_on_random_forests) {
  PTWALK_REQUIRE_GPU();
  for (const unsigned levels : {4u, 5u})
    for (u64 seed = 0; seed < 8; ++seed) {
      SCOPED_TRACE(fmt::format("levels {} seed {}", levels, seed));
      testing::forest_shape shape;
      shape.levels = levels;
      shape.roots = 4 + seed * 7;
      shape.tables_per_depth = 3 + seed * 5;
      shape.entries_per_table = 16 + seed * 40;
      shape.cut_pages = seed % 2 == 0 ? 0.0 : 0.3;
      const auto fleet = forest_fleet(shape, seed, 1 + seed);
      testing::expect_same_walks(walk_snapshots(fleet, walk_backend::reference),
                                 walk_snapshots(fleet, walk_backend::cuda));
    }
}

TEST(gpu_walk, streams_a_fleet_through_small_batches_and_chunks) {
  PTWALK_REQUIRE_GPU();
  testing::forest_shape shape;
  shape.roots = 40;
  shape.tables_per_depth = 30;
  shape.entries_per_table = 200;
  const auto fleet = forest_fleet(shape, 77, 12);
  walk_profile profile;
  const auto actual = walk_snapshots(
      fleet, walk_backend::cuda,
      walk_options{.profile = &profile, .max_batch_spaces = 50, .chunk_tables = 7});
  const auto expected = walk_snapshots(fleet, walk_backend::reference);
  testing::expect_same_walks(expected, actual);
  u64 tables = 0;
  for (const auto& w : expected)
    for (const u64 t : w.stats.tables) tables += t;
  EXPECT_EQ(profile.tables, tables);
  EXPECT_GE(profile.phase("upload").pcie_bytes, tables * 4096);
  EXPECT_EQ(profile.batches, 12u);  // over 25 spaces each: one snapshot per batch of at most 50
}

TEST(gpu_walk, va_ranges_and_auto_picks_cuda) {
  PTWALK_REQUIRE_GPU();
  EXPECT_EQ(resolve_backend(walk_backend::automatic), walk_backend::cuda);
  testing::forest_shape shape;
  shape.levels = 5;
  const auto fleet = forest_fleet(shape, 5, 3);
  for (const va_range range : {va_range{0, 0}, va_range{0x1000, u64{1} << 50}, va_range{~u64{0} << 48, ~u64{0}}})
    testing::expect_same_walks(walk_snapshots(fleet, walk_backend::reference, range),
                               walk_snapshots(fleet, walk_backend::automatic, range));
}

}  // namespace
}  // namespace ptwalk
