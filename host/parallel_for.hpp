// host/parallel_for.hpp — independent tasks 0..n-1 over a few threads.
//
// For coarse tasks (one snapshot each): threads take the next index from a
// shared counter, so uneven snapshots balance themselves. The first
// exception stops the handing out of new tasks and is rethrown to the caller
// once every thread is done, so no task outlives the call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ptwalk {

// 0 means every core.
[[nodiscard]] inline unsigned resolve_jobs(unsigned jobs) {
  return jobs != 0 ? jobs : std::max(1u, std::thread::hardware_concurrency());
}

template <class Fn>
void parallel_for(std::size_t count, unsigned jobs, Fn&& fn) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    for (std::size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < count;) {
      try {
        fn(i);
      } catch (...) {
        const std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  const std::size_t threads = std::min<std::size_t>(resolve_jobs(jobs), count);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::jthread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace ptwalk
