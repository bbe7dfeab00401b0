// host/archive/durable_file.cpp — fsync, rename and flock for the archive.
#include "archive/durable_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "input/memory_image.hpp"

namespace ptwalk::archive {

namespace {

[[noreturn]] void fail(const std::filesystem::path& path, std::string_view what) {
  throw input_error(fmt::format("{}: {}: {}", path.string(), what, std::strerror(errno)));
}

}  // namespace

file_descriptor::~file_descriptor() {
  if (fd_ >= 0) ::close(fd_);
}

file_descriptor& file_descriptor::operator=(file_descriptor&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

file_descriptor create_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create");
  return file_descriptor(fd);
}

void write_at(int fd, std::span<const std::byte> bytes, std::uint64_t offset, const std::filesystem::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(path, "write failed");
    bytes = bytes.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

void sync_file(int fd, const std::filesystem::path& path) {
  if (::fsync(fd) != 0) fail(path, "fsync failed");
}

void sync_directory(const std::filesystem::path& dir) {
  const file_descriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) fail(dir, "cannot open directory");
  sync_file(fd.get(), dir);
}

void write_file_durably(const std::filesystem::path& target, std::span<const std::byte> bytes) {
  const auto temporary = target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid());
  {
    const file_descriptor fd = create_file(temporary);
    write_at(fd.get(), bytes, 0, temporary);
    sync_file(fd.get(), temporary);
  }
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    errno = err;
    fail(target, "cannot rename into place");
  }
  sync_directory(target.parent_path());
}

std::vector<std::byte> read_whole_file(const std::filesystem::path& path) {
  const file_descriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(path, "cannot open");
  std::vector<std::byte> out;
  std::byte buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "read failed");
    if (n == 0) return out;
    out.insert(out.end(), buffer, buffer + n);
  }
}

file_lock::file_lock(const std::filesystem::path& path, mode how)
    : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
  if (fd_.get() < 0) fail(path, "cannot open lock file");
  while (::flock(fd_.get(), how == mode::shared ? LOCK_SH : LOCK_EX) != 0)
    if (errno != EINTR) fail(path, "cannot lock");
}

void crash_point(std::string_view step) {
  static const char* const requested = std::getenv("PTWALK_ARCHIVE_CRASH_AT");
  if (requested != nullptr && step == requested) ::kill(::getpid(), SIGKILL);
}

}  // namespace ptwalk::archive
