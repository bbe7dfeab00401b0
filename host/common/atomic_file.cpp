// host/atomic_file.cpp — temporary-then-rename output files.
#include "common/atomic_file.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "input/memory_image.hpp"

namespace ptwalk {

namespace {

// A device or pipe (/dev/null, /dev/stdout, a FIFO) is written as it is:
// renaming a file over it would replace the device node.
bool is_special_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  return !ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status) &&
         !std::filesystem::is_directory(status);
}

}  // namespace

atomic_output_file::atomic_output_file(std::filesystem::path target)
    : target_(std::move(target)),
      temporary_(is_special_file(target_)
                     ? target_
                     : target_.parent_path() / fmt::format(".{}.tmp-{}", target_.filename().string(), ::getpid())) {
  stream_.open(temporary_, std::ios::binary | std::ios::trunc);
  if (!stream_)
    throw input_error(fmt::format("{}: cannot create output file", target_.string()));
}

atomic_output_file::~atomic_output_file() {
  if (!committed_ && temporary_ != target_) {
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
  if (temporary_ != target_) {  // else a device or pipe, written directly
    std::error_code ec;
    std::filesystem::rename(temporary_, target_, ec);
    if (ec) throw input_error(fmt::format("{}: cannot rename output into place: {}", target_.string(), ec.message()));
  }
  committed_ = true;
}

namespace {

// "out/" and "out" name the same directory; the temporary goes beside it.
std::filesystem::path directory_target(const std::filesystem::path& target) {
  std::filesystem::path out = std::filesystem::absolute(target).lexically_normal();
  return out.has_filename() ? out : out.parent_path();
}

}  // namespace

atomic_output_dir::atomic_output_dir(std::filesystem::path target)
    : target_(directory_target(target)),
      temporary_(target_.parent_path() /
                 fmt::format(".{}.tmp-{}", target_.filename().string(), ::getpid())) {
  std::error_code ec;
  std::filesystem::remove_all(temporary_, ec);  // left by an earlier, killed run of this pid
  // `--out a/b/fleet` may name a directory whose parents do not exist yet.
  std::filesystem::create_directories(target_.parent_path(), ec);
  if (!std::filesystem::create_directory(temporary_, ec))
    throw input_error(fmt::format("{}: cannot create output directory: {}", target_.string(),
                                  ec ? ec.message() : "exists"));
}

atomic_output_dir::~atomic_output_dir() {
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove_all(temporary_, ignored);
  }
}

void atomic_output_dir::commit() {
  std::error_code ec;
  if (std::filesystem::exists(target_, ec)) {
    if (!std::filesystem::is_directory(target_, ec))
      throw input_error(fmt::format("{}: exists and is not a directory", target_.string()));
    if (::renameat2(AT_FDCWD, temporary_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
      committed_ = true;
      std::filesystem::remove_all(temporary_, ec);  // now the old directory
      return;
    }
    if (errno != EINVAL && errno != ENOSYS)
      throw input_error(fmt::format("{}: cannot swap the new directory into place: {}", target_.string(),
                                    std::strerror(errno)));
    // A file system without RENAME_EXCHANGE: move the old one aside first,
    // and back if the new one cannot take its place.
    const std::filesystem::path old = temporary_.string() + ".old";
    std::filesystem::rename(target_, old, ec);
    if (!ec) {
      std::filesystem::rename(temporary_, target_, ec);
      std::error_code ignored;
      if (ec) std::filesystem::rename(old, target_, ignored);
      else std::filesystem::remove_all(old, ignored);
    }
    if (ec) throw input_error(fmt::format("{}: cannot move the new directory into place: {}", target_.string(), ec.message()));
    committed_ = true;
    return;
  }
  std::filesystem::rename(temporary_, target_, ec);
  if (ec) throw input_error(fmt::format("{}: cannot move the new directory into place: {}", target_.string(), ec.message()));
  committed_ = true;
}

void check_output_dir(const std::filesystem::path& dir, bool replace) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return;
  if (!std::filesystem::is_directory(dir, ec))
    throw input_error(fmt::format("{}: exists and is not a directory", dir.string()));
  if (!replace && !std::filesystem::is_empty(dir, ec))
    throw input_error(fmt::format("{}: exists and is not empty (use --force to replace it)", dir.string()));
}

}  // namespace ptwalk
