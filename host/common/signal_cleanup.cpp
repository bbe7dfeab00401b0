// host/common/signal_cleanup.cpp — lock-free registries and the fatal-signal handler.
#include "common/signal_cleanup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ptwalk {
namespace {

using detail::mapping_entry;
using detail::temporary_entry;

// Slots of entry pointers that threads claim and release with atomics, read
// by the signal handler without locks. Chunks are allocated on demand and
// never freed, so a pointer the handler loads stays valid. Full (a million
// live registrations): the entry is simply not covered.
template <class Entry>
class slot_table {
 public:
  static constexpr std::size_t none = SIZE_MAX;

  std::size_t add(const Entry* entry) {
    const std::size_t start = hint_.load(std::memory_order_relaxed);
    for (std::size_t n = 0; n < capacity; ++n) {
      const std::size_t slot = (start + n) % capacity;
      auto& cell = chunk_of(slot)[slot % chunk_slots];
      const Entry* expected = nullptr;
      if (cell.compare_exchange_strong(expected, entry, std::memory_order_release)) {
        hint_.store(slot + 1, std::memory_order_relaxed);
        return slot;
      }
    }
    return none;
  }
  void remove(std::size_t slot) {
    if (slot == none) return;
    chunk_of(slot)[slot % chunk_slots].store(nullptr, std::memory_order_release);
  }
  // Async-signal-safe: loads only.
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (const auto& c : chunks_) {
      const chunk* slots = c.load(std::memory_order_acquire);
      if (slots == nullptr) return;  // chunks are filled in order
      for (const auto& cell : *slots)
        if (const Entry* entry = cell.load(std::memory_order_acquire)) fn(*entry);
    }
  }

 private:
  static constexpr std::size_t chunk_slots = 1024, max_chunks = 1024, capacity = chunk_slots * max_chunks;
  using chunk = std::array<std::atomic<const Entry*>, chunk_slots>;

  chunk& chunk_of(std::size_t slot) {
    auto& c = chunks_[slot / chunk_slots];
    chunk* slots = c.load(std::memory_order_acquire);
    if (slots != nullptr) return *slots;
    auto* fresh = new chunk{};
    if (c.compare_exchange_strong(slots, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread was first
    return *slots;
  }

  std::array<std::atomic<chunk*>, max_chunks> chunks_{};
  std::atomic<std::size_t> hint_{0};
};

slot_table<temporary_entry> temporaries;
slot_table<mapping_entry> mappings;

// The layout getdents64 fills (glibc does not declare it).
struct linux_dirent64 {
  std::uint64_t d_ino;
  std::int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// Empties the open directory `dir` with system calls only. Passes repeat
// until one removes nothing: entries shift as they are removed, and a
// worker thread may still be creating files while the handler runs.
void remove_contents(int dir, int depth) {
  alignas(8) char buffer[4096];
  for (int pass = 0; pass < 64; ++pass) {
    bool removed = false;
    ::lseek(dir, 0, SEEK_SET);
    for (long n; (n = ::syscall(SYS_getdents64, dir, buffer, sizeof buffer)) > 0;) {
      for (long at = 0; at < n;) {
        const auto* d = reinterpret_cast<const linux_dirent64*>(buffer + at);
        at += d->d_reclen;
        const char* name = d->d_name;
        if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
        if (::unlinkat(dir, name, 0) == 0) {
          removed = true;
        } else if (errno == EISDIR && depth > 0) {
          const int sub = ::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub >= 0) {
            remove_contents(sub, depth - 1);
            ::close(sub);
          }
          removed |= ::unlinkat(dir, name, AT_REMOVEDIR) == 0;
        }
      }
    }
    if (!removed) return;
  }
}

void remove_temporary(const temporary_entry& t) {
  if (!t.directory) {
    ::unlink(t.path);
    return;
  }
  const int dir = ::open(t.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return;
  remove_contents(dir, 8);
  ::close(dir);
  ::rmdir(t.path);
}

// A message assembled without allocation, for write(2).
class signal_message {
 public:
  signal_message& operator<<(const char* text) {
    while (*text != '\0' && length_ < sizeof text_) text_[length_++] = *text++;
    return *this;
  }
  signal_message& hex(std::uintptr_t value) {
    char digits[2 + 2 * sizeof value + 1] = "0x";
    int n = 2;
    for (int shift = 8 * sizeof value - 4; shift >= 0; shift -= 4)
      if (const unsigned digit = (value >> shift) & 0xf; digit != 0 || n > 2 || shift == 0)
        digits[n++] = "0123456789abcdef"[digit];
    digits[n] = '\0';
    return *this << digits;
  }
  void write_to_stderr() const {
    for (std::size_t done = 0; done < length_;) {
      const ssize_t n = ::write(STDERR_FILENO, text_ + done, length_ - done);
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  char text_[512];
  std::size_t length_ = 0;
};

// SIGBUS inside a mapped input: the file shrank under its mapping.
[[noreturn]] void exit_truncated_input(const mapping_entry& m, const char* address) {
  signal_message message;
  (message << "ptwalk: " << m.path << ": the file shrank while it was read (no data at offset ")
      .hex(static_cast<std::uintptr_t>(address - m.begin))
      << ")\n";
  message.write_to_stderr();
  ::_exit(1);
}

constexpr int cleanup_signals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGXFSZ, SIGBUS, SIGSEGV, SIGABRT};

void on_fatal_signal(int signal, siginfo_t* info, void*) {
  temporaries.for_each(remove_temporary);
  if (signal == SIGBUS) {
    const char* address = static_cast<const char*>(info->si_addr);
    const mapping_entry* hit = nullptr;
    mappings.for_each([&](const mapping_entry& m) {
      if (address >= m.begin && static_cast<std::size_t>(address - m.begin) < m.size) hit = &m;
    });
    if (hit != nullptr) exit_truncated_input(*hit, address);
  }
  // The default action once the handler returns: a fault repeats, a sent
  // signal stays pending until then.
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

}  // namespace

registered_temporary::registered_temporary(const std::filesystem::path& path, bool directory)
    : path_(path.string()) {
  entry_ = {path_.c_str(), directory};
  slot_ = temporaries.add(&entry_);
}

registered_temporary::~registered_temporary() { temporaries.remove(slot_); }

registered_mapping::registered_mapping(const std::filesystem::path& path, const void* begin, std::size_t size)
    : path_(path.string()) {
  entry_ = {path_.c_str(), static_cast<const char*>(begin), size};
  slot_ = mappings.add(&entry_);
}

registered_mapping::~registered_mapping() { mappings.remove(slot_); }

void exit_after_cleanup(const char* message) {
  temporaries.for_each(remove_temporary);
  signal_message line;
  (line << "ptwalk: " << message) << "\n";
  line.write_to_stderr();
  ::_exit(1);
}

void install_signal_cleanup() {
  struct sigaction action {};
  action.sa_sigaction = on_fatal_signal;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  for (const int signal : cleanup_signals) {
    struct sigaction previous {};
    // A signal the parent set to be ignored (nohup, `trap '' XFSZ`) stays ignored.
    if (::sigaction(signal, nullptr, &previous) == 0 && previous.sa_handler == SIG_IGN) continue;
    ::sigaction(signal, &action, nullptr);
  }
}

}  // namespace ptwalk
