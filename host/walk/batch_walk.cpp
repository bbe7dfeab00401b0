// host/batch_walk.cpp — backend selection for batch walks.
#include "walk/batch_walk.hpp"

#include <stdexcept>

#include <fmt/format.h>

#include "walk/cpu_walk.hpp"
#include "ptwalk/walk.hpp"
#include "input/table_views.hpp"
#if PTWALK_WITH_CUDA
#include "cuda/cuda_walk.hpp"
#endif

namespace ptwalk {

std::string_view backend_name(walk_backend backend) {
  switch (backend) {
    case walk_backend::reference: return "reference";
    case walk_backend::cpu: return "cpu";
    case walk_backend::cuda: return "cuda";
    case walk_backend::automatic: return "auto";
    case walk_backend::thrust_cpu: return "thrust-cpu";
  }
  return "?";
}

std::optional<walk_backend> parse_backend(std::string_view name) {
  for (auto b : {walk_backend::reference, walk_backend::cpu, walk_backend::cuda, walk_backend::automatic,
                 walk_backend::thrust_cpu})
    if (backend_name(b) == name) return b;
  return std::nullopt;
}

bool backend_compiled(walk_backend backend) {
  return backend != walk_backend::cuda || PTWALK_WITH_CUDA;
}

bool gpu_visible() {
#if PTWALK_WITH_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::string gpu_description() {
#if PTWALK_WITH_CUDA
  return cuda_device_description();
#else
  return "none (built without CUDA)";
#endif
}

walk_backend resolve_backend(walk_backend backend) {
  if (backend != walk_backend::automatic) return backend;
  return gpu_visible() ? walk_backend::cuda : walk_backend::cpu;
}

snapshot_walk reference_walk(const loaded_snapshot& snapshot, va_range range) {
  return visit_format(snapshot.format(), [&]<class F>() {
    return walk_va_spaces<F>(image_table_view(snapshot.image), snapshot.roots(), snapshot.upper_roots(), range);
  });
}

namespace {

level_walk_options level_options(const walk_options& options) {
  level_walk_options out{.range = options.range, .profile = options.profile,
                         .max_batch_spaces = options.max_batch_spaces,
                         .device_memory_limit = options.device_memory_limit};
  if (options.chunk_tables != 0) out.chunk_tables = options.chunk_tables;
  return out;
}

// The level-synchronous walk reads images through this, so kernels/ needs
// nothing from host/.
std::vector<walk_input> level_walk_inputs(std::span<const loaded_snapshot> snapshots) {
  std::vector<walk_input> inputs;
  inputs.reserve(snapshots.size());
  for (const auto& s : snapshots)
    inputs.push_back({s.format(), s.roots(), s.upper_roots(),
                      {&s.image,
                       [](const void* image, u64 pa, u64 len) {
                         return static_cast<const memory_image*>(image)->bytes_at(pa, len);
                       },
                       [](const void* image, const table_source::range_visitor& visit) {
                         for (const image_region& r : static_cast<const memory_image*>(image)->regions())
                           visit(r.gpa, r.size);
                       }}});
  return inputs;
}

}  // namespace

std::unique_ptr<resident_fleet> make_resident_fleet(std::span<const loaded_snapshot> snapshots,
                                                    walk_backend backend, u64 device_memory_limit) {
  switch (resolve_backend(backend)) {
    case walk_backend::thrust_cpu:
      return make_resident_fleet_thrust_cpu(level_walk_inputs(snapshots), device_memory_limit);
    case walk_backend::cuda:
#if PTWALK_WITH_CUDA
      return make_resident_fleet_cuda(level_walk_inputs(snapshots), device_memory_limit);
#else
      throw std::runtime_error("walk backend cuda: this ptwalk was built without CUDA (-DPTWALK_CUDA=ON)");
#endif
    default:
      throw std::invalid_argument(fmt::format("resident walk: backend {} has no device to keep images on",
                                              backend_name(backend)));
  }
}

std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots, walk_backend backend,
                                          va_range range) {
  return walk_snapshots(snapshots, backend, walk_options{.range = range});
}

std::vector<snapshot_walk> walk_snapshots(std::span<const loaded_snapshot> snapshots, walk_backend backend,
                                          const walk_options& options) {
  switch (resolve_backend(backend)) {
    case walk_backend::reference: {
      std::vector<snapshot_walk> out;
      out.reserve(snapshots.size());
      for (const auto& s : snapshots) out.push_back(reference_walk(s, options.range));
      return out;
    }
    case walk_backend::cpu:
      return cpu_walk(snapshots, {.range = options.range, .threads = options.threads, .profile = options.profile});
    case walk_backend::thrust_cpu:
      return level_walk_thrust_cpu(level_walk_inputs(snapshots), level_options(options));
    case walk_backend::cuda:
#if PTWALK_WITH_CUDA
      return level_walk_cuda(level_walk_inputs(snapshots), level_options(options));
#else
      throw std::runtime_error("walk backend cuda: this ptwalk was built without CUDA (-DPTWALK_CUDA=ON)");
#endif
    case walk_backend::automatic: break;
  }
  throw std::logic_error("walk_snapshots: unresolved backend");
}

}  // namespace ptwalk
