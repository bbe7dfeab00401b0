// The resident walk on real guest dumps (tests/real_guest/make-*dumps.py):
// an ELF core's memory, every discovered root, walked from the images
// uploaded once (thrust-cpu, and cuda where a GPU is visible) — equal to
// the reference. Skips, saying where it looked, without the dumps.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "discovery/root_discovery.hpp"
#include "support/real_guest.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

void expect_resident_equals_reference(opened_dump& dump) {
  const std::span<const loaded_snapshot> fleet(&dump.snapshot, 1);
  ASSERT_FALSE(dump.snapshot.roots().empty());
  const auto reference = walk_snapshots(fleet, walk_backend::reference);
  std::vector<walk_backend> backends{walk_backend::thrust_cpu};
  if (gpu_visible()) backends.push_back(walk_backend::cuda);
  for (const walk_backend backend : backends) {
    SCOPED_TRACE(backend_name(backend));
    const auto resident = make_resident_fleet(fleet, backend);
    EXPECT_EQ(resident->walk({}), reference);
    EXPECT_EQ(resident->walk(level_walk_options{.chunk_tables = 5}), reference);
  }
}

class ResidentRealDump : public ::testing::TestWithParam<std::string> {};

TEST_P(ResidentRealDump, X86WalkEqualsReference) {
  const testing::variant_files v{testing::real_guest_dir() / GetParam(), GetParam()};
  if (!std::filesystem::exists(v.elf()))
    GTEST_SKIP() << "no real guest dump at " << v.elf()
                 << ": run tests/real_guest/make-dumps.py (or set PTWALK_REAL_GUEST_DIR)";
  auto dump = open_dump(v.elf(), 0, std::nullopt);
  for (const auto& r : discover_dump_roots(dump, {}, false, 0).roots) dump.snapshot.spec.roots.push_back(r.root);
  expect_resident_equals_reference(dump);
}

INSTANTIATE_TEST_SUITE_P(Guests, ResidentRealDump, ::testing::Values("default", "pti", "la57"),
                         [](const auto& info) { return info.param; });

TEST(ResidentRealArm64Dump, WalkEqualsReference) {
  const testing::variant_files v{testing::real_guest_arm64_dir() / "default", "default"};
  if (!std::filesystem::exists(v.elf()))
    GTEST_SKIP() << "no real arm64 guest dump at " << v.elf()
                 << ": run tests/real_guest/make-arm64-dumps.py (or set PTWALK_REAL_GUEST_ARM64_DIR)";
  auto dump = open_dump(v.elf(), 0, std::nullopt);
  const auto found = discover_dump_roots(dump, {}, false, 0);
  for (const auto& r : found.roots) dump.snapshot.spec.roots.push_back(r.root);
  ASSERT_TRUE(dump.ttbr1.has_value());
  dump.snapshot.spec.upper_roots.assign(found.roots.size(), *dump.ttbr1);
  expect_resident_equals_reference(dump);
}

}  // namespace
}  // namespace ptwalk
