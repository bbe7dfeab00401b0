// kernels/level_walk_cpu.cpp — the GPU walk algorithm built for Thrust's OMP device system.
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: the same steps and
// orchestration as the CUDA backend, with "device" memory in host RAM. CI
// runs it against the reference, which is how the GPU algorithm is tested
// without a GPU; it is also measured as a candidate cpu backend (README).
#include "kernels/detail/level_walk_impl.hpp"
#include "kernels/detail/omp_system.hpp"
#include "kernels/detail/resident_image.hpp"

namespace ptwalk {

std::vector<snapshot_walk> level_walk_thrust_cpu(std::span<const walk_input> snapshots,
                                                 const level_walk_options& options) {
  kernels::detail::omp_system system(options.device_memory_limit);
  return kernels::detail::level_walk(system, snapshots, options);
}

std::unique_ptr<resident_fleet> make_resident_fleet_thrust_cpu(std::span<const walk_input> snapshots,
                                                               u64 device_memory_limit) {
  return std::make_unique<kernels::detail::resident_fleet_on<kernels::detail::omp_system>>(snapshots,
                                                                                           device_memory_limit);
}

}  // namespace ptwalk
