// host/common/lazy_mapping.hpp — read-only memory whose pages are filled on first touch (userfaultfd).
//
// An archived image is as large as the guest, but a walk reads only its page
// tables. A lazy mapping reserves the image's size of anonymous memory and
// registers it with userfaultfd: the first read of a page blocks the reading
// thread while one pager thread asks the mapping's page_source for the bytes
// of the absent pages of its aligned 64 KiB window and copies them in
// (all-zero pages map the shared zero page). Readers see
// ordinary memory, so nothing downstream needs to know.
//
// Filled pages count against one process-wide bound (resident_limit): past
// it the oldest-filled pages are dropped with MADV_DONTNEED and fault again
// if read again, giving the same bytes. A page_source that throws (damaged
// input) cannot be reported to the reader, which is blocked in a page fault:
// the pager removes registered temporaries and exits the process with the
// message (signal_cleanup's exit_after_cleanup).
//
// userfaultfd may be refused (vm.unprivileged_userfaultfd=0 without
// CAP_SYS_PTRACE, seccomp, an old kernel); create() then returns the reason
// and the caller loads the bytes eagerly instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>

namespace ptwalk {

inline constexpr std::size_t lazy_page_size = 4096;

// Where a lazy mapping's bytes come from. Called on the pager thread only,
// one page at a time, so it may keep caches without locking.
class page_source {
 public:
  virtual ~page_source() = default;
  // Writes page `page` (bytes [page * 4096, +4096) of the mapping, the last
  // one zero-padded) into `out` and returns true, or returns false when the
  // page is all zero. Throws std::exception with a one-line message when
  // the bytes cannot be produced.
  virtual bool fill(std::size_t page, std::span<std::byte, lazy_page_size> out) = 0;
};

struct lazy_stats {
  std::uint64_t faults = 0;   // page faults served (each fills up to 16 absent pages around it)
  std::uint64_t filled = 0;   // pages filled with data
  std::uint64_t zero = 0;     // pages mapped to the zero page
  std::uint64_t evicted = 0;  // filled pages dropped to stay under the bound
};

class lazy_mapping {
 public:
  // A mapping of `size` bytes filled from `source`, or why userfaultfd cannot do it.
  // `name` stands for the mapping in messages. Throws std::runtime_error when
  // the address space cannot hold `size` bytes.
  static std::variant<std::unique_ptr<lazy_mapping>, std::string> create(std::string name, std::size_t size,
                                                                         std::unique_ptr<page_source> source);
  ~lazy_mapping();
  lazy_mapping(const lazy_mapping&) = delete;
  lazy_mapping& operator=(const lazy_mapping&) = delete;

  [[nodiscard]] const std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] lazy_stats stats() const;
  // On release, prints "ptwalk: NAME: N faults, N pages filled, ..." on stderr.
  void print_stats_when_released() { print_stats_ = true; }

  // Bytes of filled pages all lazy mappings together keep resident; at
  // least 16 pages. The default is PTWALK_ARCHIVE_CACHE if set, else
  // min(1 GiB, RAM / 4); set it before the first mapping.
  static void set_resident_limit(std::size_t bytes);
  [[nodiscard]] static std::size_t resident_limit();

 private:
  lazy_mapping(std::string name, std::byte* data, std::size_t size, std::unique_ptr<page_source> source);
  friend class pager;

  std::string name_;
  std::byte* data_;
  std::size_t size_;      // the bytes readers see
  std::size_t reserved_;  // whole pages, registered with the pager
  std::unique_ptr<page_source> source_;
  std::uint64_t serial_ = 0;
  bool print_stats_ = false;
};

}  // namespace ptwalk
