// cuda/cuda_root_scan.cu — root discovery's page scan on the CUDA device system.
//
// The image streams through the GPU in 64 MiB chunks of whole pages,
// gathered into pinned double staging (cuda_system.cuh); one thread tests
// one page, CUB's select compacts the hits, and only they come back.
#include "cuda/cuda_root_scan.hpp"
#include "cuda/cuda_system.cuh"
#include "kernels/detail/root_scan_impl.hpp"

namespace ptwalk {

std::vector<root_scan_hit> root_scan_cuda(const root_scan_input& input, const root_scan_options& options) {
  // Starting the device (the context is created here) is setup, not scan.
  const kernels::detail::stopwatch started;
  detail::require_device("root scan backend cuda");
  cuda_check(cudaSetDevice(0), "cudaSetDevice(0)");
  detail::cuda_system system;
  if (options.profile != nullptr) options.profile->setup_s += started.seconds();
  return kernels::detail::scan_pages(system, input, options);
}

}  // namespace ptwalk
