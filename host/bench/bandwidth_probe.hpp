// host/bench/bandwidth_probe.hpp — what bounds a walk that reads tables from DRAM: the host's memory bandwidth.
//
// `ptwalk bench` compares the walk's page-table read rate with DRAM read
// bandwidth (every walk thread summing 64-bit words over a buffer far larger
// than the last-level cache) and, for reference, with copy bandwidth (a
// memcpy split over the same threads, read + write bytes). Both are probed
// right before and right after a backend's repetitions, so a machine loaded
// by other work shows up as spread. The read buffer doubles as the cache
// flush between cold walk repetitions: one streaming pass over it leaves no
// page table in any cache level. A walk reads 4 KiB tables on scattered
// pages, not one stream, and the hardware prefetchers stop at page
// boundaries, so the probe also reads the same buffer page by page in a
// shuffled order (each page's lines and the next page's first lines
// prefetched, as the cpu walker does): the most such a walk can expect.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <vector>

#include "ptwalk/config.hpp"

namespace ptwalk {

// Bytes of the largest (last-level) data or unified cache of CPU 0, from
// sysfs (`root`/cpu0/cache/index*/{level,type,size}); 0 when sysfs does not say.
[[nodiscard]] u64 last_level_cache_bytes(
    const std::filesystem::path& root = "/sys/devices/system/cpu");

// The read buffer for a cache of `cache_bytes`: at least 4× the cache and at least 1 GiB.
[[nodiscard]] u64 read_probe_bytes(u64 cache_bytes);

// One probe: bytes per second of each kind, best of a few passes.
struct host_bandwidth {
  double read_bytes_per_s = 0;       // DRAM read: summing 64-bit words
  double page_read_bytes_per_s = 0;  // the same, 4 KiB pages in a shuffled order
  double copy_bytes_per_s = 0;       // memcpy, read + write bytes
};

class host_bandwidth_probe {
 public:
  // Allocates and touches the read buffer (read_probe_bytes of the
  // last-level cache; the copy moves its first half onto its second);
  // `threads` is the walk's thread count (0: every core, as the cpu walker).
  explicit host_bandwidth_probe(int threads);
  host_bandwidth_probe(const host_bandwidth_probe&) = delete;
  host_bandwidth_probe& operator=(const host_bandwidth_probe&) = delete;
  ~host_bandwidth_probe();

  [[nodiscard]] host_bandwidth measure();
  // One streaming read of the whole read buffer: what was cached is evicted.
  void evict_caches();

  [[nodiscard]] int threads() const { return threads_; }
  [[nodiscard]] u64 cache_bytes() const { return cache_bytes_; }
  [[nodiscard]] u64 read_bytes() const { return read_bytes_; }
  [[nodiscard]] u64 copy_bytes() const { return copy_bytes_; }  // per pass, each way

 private:
  [[nodiscard]] double read_pass();       // seconds
  [[nodiscard]] double page_read_pass();  // seconds
  [[nodiscard]] double copy_pass();  // seconds

  int threads_;
  u64 cache_bytes_;
  u64 read_bytes_;
  u64 copy_bytes_;
  std::unique_ptr<u64[]> read_words_;
  std::vector<u32> page_order_;  // each thread's pages, shuffled within its share
  u64 sink_ = 0;  // keeps the sums alive
};

}  // namespace ptwalk
