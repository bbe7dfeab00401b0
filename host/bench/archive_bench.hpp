// host/bench/archive_bench.hpp — `ptwalk bench --archive`: the fleet archive against zstd on one fleet.
//
// One run each, on the manifest's image files: archive add (into a scratch
// archive), restore of every snapshot, loading every snapshot whole from
// the archive; walking every snapshot (cpu walker) read from the archive
// eagerly (rebuilt whole first) and lazily (pages on first touch, when
// userfaultfd allows), with the peak resident memory of each (VmHWM, reset
// before each row); and zstd (libzstd, level 3, all cores) of each image
// alone and of the images concatenated with long-distance matching
// (zstd --long=27). Sizes in bytes, speeds in GB/s of image.
#pragma once

#include <filesystem>
#include <string>

#include "ptwalk/config.hpp"

namespace ptwalk {

struct archive_bench_report {
  u64 snapshots = 0, image_bytes = 0;
  u64 archive_bytes = 0, zstd_each_bytes = 0, zstd_long_bytes = 0;
  double add_seconds = 0, restore_seconds = 0, load_seconds = 0, zstd_each_seconds = 0, zstd_long_seconds = 0;
  double walk_eager_seconds = 0, walk_lazy_seconds = 0;
  u64 walk_eager_peak_rss = 0, walk_lazy_peak_rss = 0;  // bytes; 0 when unknown
  std::string lazy_refused;                             // why the lazy row is missing, when it is
};

// `scratch` is created and removed; `jobs` 0 means every core.
[[nodiscard]] archive_bench_report run_archive_bench(const std::filesystem::path& manifest,
                                                     const std::filesystem::path& scratch, unsigned jobs);
[[nodiscard]] std::string format_archive_bench(const archive_bench_report& report, unsigned jobs);

}  // namespace ptwalk
