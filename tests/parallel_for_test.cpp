// parallel_for over the process-wide thread pool: every index once, from
// worker ids below the thread count, in increasing order per worker, and
// the same when regions of different widths follow each other, nest, run
// from two threads at once, throw, or run in a forked child.
#include "common/parallel_for.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace ptwalk {
namespace {

// Runs one region and checks what it did against the arguments.
void check_region(std::size_t count, std::size_t chunk, unsigned jobs) {
  std::vector<std::atomic<unsigned>> visits(count);
  std::vector<std::vector<std::size_t>> seen(jobs);
  parallel_for_chunks(count, chunk, jobs, [&](unsigned worker, std::size_t i) {
    ASSERT_LT(worker, jobs);
    seen[worker].push_back(i);
    visits[i].fetch_add(1, std::memory_order_relaxed);
  });
  for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(visits[i].load(), 1u) << "index " << i << " of " << count;
  for (const auto& indices : seen)
    for (std::size_t k = 1; k < indices.size(); ++k) ASSERT_LT(indices[k - 1], indices[k]);
}

TEST(ParallelFor, EveryIndexOnceAtEveryWidthInTurn) {
  // Widths go up and down so that workers a region does not need are still
  // reading the last one while the next is handed out.
  for (unsigned round = 0; round < 300; ++round)
    for (const unsigned jobs : {1u, 2u, 7u, 3u, 8u, 2u})
      check_region(1 + (round * 37 + jobs * 11) % 500, 1 + round % 5, jobs);
}

TEST(ParallelFor, UsesSeveralThreadsWhenAsked) {
  // A region of 4 tasks that each wait for all 4 to have started can only
  // finish if 4 threads run it at once.
  std::atomic<unsigned> started{0};
  parallel_for(4, 4, [&](std::size_t) {
    started.fetch_add(1);
    while (started.load() < 4) std::this_thread::yield();
  });
  EXPECT_EQ(started.load(), 4u);
}

TEST(ParallelFor, FirstExceptionStopsTheRegionAndTheNextOneRuns) {
  std::atomic<std::size_t> ran{0};
  EXPECT_THROW(parallel_for_chunks(100000, 1, 4,
                                   [&](unsigned, std::size_t i) {
                                     ran.fetch_add(1);
                                     if (i == 10) throw std::runtime_error("task 10");
                                   }),
               std::runtime_error);
  EXPECT_LT(ran.load(), 100000u);  // tasks stopped being handed out
  check_region(1000, 3, 4);
}

TEST(ParallelFor, NestedRegionsRunToCompletion) {
  std::vector<std::atomic<unsigned>> visits(8 * 64);
  parallel_for(8, 4, [&](std::size_t outer) {
    parallel_for(64, 3, [&](std::size_t inner) { visits[outer * 64 + inner].fetch_add(1); });
  });
  for (const auto& v : visits) ASSERT_EQ(v.load(), 1u);
}

TEST(ParallelFor, RegionsFromTwoThreadsAtOnce) {
  std::vector<std::jthread> callers;
  for (unsigned c = 0; c < 2; ++c)
    callers.emplace_back([c] {
      for (unsigned round = 0; round < 200; ++round) check_region(100 + round + c, 1 + c, 2 + c);
    });
}

TEST(ParallelFor, ForkedChildStartsItsOwnThreads) {
  check_region(1000, 1, 4);  // the parent's pool has threads now
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    ::alarm(20);  // a child waiting on the parent's threads would hang: fail instead
    std::atomic<unsigned> total{0};
    parallel_for(1000, 4, [&](std::size_t i) { total.fetch_add(static_cast<unsigned>(i)); });
    ::_exit(total.load() == 999u * 1000u / 2 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace ptwalk
