// host/common/disk_usage.hpp — what files occupy on disk, beside their logical size.
//
// Guest images are sparse (a compacted --keep-pa image keeps each frame at its
// physical address, with holes between), so a file's size says little about
// the disk it takes: reports give both, the allocated bytes from st_blocks.
#pragma once

#include <filesystem>
#include <span>

#include <nlohmann/json.hpp>

#include "ptwalk/config.hpp"

namespace ptwalk {

struct disk_usage {
  u64 files = 0;
  u64 file_bytes = 0;       // logical sizes (st_size)
  u64 allocated_bytes = 0;  // blocks on disk (st_blocks × 512)

  [[nodiscard]] nlohmann::json to_json() const;
};

// The files' usage, each file counted once however often (or by whatever
// name) it is listed. Throws input_error naming a file that cannot be stat'ed.
[[nodiscard]] disk_usage disk_usage_of(std::span<const std::filesystem::path> files);

// Every regular file directly inside `dir`.
[[nodiscard]] disk_usage disk_usage_of_dir(const std::filesystem::path& dir);

}  // namespace ptwalk
