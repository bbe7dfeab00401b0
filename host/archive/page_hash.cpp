// host/archive/page_hash.cpp — SHA-256 page identities on all cores.
#include "archive/page_hash.hpp"

#include <openssl/sha.h>

#include <fmt/format.h>

#include "common/parallel_for.hpp"

namespace ptwalk::archive {

digest sha256(std::span<const std::byte> bytes) {
  digest out;
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), out.data());
  return out;
}

std::string to_hex(const digest& d) {
  std::string out;
  out.reserve(2 * d.size());
  for (const auto byte : d) fmt::format_to(std::back_inserter(out), "{:02x}", byte);
  return out;
}

bool is_zero_page(const std::byte* page) {
  // Word-wise OR of the page: the compiler vectorises it, and most zero pages
  // of a guest are whole, so there is nothing to gain from stopping early.
  u64 any = 0;
  for (u64 i = 0; i < page_size; i += sizeof(u64)) {
    u64 word;
    std::memcpy(&word, page + i, sizeof word);
    any |= word;
  }
  return any == 0;
}

std::vector<page_identity> identify_pages(std::span<const std::byte* const> pages, unsigned jobs) {
  std::vector<page_identity> out(pages.size());
  parallel_for_chunks(pages.size(), 256, jobs, [&](unsigned, std::size_t i) {
    out[i].zero = is_zero_page(pages[i]);
    if (!out[i].zero) out[i].id = sha256({pages[i], page_size});
  });
  return out;
}

}  // namespace ptwalk::archive
