// cuda/cached_allocator.hpp — the one pool of device memory: walk vectors and Thrust temporaries.
//
// A walk makes dozens of Thrust calls per level (count, select, merge), each
// asking for scratch memory, and resizes its vectors as levels grow;
// cudaMalloc/cudaFree per call would serialize the device and cost more
// than the small kernels themselves. Freed blocks are kept by size and
// handed out again. Every byte handed out is charged to one memory_budget,
// so the batch driver sizes batches from what the last ones used. Out of
// memory, the cache is released and the allocation tried once more before
// std::bad_alloc (which makes the batch driver split the batch). Thread-safe:
// the pool outlives calls and may be reached from several host threads.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <new>

#include "kernels/detail/device_system.hpp"

namespace ptwalk {

class cached_allocator {
 public:
  using value_type = char;

  cached_allocator() = default;
  cached_allocator(const cached_allocator&) = delete;
  cached_allocator& operator=(const cached_allocator&) = delete;
  ~cached_allocator() {
    release();
    for (const auto& [p, size] : in_use_) cudaFree(p);
  }

  char* allocate(std::ptrdiff_t bytes) {
    const std::lock_guard lock(mutex_);
    const std::size_t size = static_cast<std::size_t>(bytes);
    budget_.take(size);
    // A cached block up to twice the size, if the budget also covers its slack
    // (else a fresh block of the exact size, which the budget allows).
    if (auto it = free_.lower_bound(size);
        it != free_.end() && it->first <= 2 * size && it->first - size <= budget_.limit - budget_.in_use) {
      char* p = it->second;
      budget_.take(it->first - size);
      cached_bytes_ -= it->first;
      in_use_.emplace(p, it->first);
      free_.erase(it);
      return p;
    }
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      (void)cudaGetLastError();
      release_locked();
      if (cudaMalloc(&p, size) != cudaSuccess) {
        (void)cudaGetLastError();
        budget_.give(size);
        throw std::bad_alloc();
      }
    }
    in_use_.emplace(static_cast<char*>(p), size);
    return static_cast<char*>(p);
  }
  void deallocate(char* p, std::size_t) {
    const std::lock_guard lock(mutex_);
    const auto it = in_use_.find(p);
    budget_.give(it->second);
    cached_bytes_ += it->second;
    free_.emplace(it->second, p);
    in_use_.erase(it);
  }
  // Frees every cached block not in use.
  void release() {
    const std::lock_guard lock(mutex_);
    release_locked();
  }
  // What one walk may use: `limit` bytes, or (0) what the device has free
  // plus what this pool holds.
  void set_limit(std::size_t limit) {
    const std::lock_guard lock(mutex_);
    std::size_t free = 0, total = 0;
    if (limit == 0 && cudaMemGetInfo(&free, &total) != cudaSuccess) (void)cudaGetLastError();
    budget_.limit = limit != 0 ? limit : free + cached_bytes_ + budget_.in_use;
  }
  [[nodiscard]] kernels::detail::memory_budget budget() {
    const std::lock_guard lock(mutex_);
    return budget_;
  }
  void reset_peak() {
    const std::lock_guard lock(mutex_);
    budget_.peak = budget_.in_use;
  }

 private:
  void release_locked() {
    for (const auto& [size, p] : free_) cudaFree(p);
    free_.clear();
    cached_bytes_ = 0;
  }

  std::mutex mutex_;
  std::multimap<std::size_t, char*> free_;
  std::map<char*, std::size_t> in_use_;
  std::size_t cached_bytes_ = 0;
  kernels::detail::memory_budget budget_;
};

}  // namespace ptwalk
