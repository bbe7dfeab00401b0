// Generated AArch64 fleets (every granule, Linux-like and Hyperlight-like):
// the walk reports exactly what the generator counted while building, the
// cpu backend gives the reference's bytes, and every snapshot compacts
// (default, --keep-pa, --cow-writable) to an output that verifies.
#include <gtest/gtest.h>

#include "compact/compactor.hpp"
#include "compact/verifier.hpp"
#include "generate/fleet_generator.hpp"
#include "support/compact_fixtures.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

void check_fleet(const std::string& shape_text) {
  SCOPED_TRACE(shape_text);
  const fleet_shape shape = parse_fleet_shape(shape_text);
  const generated_fleet fleet = generate_fleet(shape);
  ASSERT_EQ(fleet.snapshots.size(), 6u);
  const auto reference = walk_snapshots(fleet.snapshots, walk_backend::reference);
  EXPECT_EQ(walk_snapshots(fleet.snapshots, walk_backend::cpu), reference);
  for (std::size_t i = 0; i < fleet.snapshots.size(); ++i) {
    const loaded_snapshot& s = fleet.snapshots[i];
    SCOPED_TRACE(format_name(s.format()));
    EXPECT_EQ(s.format(), snapshot_format(shape, static_cast<u32>(i)));
    EXPECT_EQ(reference[i].stats, fleet.expected[i].stats);
    EXPECT_EQ(s.upper_roots().empty(), !shape.share_kernel_half);
    for (const compaction_policy policy : {compaction_policy{}, compaction_policy{.keep_pa = true},
                                           compaction_policy{.cow_writable = true}}) {
      const loaded_snapshot out = testing::compacted_copy(s, reference[i], policy);
      const verification v = verify_snapshot(s, out);
      EXPECT_TRUE(v.ok()) << format_verification(v);
      EXPECT_EQ(v.counts.tables_after[0], v.counts.tables_before[0]);  // one TTBR1 table stays one
    }
  }
}

TEST(aarch64_fleet, linux_like_every_granule_with_blocks_and_runs) {
  check_fleet("small,arm=mixed,snapshots=6,spaces=4,pages=64,kernel=64,large");
}

TEST(aarch64_fleet, hyperlight_like_every_granule_with_cow) {
  check_fleet("hyperlight,arm=mixed,snapshots=6,spaces=2,pages=48,kernel=0,share_kernel=0");
}

TEST(aarch64_fleet, shape_text_and_x86_only_features) {
  const fleet_shape shape = parse_fleet_shape("arm=16k-48");
  EXPECT_EQ(shape.arm, arm_mode::k16_48);
  EXPECT_EQ(snapshot_format(shape, 3), paging_format::aarch64_16k_48);
  EXPECT_EQ(parse_fleet_shape(format_fleet_shape(shape)), shape);
  EXPECT_EQ(parse_fleet_shape("arm").arm, arm_mode::k4_48);
  EXPECT_THROW((void)parse_fleet_shape("arm=8k-48"), input_error);
  EXPECT_THROW((void)parse_fleet_shape("arm=mixed,hostile"), input_error);
  EXPECT_THROW((void)parse_fleet_shape("arm=mixed,la57"), input_error);
}

}  // namespace
}  // namespace ptwalk
