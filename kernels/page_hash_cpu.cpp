// kernels/page_hash_cpu.cpp — the GPU page hash built for Thrust's OMP device system (`thrust-cpu`).
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: the same chunking, staging
// and per-page SHA-256 as the CUDA hash, with "device" memory in host RAM.
// Tests compare its digests with OpenSSL's, which is how the GPU hash is
// checked without a GPU.
#include "kernels/detail/omp_system.hpp"
#include "kernels/detail/page_hash_impl.hpp"

namespace ptwalk {

std::vector<page_sha256> hash_pages_thrust_cpu(std::span<const std::byte* const> pages,
                                               const page_hash_options& options) {
  kernels::detail::omp_system system;
  return kernels::detail::hash_pages(system, pages, options);
}

}  // namespace ptwalk
