// cuda/cuda_root_scan.hpp — the `cuda` backend of root discovery's page scan.
//
// Plain C++ declarations (host/ includes this with g++); the implementation
// is cuda_root_scan.cu, built by nvcc. The algorithm is
// kernels/detail/root_scan_impl.hpp, the source the thrust-cpu build runs in CI.
#pragma once

#include <vector>

#include "kernels/root_scan.hpp"

namespace ptwalk {

// Scans on device 0. Throws std::runtime_error naming the CUDA call and the
// chunk on any CUDA error, or when no device is visible.
[[nodiscard]] std::vector<root_scan_hit> root_scan_cuda(const root_scan_input& input,
                                                        const root_scan_options& options);

}  // namespace ptwalk
