// host/common/malloc_policy.cpp — glibc's mallopt; elsewhere a no-op.
#include "common/malloc_policy.hpp"

#include <cstdlib>  // defines __GLIBC__ with glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ptwalk {

void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  // Setting either turns off glibc's own adjustment of both.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // Blocks above the largest threshold (the records of a fleet of tens of
  // thousands of spaces) would still be mapped afresh on every walk.
  mallopt(M_MMAP_MAX, 0);
#endif
}

}  // namespace ptwalk
