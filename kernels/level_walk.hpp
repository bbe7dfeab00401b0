// kernels/level_walk.hpp — the level-synchronous batch walk, for every Thrust device system.
//
// One algorithm source (detail/level_walk_impl.hpp) is built twice: for CUDA
// by nvcc (cuda/, the `cuda` backend) and for Thrust's OMP system by g++
// (level_walk_cpu.cpp), which runs in CI without a GPU and is compared record
// for record with the reference. Inputs are plain data so this library needs
// nothing from host/: a snapshot is its format, its roots and a function
// that finds the bytes behind a guest-physical range.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk {

// Where a snapshot's tables are read from: bytes_at returns [pa, pa+len) if
// one backed range of the image holds all of it, else nullptr.
struct table_source {
  const void* context = nullptr;
  const std::byte* (*bytes_at)(const void* context, u64 pa, u64 len) = nullptr;
};

struct walk_input {
  paging_format format = paging_format::x86_64;
  std::span<const u64> roots;  // primacy order, may carry CR3 flag bits
  table_source tables;
};

// Where the time of a batch walk went, summed over calls; phases may overlap
// (tables of the next chunk are gathered while the current one is walked).
struct walk_profile {
  double gather_s = 0;    // host: copying frontier tables into staging buffers
  double upload_s = 0;    // host→device copies of table pages
  double kernel_s = 0;    // expansion, owner resolution, record sort on the device
  double download_s = 0;  // device→host: frontiers and records
  u64 tables = 0;         // page-table pages walked (each read once)
  u64 bytes_uploaded = 0;
  u64 records = 0;
  u64 batches = 0;

  walk_profile& operator+=(const walk_profile& o) {
    gather_s += o.gather_s;
    upload_s += o.upload_s;
    kernel_s += o.kernel_s;
    download_s += o.download_s;
    tables += o.tables;
    bytes_uploaded += o.bytes_uploaded;
    records += o.records;
    batches += o.batches;
    return *this;
  }
};

struct level_walk_options {
  va_range range{};
  walk_profile* profile = nullptr;
  // Spaces per batch; 0 = as many as the device's memory allows.
  u64 max_batch_spaces = 0;
  // Frontier tables gathered and uploaded per step (4 KiB each).
  std::size_t chunk_tables = 16384;
};

// The CPU build (Thrust OMP system) of the GPU algorithm.
[[nodiscard]] std::vector<snapshot_walk> level_walk_thrust_cpu(std::span<const walk_input> snapshots,
                                                               const level_walk_options& options);

}  // namespace ptwalk
