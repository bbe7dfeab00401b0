// kernels/detail/page_hash_impl.hpp — SHA-256 of a batch of pages over a Thrust device system.
//
// Included by exactly one translation unit per device system (CUDA by nvcc,
// OMP by g++); device_system.hpp says what a `System` supplies. The pages
// stream through in chunks: chunk k+1 is gathered on a host thread into one
// staging buffer (pinned on CUDA) while chunk k is copied from the other and
// hashed, one item per page. The same double staging as the root scan
// (root_scan_impl.hpp, which says why staging and not zero-copy); the pages
// here are scattered (whole guest pages of an image file), so the gather
// copies page by page.
#pragma once

#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/detail/device_system.hpp"
#include "kernels/page_hash.hpp"

namespace ptwalk::kernels::detail {

template <class System>
class page_hasher {
 public:
  page_hasher(System& system, std::span<const std::byte* const> pages, const page_hash_options& options)
      : sys_(system),
        pages_(pages),
        chunk_pages_(std::max<std::size_t>(options.chunk_pages, 1)),
        threads_(options.threads != 0 ? options.threads : static_cast<unsigned>(omp_get_max_threads())) {}

  std::vector<page_sha256> run() {
    std::vector<page_sha256> out(pages_.size());
    if (pages_.empty()) return out;
    const std::size_t chunks = (pages_.size() + chunk_pages_ - 1) / chunk_pages_;
    const std::size_t max_pages = std::min(chunk_pages_, pages_.size());
    const u64 words = max_pages * hashed_page_words;
    d_pages_.resize(words);
    d_digests_.resize(max_pages);
    // Both staging buffers now, on this thread, before the gathers use them.
    sys_.staging(0, words);
    if (chunks > 1) sys_.staging(1, words);

    // Gather chunk k+1 while chunk k is uploaded and hashed. A gather
    // refills its staging buffer only after that buffer's last upload is
    // done (staging() waits for it).
    std::future<void> pending;
    gather(0, 0, words);
    for (std::size_t k = 0; k < chunks; ++k) {
      if (k != 0) pending.get();
      if (k + 1 < chunks)
        pending = std::async(std::launch::async, [this, k, words] { gather(k + 1, unsigned((k + 1) % 2), words); });
      try {
        hash_chunk(k, unsigned(k % 2), out);
      } catch (const std::exception& e) {
        if (pending.valid()) pending.wait();
        throw std::runtime_error(std::string(System::name) + " page hash: chunk " + std::to_string(k) + " of " +
                                 std::to_string(chunks) + ": " + e.what());
      }
    }
    return out;
  }

 private:
  [[nodiscard]] std::size_t first(std::size_t k) const { return k * chunk_pages_; }
  [[nodiscard]] std::size_t count(std::size_t k) const {
    return std::min(chunk_pages_, pages_.size() - first(k));
  }

  void gather(std::size_t k, unsigned buffer, u64 words) {
    auto* target = reinterpret_cast<std::byte*>(sys_.staging(buffer, words));
    const auto n = static_cast<std::int64_t>(count(k));
    const std::byte* const* source = pages_.data() + first(k);
    // A small chunk stays on one thread: a team's start would cost more than the copy.
    const int team = static_cast<int>(std::min<std::int64_t>(threads_, std::max<std::int64_t>(n / 256, 1)));
#pragma omp parallel for num_threads(team) schedule(static)
    for (std::int64_t i = 0; i < n; ++i) std::memcpy(target + i * hashed_page_bytes, source[i], hashed_page_bytes);
  }

  void hash_chunk(std::size_t k, unsigned buffer, std::vector<page_sha256>& out) {
    const std::size_t n = count(k);
    size_step(sys_, n * hashed_page_words);  // every word of every page is read
    sys_.upload_staging(buffer, raw(d_pages_), n * hashed_page_words);
    thrust::transform(sys_.policy(), thrust::counting_iterator<u64>(0), thrust::counting_iterator<u64>(n),
                      d_digests_.begin(), hash_chunk_page{raw(d_pages_)});
    sys_.download(raw(d_digests_), out.data() + first(k), n);
  }

  template <class T>
  using vector = typename System::template vector<T>;

  System& sys_;
  std::span<const std::byte* const> pages_;
  std::size_t chunk_pages_;
  unsigned threads_;
  vector<u64> d_pages_;
  vector<page_sha256> d_digests_;
};

// Entry point for one device system.
template <class System>
std::vector<page_sha256> hash_pages(System& system, std::span<const std::byte* const> pages,
                                    const page_hash_options& options) {
  return page_hasher<System>(system, pages, options).run();
}

}  // namespace ptwalk::kernels::detail
