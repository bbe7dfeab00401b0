// kernels/detail/device_system.hpp — what the Thrust algorithms of kernels/ need from a device system.
//
// The level-synchronous walk (level_walk_impl.hpp) and the root scan
// (root_scan_impl.hpp) are each one source built for several Thrust device
// systems: CUDA by nvcc (cuda/cuda_system.cuh) and OMP by g++
// (omp_system.hpp). A `System` supplies what differs between them:
//   template <class T> using vector;      // device vectors
//   policy();                             // Thrust execution policy
//   staging(which, words);                // host buffers a gather fills (pinned on CUDA)
//   upload(h_src, d_dst, n);              // host→device, ordered before later policy() calls
//   download(d_src, h_dst, n);            // device→host, blocking
//   take_upload_seconds();                // device time spent uploading since the last call
//   name;                                 // for messages
// and optionally size_step(items), told how many items the next steps touch,
// and release_cache(), which drops cached device scratch memory.
#pragma once

#include <thrust/memory.h>

#include <chrono>

namespace ptwalk::kernels::detail {

class stopwatch {
 public:
  [[nodiscard]] double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

template <class V>
auto raw(V& v) {
  return thrust::raw_pointer_cast(v.data());
}

// Tells the system how many items the next steps touch, if it wants to know.
template <class System>
void size_step(System& system, unsigned long long items) {
  if constexpr (requires { system.size_step(items); }) system.size_step(items);
}

}  // namespace ptwalk::kernels::detail
