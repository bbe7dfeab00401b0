// cuda/cuda_walk.hpp — the `cuda` backend: the level-synchronous walk on an NVIDIA GPU.
//
// Plain C++ declarations (host/ includes this with g++); the implementation
// is cuda_walk.cu, built by nvcc for CMAKE_CUDA_ARCHITECTURES (sm_90 by
// default). The algorithm is kernels/detail/level_walk_impl.hpp, the same
// source the thrust-cpu build runs in CI.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/level_walk.hpp"

namespace ptwalk {

// Devices the CUDA runtime sees; 0 on any error (no driver, no device).
[[nodiscard]] int cuda_device_count();
// Name, compute capability and memory of device 0, or why there is none.
[[nodiscard]] std::string cuda_device_description();
// Device-to-device copy bandwidth of device 0 in bytes/s, read + write (one
// copy of max(1 GiB, 16x L2), best of a few), for reporting walk throughput
// against what bounds it.
[[nodiscard]] double cuda_copy_bandwidth();
// Host-to-device bandwidth from pinned memory (1 GiB copies), bytes/s.
[[nodiscard]] double cuda_upload_bandwidth();

// Walks on device 0. Throws std::runtime_error naming the CUDA call and the
// batch on any CUDA error, or when no device is visible.
[[nodiscard]] std::vector<snapshot_walk> level_walk_cuda(std::span<const walk_input> snapshots,
                                                         const level_walk_options& options);

// Uploads the snapshots' images to device 0 for repeated resident walks
// (kernels/level_walk.hpp); `device_memory_limit` as for the walk. While it
// lives it holds the process's CUDA context lock: other CUDA walks of this
// process wait for it. Throws resident_does_not_fit when the images do not
// fit, std::runtime_error without a device.
[[nodiscard]] std::unique_ptr<resident_fleet> make_resident_fleet_cuda(std::span<const walk_input> snapshots,
                                                                       u64 device_memory_limit = 0);

}  // namespace ptwalk
