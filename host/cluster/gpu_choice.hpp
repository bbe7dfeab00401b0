// host/cluster/gpu_choice.hpp — which GPU a process of a cluster job uses.
//
// The launcher's choice wins: when CUDA_VISIBLE_DEVICES is set (Slurm's
// --gpus-per-task, a site's wrapper) the process uses the first device it
// names. Otherwise a process with a local rank (several ranks on one node)
// takes device local_rank mod devices, by setting CUDA_VISIBLE_DEVICES
// (in PCI bus order) before anything starts the CUDA runtime, so every
// backend that uses "device 0" uses that one.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "cluster/shard.hpp"

namespace ptwalk {

struct gpu_choice {
  std::string description;                  // for the log
  std::optional<std::string> set_visible;   // CUDA_VISIBLE_DEVICES to set, if this process chooses
};

[[nodiscard]] gpu_choice choose_gpu(std::optional<std::size_t> local_rank, const environment& env,
                                    std::size_t devices_on_node);
// NVIDIA GPUs the driver lists on this node (/proc/driver/nvidia/gpus), without starting CUDA.
[[nodiscard]] std::size_t nvidia_devices_on_node();
// Sets the chosen CUDA_VISIBLE_DEVICES (and CUDA_DEVICE_ORDER=PCI_BUS_ID) in this process.
void apply_gpu_choice(const gpu_choice& choice);

}  // namespace ptwalk
