// kernels/root_scan.hpp — root discovery's page scan as a Thrust algorithm, for every device system.
//
// Like the walk (level_walk.hpp), one source (detail/root_scan_impl.hpp) is
// built twice: for CUDA by nvcc (cuda/cuda_root_scan.cu, the `cuda` scan
// backend) and for Thrust's OMP system by g++ (root_scan_cpu.cpp,
// `thrust-cpu`), which CI compares with the host's OpenMP scan. The image
// streams through the device in chunks of whole pages — gathered into
// pinned staging on the host while the previous chunk is copied and
// tested — every page is tested by test_page (root_scan_steps.hpp), and
// only the hits are selected and copied back. Inputs are plain data, so
// this needs nothing from host/.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "kernels/root_scan_steps.hpp"

namespace ptwalk {

// Whole 4 KiB pages in host memory: [pa, pa + pages × 4 KiB) at `bytes`.
struct page_run {
  u64 pa = 0;
  const std::byte* bytes = nullptr;
  u64 pages = 0;
};

struct root_scan_input {
  paging_format format = paging_format::x86_64;
  std::span<const page_run> runs;  // ascending pa, disjoint
  page_test_ref test;              // host pointers; copied to the device once per scan
};

// Where a scan's time went, summed over scans. Gathers overlap the device's
// work on the previous chunk.
struct root_scan_profile {
  double setup_s = 0;     // device start, predicate inputs uploaded, buffers allocated
  double gather_s = 0;    // host: pages copied into staging
  double upload_s = 0;    // host→device copies of the pages
  double kernel_s = 0;    // test and select, timed on the device
  double download_s = 0;  // device→host: the hits
  u64 pages = 0;
  u64 bytes_uploaded = 0;
  u64 hits = 0;
  u64 chunks = 0;

  root_scan_profile& operator+=(const root_scan_profile& o) {
    setup_s += o.setup_s;
    gather_s += o.gather_s;
    upload_s += o.upload_s;
    kernel_s += o.kernel_s;
    download_s += o.download_s;
    pages += o.pages;
    bytes_uploaded += o.bytes_uploaded;
    hits += o.hits;
    chunks += o.chunks;
    return *this;
  }
};

struct root_scan_options {
  // Pages per chunk: 64 MiB, so a chunk's copy (milliseconds over PCIe)
  // dwarfs the per-chunk launch and synchronization.
  std::size_t chunk_pages = 16384;
  unsigned threads = 0;  // host threads gathering; 0 = every core
  root_scan_profile* profile = nullptr;
};

// The CPU build (Thrust OMP system) of the GPU scan. Hits in ascending pa.
[[nodiscard]] std::vector<root_scan_hit> root_scan_thrust_cpu(const root_scan_input& input,
                                                              const root_scan_options& options);

}  // namespace ptwalk
