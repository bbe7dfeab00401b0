// host/common/atomic_file.hpp — outputs that appear whole or not at all.
//
// A regular-file output (or a new one) is written to a temporary name
// beside the target and renamed over it on commit(); if the writer is
// destroyed without commit (an error, an exception) or the process dies of
// a signal, the temporary is removed, so a failed run never leaves a
// half-written file and never damages an existing one. Anything else —
// `-` (stdout), a character or block device, a FIFO, a Unix socket — is
// not a file to replace: it is written through directly, and /dev/null
// stays /dev/null. atomic_output_dir does the same for a directory of
// outputs. Temporaries are named `.TARGET.tmp-PID`; a later run removes
// those of its own target that no live process owns.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "common/signal_cleanup.hpp"

namespace ptwalk {

namespace detail {
// A stream buffer over a file descriptor that keeps the errno of the first failed write.
class fd_streambuf : public std::streambuf {
 public:
  fd_streambuf();
  // Writes go to `fd` from now on.
  void attach(int fd) { fd_ = fd; }
  [[nodiscard]] int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override;
  int sync() override;
  std::streamsize xsputn(const char* data, std::streamsize size) override;

 private:
  bool drain();
  bool write_all(const char* data, std::size_t size);

  int fd_ = -1;
  int error_ = 0;
  std::vector<char> buffer_;
};
}  // namespace detail

class atomic_output_file {
 public:
  explicit atomic_output_file(std::filesystem::path target);
  ~atomic_output_file();
  atomic_output_file(const atomic_output_file&) = delete;
  atomic_output_file& operator=(const atomic_output_file&) = delete;

  [[nodiscard]] std::ostream& stream() { return stream_; }
  // Flushes, checks for write errors and puts the output in place.
  void commit();

 private:
  [[noreturn]] void fail(std::string_view what, int error) const;

  std::filesystem::path target_;
  std::string shown_;  // the target as messages name it ("stdout" for -)
  std::filesystem::path temporary_;  // empty when written through
  std::optional<registered_temporary> registration_;
  int fd_ = -1;
  bool owns_fd_ = true;
  detail::fd_streambuf buffer_;
  std::ostream stream_;
  bool committed_ = false;
};

// A directory of outputs, built in a temporary directory beside the target
// and put in place by commit(). An existing target is swapped with the new
// one in a single rename (RENAME_EXCHANGE) and removed afterwards, so the
// target is at every moment the old directory or the new one, never a mix.
// Whether an existing target may be replaced is the caller's decision.
class atomic_output_dir {
 public:
  explicit atomic_output_dir(std::filesystem::path target);
  ~atomic_output_dir();
  atomic_output_dir(const atomic_output_dir&) = delete;
  atomic_output_dir& operator=(const atomic_output_dir&) = delete;

  // Where to write the outputs until commit().
  [[nodiscard]] const std::filesystem::path& path() const { return temporary_; }
  // Where `staged` (a path under path()) will be after commit(): what
  // messages about it should name.
  [[nodiscard]] std::filesystem::path final_path(const std::filesystem::path& staged) const;
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;
  std::optional<registered_temporary> registration_;
  bool committed_ = false;
};

// Before an atomic_output_dir for `dir`: throws input_error when `dir` exists
// and is not a directory, or is not empty and `replace` is false.
void check_output_dir(const std::filesystem::path& dir, bool replace);
// Removes `.TARGET.tmp-PID` files and directories beside `target` that no
// live process owns (left by a run that was killed with SIGKILL or lost power).
void remove_stale_temporaries(const std::filesystem::path& target);

}  // namespace ptwalk
