// host/archive/durable_file.hpp — the file-system steps that make archive updates crash-safe.
//
// Every archive file is written under a temporary name, fsynced and renamed
// into place, then its directory is fsynced: after a crash the file is
// either absent or whole. Locks are flock(2) locks, released when the
// process dies, so a killed writer never leaves the archive locked.
// crash_point() lets the crash-safety tests kill a writer at a named step
// (PTWALK_ARCHIVE_CRASH_AT=step sends the process SIGKILL there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace ptwalk::archive {

// An open file descriptor, closed on destruction.
class file_descriptor {
 public:
  file_descriptor() = default;
  explicit file_descriptor(int fd) : fd_(fd) {}
  ~file_descriptor();
  file_descriptor(file_descriptor&& other) noexcept : fd_(other.release()) {}
  file_descriptor& operator=(file_descriptor&& other) noexcept;

  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Opens (creating) `path` for writing, truncated; throws input_error.
[[nodiscard]] file_descriptor create_file(const std::filesystem::path& path);
// Writes all of `bytes` at `offset`; throws input_error naming `path`.
void write_at(int fd, std::span<const std::byte> bytes, std::uint64_t offset, const std::filesystem::path& path);
void sync_file(int fd, const std::filesystem::path& path);
void sync_directory(const std::filesystem::path& dir);
// Writes `bytes` to `target` whole or not at all, durably (temp, fsync, rename, fsync dir).
void write_file_durably(const std::filesystem::path& target, std::span<const std::byte> bytes);
// Reads a whole small file; throws input_error naming it.
[[nodiscard]] std::vector<std::byte> read_whole_file(const std::filesystem::path& path);

// An flock on `path` (created if missing), held until destruction.
class file_lock {
 public:
  enum class mode { shared, exclusive };
  file_lock(const std::filesystem::path& path, mode how);

 private:
  file_descriptor fd_;
};

// Test hook: SIGKILLs the process when PTWALK_ARCHIVE_CRASH_AT names `step`.
void crash_point(std::string_view step);

}  // namespace ptwalk::archive
