// host/common/malloc_policy.cpp — glibc's mallopt; elsewhere a no-op.
#include "common/malloc_policy.hpp"

#include <cstdlib>  // defines __GLIBC__ with glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ptwalk {

void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  // No block is mapped on its own, whatever its size (an mmap threshold
  // would stop at 32 MiB, below the records of tens of thousands of
  // spaces); a fixed trim threshold also turns off glibc's adjustment of it.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

}  // namespace ptwalk
