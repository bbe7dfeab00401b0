// host/common/disk_usage.cpp — file sizes and allocated blocks, each file once.
#include "common/disk_usage.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "input/memory_image.hpp"

namespace ptwalk {

nlohmann::json disk_usage::to_json() const {
  return {{"files", files}, {"file_bytes", file_bytes}, {"allocated_bytes", allocated_bytes}};
}

disk_usage disk_usage_of(std::span<const std::filesystem::path> files) {
  disk_usage out;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& file : files) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0)
      throw input_error(fmt::format("{}: cannot stat: {}", file.string(), std::strerror(errno)));
    if (!seen.emplace(st.st_dev, st.st_ino).second) continue;
    ++out.files;
    out.file_bytes += static_cast<u64>(st.st_size);
    out.allocated_bytes += static_cast<u64>(st.st_blocks) * 512;  // POSIX: st_blocks counts 512-byte units
  }
  return out;
}

disk_usage disk_usage_of_dir(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  return disk_usage_of(files);
}

}  // namespace ptwalk
