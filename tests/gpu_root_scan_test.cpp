// Root discovery's page scan on a real GPU: the cuda backend against the
// OpenMP scan on random guest images (known roots, kept kernel-only tables,
// the census; 4 and 5 levels; chunks from one page to the default), with its
// profile checked, and `auto` choosing it. Every test skips, saying why,
// when no CUDA device is visible; they are labelled `gpu` (ctest -L gpu).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "discovery/root_discovery.hpp"
#include "support/require_gpu.hpp"
#include "support/scan_image.hpp"

namespace ptwalk {
namespace {

root_discovery_options known(const testing::scan_image& generated, paging_format format) {
  root_discovery_options options;
  options.format = format;
  options.known = {{generated.kernel_root, "kernel", "VMCOREINFO"}};
  return options;
}

TEST(gpu_root_scan, matches_the_cpu_scan_on_random_images) {
  PTWALK_REQUIRE_GPU();
  for (const bool pti : {false, true})
    for (const paging_format format : {paging_format::x86_64, paging_format::x86_64_la57}) {
      SCOPED_TRACE(fmt::format("pti {} format {}", pti, format_name(format)));
      const auto generated = testing::make_scan_image({.pages = 8192, .processes = 400, .pti = pti}, pti ? 3 : 4);
      auto kept = known(generated, format);
      kept.keep_kernel_only = true;
      root_discovery_options census;
      census.format = format;
      for (const auto& options : {known(generated, format), kept, census}) {
        const auto expected =
            discover_roots(generated.image, testing::with_backend(options, scan_backend::cpu), "random");
        ASSERT_FALSE(expected.roots.empty());
        for (const std::size_t chunk : {std::size_t{77}, std::size_t{0}}) {
          SCOPED_TRACE(fmt::format("chunk {} keep {} known {}", chunk, options.keep_kernel_only,
                                   options.known.size()));
          const auto actual =
              discover_roots(generated.image, testing::with_backend(options, scan_backend::cuda, chunk), "random");
          EXPECT_EQ(actual.backend, scan_backend::cuda);
          testing::expect_same_discovery(expected, actual);
        }
      }
    }
}

TEST(gpu_root_scan, uploads_every_whole_page_once_and_copies_back_only_hits) {
  PTWALK_REQUIRE_GPU();
  const auto generated = testing::make_scan_image({.pages = 1024, .processes = 20}, 9);
  const auto options = known(generated, paging_format::x86_64);
  // Chunks of one page and of seven: every chunk boundary, and chunks cut short by region ends.
  testing::expect_same_discovery(
      discover_roots(generated.image, testing::with_backend(options, scan_backend::cpu), "random"),
      discover_roots(generated.image, testing::with_backend(options, scan_backend::cuda, 1), "random"));
  const auto result =
      discover_roots(generated.image, testing::with_backend(options, scan_backend::cuda, 7), "random");
  EXPECT_EQ(result.pages_scanned, 512u + 255u + 252u);
  EXPECT_EQ(result.profile.bytes_uploaded, result.pages_scanned * 4096);
  EXPECT_EQ(result.profile.chunks, (512u + 6) / 7 + (255u + 6) / 7 + (252u + 6) / 7);
  EXPECT_EQ(result.profile.hits, result.roots.size() + result.kernel_only_skipped);
  EXPECT_GT(result.profile.upload_s, 0.0);
  EXPECT_NE(result.device.find("sm_"), std::string::npos) << result.device;
}

TEST(gpu_root_scan, auto_weighs_cuda_against_cpu) {
  PTWALK_REQUIRE_GPU();
  EXPECT_EQ(resolve_scan_backend(scan_backend::automatic), scan_backend::cuda);  // the page hash's choice
  const auto generated = testing::make_scan_image({.pages = 512, .processes = 10}, 5);
  const auto options = known(generated, paging_format::x86_64);
  const auto result = discover_roots(generated.image, options, "random");
  // 512 pages: the device's setup alone outweighs testing them on the host.
  EXPECT_EQ(result.backend, scan_backend::cpu) << result.backend_choice;
  EXPECT_NE(result.backend_choice.find("auto chose cpu"), std::string::npos) << result.backend_choice;
  testing::expect_same_discovery(
      discover_roots(generated.image, testing::with_backend(options, scan_backend::cpu), "random"), result);
}

}  // namespace
}  // namespace ptwalk
