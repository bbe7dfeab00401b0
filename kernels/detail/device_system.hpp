// kernels/detail/device_system.hpp — what the Thrust algorithms of kernels/ need from a device system.
//
// The level-synchronous walk (level_walk_impl.hpp) and the root scan
// (root_scan_impl.hpp) are each one source built for several Thrust device
// systems: CUDA by nvcc (cuda/cuda_system.cuh) and OMP by g++
// (omp_system.hpp). A `System` supplies what differs between them:
//   template <class T> using vector;      // device vectors, allocated from the system's one pool;
//                                         // growing one leaves the new elements uninitialised
//   policy();                             // Thrust execution policy (temporaries from the same pool)
//   select_two(in, n, first_out, second_out, select_first, select_second)
//                                         // two stable selections from one read of in[0, n): items
//                                         // select_first keeps to first_out, of the rest those
//                                         // select_second keeps to second_out; returns both counts
//   staging(which, words);                // host buffer a gather fills (pinned on CUDA); waits
//                                         // until the buffer's last upload_staging (and on CUDA its
//                                         // last download_chunks copy) has finished
//   upload_staging(which, d_dst, words);  // staging buffer → device, asynchronous
//   upload(h_src, d_dst, n);              // host→device; h_src may be reused on return
//   download(d_src, h_dst, n);            // device→host, blocking
//   download_chunks(d_src, n, consume);   // device→host in chunks, consume(host, first, count) for
//                                         // each in order while the next is copied (pinned on CUDA)
//   timed(phase, fn);                     // runs fn, timing the device work it enqueues
//   take_seconds(phase);                  // device seconds of `phase` since the last take
//   memory();                             // the pool's budget: limit, in use, peak
//   release_cache();                      // drops cached device scratch memory
//   out_of_memory(exception_ptr);         // whether a failure means "device memory ran out"
//   size_step(items);                     // how many items the next steps touch
//   name;                                 // for messages
#pragma once

#include <thrust/memory.h>

#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>

#include "ptwalk/config.hpp"

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

// `gather`: a resident walk's gather of table pages on the device.
enum class device_phase : unsigned { upload, kernel, download, gather };
inline constexpr unsigned device_phases = 4;

// What select_two kept.
struct selected_counts {
  u64 first = 0, second = 0;
};

// Bytes a system's pool may hand out (vectors and Thrust temporaries
// together) and how many it has handed out; the batch driver sizes batches
// from the peak of the last one. Exceeding the limit is std::bad_alloc.
struct memory_budget {
  u64 limit = ~u64{0};
  u64 in_use = 0, peak = 0;

  void take(u64 bytes) {
    if (bytes > limit - in_use) throw std::bad_alloc();
    in_use += bytes;
    if (in_use > peak) peak = in_use;
  }
  void give(u64 bytes) { in_use -= bytes; }
};

// Failures every system counts as "out of device memory": an allocation
// that failed, or a size no vector can hold.
inline bool host_side_out_of_memory(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::bad_alloc&) {
    return true;
  } catch (const std::length_error&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace ptwalk::kernels::detail
