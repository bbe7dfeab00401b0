// kernels/detail/root_scan_impl.hpp — root discovery's page scan over a Thrust device system.
//
// Included by exactly one translation unit per device system (CUDA by nvcc,
// OMP by g++); device_system.hpp says what a `System` supplies.
// The predicate's inputs (reference kernel halves, backed ranges) go to the
// device once. The image's pages then stream through in chunks: chunk k+1 is
// gathered on a host thread into one pinned staging buffer while chunk k is
// copied from the other and tested, one item per page; Thrust's copy_if
// (CUB's select on CUDA) compacts the hits, and only they come back.
//
// Why staging and not zero-copy: the GPU could read mapped host memory
// directly, and the root test touches one 32-byte sector of most pages. But
// the pages are a mapped dump file, which would have to be registered
// (pinned) with the driver first — every page faulted in and locked, within
// RLIMIT_MEMLOCK, for one pass — and the census test reads zero pages whole,
// in transfers too small for PCIe to run at speed. Staging costs one host
// copy that overlaps the transfers and works for any memory.
//
// One stream: a chunk's upload and its test run back to back. The test is a
// small fraction of the upload (see root_scan_steps.hpp), so a second stream
// to overlap them would gain little; the gather, which is as costly as the
// upload, is what runs alongside.
#pragma once

#include <thrust/copy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <omp.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <exception>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/detail/device_system.hpp"
#include "kernels/root_scan.hpp"

namespace ptwalk::kernels::detail {

// Pages of one run, at most chunk_pages of them: never two runs, so the
// pages are consecutive in host memory and in physical memory.
struct scan_chunk {
  u64 pa = 0;
  const std::byte* bytes = nullptr;
  u64 pages = 0;
};

inline std::vector<scan_chunk> split_runs(std::span<const page_run> runs, u64 chunk_pages) {
  std::vector<scan_chunk> out;
  for (const page_run& run : runs)
    for (u64 first = 0; first < run.pages; first += chunk_pages)
      out.push_back({run.pa + first * 4096, run.bytes + first * 4096, std::min(chunk_pages, run.pages - first)});
  return out;
}

// Copies a chunk into `staging` on up to `threads` threads, in 256 KiB
// pieces: reading a mapped dump faults its pages in, and those faults are
// taken in parallel too. A small chunk stays on one thread, where a team's
// start and barrier would cost more than the copy (far more on a loaded
// machine, where one thread of the team may wait for a core).
inline void gather_pages(const scan_chunk& chunk, u64* staging, unsigned threads) {
  constexpr u64 piece = u64{256} << 10;
  const u64 bytes = chunk.pages * 4096;
  const auto pieces = static_cast<std::int64_t>((bytes + piece - 1) / piece);
  auto* target = reinterpret_cast<std::byte*>(staging);
  const int team = static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(pieces / 4, 1)));
#pragma omp parallel for num_threads(team) schedule(static)
  for (std::int64_t p = 0; p < pieces; ++p) {
    const u64 offset = static_cast<u64>(p) * piece;
    std::memcpy(target + offset, chunk.bytes + offset, std::min(piece, bytes - offset));
  }
}

inline std::string hex_pa(u64 pa) {
  char text[20] = "0x";
  const auto end = std::to_chars(text + 2, text + sizeof text, pa, 16).ptr;
  return std::string(text, end);
}

template <class Format, class System>
class root_scan {
  template <class T>
  using vector = typename System::template vector<T>;

 public:
  root_scan(System& system, const root_scan_input& input, const root_scan_options& options)
      : sys_(system),
        input_(input),
        chunks_(split_runs(input.runs, std::max<std::size_t>(options.chunk_pages, 1))),
        threads_(options.threads != 0 ? options.threads : static_cast<unsigned>(omp_get_max_threads())) {}

  std::vector<root_scan_hit> run() {
    const stopwatch setup;
    const page_test_ref d_test = upload_test();
    u64 max_pages = 0;
    for (const auto& c : chunks_) max_pages = std::max(max_pages, c.pages);
    words_ = max_pages * scan_page_entries;
    d_pages_.resize(words_);
    d_hits_.resize(max_pages);
    // Both staging buffers now, on this thread, before the gathers use them.
    sys_.staging(0, words_);
    if (chunks_.size() > 1) sys_.staging(1, words_);
    profile_.setup_s = setup.seconds();

    // Gather chunk k+1 while chunk k is uploaded and tested; staging()
    // waits for the buffer's last upload before it is refilled.
    std::vector<root_scan_hit> hits;
    std::future<double> pending;
    if (!chunks_.empty()) profile_.gather_s += gather(0, 0);
    for (std::size_t k = 0; k < chunks_.size(); ++k) {
      if (k != 0) profile_.gather_s += pending.get();
      if (k + 1 < chunks_.size())
        pending = std::async(std::launch::async, [this, k] { return gather(k + 1, unsigned((k + 1) % 2)); });
      try {
        test_chunk(chunks_[k], unsigned(k % 2), d_test, hits);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string(System::name) + " root scan: chunk of " +
                                 std::to_string(chunks_[k].pages) + " pages at " + hex_pa(chunks_[k].pa) + ": " +
                                 e.what());
      }
    }
    profile_.upload_s = sys_.take_seconds(device_phase::upload);
    profile_.kernel_s = sys_.take_seconds(device_phase::kernel);
    profile_.download_s = sys_.take_seconds(device_phase::download);
    profile_.chunks = chunks_.size();
    profile_.hits = hits.size();
    return hits;
  }
  [[nodiscard]] const root_scan_profile& profile() const { return profile_; }

 private:
  // The predicate's inputs, on the device for the whole scan.
  page_test_ref upload_test() {
    const page_test_ref& h = input_.test;
    to_device(d_halves_, h.halves.entries, u64{h.halves.count} * half_entries);
    to_device(d_starts_, h.backed.starts, h.backed.count);
    to_device(d_ends_, h.backed.ends, h.backed.count);
    page_test_ref d = h;
    d.halves.entries = raw(d_halves_);
    d.backed.starts = raw(d_starts_);
    d.backed.ends = raw(d_ends_);
    return d;
  }
  void to_device(vector<u64>& d, const u64* h, u64 count) {
    d.resize(count);
    if (count != 0) sys_.upload(h, raw(d), count);
  }

  double gather(std::size_t k, unsigned buffer) {
    const stopwatch clock;
    gather_pages(chunks_[k], sys_.staging(buffer, words_), threads_);
    return clock.seconds();
  }

  // Uploads one gathered chunk from staging buffer `which`, tests every
  // page, appends the hits; each phase timed on the device.
  void test_chunk(const scan_chunk& chunk, unsigned which, const page_test_ref& d_test,
                  std::vector<root_scan_hit>& hits) {
    const u64 words = chunk.pages * scan_page_entries;
    size_step(sys_, words);  // the test may read every word
    sys_.timed(device_phase::upload, [&] { sys_.upload_staging(which, raw(d_pages_), words); });
    const auto verdicts = thrust::make_transform_iterator(thrust::counting_iterator<u64>(0),
                                                          test_chunk_page<Format>{raw(d_pages_), chunk.pa, d_test});
    const auto found = sys_.timed(device_phase::kernel, [&] {
      const auto end = thrust::copy_if(sys_.policy(), verdicts, verdicts + chunk.pages, d_hits_.begin(), is_hit{});
      return static_cast<std::size_t>(end - d_hits_.begin());
    });
    const std::size_t before = hits.size();
    hits.resize(before + found);
    if (found != 0)
      sys_.timed(device_phase::download, [&] { sys_.download(raw(d_hits_), hits.data() + before, found); });
    profile_.pages += chunk.pages;
    profile_.bytes_uploaded += chunk.pages * 8 * scan_page_entries;
  }

  System& sys_;
  const root_scan_input& input_;
  std::vector<scan_chunk> chunks_;
  unsigned threads_;
  u64 words_ = 0;
  root_scan_profile profile_;
  vector<u64> d_halves_, d_starts_, d_ends_;
  vector<u64> d_pages_;
  vector<root_scan_hit> d_hits_;
};

// Entry point for one device system.
template <class System>
std::vector<root_scan_hit> scan_pages(System& system, const root_scan_input& input, const root_scan_options& options) {
  return visit_scan_format(input.format, [&]<class F>() {
    root_scan<F, System> scan(system, input, options);
    auto hits = scan.run();
    if (options.profile != nullptr) *options.profile += scan.profile();
    return hits;
  });
}

}  // namespace ptwalk::kernels::detail
