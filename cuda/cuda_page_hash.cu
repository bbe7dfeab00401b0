// cuda/cuda_page_hash.cu — the archive's page hash on the CUDA device system.
//
// Pages stream through the GPU in 64 MiB chunks, gathered into pinned double
// staging (cuda_system.cuh); one thread hashes one page (SHA-256,
// kernels/page_hash_steps.hpp) and only the digests come back.
#include "cuda/cuda_page_hash.hpp"
#include "cuda/cuda_system.cuh"
#include "kernels/detail/page_hash_impl.hpp"

namespace ptwalk {

std::vector<page_sha256> hash_pages_cuda(std::span<const std::byte* const> pages, const page_hash_options& options) {
  detail::require_device("page hash backend cuda");
  cuda_check(cudaSetDevice(0), "cudaSetDevice(0)");
  detail::cuda_system system;
  return kernels::detail::hash_pages(system, pages, options);
}

}  // namespace ptwalk
