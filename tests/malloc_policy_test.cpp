// keep_freed_memory_for_reuse: a block freed and allocated again is not
// page-faulted again (the kernel's count of minor faults says so).
#include "common/malloc_policy.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstring>
#include <memory>

namespace ptwalk {
namespace {

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Minor faults taken while allocating, filling and freeing `bytes`.
long faults_of_one_use(std::size_t bytes) {
  const long before = minor_faults();
  {
    const std::unique_ptr<char[]> block(new char[bytes]);
    std::memset(block.get(), 1, bytes);
    asm volatile("" : : "r"(block.get()) : "memory");  // the fill is not optimised away
  }
  return minor_faults() - before;
}

// The policy tunes glibc's malloc; a sanitizer brings its own.
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
constexpr bool glibc_malloc = true;
#else
constexpr bool glibc_malloc = false;
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PTWALK_TEST_ASAN
#endif
#endif

TEST(MallocPolicy, AFreedWalkBufferIsReusedWithoutPageFaults) {
#ifdef PTWALK_TEST_ASAN
  GTEST_SKIP() << "AddressSanitizer replaces malloc";
#endif
  if (!glibc_malloc) GTEST_SKIP() << "the policy tunes glibc's malloc, which this build does not use";
  keep_freed_memory_for_reuse();
  // A walk's records: above glibc's default 128 KiB mmap threshold, and
  // (40,000 spaces' records) above the largest threshold it can be set to.
  for (const std::size_t bytes : {std::size_t{8} << 20, std::size_t{96} << 20}) {
    const long pages = static_cast<long>(bytes / 4096);
    faults_of_one_use(bytes);  // the first use faults its pages in
    // Without the policy every use maps fresh memory: one fault per page.
    EXPECT_LT(faults_of_one_use(bytes), pages / 16) << bytes << " bytes";
  }
}

}  // namespace
}  // namespace ptwalk
