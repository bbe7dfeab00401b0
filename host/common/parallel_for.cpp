// host/common/parallel_for.cpp — the process-wide pool behind parallel_for.
#include "common/parallel_for.hpp"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <system_error>
#include <vector>

namespace ptwalk::detail {
namespace {

using body_fn = void (*)(void*, unsigned) noexcept;

// How long a thread polls before it sleeps: waking a sleeping thread on
// another core costs about 40 us on this VM, as much as starting one, while
// a walk's regions follow each other within tens of microseconds. Short
// enough that idle workers cost a busy machine little.
constexpr std::chrono::microseconds spin_time{50};

// Tells the core this thread is spinning (another hardware thread may run).
inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls `ready` for spin_time, then waits for it on `wake` under `mutex`.
template <class Ready>
void await(std::mutex& mutex, std::condition_variable& wake, Ready ready) {
  const auto until = std::chrono::steady_clock::now() + spin_time;
  for (unsigned n = 1; !ready(); ++n) {
    spin_pause();
    if (n % 64 == 0 && std::chrono::steady_clock::now() > until) {
      std::unique_lock lock(mutex);
      wake.wait(lock, ready);
      return;
    }
  }
}

// Signals waiters of `await` once their condition holds; taking the mutex
// first means a thread between its last check and its sleep cannot miss it.
void signal(std::mutex& mutex, std::condition_variable& wake) {
  { const std::lock_guard lock(mutex); }
  wake.notify_all();
}

// Threads that wait between regions and run one region at a time. Worker
// k (k >= 1) runs id k of every region that asks for more than k threads.
class thread_pool {
 public:
  // Runs the region on the pool, or returns false at once if another
  // region holds it. Runs fewer threads than asked if no more can start;
  // the shared task counter makes that correct, only slower.
  bool try_run(unsigned threads, body_fn body, void* context) {
    const std::unique_lock region(region_, std::try_to_lock);
    if (!region.owns_lock()) return false;
    grow(threads - 1);
    const unsigned helpers = std::min(threads - 1, started_);
    // Only the helpers read body_ and context_, and the last region's
    // helpers are all done with them (pending_ was 0).
    body_ = body;
    context_ = context;
    pending_.store(helpers, std::memory_order_relaxed);
    const std::uint64_t next = (region_word_.load(std::memory_order_relaxed) | helpers_mask) + 1;
    region_word_.store(next | helpers, std::memory_order_release);
    signal(mutex_, wake_);
    body(context, 0);
    await(mutex_, done_, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    return true;
  }

 private:
  // A region's sequence number and helper count in one word, so a worker
  // learns whether it takes part from one read, and one that does not
  // never reads the region's other fields while the next region writes them.
  static constexpr unsigned helper_bits = 24;
  static constexpr std::uint64_t helpers_mask = (std::uint64_t{1} << helper_bits) - 1;
  static constexpr unsigned max_helpers = helpers_mask;

  // Starts workers up to `helpers`; called with region_ held.
  void grow(unsigned helpers) {
    for (helpers = std::min(helpers, max_helpers); started_ < helpers; ++started_) {
      try {
        std::thread(&thread_pool::work, this, started_ + 1, region_word_.load()).detach();
      } catch (const std::system_error&) {
        return;  // out of threads: run with those there are
      }
    }
  }

  void work(unsigned id, std::uint64_t seen) {
    pthread_setname_np(pthread_self(), "ptwalk-worker");
    for (;;) {
      await(mutex_, wake_, [&] { return region_word_.load(std::memory_order_acquire) != seen; });
      seen = region_word_.load(std::memory_order_acquire);
      if (id > (seen & helpers_mask)) continue;
      body_(context_, id);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) signal(mutex_, done_);
    }
  }

  std::mutex region_;  // held by the region running on the pool
  std::mutex mutex_;   // for sleeping and waking only
  std::condition_variable wake_, done_;
  std::atomic<std::uint64_t> region_word_{0};
  std::atomic<unsigned> pending_{0};  // helpers still in the region
  unsigned started_ = 0;              // workers started (ids 1..started_); region_ guards it
  body_fn body_ = nullptr;
  void* context_ = nullptr;
};

// Never destroyed: workers may still be parked in it while the process
// exits. A forked child has none of the parent's threads, so it forgets
// the parent's pool and starts its own.
std::atomic<thread_pool*> pool{nullptr};

thread_pool& process_pool() {
  static const int fork_handler = pthread_atfork(nullptr, nullptr, [] { pool.store(nullptr); });
  (void)fork_handler;
  thread_pool* current = pool.load(std::memory_order_acquire);
  if (current != nullptr) return *current;
  auto* fresh = new thread_pool;  // no threads yet: they start with its first region
  if (pool.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *current;
}

}  // namespace

void run_on_threads(unsigned threads, body_fn body, void* context) {
  if (process_pool().try_run(threads, body, context)) return;
  // Nested or concurrent region: threads of its own.
  std::vector<std::jthread> own;
  try {
    for (unsigned id = 1; id < threads; ++id) own.emplace_back(body, context, id);
  } catch (const std::system_error&) {
    // out of threads: the ones started and this one share the tasks
  }
  body(context, 0);
}

}  // namespace ptwalk::detail
