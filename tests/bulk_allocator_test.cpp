// bulk_vector: the vector a walk's records live in grows without
// zero-filling, and must behave as a std::vector for everything that is
// written into it.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "ptwalk/bulk_allocator.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk {
namespace {

constexpr std::size_t mib2 = std::size_t{2} << 20;

TEST(bulk_allocator, resized_blocks_hold_what_is_written) {
  for (const std::size_t bytes : {std::size_t{64}, mib2, mib2 + 8, 5 * mib2 + 4096 + 24}) {
    bulk_vector<u64> v;
    v.resize(bytes / 8);  // not zero-filled: written in full below
    std::iota(v.begin(), v.end(), u64{7});
    for (std::size_t i = 0; i < v.size(); i += 4099) ASSERT_EQ(v[i], 7 + i);
    EXPECT_EQ(v.back(), 7 + v.size() - 1);
  }
}

TEST(bulk_allocator, grows_and_shrinks_keeping_every_element) {
  bulk_vector<u64> v;
  const std::size_t count = 3 * mib2 / 8 + 5;
  for (std::size_t i = 0; i < count; ++i) v.push_back(i * 3);  // reallocates many times
  ASSERT_EQ(v.size(), count);
  for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], i * 3);
  bulk_vector<u64> copy = v;
  EXPECT_EQ(copy, v);
  v.resize(10);
  v.shrink_to_fit();
  EXPECT_EQ(v, bulk_vector<u64>(copy.begin(), copy.begin() + 10));
}

TEST(bulk_allocator, values_given_are_constructed) {
  const bulk_vector<u64> v(mib2 / 8 + 1, u64{42});
  EXPECT_EQ(std::count(v.begin(), v.end(), u64{42}), static_cast<std::ptrdiff_t>(v.size()));
  const bulk_vector<u64> w{1, 2, 3};
  EXPECT_EQ(w[2], 3u);
}

}  // namespace
}  // namespace ptwalk
