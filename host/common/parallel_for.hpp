// host/parallel_for.hpp — independent tasks 0..n-1 over a few threads.
//
// Threads take the next chunk of indices from a shared counter, so uneven
// tasks balance themselves. Threads are plain std::threads joined at the
// end: an idle one blocks instead of spinning, so a walk on a busy machine
// (CI, a node running other jobs) does not lose its second core to a
// spinning OpenMP barrier — measured here, that made two threads 5x
// slower than one under load. The first exception stops the handing out of
// new tasks and is rethrown once every thread is done, so no task outlives
// the call.
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

// Calls fn(worker, i) for every i in [0, count), handing out `chunk`
// consecutive indices at a time; worker (0..threads-1) names the calling
// thread, so per-thread state needs no locking. Each worker sees its
// indices in increasing order.
template <class Fn>
void parallel_for_chunks(std::size_t count, std::size_t chunk, unsigned jobs, Fn&& fn) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](unsigned id) {
    for (std::size_t first; !failed.load(std::memory_order_relaxed) && (first = next.fetch_add(chunk)) < count;) {
      try {
        for (std::size_t i = first; i < std::min(count, first + chunk); ++i) fn(id, i);
      } catch (...) {
        const std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  const std::size_t threads = std::min<std::size_t>(resolve_jobs(jobs), (count + chunk - 1) / chunk);
  if (threads <= 1) {
    worker(0);
  } else {
    std::vector<std::jthread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker, t);
    worker(0);  // the caller works too
  }
  if (error) std::rethrow_exception(error);
}

// One task per index.
template <class Fn>
void parallel_for(std::size_t count, unsigned jobs, Fn&& fn) {
  parallel_for_chunks(count, 1, jobs, [&](unsigned, std::size_t i) { fn(i); });
}

}  // namespace ptwalk
