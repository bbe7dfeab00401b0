// kernels/page_hash.hpp — SHA-256 of a batch of 4 KiB pages as a Thrust algorithm, for every device system.
//
// Like the root scan (root_scan.hpp), one source (detail/page_hash_impl.hpp)
// is built for CUDA by nvcc (cuda/cuda_page_hash.cu, the archive's `cuda`
// hash backend) and for Thrust's OMP system by g++ (page_hash_cpu.cpp,
// `thrust-cpu`), which CI compares with OpenSSL. The pages, anywhere in host
// memory, stream through the device in chunks: gathered into staging on host
// threads while the previous chunk is copied and hashed, one item per page
// (hash_page, page_hash_steps.hpp); only the 36-byte results come back.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "kernels/page_hash_steps.hpp"

namespace ptwalk {

struct page_hash_options {
  // Pages per chunk: 64 MiB, so a chunk's copy dwarfs its launch and sync.
  std::size_t chunk_pages = 16384;
  unsigned threads = 0;  // host threads gathering; 0 = every core
};

// The CPU build (Thrust OMP system) of the GPU page hash: one result per page, in order.
[[nodiscard]] std::vector<page_sha256> hash_pages_thrust_cpu(std::span<const std::byte* const> pages,
                                                             const page_hash_options& options);

}  // namespace ptwalk
