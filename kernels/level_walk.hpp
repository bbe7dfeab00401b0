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
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk {

// Where a snapshot's tables are read from: bytes_at returns [pa, pa+len) if
// one backed range of the image holds all of it, else nullptr.
// for_each_range visits every backed range of the image (gpa, size),
// ascending and disjoint: what a resident walk uploads.
struct table_source {
  using range_visitor = std::function<void(u64 gpa, u64 size)>;
  const void* context = nullptr;
  const std::byte* (*bytes_at)(const void* context, u64 pa, u64 len) = nullptr;
  void (*for_each_range)(const void* context, const range_visitor& visit) = nullptr;
};

struct walk_input {
  paging_format format = paging_format::x86_64;
  std::span<const u64> roots;  // primacy order, may carry CR3 / TTBR flag bits
  std::span<const u64> upper_roots;  // AArch64 TTBR1 values, one per root, or empty
  table_source tables;
};

// Where the time of a walk went and what it moved, per phase, from
// counters the walk keeps itself (README "Bytes moved"): bytes over PCIe,
// through device memory and through host memory, counted from the sizes of
// the buffers each step reads and writes. Device phases are timed on the
// device (CUDA events), host phases by the host clock; phases may overlap
// (the next chunk is gathered while the current one is walked).
struct walk_phase {
  std::string name;
  bool on_device = false;  // timed by device events
  double seconds = 0;
  u64 pcie_bytes = 0, device_bytes = 0, host_bytes = 0;
};

struct walk_profile {
  std::vector<walk_phase> phases;
  u64 tables = 0;   // page-table pages walked (each read once)
  u64 records = 0;
  u64 batches = 0;

  // The phase called `name`, added (empty) on first use.
  walk_phase& phase(std::string_view name, bool on_device = false) {
    for (auto& p : phases)
      if (p.name == name) return p;
    return phases.emplace_back(walk_phase{std::string(name), on_device});
  }
  [[nodiscard]] double seconds(std::string_view name) const {
    for (const auto& p : phases)
      if (p.name == name) return p.seconds;
    return 0;
  }
  walk_profile& operator+=(const walk_profile& o) {
    for (const auto& p : o.phases) {
      walk_phase& mine = phase(p.name, p.on_device);
      mine.seconds += p.seconds;
      mine.pcie_bytes += p.pcie_bytes;
      mine.device_bytes += p.device_bytes;
      mine.host_bytes += p.host_bytes;
    }
    tables += o.tables;
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
  // Frontier tables gathered and uploaded per step, in 4 KiB tables: a
  // step of bigger tables (16 or 64 KiB granules) takes proportionally fewer.
  std::size_t chunk_tables = 16384;
  // Device memory the walk may use, in bytes; 0 = what the device has free.
  // Tests set it to exercise batch sizing and the out-of-memory retries.
  u64 device_memory_limit = 0;
};

// The CPU build (Thrust OMP system) of the GPU algorithm.
[[nodiscard]] std::vector<snapshot_walk> level_walk_thrust_cpu(std::span<const walk_input> snapshots,
                                                               const level_walk_options& options);

// A fleet whose images live in device memory (README "Resident walks"):
// made once — every non-zero page of every image uploaded, see
// resident_steps.hpp — then walked any number of times by the same
// level-synchronous algorithm, with the expansion reading the tables in
// place from the resident pages instead of from a copy gathered on the host,
// and the frontier kept on the device across levels. Results are
// byte-identical to the streaming walk.
// The snapshots' roots and images must outlive it; it holds its device
// system (on CUDA, the process's device lock) until destroyed, and is used
// from the thread that made it.
class resident_fleet {
 public:
  virtual ~resident_fleet() = default;
  // Walks every snapshot it was made of (options.device_memory_limit is the
  // one given at upload and is ignored here).
  [[nodiscard]] virtual std::vector<snapshot_walk> walk(const level_walk_options& options) = 0;
  // The one upload: its time and the bytes it moved ("resident upload").
  [[nodiscard]] virtual const walk_profile& upload_profile() const = 0;
  // Device bytes the resident images hold (pages and lookup tables).
  [[nodiscard]] virtual u64 device_bytes() const = 0;
};

// The images do not fit in the device memory the walk may use; the message
// says how much they need and what there is. Walk the fleet streaming.
class resident_does_not_fit : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The CPU build of the resident walk: "device" memory is host RAM within
// `device_memory_limit` bytes (0 = no limit), as for level_walk_thrust_cpu.
[[nodiscard]] std::unique_ptr<resident_fleet> make_resident_fleet_thrust_cpu(std::span<const walk_input> snapshots,
                                                                             u64 device_memory_limit = 0);

}  // namespace ptwalk
