// The archive's page hash written for the device (kernels/page_hash_steps.hpp)
// against OpenSSL's SHA-256, called here directly: random, zero, one-bit,
// patterned and NIST-message pages; the whole batch algorithm built for
// Thrust-OMP (`thrust-cpu`, the CUDA source's CPU build) against the cpu
// backend across chunk boundaries; and `archive add` with the thrust-cpu hash
// writing byte for byte the archive the cpu hash writes.
#include <gtest/gtest.h>

#include <openssl/sha.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include "archive/archive_add.hpp"
#include "archive/page_hash.hpp"
#include "input/manifest.hpp"
#include "kernels/page_hash.hpp"
#include "support/archive_fleets.hpp"
#include "support/run_cli.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

using page_bytes = std::vector<std::byte>;

std::string openssl_hex(const page_bytes& page) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(page.data()), page.size(), digest);
  std::string out;
  for (const unsigned char b : digest) out += fmt::format("{:02x}", b);
  return out;
}

std::string device_code_hex(const page_bytes& page) {
  std::vector<u64> words(hashed_page_words);
  std::memcpy(words.data(), page.data(), hashed_page_bytes);
  const page_sha256 hashed = hash_page(words.data());
  std::string out;
  for (const u32 word : hashed.h) out += fmt::format("{:08x}", word);
  return out;
}

page_bytes random_page(std::mt19937_64& rng) {
  page_bytes page(4096);
  for (auto& b : page) b = static_cast<std::byte>(rng());
  return page;
}

// Pages whose hashes exercise every byte position and the padding: FIPS
// 180-4's example messages "abc" and the 448-bit one at the page's start,
// a single set bit at each end, constant fills, a counting pattern.
std::map<std::string, page_bytes> named_pages() {
  std::map<std::string, page_bytes> out;
  auto with_prefix = [](std::string_view text) {
    page_bytes page(4096);
    std::memcpy(page.data(), text.data(), text.size());
    return page;
  };
  out["zero"] = page_bytes(4096);
  out["abc"] = with_prefix("abc");
  out["nist-448-bit"] = with_prefix("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
  out["first-bit"] = page_bytes(4096), out["first-bit"][0] = std::byte{0x80};
  out["last-bit"] = page_bytes(4096), out["last-bit"][4095] = std::byte{0x01};
  out["all-a"] = page_bytes(4096, std::byte{'a'});
  out["all-ff"] = page_bytes(4096, std::byte{0xff});
  out["counting"] = page_bytes(4096);
  for (std::size_t i = 0; i < 4096; ++i) out["counting"][i] = static_cast<std::byte>(i * 7 + 3);
  return out;
}

TEST(page_hash, device_code_matches_openssl_on_named_pages) {
  for (const auto& [name, page] : named_pages()) EXPECT_EQ(device_code_hex(page), openssl_hex(page)) << name;
  // One value written out, so both cannot be wrong the same way: `head -c 4096 /dev/zero | sha256sum`.
  EXPECT_EQ(device_code_hex(page_bytes(4096)), "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7");
}

TEST(page_hash, device_code_matches_openssl_on_random_pages_and_flags_zero_pages) {
  std::mt19937_64 rng(12);
  for (int i = 0; i < 200; ++i) {
    page_bytes page = random_page(rng);
    if (i % 3 == 0) std::fill(page.begin() + static_cast<long>(rng() % 4096), page.end(), std::byte{0});
    EXPECT_EQ(device_code_hex(page), openssl_hex(page)) << "page " << i;
    std::vector<u64> words(hashed_page_words);
    std::memcpy(words.data(), page.data(), hashed_page_bytes);
    EXPECT_EQ(hash_page(words.data()).zero, archive::is_zero_page(page.data()) ? 1u : 0u) << "page " << i;
  }
  const std::vector<u64> zero(hashed_page_words);
  EXPECT_EQ(hash_page(zero.data()).zero, 1u);
}

// Pages scattered in memory (every third one zero, some repeated), as an image file's are.
struct page_batch {
  std::vector<page_bytes> storage;
  std::vector<const std::byte*> pages;
};
page_batch make_batch(std::size_t count) {
  std::mt19937_64 rng(count);
  page_batch out;
  out.storage.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (i % 3 == 0) out.storage.emplace_back(4096);
    else if (i % 7 == 0) out.storage.push_back(out.storage[i / 2]);
    else out.storage.push_back(random_page(rng));
    out.pages.push_back(out.storage.back().data());
  }
  return out;
}

void expect_same_identities(const std::vector<archive::page_identity>& got,
                            const std::vector<archive::page_identity>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].zero, expected[i].zero) << "page " << i;
    EXPECT_EQ(archive::to_hex(got[i].id), archive::to_hex(expected[i].id)) << "page " << i;
  }
}

TEST(page_hash, thrust_cpu_batch_matches_the_cpu_backend_across_chunks) {
  const page_batch batch = make_batch(1000);
  const auto expected = archive::identify_pages(batch.pages, 0, scan_backend::cpu);
  std::size_t zero = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const bool all_zero = std::all_of(batch.storage[i].begin(), batch.storage[i].end(),
                                      [](std::byte b) { return b == std::byte{0}; });
    ASSERT_EQ(expected[i].zero, all_zero) << "page " << i;
    zero += all_zero;
  }
  ASSERT_GT(zero, 300u);  // the batch really mixes zero and non-zero pages
  ASSERT_LT(zero, 500u);
  expect_same_identities(archive::identify_pages(batch.pages, 0, scan_backend::thrust_cpu), expected);
  // Chunks of one page, of an odd size, one larger than the batch; one and two gathering threads.
  for (const std::size_t chunk : {std::size_t{1}, std::size_t{77}, std::size_t{4096}})
    for (const unsigned threads : {1u, 2u}) {
      SCOPED_TRACE(fmt::format("chunk {} threads {}", chunk, threads));
      const auto hashed = hash_pages_thrust_cpu(batch.pages, {.chunk_pages = chunk, .threads = threads});
      ASSERT_EQ(hashed.size(), batch.pages.size());
      for (std::size_t i = 0; i < hashed.size(); ++i) {
        ASSERT_EQ(hashed[i].zero != 0, expected[i].zero) << "page " << i;
        std::string hex;
        for (const u32 word : hashed[i].h) hex += fmt::format("{:08x}", word);
        ASSERT_EQ(hex, openssl_hex(batch.storage[i])) << "page " << i;
      }
    }
  EXPECT_TRUE(archive::identify_pages({}, 0, scan_backend::thrust_cpu).empty());
}

TEST(page_hash, thrust_cpu_archive_add_writes_the_cpu_archive_byte_for_byte) {
  const testing::temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 3, 2);
  const auto specs = read_manifest(manifest);
  for (const auto backend : {scan_backend::cpu, scan_backend::thrust_cpu}) {
    archive::add_options options;
    options.hash_backend = backend;
    const auto report = archive::add_snapshots(dir / scan_backend_name(backend), specs, manifest.parent_path(), options);
    EXPECT_GT(report.already_stored, 0u);
    EXPECT_GT(report.zero_pages, 0u);
  }
  const auto cpu = testing::files_under(dir / "cpu");
  ASSERT_FALSE(cpu.empty());
  EXPECT_TRUE(cpu == testing::files_under(dir / "thrust-cpu"));
  testing::expect_round_trip(dir, dir / "thrust-cpu", manifest);
}

TEST(page_hash, archive_add_cuda_without_a_gpu_is_a_one_line_error) {
  if (gpu_visible()) GTEST_SKIP() << "a GPU is visible; gpu_page_hash_test covers the cuda backend";
  const testing::temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 1, 0);
  const auto r = testing::run_ptwalk(dir, {"archive", "add", "--backend", "cuda", (dir / "arc").string(),
                                           manifest.string()});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("page hash backend cuda"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const auto ok = testing::run_ptwalk(dir, {"archive", "add", "--backend", "cpu", (dir / "arc").string(),
                                            manifest.string()});
  EXPECT_EQ(ok.status, 0) << ok.err;  // the failed add left nothing in the way
}

}  // namespace
}  // namespace ptwalk
