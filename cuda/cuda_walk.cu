// cuda/cuda_walk.cu — the level-synchronous walk on the CUDA device system, and device queries.
//
// Page-table pages reach the device level by level: the host gathers each
// chunk of the frontier's tables from the mapped images into one of two
// pinned staging buffers (the other one is being copied), and only those
// pages cross PCIe. Stream, staging and memory pool persist across calls
// (cuda_system.cuh).
#include <algorithm>

#include "cuda/cuda_system.cuh"
#include "kernels/detail/level_walk_impl.hpp"
#include "kernels/detail/resident_image.hpp"

namespace ptwalk {
namespace {

using detail::cuda_event_pair;
using detail::pinned_words;
using detail::require_device;

// Best of a few timed runs of `copy` moving `bytes`, in bytes/s.
template <class Copy>
double timed_bandwidth(std::size_t bytes, Copy copy) {
  cuda_event_pair timing;
  double best_s = 0;
  copy();  // warm-up: first-touch and clocks
  for (int i = 0; i < 5; ++i) {
    cuda_check(cudaEventRecord(timing.start.get()), "cudaEventRecord(bandwidth)");
    copy();
    cuda_check(cudaEventRecord(timing.stop.get()), "cudaEventRecord(bandwidth)");
    cuda_check(cudaEventSynchronize(timing.stop.get()), "cudaEventSynchronize(bandwidth)");
    if (const double s = timing.seconds(); i == 0 || s < best_s) best_s = s;
  }
  return bytes / best_s;
}

}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

std::string cuda_device_description() {
  int count = 0;
  if (const cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("none (cudaGetDeviceCount: ") + cudaGetErrorString(status) + ")";
  }
  if (count == 0) return "none (no CUDA device)";
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
}

double cuda_copy_bandwidth() {
  require_device("walk backend cuda");
  // Far above L2 (50-60 MiB on H100/H200), so the copy runs from and to HBM.
  int l2_bytes = 0;
  cuda_check(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, 0), "cudaDeviceGetAttribute(L2)");
  const std::size_t bytes = std::max(std::size_t{1} << 30, 16 * static_cast<std::size_t>(l2_bytes));
  thrust::device_vector<char> d_a(bytes), d_b(bytes);
  char* a = thrust::raw_pointer_cast(d_a.data());
  char* b = thrust::raw_pointer_cast(d_b.data());
  // A copy reads and writes every byte: count both directions.
  return 2 * timed_bandwidth(bytes, [&] {
    cuda_check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy(device to device)");
  });
}

double cuda_upload_bandwidth() {
  require_device("walk backend cuda");
  const std::size_t bytes = std::size_t{1} << 30;  // long enough that setup costs vanish
  pinned_words host;
  u64* h = host.reserve(bytes / 8);
  thrust::device_vector<char> d(bytes);
  char* target = thrust::raw_pointer_cast(d.data());
  return timed_bandwidth(bytes, [&] {
    cuda_check(cudaMemcpy(target, h, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(host to device)");
  });
}

std::vector<snapshot_walk> level_walk_cuda(std::span<const walk_input> snapshots,
                                           const level_walk_options& options) {
  require_device("walk backend cuda");
  cuda_check(cudaSetDevice(0), "cudaSetDevice(0)");
  detail::cuda_system system(options.device_memory_limit);
  return kernels::detail::level_walk(system, snapshots, options);
}

std::unique_ptr<resident_fleet> make_resident_fleet_cuda(std::span<const walk_input> snapshots,
                                                         u64 device_memory_limit) {
  require_device("resident walk on cuda");
  cuda_check(cudaSetDevice(0), "cudaSetDevice(0)");
  return std::make_unique<kernels::detail::resident_fleet_on<detail::cuda_system>>(snapshots, device_memory_limit);
}

}  // namespace ptwalk
