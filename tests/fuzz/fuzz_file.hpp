// tests/fuzz/fuzz_file.hpp — what every fuzz target shares.
//
// Parsers that read files (ELF cores, kdump files) get the fuzz input as a
// real file, since inputs are mapped, never read from memory; one file per
// process in /dev/shm (or the temp directory), rewritten for each input.
// Bad input must end in input_error; anything else escapes and the fuzzer
// reports it as a crash.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ptwalk::fuzz {

// The fuzz input written to this process's scratch file, whose path is returned.
inline const std::filesystem::path& as_file(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path path = [] {
    const std::filesystem::path dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    return dir / ("ptwalk-fuzz-" + std::to_string(::getpid()));
  }();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) __builtin_trap();
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) __builtin_trap();
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return path;
}

}  // namespace ptwalk::fuzz
