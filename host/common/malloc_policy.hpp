// host/common/malloc_policy.hpp — how the process's heap treats freed memory.
#pragma once

namespace ptwalk {

// Keeps the memory a walk frees for the next walk instead of handing it
// back to the kernel. glibc by default serves blocks from 128 KiB up (a
// walk's records, owner tables, per-thread buffers) with fresh mmaps and
// trims the heap's free top, so every batch of a job page-faults and
// zero-fills its buffers again: on the 2-core VM that was a quarter of a
// warm walk (splice 13 -> 1.5 ms on 10,000 spaces). Every block now comes
// from the heap (none is mapped on its own: above glibc's largest mmap
// threshold, 32 MiB, the 87 MB of records of 40,000 spaces still were, and
// the splice that first writes them took 34 ms instead of 10), and up to
// 256 MiB of free heap top per arena is kept. Peak memory is about the
// same (+1-2% for `ptwalk compact` of 10,000 and 40,000 spaces); it is
// simply not given back between batches. Call once, first thing in main.
void keep_freed_memory_for_reuse();

}  // namespace ptwalk
