// The cuda backend on a real GPU: against the reference on random forests,
// streamed through many small batches and chunks, with its profile checked.
// Every test skips, saying why, when no CUDA device is visible; they are
// labelled `gpu` (ctest -L gpu), which bench/gpu-check.sh runs.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "generate/fleet_generator.hpp"
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

// Resident on the GPU: images uploaded once, walked repeatedly, equal to the
// streaming cuda walk and the reference on forests cut mid-table and on
// generated fleets (hostile, LA57, AArch64); a budget too small is refused.
TEST(gpu_walk, resident_matches_streaming_and_reference) {
  PTWALK_REQUIRE_GPU();
  std::vector<std::vector<loaded_snapshot>> fleets;
  testing::forest_shape shape;
  shape.cut_pages = 0.3;
  fleets.push_back(forest_fleet(shape, 31, 5));
  shape.levels = 5;
  fleets.push_back(forest_fleet(shape, 32, 3));
  for (const char* text : {"hyperlight,self_ref,hostile", "linux,la57=all", "small,arm=mixed,snapshots=6"}) {
    fleet_shape generated = parse_fleet_shape(text);
    generated.snapshots = std::min<u32>(generated.snapshots, 6);
    generated.spaces_per_snapshot = std::min<u32>(generated.spaces_per_snapshot, 40);
    fleets.push_back(std::move(generate_fleet(generated).snapshots));
  }
  for (std::size_t f = 0; f < fleets.size(); ++f) {
    SCOPED_TRACE(fmt::format("fleet {}", f));
    const auto expected = walk_snapshots(fleets[f], walk_backend::reference);
    testing::expect_same_walks(expected, walk_snapshots(fleets[f], walk_backend::cuda));
    const auto resident = make_resident_fleet(fleets[f], walk_backend::cuda);
    for (int run = 0; run < 2; ++run) {
      walk_profile profile;
      testing::expect_same_walks(expected, resident->walk(level_walk_options{.profile = &profile}));
      EXPECT_GT(profile.phase("device gather").seconds, 0.0);
    }
    testing::expect_same_walks(expected,
                               resident->walk(level_walk_options{.max_batch_spaces = 7, .chunk_tables = 5}));
  }
  EXPECT_THROW((void)make_resident_fleet(fleets[0], walk_backend::cuda, 4096), resident_does_not_fit);
}

}  // namespace
}  // namespace ptwalk
