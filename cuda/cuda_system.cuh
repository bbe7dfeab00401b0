// cuda/cuda_system.cuh — Thrust's CUDA device system for the algorithms of kernels/ (nvcc only).
//
// What the walk and the root scan need from the GPU (the System contract of
// kernels/detail/device_system.hpp). The expensive parts live in one
// process-wide cuda_context, made on first use and reused by every batch
// and every call: the stream, two pinned staging buffers with an event
// each (a buffer is refilled only after its last upload has finished), and
// the one pool of device memory that both the walk's vectors and Thrust's
// temporaries come from. A cuda_system is one call's handle on it: it holds
// the context's lock, times device work with events per phase, and sets
// the pool's budget for the call.
#pragma once

#include <cub/device/device_partition.cuh>
#include <cuda_runtime.h>
#include <thrust/device_malloc_allocator.h>
#include <thrust/device_vector.h>
#include <thrust/iterator/discard_iterator.h>
#include <thrust/system/cuda/error.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cached_allocator.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/cuda_walk.hpp"
#include "kernels/detail/device_system.hpp"
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
  // Grows to `words` (contents not kept); if the allocation throws, the old
  // buffer is still there and still described.
  u64* reserve(std::size_t words) {
    if (words > words_) {
      u64* grown = nullptr;
      cuda_check(cudaHostAlloc(reinterpret_cast<void**>(&grown), words * 8, cudaHostAllocDefault),
                 "cudaHostAlloc(staging)");
      if (data_ != nullptr) cudaFreeHost(data_);
      data_ = grown;
      words_ = words;
    }
    return data_;
  }
  [[nodiscard]] u64* data() const { return data_; }

 private:
  u64* data_ = nullptr;
  std::size_t words_ = 0;
};

class cuda_event {
 public:
  cuda_event() { cuda_check(cudaEventCreate(&event_), "cudaEventCreate"); }
  cuda_event(cuda_event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
  cuda_event(const cuda_event&) = delete;
  ~cuda_event() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  [[nodiscard]] cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

struct cuda_event_pair {
  cuda_event start, stop;
  [[nodiscard]] double seconds() const {
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start.get(), stop.get()), "cudaEventElapsedTime");
    return ms / 1e3;
  }
};

// The process's device state, reused across batches and calls. Never
// destroyed: freeing device memory after the CUDA runtime has shut down at
// exit would fail, and the process ends anyway.
class cuda_context {
 public:
  static cuda_context& instance() {
    static cuda_context* context = new cuda_context();
    return *context;
  }

  std::mutex mutex;  // one call at a time uses the stream and the staging buffers
  cudaStream_t stream = nullptr;
  cached_allocator pool;
  pinned_words staging[2];
  cuda_event staged[2];   // recorded after each buffer's last upload
  cuda_event fetched[2];  // recorded after each buffer's last download_chunks copy

 private:
  cuda_context() {
    // A blocking stream: device vectors allocate and fill on the legacy
    // default stream, which must stay ordered with our copies and kernels.
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  }
};

// Device vectors from the context's pool.
template <class T>
struct pool_allocator : thrust::device_malloc_allocator<T> {
  using base = thrust::device_malloc_allocator<T>;
  using pointer = typename base::pointer;
  using size_type = typename base::size_type;
  template <class U>
  struct rebind {
    using other = pool_allocator<U>;
  };
  pool_allocator() = default;
  template <class U>
  pool_allocator(const pool_allocator<U>&) {}

  // Growing a vector leaves the new elements uninitialised: every step
  // writes what it later reads, and a fill would cost a pass over device
  // memory. Thrust still launches this no-op over the new elements (one
  // launch and a sync per resize, no memory traffic); CCCL 3.0 has no
  // uninitialised growth.
  __host__ __device__ void construct(T*) {}

  pointer allocate(size_type n) {
    return pointer(reinterpret_cast<T*>(cuda_context::instance().pool.allocate(n * sizeof(T))));
  }
  void deallocate(pointer p, size_type n) {
    cuda_context::instance().pool.deallocate(reinterpret_cast<char*>(thrust::raw_pointer_cast(p)), n * sizeof(T));
  }
};

class cuda_system {
 public:
  template <class T>
  using vector = thrust::device_vector<T, pool_allocator<T>>;
  static constexpr const char* name = "cuda";

  explicit cuda_system(u64 memory_limit = 0) : context_(cuda_context::instance()), lock_(context_.mutex) {
    context_.pool.set_limit(memory_limit);
  }
  cuda_system(const cuda_system&) = delete;
  cuda_system& operator=(const cuda_system&) = delete;

  [[nodiscard]] auto policy() { return thrust::cuda::par(context_.pool).on(context_.stream); }

  // CUB's single-pass three-way partition (decoupled look-back): each item
  // of `in` is read once; the ones neither selector keeps are discarded.
  template <class Input, class FirstOut, class SecondOut, class SelectFirst, class SelectSecond>
  kernels::detail::selected_counts select_two(Input in, u64 count, FirstOut first_out, SecondOut second_out,
                                              SelectFirst select_first, SelectSecond select_second) {
    const auto n = static_cast<long long>(count);
    vector<long long> d_kept(2);
    long long* kept_out = thrust::raw_pointer_cast(d_kept.data());
    auto partition = [&](void* temporary, std::size_t& bytes) {
      cuda_check(cub::DevicePartition::If(temporary, bytes, in, first_out, second_out,
                                          thrust::make_discard_iterator(), kept_out, n, select_first,
                                          select_second, context_.stream),
                 "cub::DevicePartition::If");
    };
    std::size_t bytes = 0;
    partition(nullptr, bytes);
    struct scratch {
      cached_allocator& pool;
      std::size_t bytes;
      char* data = pool.allocate(static_cast<std::ptrdiff_t>(bytes));
      ~scratch() { pool.deallocate(data, bytes); }
    } temporary{context_.pool, bytes};
    partition(temporary.data, bytes);
    long long kept[2];
    download(kept_out, kept, 2);
    return {static_cast<u64>(kept[0]), static_cast<u64>(kept[1])};
  }

  // Waits until the buffer's last upload and last download_chunks copy are
  // done (a download can still be in flight when its consumer threw).
  u64* staging(unsigned which, std::size_t words) {
    cuda_check(cudaEventSynchronize(context_.staged[which].get()), "cudaEventSynchronize(staging)");
    cuda_check(cudaEventSynchronize(context_.fetched[which].get()), "cudaEventSynchronize(staging)");
    return context_.staging[which].reserve(words);
  }
  void upload_staging(unsigned which, u64* d_target, std::size_t words) {
    cuda_check(cudaMemcpyAsync(d_target, context_.staging[which].data(), words * 8, cudaMemcpyHostToDevice,
                               context_.stream),
               "cudaMemcpyAsync(staging to device)");
    cuda_check(cudaEventRecord(context_.staged[which].get(), context_.stream), "cudaEventRecord(staging)");
  }
  // From pageable memory the copy has taken the source when this returns.
  template <class T>
  void upload(const T* source, T* d_target, std::size_t count) {
    cuda_check(cudaMemcpyAsync(d_target, source, count * sizeof(T), cudaMemcpyHostToDevice, context_.stream),
               "cudaMemcpyAsync(host to device)");
  }
  template <class T>
  void download(const T* d_source, T* target, std::size_t count) {
    cuda_check(cudaMemcpyAsync(target, d_source, count * sizeof(T), cudaMemcpyDeviceToHost, context_.stream),
               "cudaMemcpyAsync(device to host)");
    cuda_check(cudaStreamSynchronize(context_.stream), "cudaStreamSynchronize(download)");
  }

  // Device → host through the two pinned staging buffers, `chunk_bytes`
  // at a time: chunk k+1 is copied at the pinned rate while the host hands
  // chunk k to `consume(host, first, count)`, so no pageable copy, and the
  // host writes each element once, where it belongs.
  template <class T, class Consume>
  void download_chunks(const T* d_source, u64 count, Consume&& consume) {
    constexpr u64 chunk_bytes = u64{16} << 20;
    const u64 per_chunk = std::max<u64>(1, chunk_bytes / sizeof(T));
    const u64 words = (std::min(per_chunk, count) * sizeof(T) + 7) / 8;
    for (unsigned which = 0; which < 2; ++which) staging(which, words);  // their uploads are done
    auto fetch = [&](u64 first, unsigned which) {
      const u64 n = std::min(per_chunk, count - first);
      cuda_check(cudaMemcpyAsync(context_.staging[which].data(), d_source + first, n * sizeof(T),
                                 cudaMemcpyDeviceToHost, context_.stream),
                 "cudaMemcpyAsync(device to staging)");
      cuda_check(cudaEventRecord(context_.fetched[which].get(), context_.stream), "cudaEventRecord(download)");
    };
    if (count != 0) fetch(0, 0);
    for (u64 first = 0, k = 0; first < count; first += per_chunk, ++k) {
      const unsigned which = unsigned(k % 2);
      // The other buffer's chunk was consumed in the last round: refill it.
      if (first + per_chunk < count) fetch(first + per_chunk, which ^ 1u);
      cuda_check(cudaEventSynchronize(context_.fetched[which].get()), "cudaEventSynchronize(download)");
      consume(reinterpret_cast<const T*>(context_.staging[which].data()), first, std::min(per_chunk, count - first));
    }
  }

  // Events around the work `fn` enqueues: device time, not host time.
  template <class Fn>
  decltype(auto) timed(kernels::detail::device_phase phase, Fn&& fn) {
    auto& timings = timings_[static_cast<unsigned>(phase)];
    auto& used = used_[static_cast<unsigned>(phase)];
    if (used == timings.size()) timings.emplace_back();
    const cuda_event_pair& pair = timings[used++];
    cuda_check(cudaEventRecord(pair.start.get(), context_.stream), "cudaEventRecord(phase)");
    struct stop_on_exit {
      const cuda_event_pair& pair;
      cudaStream_t stream;
      ~stop_on_exit() { cudaEventRecord(pair.stop.get(), stream); }
    } stop{pair, context_.stream};
    return fn();
  }
  double take_seconds(kernels::detail::device_phase phase) {
    cuda_check(cudaStreamSynchronize(context_.stream), "cudaStreamSynchronize(phase timing)");
    const unsigned p = static_cast<unsigned>(phase);
    double seconds = 0;
    for (std::size_t i = 0; i < used_[p]; ++i) seconds += timings_[p][i].seconds();
    used_[p] = 0;
    return seconds;
  }

  [[nodiscard]] kernels::detail::memory_budget memory() { return context_.pool.budget(); }
  void reset_peak() { context_.pool.reset_peak(); }
  // Drops cached scratch memory, e.g. before retrying a smaller batch.
  void release_cache() { context_.pool.release(); }
  static bool out_of_memory(const std::exception_ptr& error) {
    if (kernels::detail::host_side_out_of_memory(error)) return true;
    try {
      std::rethrow_exception(error);
    } catch (const thrust::system_error& e) {
      (void)cudaGetLastError();
      return e.code().value() == cudaErrorMemoryAllocation;
    } catch (...) {
      return false;
    }
  }

 private:
  cuda_context& context_;
  std::lock_guard<std::mutex> lock_;
  std::deque<cuda_event_pair> timings_[kernels::detail::device_phases];  // deque: a nested timed() keeps its pair
  std::size_t used_[kernels::detail::device_phases] = {};
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
