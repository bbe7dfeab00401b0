// kernels/detail/omp_system.hpp — Thrust's OMP device system, for the CPU builds of kernels/ algorithms.
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: "device" memory is host
// RAM, a transfer is a memcpy (timed as one), so the GPU algorithms run in
// CI without a GPU (device_system.hpp lists what a system supplies).
#pragma once

#include <omp.h>
#include <thrust/host_vector.h>
#include <thrust/system/omp/execution_policy.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/detail/device_system.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk::kernels::detail {

class omp_system {
 public:
  // Host vectors: resizing them is sequential, so only the algorithm calls
  // (given thrust::omp::par) open parallel regions, sized by size_step.
  template <class T>
  using vector = thrust::host_vector<T>;
  static constexpr const char* name = "thrust-omp";

  omp_system() { size_step(0); }
  omp_system(const omp_system&) = delete;
  omp_system& operator=(const omp_system&) = delete;
  // size_step changes this thread's OpenMP thread count; give it back.
  ~omp_system() { omp_set_num_threads(static_cast<int>(max_threads_)); }

  [[nodiscard]] auto policy() const { return thrust::omp::par; }
  u64* staging(unsigned which, std::size_t words) {
    auto& buffer = staging_[which];
    if (buffer.size() < words) buffer.resize(words);
    return buffer.data();
  }
  template <class T>
  void upload(const T* source, T* d_target, std::size_t count) {
    const stopwatch clock;
    std::memcpy(static_cast<void*>(d_target), source, count * sizeof(T));
    upload_s_ += clock.seconds();
  }
  template <class T>
  void download(const T* d_source, T* target, std::size_t count) {
    std::memcpy(static_cast<void*>(target), d_source, count * sizeof(T));
  }
  double take_upload_seconds() { return std::exchange(upload_s_, 0.0); }
  // Each Thrust call is a few parallel regions; below this many items per
  // thread their fork and barriers cost more than the work — far more on a
  // loaded machine, where idle OpenMP threads spin against the busy one.
  void size_step(u64 items) {
    constexpr u64 items_per_thread = u64{1} << 17;
    omp_set_num_threads(static_cast<int>(std::clamp<u64>(items / items_per_thread, 1, max_threads_)));
  }

 private:
  std::vector<u64> staging_[2];
  double upload_s_ = 0;
  u64 max_threads_ = static_cast<u64>(omp_get_max_threads());
};

}  // namespace ptwalk::kernels::detail
