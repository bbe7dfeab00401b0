// cuda/cuda_system.cuh — Thrust's CUDA device system for the algorithms of kernels/ (nvcc only).
//
// What the walk and the root scan need from the GPU (the System contract of
// kernels/detail/device_system.hpp): pinned double staging buffers that the
// host gathers pages into while the other one is copied, one blocking
// stream for copies and kernels, a caching allocator for Thrust's
// temporaries, and upload timing by events. Thrust calls synchronize the
// stream when their results come back, which is also what makes reusing a
// staging buffer safe.
#pragma once

#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system/cuda/vector.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cached_allocator.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/cuda_walk.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk::detail {

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

// Throws, naming `who` ("walk backend cuda"), when no device is visible.
inline void require_device(const char* who) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string(who) + ": no CUDA device visible (" + cuda_device_description() + ")");
  }
}

}  // namespace ptwalk::detail
