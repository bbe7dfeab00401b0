// cuda/cached_allocator.hpp — Thrust temporary storage, reused across calls.
//
// A walk makes dozens of Thrust calls per level (count, select, sort), each
// asking for scratch memory; cudaMalloc/cudaFree per call would serialize
// the device and cost more than the small kernels themselves. Freed blocks
// are kept by size and handed out again; out of memory, the cache is
// released and the allocation tried once more before std::bad_alloc (which
// makes the batch driver split the batch).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <new>

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
    const std::size_t size = static_cast<std::size_t>(bytes);
    if (auto it = free_.lower_bound(size); it != free_.end() && it->first <= 2 * size) {
      char* p = it->second;
      in_use_.emplace(p, it->first);
      free_.erase(it);
      return p;
    }
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      (void)cudaGetLastError();
      release();
      if (cudaMalloc(&p, size) != cudaSuccess) {
        (void)cudaGetLastError();
        throw std::bad_alloc();
      }
    }
    in_use_.emplace(static_cast<char*>(p), size);
    return static_cast<char*>(p);
  }
  void deallocate(char* p, std::size_t) {
    const auto it = in_use_.find(p);
    free_.emplace(it->second, p);
    in_use_.erase(it);
  }
  // Frees every cached block not in use.
  void release() {
    for (const auto& [size, p] : free_) cudaFree(p);
    free_.clear();
  }

 private:
  std::multimap<std::size_t, char*> free_;
  std::map<char*, std::size_t> in_use_;
};

}  // namespace ptwalk
