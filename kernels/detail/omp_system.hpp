// kernels/detail/omp_system.hpp — Thrust's OMP device system, for the CPU builds of kernels/ algorithms.
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: "device" memory is host
// RAM, a transfer is a memcpy (timed as one), so the GPU algorithms run in
// CI without a GPU (device_system.hpp lists what a system supplies). The
// "device" vectors draw on a memory_budget like the CUDA pool does, so a
// test can give the walk a small device and watch batches shrink.
#pragma once

#include <omp.h>
#include <thrust/host_vector.h>
#include <thrust/system/omp/execution_policy.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/detail/device_system.hpp"
#include "ptwalk/bulk_allocator.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk::kernels::detail {

// The budget of the omp_system alive on this thread (the walk's vectors are
// sized on the thread that runs it); none outside a walk.
inline thread_local memory_budget* current_omp_budget = nullptr;

// The heap allocator that charges the current budget; each vector
// remembers the budget it was created under. Growing a vector leaves the
// new elements uninitialised (bulk_allocator), as on the device: every step
// writes what it later reads (Thrust skips its fill when the allocator
// constructs).
template <class T>
struct budget_allocator : bulk_allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = budget_allocator<U>;
  };
  budget_allocator() = default;
  template <class U>
  budget_allocator(const budget_allocator<U>& o) : budget(o.budget) {}

  T* allocate(std::size_t n) {
    if (budget != nullptr) budget->take(n * sizeof(T));
    try {
      return bulk_allocator<T>::allocate(n);
    } catch (...) {
      if (budget != nullptr) budget->give(n * sizeof(T));
      throw;
    }
  }
  void deallocate(T* p, std::size_t n) {
    bulk_allocator<T>::deallocate(p, n);
    if (budget != nullptr) budget->give(n * sizeof(T));
  }
  friend bool operator==(const budget_allocator& a, const budget_allocator& b) { return a.budget == b.budget; }

  memory_budget* budget = current_omp_budget;
};

class omp_system {
 public:
  // Host vectors: resizing them is sequential, so only the algorithm calls
  // (given thrust::omp::par) open parallel regions, sized by size_step.
  template <class T>
  using vector = thrust::host_vector<T, budget_allocator<T>>;
  static constexpr const char* name = "thrust-omp";

  explicit omp_system(u64 memory_limit = 0) : outer_budget_(current_omp_budget) {
    if (memory_limit != 0) budget_.limit = memory_limit;
    current_omp_budget = &budget_;
    size_step(0);
  }
  omp_system(const omp_system&) = delete;
  omp_system& operator=(const omp_system&) = delete;
  // size_step changes this thread's OpenMP thread count; give it back.
  ~omp_system() {
    omp_set_num_threads(static_cast<int>(max_threads_));
    current_omp_budget = outer_budget_;
  }

  [[nodiscard]] auto policy() const { return thrust::omp::par; }

  // CUB's single-pass partition on CUDA; here the same selectors in two
  // sweeps over tiles of items: count each tile, scan the counts, then
  // write each tile's items at its offsets (in[i] is evaluated twice).
  template <class Input, class FirstOut, class SecondOut, class SelectFirst, class SelectSecond>
  selected_counts select_two(Input in, u64 count, FirstOut first_out, SecondOut second_out,
                             SelectFirst select_first, SelectSecond select_second) const {
    constexpr u64 tile = 4096;
    const u64 tiles = (count + tile - 1) / tile;
    std::vector<selected_counts> at(tiles + 1);
#pragma omp parallel for schedule(static)
    for (u64 t = 0; t < tiles; ++t) {
      selected_counts kept;
      for (u64 i = t * tile, end = std::min(count, i + tile); i < end; ++i) {
        const auto item = in[i];
        if (select_first(item)) ++kept.first;
        else if (select_second(item)) ++kept.second;
      }
      at[t + 1] = kept;
    }
    for (u64 t = 0; t < tiles; ++t) at[t + 1] = {at[t].first + at[t + 1].first, at[t].second + at[t + 1].second};
#pragma omp parallel for schedule(static)
    for (u64 t = 0; t < tiles; ++t) {
      selected_counts next = at[t];
      for (u64 i = t * tile, end = std::min(count, i + tile); i < end; ++i) {
        const auto item = in[i];
        if (select_first(item)) first_out[next.first++] = item;
        else if (select_second(item)) second_out[next.second++] = item;
      }
    }
    return at[tiles];
  }
  // Uploads are synchronous here, so a staging buffer is free on return.
  u64* staging(unsigned which, std::size_t words) {
    auto& buffer = staging_[which];
    if (buffer.size() < words) buffer.resize(words);
    return buffer.data();
  }
  void upload_staging(unsigned which, u64* d_target, std::size_t words) {
    upload(staging_[which].data(), d_target, words);
  }
  template <class T>
  void upload(const T* source, T* d_target, std::size_t count) {
    std::memcpy(static_cast<void*>(d_target), source, count * sizeof(T));
  }
  template <class T>
  void download(const T* d_source, T* target, std::size_t count) {
    std::memcpy(static_cast<void*>(target), d_source, count * sizeof(T));
  }
  // "Device" memory is host memory: one chunk, consumed in place.
  template <class T, class Consume>
  void download_chunks(const T* d_source, u64 count, Consume&& consume) {
    if (count != 0) consume(d_source, u64{0}, count);
  }
  template <class Fn>
  decltype(auto) timed(device_phase phase, Fn&& fn) {
    const charge on_exit(seconds_[static_cast<unsigned>(phase)]);
    return fn();
  }
  double take_seconds(device_phase phase) { return std::exchange(seconds_[static_cast<unsigned>(phase)], 0.0); }
  [[nodiscard]] const memory_budget& memory() const { return budget_; }
  void reset_peak() { budget_.peak = budget_.in_use; }
  void release_cache() {}
  static bool out_of_memory(const std::exception_ptr& error) { return host_side_out_of_memory(error); }
  // Each Thrust call is a few parallel regions; below this many items per
  // thread their fork and barriers cost more than the work — far more on a
  // loaded machine, where idle OpenMP threads spin against the busy one.
  void size_step(u64 items) {
    constexpr u64 items_per_thread = u64{1} << 17;
    omp_set_num_threads(static_cast<int>(std::clamp<u64>(items / items_per_thread, 1, max_threads_)));
  }

 private:
  // Adds the seconds until its end to `total`, however the scope is left.
  class charge {
   public:
    explicit charge(double& total) : total_(total) {}
    charge(const charge&) = delete;
    charge& operator=(const charge&) = delete;
    ~charge() { total_ += clock_.seconds(); }

   private:
    double& total_;
    stopwatch clock_;
  };

  memory_budget budget_;
  memory_budget* outer_budget_;
  std::vector<u64> staging_[2];
  double seconds_[device_phases] = {};
  u64 max_threads_ = static_cast<u64>(omp_get_max_threads());
};

}  // namespace ptwalk::kernels::detail
