// host/bench/bandwidth_probe.cpp — DRAM read and copy bandwidth of the host, and the cache flush.
#include "bench/bandwidth_probe.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/byte_size.hpp"
#include "common/parallel_for.hpp"

namespace ptwalk {
namespace {

constexpr u64 gib = u64{1} << 30;
constexpr u64 page_bytes = 4096;
constexpr int timed_passes = 3;  // best of these, after one untimed pass

// A sysfs cache size ("32768K") or level ("3"); 0 where sysfs wrote something else.
u64 parse_sysfs_number(const std::string& text) {
  try {
    return parse_byte_size(text, "sysfs cache size");
  } catch (const std::invalid_argument&) {
    return 0;
  }
}

std::string first_word(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string word;
  in >> word;
  return word;
}

template <class Pass>
double best_seconds(Pass pass) {
  (void)pass();  // warm-up: clocks, TLB
  double best = 1e30;
  for (int i = 0; i < timed_passes; ++i) best = std::min(best, pass());
  return best;
}

double seconds_of(auto&& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

u64 last_level_cache_bytes(const std::filesystem::path& root) {
  std::error_code ec;
  u64 best_level = 0, bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root / "cpu0" / "cache", ec)) {
    if (!entry.path().filename().string().starts_with("index")) continue;
    if (first_word(entry.path() / "type") == "Instruction") continue;
    const u64 level = parse_sysfs_number(first_word(entry.path() / "level"));
    const u64 size = parse_sysfs_number(first_word(entry.path() / "size"));
    if (level > best_level || (level == best_level && size > bytes)) {
      best_level = level;
      bytes = size;
    }
  }
  return bytes;
}

u64 read_probe_bytes(u64 cache_bytes) { return std::max(4 * cache_bytes, gib); }

host_bandwidth_probe::host_bandwidth_probe(int threads)
    : threads_(static_cast<int>(resolve_jobs(threads > 0 ? static_cast<unsigned>(threads) : 0))),
      cache_bytes_(last_level_cache_bytes()),
      read_bytes_(read_probe_bytes(cache_bytes_)),
      copy_bytes_(read_bytes_ / 2),
      read_words_(std::make_unique_for_overwrite<u64[]>(read_bytes_ / 8)) {
  // Touched by the threads that will read it, and not all zero (no zero-page tricks).
  const u64 words = read_bytes_ / 8;
  parallel_for(static_cast<std::size_t>(threads_), static_cast<unsigned>(threads_), [&](std::size_t t) {
    for (u64 i = words * t / threads_; i < words * (t + 1) / threads_; ++i) read_words_[i] = i;
  });
  const u64 pages = read_bytes_ / page_bytes;
  page_order_.resize(pages);
  std::iota(page_order_.begin(), page_order_.end(), u32{0});
  std::mt19937_64 random(1);
  for (int t = 0; t < threads_; ++t)
    std::shuffle(page_order_.begin() + pages * t / threads_, page_order_.begin() + pages * (t + 1) / threads_,
                 random);
}

host_bandwidth_probe::~host_bandwidth_probe() = default;

double host_bandwidth_probe::read_pass() {
  const u64 words = read_bytes_ / 8;
  std::vector<u64> sums(static_cast<std::size_t>(threads_));
  const double seconds = seconds_of([&] {
    parallel_for(sums.size(), static_cast<unsigned>(threads_), [&](std::size_t t) {
      const u64* p = read_words_.get();
      // Four independent sums: the loop is bound by loads, not by one add chain.
      u64 a = 0, b = 0, c = 0, d = 0;
      const u64 end = words * (t + 1) / threads_;
      u64 i = words * t / threads_;
      for (; i + 4 <= end; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
      }
      for (; i < end; ++i) a += p[i];
      sums[t] = a + b + c + d;
    });
  });
  for (const u64 s : sums) sink_ += s;
  return seconds;
}

double host_bandwidth_probe::page_read_pass() {
  constexpr u64 page_words = page_bytes / 8, lines_ahead = 16;
  const u64 pages = page_order_.size();
  std::vector<u64> sums(static_cast<std::size_t>(threads_));
  const double seconds = seconds_of([&] {
    parallel_for(sums.size(), static_cast<unsigned>(threads_), [&](std::size_t t) {
      const u64 end = pages * (t + 1) / threads_;
      u64 a = 0, b = 0, c = 0, d = 0;
      for (u64 k = pages * t / threads_; k < end; ++k) {
        const u64* p = read_words_.get() + u64{page_order_[k]} * page_words;
        if (k + 1 < end) {
          const u64* next = read_words_.get() + u64{page_order_[k + 1]} * page_words;
          for (u64 line = 0; line < lines_ahead; ++line) __builtin_prefetch(next + 8 * line);
        }
        for (u64 i = 0; i < page_words; i += 8) {
          if (i + 8 * lines_ahead < page_words) __builtin_prefetch(p + i + 8 * lines_ahead);
          a += p[i] + p[i + 4];
          b += p[i + 1] + p[i + 5];
          c += p[i + 2] + p[i + 6];
          d += p[i + 3] + p[i + 7];
        }
      }
      sums[t] = a + b + c + d;
    });
  });
  for (const u64 s : sums) sink_ += s;
  return seconds;
}

double host_bandwidth_probe::copy_pass() {
  // The read buffer's first half onto its second half: no more memory, and far above the cache.
  auto* source = reinterpret_cast<std::byte*>(read_words_.get());
  std::byte* target = source + copy_bytes_;
  return seconds_of([&] {
    parallel_for(static_cast<std::size_t>(threads_), static_cast<unsigned>(threads_), [&](std::size_t t) {
      const u64 first = copy_bytes_ * t / threads_, end = copy_bytes_ * (t + 1) / threads_;
      std::memcpy(target + first, source + first, end - first);
    });
  });
}

host_bandwidth host_bandwidth_probe::measure() {
  host_bandwidth out;
  out.read_bytes_per_s = static_cast<double>(read_bytes_) / best_seconds([&] { return read_pass(); });
  out.page_read_bytes_per_s = static_cast<double>(page_order_.size() * page_bytes) /
                              best_seconds([&] { return page_read_pass(); });
  out.copy_bytes_per_s = 2.0 * static_cast<double>(copy_bytes_) / best_seconds([&] { return copy_pass(); });
  return out;
}

void host_bandwidth_probe::evict_caches() { (void)read_pass(); }

}  // namespace ptwalk
