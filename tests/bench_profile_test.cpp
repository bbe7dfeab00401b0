// The per-phase figures `ptwalk bench` prints: each phase's median over the
// walks (one walk's phase time moves by half on a busy machine), with the
// bytes the walk counted.
#include <gtest/gtest.h>

#include <vector>

#include "bench/fleet_bench.hpp"

namespace ptwalk {
namespace {

walk_profile profile_of(double owners_s, double leaves_s, u64 host_bytes) {
  walk_profile p;
  p.phase("owners").seconds = owners_s;
  p.phase("owners").host_bytes = host_bytes;
  p.phase("leaves").seconds = leaves_s;
  p.tables = 7;
  return p;
}

TEST(bench_profile, phases_take_their_median_over_the_walks) {
  const std::vector<walk_profile> walks{profile_of(0.030, 0.020, 100), profile_of(0.090, 0.010, 100),
                                        profile_of(0.040, 0.050, 100)};
  const walk_profile m = median_profile(walks);
  ASSERT_EQ(m.phases.size(), 2u);
  EXPECT_DOUBLE_EQ(m.seconds("owners"), 0.040);
  EXPECT_DOUBLE_EQ(m.seconds("leaves"), 0.020);
  EXPECT_EQ(m.phases[0].host_bytes, 100u);
  EXPECT_EQ(m.tables, 7u);
  // An even count takes the mean of the middle two.
  EXPECT_DOUBLE_EQ(median_profile(std::span(walks).first(2)).seconds("owners"), 0.060);
  EXPECT_TRUE(median_profile({}).phases.empty());
}

}  // namespace
}  // namespace ptwalk
