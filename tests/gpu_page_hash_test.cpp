// The archive's page hash on a real GPU: the cuda backend's identities
// against the cpu backend's (OpenSSL) on random, zero and repeated pages
// across chunk boundaries, and `archive add --backend cuda` writing byte for
// byte the archive `--backend cpu` writes. Every test skips, saying why,
// when no CUDA device is visible; they are labelled `gpu` (ctest -L gpu).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <random>

#include "archive/page_hash.hpp"
#include "support/archive_fleets.hpp"
#include "support/require_gpu.hpp"
#include "support/run_cli.hpp"
#if PTWALK_WITH_CUDA
#include "cuda/cuda_page_hash.hpp"
#endif

namespace ptwalk {
namespace {

TEST(gpu_page_hash, cuda_identities_match_openssl_across_chunks) {
  PTWALK_REQUIRE_GPU();
  std::mt19937_64 rng(7);
  std::vector<std::vector<std::byte>> storage(40000);
  std::vector<const std::byte*> pages;
  for (std::size_t i = 0; i < storage.size(); ++i) {
    storage[i].resize(4096);  // every fifth page stays zero; some repeat an earlier one
    if (i % 11 == 0) storage[i] = storage[i / 3];
    else if (i % 5 != 0)
      for (auto& b : storage[i]) b = static_cast<std::byte>(rng());
    pages.push_back(storage[i].data());
  }
  const auto expected = archive::identify_pages(pages, 0, scan_backend::cpu);
  for (const auto backend : {scan_backend::cuda, scan_backend::automatic}) {
    const auto got = archive::identify_pages(pages, 0, backend);
    ASSERT_EQ(got.size(), expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].zero, expected[i].zero) << "page " << i;
      ASSERT_EQ(archive::to_hex(got[i].id), archive::to_hex(expected[i].id)) << "page " << i;
    }
  }
#if PTWALK_WITH_CUDA
  // Chunks of one page and of an odd size: the digests (of zero pages too) do not depend on the chunking.
  for (const std::size_t chunk : {std::size_t{1}, std::size_t{777}}) {
    const auto hashed = hash_pages_cuda(std::span(pages).first(3000), {.chunk_pages = chunk});
    for (std::size_t i = 0; i < hashed.size(); ++i) {
      ASSERT_EQ(hashed[i].zero != 0, expected[i].zero) << "chunk " << chunk << " page " << i;
      std::string hex;
      for (const u32 word : hashed[i].h) hex += fmt::format("{:08x}", word);
      ASSERT_EQ(hex, archive::to_hex(archive::sha256(storage[i]))) << "chunk " << chunk << " page " << i;
    }
  }
#endif
}

TEST(gpu_page_hash, archive_add_cuda_writes_the_cpu_archive_byte_for_byte) {
  PTWALK_REQUIRE_GPU();
  const testing::temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 3, 2);
  for (const std::string backend : {"cpu", "cuda"}) {
    const auto r = testing::run_ptwalk(dir, {"archive", "add", "--backend", backend, (dir / backend).string(),
                                             manifest.string()});
    ASSERT_EQ(r.status, 0) << backend << ": " << r.err;
  }
  const auto cpu = testing::files_under(dir / "cpu");
  ASSERT_FALSE(cpu.empty());
  EXPECT_TRUE(cpu == testing::files_under(dir / "cuda"));
  testing::expect_round_trip(dir, dir / "cuda", manifest);
}

}  // namespace
}  // namespace ptwalk
