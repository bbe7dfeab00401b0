// kernels/detail/resident_image.hpp — a fleet's images uploaded to a device system once, and walked there.
//
// Included by the translation unit of each device system that offers
// resident walks, after level_walk_impl.hpp. The upload scans every backed
// page of every image on the host (in parallel over snapshots), keeps the
// non-zero ones, and streams them through the system's two staging buffers
// into one device buffer of page slots; resident_steps.hpp says how the
// walk finds a word in it. The upload is refused with resident_does_not_fit
// before anything is allocated when the pages and their lookup tables would
// not fit in the device memory the walk may use.
#pragma once

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/detail/device_system.hpp"
#include "kernels/detail/level_walk_impl.hpp"
#include "kernels/level_walk.hpp"
#include "kernels/resident_steps.hpp"

namespace ptwalk::kernels::detail {

// The page at `frame` as the host gather would read it: each 8-byte word
// that one region backs, else 0.
inline void read_resident_page(const table_source& source, u64 frame, u64* words) {
  const u64 pa = frame * resident_page_bytes;
  if (const std::byte* whole = source.bytes_at(source.context, pa, resident_page_bytes)) {
    std::memcpy(words, whole, resident_page_bytes);
    return;
  }
  for (u64 w = 0; w < resident_page_words; ++w) {
    const std::byte* p = source.bytes_at(source.context, pa + 8 * w, 8);
    words[w] = 0;
    if (p != nullptr) std::memcpy(&words[w], p, 8);
  }
}

inline bool page_is_zero(const table_source& source, u64 frame) {
  u64 words[resident_page_words];
  const std::byte* bytes = source.bytes_at(source.context, frame * resident_page_bytes, resident_page_bytes);
  if (bytes == nullptr) {
    read_resident_page(source, frame, words);
    bytes = reinterpret_cast<const std::byte*>(words);
  }
  u64 any = 0;
  for (u64 w = 0; w < resident_page_words; ++w) {
    u64 word;
    std::memcpy(&word, bytes + 8 * w, 8);
    any |= word;
  }
  return any == 0;
}

template <class System>
class resident_image {
  template <class T>
  using vector = typename System::template vector<T>;

 public:
  // Pages per staging buffer during the upload (16 MiB).
  static constexpr u64 upload_chunk_pages = 4096;

  resident_image(System& system, std::span<const walk_input> snapshots) {
    const stopwatch clock;
    const u64 n = snapshots.size();
    std::vector<std::vector<std::pair<u64, u64>>> regions(n);
    std::vector<std::vector<u64>> frames(n);
    u64 scanned = 0;
    for (u64 s = 0; s < n; ++s)
      if (snapshots[s].tables.for_each_range == nullptr)
        throw std::invalid_argument(std::string(System::name) + ": resident walk: snapshot " + std::to_string(s) +
                                    " cannot list its image's ranges");
    // Which pages hold anything: every backed byte read once, snapshots in parallel.
    size_step(system, ~0ull);  // every thread
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : scanned)
    for (u64 s = 0; s < n; ++s) {
      const table_source& source = snapshots[s].tables;
      source.for_each_range(source.context, [&](u64 gpa, u64 size) {
        if (size == 0) return;
        regions[s].emplace_back(gpa, gpa + size);
        scanned += size;
        const u64 last = (gpa + size - 1) / resident_page_bytes;
        for (u64 frame = gpa / resident_page_bytes; frame <= last; ++frame) {
          // A page two regions share is looked at once.
          if (!frames[s].empty() && frames[s].back() >= frame) continue;
          if (!page_is_zero(source, frame)) frames[s].push_back(frame);
        }
      });
    }
    std::vector<u64> page_frame, page_begin{0}, region_start, region_end, region_begin{0};
    std::vector<u32> page_snapshot;  // per slot, for the upload
    for (u64 s = 0; s < n; ++s) {
      page_frame.insert(page_frame.end(), frames[s].begin(), frames[s].end());
      page_snapshot.insert(page_snapshot.end(), frames[s].size(), static_cast<u32>(s));
      page_begin.push_back(page_frame.size());
      for (const auto& [start, end] : regions[s]) {
        region_start.push_back(start);
        region_end.push_back(end);
      }
      region_begin.push_back(region_start.size());
    }
    pages_ = page_frame.size();
    const u64 index_bytes = 8 * (page_frame.size() + page_begin.size() + 2 * region_start.size() +
                                 region_begin.size());
    device_bytes_ = pages_ * resident_page_bytes + index_bytes;
    const memory_budget memory = system.memory();
    const u64 available = memory.limit - std::min(memory.limit, memory.in_use);
    const std::string does_not_fit =
        std::string(System::name) + ": resident walk: the fleet's " + std::to_string(pages_) +
        " non-zero pages and their lookup tables need " + std::to_string(device_bytes_ >> 20) +
        " MiB of device memory, more than the " + std::to_string(available >> 20) +
        " MiB the walk may use; walk it streaming (`ptwalk walk --backend cuda`)";
    if (device_bytes_ > available) throw resident_does_not_fit(does_not_fit);
    try {
      system.timed(device_phase::upload, [&] {
        upload(system, d_page_frame_, page_frame);
        upload(system, d_page_begin_, page_begin);
        upload(system, d_region_start_, region_start);
        upload(system, d_region_end_, region_end);
        upload(system, d_region_begin_, region_begin);
        d_words_.resize(pages_ * resident_page_words);
      });
    } catch (const std::bad_alloc&) {
      throw resident_does_not_fit(does_not_fit);
    }
    // The pages, through the two staging buffers: one is filled while the other uploads.
    for (u64 first = 0, k = 0; first < pages_; first += upload_chunk_pages, ++k) {
      const u64 count = std::min(upload_chunk_pages, pages_ - first);
      const unsigned buffer = unsigned(k % 2);
      u64* staging = system.staging(buffer, count * resident_page_words);
      size_step(system, count * resident_page_words);
#pragma omp parallel for schedule(static)
      for (u64 i = 0; i < count; ++i)
        read_resident_page(snapshots[page_snapshot[first + i]].tables, page_frame[first + i],
                           staging + i * resident_page_words);
      system.timed(device_phase::upload, [&] {
        system.upload_staging(buffer, raw(d_words_) + first * resident_page_words, count * resident_page_words);
      });
    }
    walk_phase& phase = profile_.phase("resident upload");
    (void)system.take_seconds(device_phase::upload);  // waits for the copies
    phase.seconds = clock.seconds();
    phase.pcie_bytes = device_bytes_;
    phase.device_bytes = device_bytes_;
    // Every backed byte scanned, the non-zero pages read again into staging (read + write).
    phase.host_bytes = scanned + 2 * pages_ * resident_page_bytes + index_bytes;
    u64 longest = 0;
    for (u64 s = 0; s < n; ++s) longest = std::max<u64>({longest, frames[s].size(), regions[s].size()});
    ref_ = {raw(d_words_),        raw(d_page_frame_), raw(d_page_begin_),
            raw(d_region_start_), raw(d_region_end_), raw(d_region_begin_),
            static_cast<unsigned>(std::bit_width(longest))};
  }

  [[nodiscard]] const resident_image_ref& ref() const { return ref_; }
  [[nodiscard]] u64 device_bytes() const { return device_bytes_; }
  [[nodiscard]] u64 pages() const { return pages_; }
  [[nodiscard]] const walk_profile& profile() const { return profile_; }

 private:
  template <class T>
  static void upload(System& system, vector<T>& d, const std::vector<T>& h) {
    d.resize(h.size());
    if (!h.empty()) system.upload(h.data(), raw(d), h.size());
  }

  vector<u64> d_words_, d_page_frame_, d_page_begin_, d_region_start_, d_region_end_, d_region_begin_;
  resident_image_ref ref_{};
  u64 pages_ = 0, device_bytes_ = 0;
  walk_profile profile_;
};

// A resident_fleet on one device system: the system (and with it the
// memory budget the images are charged to) lives as long as the fleet.
template <class System>
class resident_fleet_on final : public resident_fleet {
 public:
  template <class... SystemArgs>
  explicit resident_fleet_on(std::span<const walk_input> snapshots, SystemArgs&&... system_args)
      : inputs_(snapshots.begin(), snapshots.end()),
        system_(std::forward<SystemArgs>(system_args)...),
        image_(system_, inputs_) {}

  std::vector<snapshot_walk> walk(const level_walk_options& options) override {
    return level_walk(system_, std::span<const walk_input>(inputs_), options, &image_.ref());
  }
  [[nodiscard]] const walk_profile& upload_profile() const override { return image_.profile(); }
  [[nodiscard]] u64 device_bytes() const override { return image_.device_bytes(); }

 private:
  std::vector<walk_input> inputs_;
  System system_;
  resident_image<System> image_;
};

}  // namespace ptwalk::kernels::detail
