// kernels/root_scan_cpu.cpp — the GPU root scan built for Thrust's OMP device system (`thrust-cpu`).
//
// Compiled by g++ with THRUST_DEVICE_SYSTEM=OMP: the same chunking, staging,
// per-page step and selection as the CUDA scan, with "device" memory in host
// RAM. Tests compare its hits with the host's OpenMP scan, which is how the
// GPU scan is checked without a GPU; benchmarks measure it as well.
#include "kernels/detail/omp_system.hpp"
#include "kernels/detail/root_scan_impl.hpp"

namespace ptwalk {

std::vector<root_scan_hit> root_scan_thrust_cpu(const root_scan_input& input, const root_scan_options& options) {
  kernels::detail::omp_system system;
  return kernels::detail::scan_pages(system, input, options);
}

}  // namespace ptwalk
