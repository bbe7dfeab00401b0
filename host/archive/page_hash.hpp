// host/archive/page_hash.hpp — content identity of 4 KiB pages for the fleet archive.
//
// A page's identity is its SHA-256 (OpenSSL libcrypto). The hash is
// cryptographic, so two pages with the same digest are shared without
// comparing their bytes; a 64-bit or non-cryptographic hash would need that
// comparison (docs/ARCHIVE.md). Zero pages are recognised first and never
// hashed: the archive does not store them at all. A batch is hashed on every
// core (OpenSSL) or on the GPU (kernels/page_hash.hpp, the same SHA-256
// written for the device): the same identities either way.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "discovery/root_discovery.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk::archive {

inline constexpr u64 page_size = 4096;

using digest = std::array<std::uint8_t, 32>;

struct digest_hasher {
  std::size_t operator()(const digest& d) const noexcept {
    std::size_t value;
    std::memcpy(&value, d.data(), sizeof value);  // SHA-256 bits are uniform already
    return value;
  }
};

[[nodiscard]] digest sha256(std::span<const std::byte> bytes);
[[nodiscard]] std::string to_hex(const digest& d);
[[nodiscard]] bool is_zero_page(const std::byte* page);

// What one page of an input is: zero (not stored), or non-zero with its digest.
struct page_identity {
  bool zero = false;
  digest id{};
};

// The identity of every page. The backends are root discovery's page-scan
// choices: cpu (OpenSSL on `jobs` threads, 0: every core), cuda (the GPU;
// `jobs` threads gather pages for it), auto (cuda when a GPU is visible) and
// thrust-cpu (the GPU algorithm on the CPU, for tests). Throws
// std::runtime_error when cuda is asked for and cannot run.
// Who identify_pages(…, jobs, backend) has hash the pages, for reports:
// "cpu" with its threads, or "cuda" / "thrust-cpu" (threads: 0).
struct hash_backend_used {
  std::string name;
  unsigned threads = 0;
  [[nodiscard]] std::string describe() const;  // "cpu (2 threads)", "cuda"
};
[[nodiscard]] hash_backend_used hash_backend_for(unsigned jobs, scan_backend backend);

[[nodiscard]] std::vector<page_identity> identify_pages(std::span<const std::byte* const> pages, unsigned jobs,
                                                        scan_backend backend);

}  // namespace ptwalk::archive
