// host/atomic_file.hpp — outputs that appear whole or not at all.
//
// Output is written to a temporary name beside the target and renamed over
// it on commit(); if the writer is destroyed without commit (an error, an
// exception), the temporary is removed, so a failed run never leaves a
// half-written file and never damages an existing one. A target that is a
// device or a pipe (/dev/null, a FIFO) is written directly instead: renaming
// over it would replace the device node. atomic_output_dir
// does the same for a directory of outputs.
#pragma once

#include <filesystem>
#include <fstream>

namespace ptwalk {

class atomic_output_file {
 public:
  explicit atomic_output_file(std::filesystem::path target);
  ~atomic_output_file();
  atomic_output_file(const atomic_output_file&) = delete;
  atomic_output_file& operator=(const atomic_output_file&) = delete;

  [[nodiscard]] std::ofstream& stream() { return stream_; }
  [[nodiscard]] const std::filesystem::path& temporary_path() const { return temporary_; }
  // Flushes, checks for write errors and renames onto the target.
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;
  std::ofstream stream_;
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
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;
  bool committed_ = false;
};

// Before an atomic_output_dir for `dir`: throws input_error when `dir` exists
// and is not a directory, or is not empty and `replace` is false.
void check_output_dir(const std::filesystem::path& dir, bool replace);

}  // namespace ptwalk
