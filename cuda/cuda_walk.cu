// cuda/cuda_walk.cu — the CUDA device system for the level-synchronous walk, and device queries.
//
// Page-table pages reach the device level by level: the host gathers each
// chunk of the frontier's tables from the mapped images into one of two
// pinned staging buffers (the other one is being copied), and only those
// pages cross PCIe. Copies and kernels run on one stream; Thrust calls
// synchronize it when their results come back, which is also what makes
// reusing a staging buffer safe.
#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system/cuda/vector.h>

#include <utility>
#include <vector>

#include "cuda/cached_allocator.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/cuda_walk.hpp"
#include "kernels/detail/level_walk_impl.hpp"

namespace ptwalk {
namespace {

class pinned_words {
 public:
  pinned_words() = default;
  pinned_words(const pinned_words&) = delete;
  pinned_words& operator=(const pinned_words&) = delete;
  ~pinned_words() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  u64* reserve(std::size_t words) {
    if (words > words_) {
      if (data_ != nullptr) cuda_check(cudaFreeHost(data_), "cudaFreeHost(staging)");
      data_ = nullptr;
      cuda_check(cudaHostAlloc(reinterpret_cast<void**>(&data_), words * 8, cudaHostAllocDefault),
                 "cudaHostAlloc(staging)");
      words_ = words;
    }
    return data_;
  }

 private:
  u64* data_ = nullptr;
  std::size_t words_ = 0;
};

class cuda_event_pair {
 public:
  cuda_event_pair() {
    cuda_check(cudaEventCreate(&start_), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  cuda_event_pair(cuda_event_pair&& o) noexcept
      : start_(std::exchange(o.start_, nullptr)), stop_(std::exchange(o.stop_, nullptr)) {}
  cuda_event_pair(const cuda_event_pair&) = delete;
  ~cuda_event_pair() {
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

class cuda_system {
 public:
  template <class T>
  using vector = thrust::cuda::vector<T>;
  static constexpr const char* name = "cuda";

  cuda_system() {
    // A blocking stream: thrust::cuda::vector allocates and fills on the
    // legacy default stream, which must stay ordered with our copies.
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  cuda_system(const cuda_system&) = delete;
  cuda_system& operator=(const cuda_system&) = delete;
  ~cuda_system() { cudaStreamDestroy(stream_); }

  [[nodiscard]] auto policy() { return thrust::cuda::par(allocator_).on(stream_); }
  u64* staging(unsigned which, std::size_t words) { return staging_[which].reserve(words); }

  template <class T>
  void upload(const T* source, T* d_target, std::size_t count) {
    cuda_event_pair& timing = uploads_.emplace_back();
    cuda_check(cudaEventRecord(timing.start_, stream_), "cudaEventRecord(upload)");
    cuda_check(cudaMemcpyAsync(d_target, source, count * sizeof(T), cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync(host to device)");
    cuda_check(cudaEventRecord(timing.stop_, stream_), "cudaEventRecord(upload)");
  }
  template <class T>
  void download(const T* d_source, T* target, std::size_t count) {
    cuda_check(cudaMemcpyAsync(target, d_source, count * sizeof(T), cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync(device to host)");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize(download)");
  }
  double take_upload_seconds() {
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize(upload timing)");
    double seconds = 0;
    for (const auto& timing : uploads_) {
      float ms = 0;
      cuda_check(cudaEventElapsedTime(&ms, timing.start_, timing.stop_), "cudaEventElapsedTime");
      seconds += ms / 1e3;
    }
    uploads_.clear();
    return seconds;
  }
  // Drops cached scratch memory, e.g. before retrying a smaller batch.
  void release_cache() { allocator_.release(); }

 private:
  cudaStream_t stream_ = nullptr;
  cached_allocator allocator_;
  pinned_words staging_[2];
  std::vector<cuda_event_pair> uploads_;
};

void require_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error("walk backend cuda: no CUDA device visible (" + cuda_device_description() + ")");
  }
}

// Best of a few timed runs of `copy` moving `bytes`, in bytes/s.
template <class Copy>
double timed_bandwidth(std::size_t bytes, Copy copy) {
  cuda_event_pair timing;
  float best_ms = 0;
  copy();  // warm-up: first-touch and clocks
  for (int i = 0; i < 5; ++i) {
    cuda_check(cudaEventRecord(timing.start_), "cudaEventRecord(bandwidth)");
    copy();
    cuda_check(cudaEventRecord(timing.stop_), "cudaEventRecord(bandwidth)");
    cuda_check(cudaEventSynchronize(timing.stop_), "cudaEventSynchronize(bandwidth)");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, timing.start_, timing.stop_), "cudaEventElapsedTime(bandwidth)");
    if (i == 0 || ms < best_ms) best_ms = ms;
  }
  return bytes / (best_ms / 1e3);
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
  require_device();
  const std::size_t bytes = std::size_t{1} << 30;
  thrust::cuda::vector<char> d_a(bytes), d_b(bytes);
  char* a = thrust::raw_pointer_cast(d_a.data());
  char* b = thrust::raw_pointer_cast(d_b.data());
  // A copy reads and writes every byte: count both directions.
  return 2 * timed_bandwidth(bytes, [&] {
    cuda_check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy(device to device)");
  });
}

double cuda_upload_bandwidth() {
  require_device();
  const std::size_t bytes = std::size_t{256} << 20;
  pinned_words host;
  u64* h = host.reserve(bytes / 8);
  thrust::cuda::vector<char> d(bytes);
  char* target = thrust::raw_pointer_cast(d.data());
  return timed_bandwidth(bytes, [&] {
    cuda_check(cudaMemcpy(target, h, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(host to device)");
  });
}

std::vector<snapshot_walk> level_walk_cuda(std::span<const walk_input> snapshots,
                                           const level_walk_options& options) {
  require_device();
  cuda_check(cudaSetDevice(0), "cudaSetDevice(0)");
  cuda_system system;
  return kernels::detail::level_walk(system, snapshots, options);
}

}  // namespace ptwalk
