// host/archive/page_hash.cpp — SHA-256 page identities on all cores or on the GPU.
#include "archive/page_hash.hpp"

#include <openssl/sha.h>

#include <fmt/format.h>

#include <stdexcept>

#include "common/parallel_for.hpp"
#include "kernels/page_hash.hpp"
#if PTWALK_WITH_CUDA
#include "cuda/cuda_page_hash.hpp"
#endif

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

namespace {

std::vector<page_identity> identify_on_cores(std::span<const std::byte* const> pages, unsigned jobs) {
  std::vector<page_identity> out(pages.size());
  parallel_for_chunks(pages.size(), 256, jobs, [&](unsigned, std::size_t i) {
    out[i].zero = is_zero_page(pages[i]);
    if (!out[i].zero) out[i].id = sha256({pages[i], page_size});
  });
  return out;
}

// The device's big-endian digest words as the digest bytes OpenSSL writes.
page_identity to_identity(const page_sha256& hashed) {
  page_identity out;
  out.zero = hashed.zero != 0;
  if (out.zero) return out;
  for (std::size_t w = 0; w < 8; ++w)
    for (std::size_t b = 0; b < 4; ++b) out.id[4 * w + b] = static_cast<std::uint8_t>(hashed.h[w] >> (24 - 8 * b));
  return out;
}

std::vector<page_sha256> hash_on_device(std::span<const std::byte* const> pages, unsigned jobs,
                                        scan_backend backend) {
  const page_hash_options options{.threads = jobs};
  if (backend == scan_backend::thrust_cpu) return hash_pages_thrust_cpu(pages, options);
#if PTWALK_WITH_CUDA
  return hash_pages_cuda(pages, options);
#else
  throw std::runtime_error("page hash backend cuda: this ptwalk was built without CUDA");
#endif
}

}  // namespace

std::string hash_backend_used::describe() const {
  return threads > 0 ? fmt::format("{} ({} thread{})", name, threads, threads == 1 ? "" : "s") : name;
}

hash_backend_used hash_backend_for(unsigned jobs, scan_backend backend) {
  backend = resolve_scan_backend(backend);
  return {std::string(scan_backend_name(backend)), backend == scan_backend::cpu ? resolve_jobs(jobs) : 0};
}

std::vector<page_identity> identify_pages(std::span<const std::byte* const> pages, unsigned jobs,
                                          scan_backend backend) {
  backend = resolve_scan_backend(backend);
  if (backend == scan_backend::cpu) return identify_on_cores(pages, jobs);
  const auto hashed = hash_on_device(pages, jobs, backend);
  std::vector<page_identity> out(hashed.size());
  for (std::size_t i = 0; i < hashed.size(); ++i) out[i] = to_identity(hashed[i]);
  return out;
}

}  // namespace ptwalk::archive
