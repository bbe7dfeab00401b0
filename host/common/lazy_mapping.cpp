// host/common/lazy_mapping.cpp — the userfaultfd pager behind lazy mappings.
#include "common/lazy_mapping.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "common/byte_size.hpp"
#include "common/signal_cleanup.hpp"

namespace ptwalk {
namespace {

constexpr std::size_t minimum_resident_pages = 16;
constexpr std::size_t fill_window = 16;  // pages one fault may fill (64 KiB, aligned)

std::size_t default_resident_limit() {
  if (const char* text = std::getenv("PTWALK_ARCHIVE_CACHE"); text != nullptr && *text != '\0')
    return parse_byte_size(text, "PTWALK_ARCHIVE_CACHE");
  const long pages = ::sysconf(_SC_PHYS_PAGES), bytes_per_page = ::sysconf(_SC_PAGESIZE);
  const std::size_t quarter = pages > 0 && bytes_per_page > 0 ? std::size_t(pages) * bytes_per_page / 4 : 0;
  return std::min<std::size_t>(std::size_t{1} << 30, quarter > 0 ? quarter : std::size_t{1} << 30);
}

}  // namespace

// One userfaultfd and one thread for every lazy mapping of the process, so
// the bound on filled pages holds for all of them together. Never destroyed:
// its thread waits in poll until the process ends.
class pager {
 public:
  static pager& instance() {
    static pager* const the = new pager();
    return *the;
  }

  // Empty when userfaultfd works; else why not.
  [[nodiscard]] const std::string& refusal() const { return refusal_; }

  void set_limit(std::size_t bytes) {
    limit_pages_.store(std::max(minimum_resident_pages, bytes / lazy_page_size), std::memory_order_relaxed);
  }
  [[nodiscard]] std::size_t limit() const { return limit_pages_.load(std::memory_order_relaxed) * lazy_page_size; }

  // Registers the mapping's range; returns why not on failure.
  std::string add(lazy_mapping& m) {
    uffdio_register reg{};
    reg.range = {reinterpret_cast<std::uint64_t>(m.data_), m.reserved_};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) return fmt::format("UFFDIO_REGISTER: {}", std::strerror(errno));
    const std::lock_guard lock(mutex_);
    m.serial_ = ++last_serial_;
    live_[m.serial_] = {&m, {}, 0, std::vector<bool>(m.reserved_ / lazy_page_size)};
    return {};
  }

  // Unregisters the mapping before it is unmapped; no thread reads it any more.
  // Under the lock, so the pager never fills a range just unregistered (a
  // fault event can outlive its reader: two readers of one page make two
  // events, and one fill answers both).
  lazy_stats remove(lazy_mapping& m) {
    const std::lock_guard lock(mutex_);
    const auto found = live_.find(m.serial_);
    const lazy_stats stats = found->second.stats;
    resident_pages_ -= found->second.resident;
    live_.erase(found);  // its entries in filled_ are skipped when they come up
    // ... or dropped here once they outnumber the live ones, so a process
    // reading many snapshots under a large bound keeps filled_ small.
    if (filled_.size() > 2 * resident_pages_ + 4096)
      std::erase_if(filled_, [&](const filled_page& f) { return !live_.contains(f.serial); });
    uffdio_range range{reinterpret_cast<std::uint64_t>(m.data_), m.reserved_};
    ::ioctl(fd_, UFFDIO_UNREGISTER, &range);
    return stats;
  }

  lazy_stats stats(const lazy_mapping& m) {
    const std::lock_guard lock(mutex_);
    return live_.at(m.serial_).stats;
  }

 private:
  struct live_mapping {
    lazy_mapping* mapping;
    lazy_stats stats;
    std::size_t resident;       // data pages present now
    std::vector<bool> present;  // by page: filled (data or zero) and not evicted since
  };
  struct filled_page {
    std::uint64_t serial;
    std::size_t page;
  };

  pager() {
    limit_pages_ = std::max(minimum_resident_pages, default_resident_limit() / lazy_page_size);
    fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (fd_ < 0) {
      refusal_ = fmt::format("userfaultfd: {}", std::strerror(errno));
      return;
    }
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(fd_, UFFDIO_API, &api) != 0) {
      refusal_ = fmt::format("UFFDIO_API: {}", std::strerror(errno));
      ::close(fd_);
      return;
    }
    std::thread([this] { serve(); }).detach();
  }

  void serve() {
    alignas(lazy_page_size) static std::byte buffer[fill_window * lazy_page_size];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, -1) < 0) continue;
      uffd_msg messages[16];
      const ssize_t n = ::read(fd_, messages, sizeof messages);
      if (n <= 0) continue;
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i)
        if (messages[i].event == UFFD_EVENT_PAGEFAULT) fill(messages[i].arg.pagefault.address, buffer);
    }
  }

  void fill(std::uint64_t address, std::byte* buffer) {
    const std::lock_guard lock(mutex_);
    live_mapping* owner = nullptr;
    for (auto& [serial, entry] : live_) {
      const auto begin = reinterpret_cast<std::uint64_t>(entry.mapping->data_);
      if (address >= begin && address - begin < entry.mapping->reserved_) owner = &entry;
    }
    if (owner == nullptr) return;  // unregistered meanwhile
    lazy_mapping& m = *owner->mapping;
    const std::size_t page = (address - reinterpret_cast<std::uint64_t>(m.data_)) / lazy_page_size;
    if (owner->present[page]) {
      // Two readers faulted on the page and the first fill served both;
      // wake any reader still queued on it.
      uffdio_range range{reinterpret_cast<std::uint64_t>(m.data_) + page * lazy_page_size, lazy_page_size};
      ::ioctl(fd_, UFFDIO_WAKE, &range);
      return;
    }
    // The absent pages around `page` within its aligned window: neighbours
    // are usually read next (a compaction copies whole runs), and one fill
    // costs one round trip instead of a fault each.
    const std::size_t window = std::min(fill_window, limit_pages_.load(std::memory_order_relaxed) / 2);
    const std::size_t window_start = page - page % window;
    const std::size_t window_end = std::min(window_start + window, owner->present.size());
    std::size_t first = page, end = page + 1;
    while (first > window_start && !owner->present[first - 1]) --first;
    while (end < window_end && !owner->present[end]) ++end;
    ++owner->stats.faults;
    bool data[fill_window];
    for (std::size_t p = first; p < end; ++p) {
      try {
        data[p - first] = m.source_->fill(
            p, std::span<std::byte, lazy_page_size>(buffer + (p - first) * lazy_page_size, lazy_page_size));
      } catch (const std::exception& e) {
        // The reader is blocked in the fault: nobody can catch this but the process.
        exit_after_cleanup(e.what());
      }
    }
    // Stretches of data pages are copied in, stretches of zero pages map the zero page.
    for (std::size_t p = first; p < end;) {
      std::size_t q = p + 1;
      while (q < end && data[q - first] == data[p - first]) ++q;
      const std::uint64_t dst = reinterpret_cast<std::uint64_t>(m.data_) + p * lazy_page_size;
      const std::uint64_t len = (q - p) * lazy_page_size;
      int result;
      if (data[p - first]) {
        uffdio_copy copy{};
        copy.dst = dst;
        copy.src = reinterpret_cast<std::uint64_t>(buffer + (p - first) * lazy_page_size);
        copy.len = len;
        result = ::ioctl(fd_, UFFDIO_COPY, &copy);
      } else {
        uffdio_zeropage zero{};
        zero.range = {dst, len};
        result = ::ioctl(fd_, UFFDIO_ZEROPAGE, &zero);
      }
      if (result != 0) {
        const std::string message =
            fmt::format("{}: cannot fill pages {}..{}: {}", m.name_, p, q - 1, std::strerror(errno));
        exit_after_cleanup(message.c_str());
      }
      for (std::size_t r = p; r < q; ++r) {
        owner->present[r] = true;
        if (!data[p - first]) {
          ++owner->stats.zero;  // the shared zero page costs no memory: not counted against the bound
          continue;
        }
        ++owner->stats.filled;
        ++owner->resident;
        ++resident_pages_;
        filled_.push_back({m.serial_, r});
      }
      p = q;
    }
    evict_down_to(limit_pages_.load(std::memory_order_relaxed));
  }

  // Drops the oldest-filled pages until at most `pages` are resident. The
  // page just filled is the newest, so a reader always gets to read it.
  void evict_down_to(std::size_t pages) {
    while (resident_pages_ > pages && !filled_.empty()) {
      const filled_page oldest = filled_.front();
      filled_.pop_front();
      const auto found = live_.find(oldest.serial);
      if (found == live_.end()) continue;
      lazy_mapping& m = *found->second.mapping;
      ::madvise(m.data_ + oldest.page * lazy_page_size, lazy_page_size, MADV_DONTNEED);
      found->second.present[oldest.page] = false;
      ++found->second.stats.evicted;
      --found->second.resident;
      --resident_pages_;
    }
  }

  int fd_ = -1;
  std::string refusal_;
  std::atomic<std::size_t> limit_pages_{0};
  std::mutex mutex_;  // guards what follows (the pager thread and (un)registering threads)
  std::uint64_t last_serial_ = 0;
  std::unordered_map<std::uint64_t, live_mapping> live_;
  std::deque<filled_page> filled_;  // oldest first
  std::size_t resident_pages_ = 0;
};

lazy_mapping::lazy_mapping(std::string name, std::byte* data, std::size_t size, std::unique_ptr<page_source> source)
    : name_(std::move(name)), data_(data), size_(size), source_(std::move(source)) {}

std::variant<std::unique_ptr<lazy_mapping>, std::string> lazy_mapping::create(std::string name, std::size_t size,
                                                                              std::unique_ptr<page_source> source) {
  pager& p = pager::instance();
  if (!p.refusal().empty()) return p.refusal();
  const std::size_t reserved = std::max<std::size_t>(lazy_page_size, (size + lazy_page_size - 1) & ~(lazy_page_size - 1));
  void* memory = ::mmap(nullptr, reserved, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED)  // not a refusal of userfaultfd: an eager rebuild would not fit either
    throw std::runtime_error(fmt::format("{}: cannot reserve {} bytes: {}", name, reserved, std::strerror(errno)));
  std::unique_ptr<lazy_mapping> m(new lazy_mapping(std::move(name), static_cast<std::byte*>(memory), size,
                                                   std::move(source)));
  m->reserved_ = reserved;
  if (std::string why = p.add(*m); !why.empty()) {
    ::munmap(memory, reserved);
    m->data_ = nullptr;
    return why;
  }
  return m;
}

lazy_mapping::~lazy_mapping() {
  if (data_ == nullptr) return;
  const lazy_stats s = pager::instance().remove(*this);
  ::munmap(data_, reserved_);
  if (print_stats_) {
    const std::size_t limit = resident_limit();
    fmt::print(stderr, "ptwalk: {}: {} faults, {} pages filled, {} zero pages, {} evicted (cache {})\n", name_,
               s.faults, s.filled, s.zero, s.evicted,
               limit % (1 << 20) == 0 ? fmt::format("{} MiB", limit >> 20) : fmt::format("{} KiB", limit >> 10));
  }
}

lazy_stats lazy_mapping::stats() const { return pager::instance().stats(*this); }

void lazy_mapping::set_resident_limit(std::size_t bytes) { pager::instance().set_limit(bytes); }

std::size_t lazy_mapping::resident_limit() { return pager::instance().limit(); }

}  // namespace ptwalk
