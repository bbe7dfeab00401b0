// host/cluster/gpu_choice.cpp — the launcher's GPU, or local rank modulo the node's GPUs.
#include "cluster/gpu_choice.hpp"

#include <cstdlib>
#include <filesystem>
#include <iterator>

#include <fmt/format.h>

namespace ptwalk {

gpu_choice choose_gpu(std::optional<std::size_t> local_rank, const environment& env, std::size_t devices_on_node) {
  if (const auto visible = env("CUDA_VISIBLE_DEVICES"))
    return {fmt::format("the first of CUDA_VISIBLE_DEVICES={} (the launcher's)", *visible), std::nullopt};
  if (devices_on_node == 0) return {"none on this node", std::nullopt};
  if (!local_rank) return {fmt::format("device 0 of {} (no local rank given)", devices_on_node), std::nullopt};
  const std::size_t device = *local_rank % devices_on_node;
  return {fmt::format("device {} of {} (local rank {})", device, devices_on_node, *local_rank),
          std::to_string(device)};
}

std::size_t nvidia_devices_on_node() {
  std::error_code ec;
  const std::filesystem::directory_iterator gpus("/proc/driver/nvidia/gpus", ec);
  return ec ? 0 : static_cast<std::size_t>(std::distance(gpus, std::filesystem::directory_iterator{}));
}

void apply_gpu_choice(const gpu_choice& choice) {
  if (!choice.set_visible) return;
  // The driver lists devices by PCI bus; CUDA's default order is fastest first.
  ::setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 1);
  ::setenv("CUDA_VISIBLE_DEVICES", choice.set_visible->c_str(), 1);
}

}  // namespace ptwalk
