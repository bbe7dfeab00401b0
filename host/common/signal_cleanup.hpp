// host/common/signal_cleanup.hpp — what a fatal signal must undo, done async-signal-safely.
//
// A run killed by SIGINT/SIGTERM (or crashing) must not leave its temporary
// outputs behind, and a mapped input truncated while it is read (SIGBUS)
// must end in a one-line error naming the file rather than a silent death.
// Both need state a signal handler can read without locks or allocation:
// registrations live in fixed, lock-free slot tables that the handler scans.
// The handler only unlinks/rmdirs registered temporaries, writes a message
// and exits or re-raises the signal; the CLI installs it, libraries only
// register (tests and other hosts keep their own signal dispositions).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace ptwalk {

namespace detail {
// What the signal handler reads of a registration.
struct temporary_entry {
  const char* path;
  bool directory;
};
struct mapping_entry {
  const char* path;
  const char* begin;
  std::size_t size;
};
}  // namespace detail

// While it lives, `path` (a file, or a directory whose contents go with it)
// is removed if the process dies of a signal the handler catches.
class registered_temporary {
 public:
  registered_temporary(const std::filesystem::path& path, bool directory);
  ~registered_temporary();
  registered_temporary(const registered_temporary&) = delete;
  registered_temporary& operator=(const registered_temporary&) = delete;

 private:
  std::string path_;
  detail::temporary_entry entry_;
  std::size_t slot_;
};

// While it lives, a SIGBUS at an address inside [begin, begin + size)
// becomes "ptwalk: PATH: the file shrank while it was read", exit status 1.
class registered_mapping {
 public:
  registered_mapping(const std::filesystem::path& path, const void* begin, std::size_t size);
  ~registered_mapping();
  registered_mapping(const registered_mapping&) = delete;
  registered_mapping& operator=(const registered_mapping&) = delete;

 private:
  std::string path_;
  detail::mapping_entry entry_;
  std::size_t slot_;
};

// Installs the handler for SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE,
// SIGXFSZ, SIGBUS, SIGSEGV and SIGABRT. Every one removes the registered
// temporaries; SIGBUS inside a registered mapping then exits 1 with its
// message, every other signal is re-raised with its default action, so a
// parent still sees the process die of it.
void install_signal_cleanup();

// Removes the registered temporaries, writes "ptwalk: MESSAGE" on stderr
// and exits 1 without unwinding: for a thread that must end the process
// while others are blocked mid-read (lazy_mapping's pager).
[[noreturn]] void exit_after_cleanup(const char* message);

}  // namespace ptwalk
