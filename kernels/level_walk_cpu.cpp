// kernels/level_walk_cpu.cpp — the GPU walk algorithm built for Thrust's OMP device system.
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: the same steps and
// orchestration as the CUDA backend, with "device" memory in host RAM. CI
// runs it against the reference, which is how the GPU algorithm is tested
// without a GPU; it is also measured as a candidate cpu backend (README).
#include <omp.h>
#include <thrust/system/omp/execution_policy.h>
#include <thrust/host_vector.h>

#include "kernels/detail/level_walk_impl.hpp"

namespace ptwalk {
namespace {

struct omp_system {
  // Host vectors: resizing them is sequential, so only the algorithm calls
  // (given thrust::omp::par) open parallel regions, sized by size_step.
  template <class T>
  using vector = thrust::host_vector<T>;
  static constexpr const char* name = "thrust-omp";

  [[nodiscard]] auto policy() const { return thrust::omp::par; }
  u64* staging(unsigned which, std::size_t words) {
    auto& buffer = staging_[which];
    if (buffer.size() < words) buffer.resize(words);
    return buffer.data();
  }
  // Device memory is host memory: a transfer is a copy, timed as one.
  template <class T>
  void upload(const T* source, T* d_target, std::size_t count) {
    const kernels::detail::stopwatch clock;
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

  std::vector<u64> staging_[2];
  double upload_s_ = 0;
  u64 max_threads_ = static_cast<u64>(omp_get_max_threads());
};

}  // namespace

std::vector<snapshot_walk> level_walk_thrust_cpu(std::span<const walk_input> snapshots,
                                                 const level_walk_options& options) {
  omp_system system;
  // size_step changes this thread's OpenMP thread count; give it back after.
  struct restore_threads {
    int threads = omp_get_max_threads();
    ~restore_threads() { omp_set_num_threads(threads); }
  } restore;
  system.size_step(0);
  return kernels::detail::level_walk(system, snapshots, options);
}

}  // namespace ptwalk
