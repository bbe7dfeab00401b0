// cuda/cuda_page_hash.hpp — the `cuda` backend of the archive's page hash.
//
// Plain C++ declarations (host/ includes this with g++); the implementation
// is cuda_page_hash.cu, built by nvcc. The algorithm is
// kernels/detail/page_hash_impl.hpp, the source the thrust-cpu build runs in CI.
#pragma once

#include <vector>

#include "kernels/page_hash.hpp"

namespace ptwalk {

// Hashes on device 0. Throws std::runtime_error naming the CUDA call and the
// chunk on any CUDA error, or when no device is visible.
[[nodiscard]] std::vector<page_sha256> hash_pages_cuda(std::span<const std::byte* const> pages,
                                                       const page_hash_options& options);

}  // namespace ptwalk
