// host/atomic_file.cpp — temporary-then-rename output files.
#include "atomic_file.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include "memory_image.hpp"

namespace ptwalk {

atomic_output_file::atomic_output_file(std::filesystem::path target)
    : target_(std::move(target)),
      temporary_(target_.parent_path() /
                 fmt::format(".{}.tmp-{}", target_.filename().string(), ::getpid())) {
  stream_.open(temporary_, std::ios::binary | std::ios::trunc);
  if (!stream_)
    throw input_error(fmt::format("{}: cannot create output file", target_.string()));
}

atomic_output_file::~atomic_output_file() {
  if (!committed_) {
    stream_.close();
    std::error_code ignored;
    std::filesystem::remove(temporary_, ignored);
  }
}

void atomic_output_file::commit() {
  stream_.flush();
  const bool ok = static_cast<bool>(stream_);
  stream_.close();
  if (!ok) throw input_error(fmt::format("{}: write failed", target_.string()));
  std::error_code ec;
  std::filesystem::rename(temporary_, target_, ec);
  if (ec) throw input_error(fmt::format("{}: cannot rename output into place: {}", target_.string(), ec.message()));
  committed_ = true;
}

}  // namespace ptwalk
