// host/parallel_for.hpp — independent tasks 0..n-1 over a few threads.
//
// Threads take the next chunk of indices from a shared counter, so uneven
// tasks balance themselves. The threads come from one process-wide pool
// whose idle threads block on a condition variable instead of spinning, so
// a walk on a busy machine (CI, a node running other jobs) does not lose
// its second core to a spinning OpenMP barrier — measured here, that made
// two threads 5x slower than one under load. Reusing them matters because
// a walk opens a dozen parallel regions: a std::thread start and join costs
// about 50 us on this VM, a wakeup a few. A region that finds the pool in
// use (a nested or concurrent call) starts threads of its own, as before.
// The first exception stops the handing out of new tasks and is rethrown
// once every thread is done, so no task outlives the call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>

namespace ptwalk {

// 0 means every core.
[[nodiscard]] inline unsigned resolve_jobs(unsigned jobs) {
  return jobs != 0 ? jobs : std::max(1u, std::thread::hardware_concurrency());
}

namespace detail {
// Runs body(context, id) once for each id in [0, threads), id 0 on the
// calling thread, and returns when all have returned. `body` must not throw.
void run_on_threads(unsigned threads, void (*body)(void* context, unsigned id) noexcept, void* context);
}  // namespace detail

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
  auto worker = [&](unsigned id) noexcept {
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
    using worker_type = decltype(worker);
    detail::run_on_threads(
        static_cast<unsigned>(threads),
        [](void* context, unsigned id) noexcept { (*static_cast<worker_type*>(context))(id); }, &worker);
  }
  if (error) std::rethrow_exception(error);
}

// One task per index.
template <class Fn>
void parallel_for(std::size_t count, unsigned jobs, Fn&& fn) {
  parallel_for_chunks(count, 1, jobs, [&](unsigned, std::size_t i) { fn(i); });
}

}  // namespace ptwalk
