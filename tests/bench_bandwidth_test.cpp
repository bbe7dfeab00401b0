// The benchmark's yardsticks: the last-level cache size read from sysfs, the
// read probe's buffer size, and `ptwalk bench` (the real binary) reporting
// DRAM read and copy bandwidth before and after each backend's walks, cold
// and warm walks, and the walk's fraction computed against read bandwidth.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "bench/bandwidth_probe.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_ptwalk;
using testing::temp_dir;

void write_cache(const fs::path& cpu_dir, int index, const char* level, const char* type, const char* size) {
  const fs::path dir = cpu_dir / "cpu0" / "cache" / fmt::format("index{}", index);
  fs::create_directories(dir);
  std::ofstream(dir / "level") << level << "\n";
  std::ofstream(dir / "type") << type << "\n";
  std::ofstream(dir / "size") << size << "\n";
}

TEST(last_level_cache, is_the_highest_level_data_or_unified_cache) {
  const temp_dir dir;
  write_cache(dir.path(), 0, "1", "Data", "48K");
  write_cache(dir.path(), 1, "1", "Instruction", "32K");
  write_cache(dir.path(), 2, "2", "Unified", "2048K");
  write_cache(dir.path(), 3, "3", "Unified", "307200K");
  EXPECT_EQ(last_level_cache_bytes(dir.path()), u64{300} << 20);
  write_cache(dir.path(), 4, "4", "Instruction", "1G");  // never holds page tables
  EXPECT_EQ(last_level_cache_bytes(dir.path()), u64{300} << 20);
  write_cache(dir.path(), 5, "4", "Unified", "1G");
  EXPECT_EQ(last_level_cache_bytes(dir.path()), u64{1} << 30);
}

TEST(last_level_cache, is_zero_when_sysfs_does_not_say) {
  const temp_dir dir;
  EXPECT_EQ(last_level_cache_bytes(dir / "missing"), 0u);
  write_cache(dir.path(), 0, "1", "Data", "garbage");
  EXPECT_EQ(last_level_cache_bytes(dir.path()), 0u);
}

TEST(read_probe, buffer_is_four_caches_and_at_least_one_gib) {
  constexpr u64 gib = u64{1} << 30;
  EXPECT_EQ(read_probe_bytes(0), gib);
  EXPECT_EQ(read_probe_bytes(u64{32} << 20), gib);         // the EPYC: 32 MiB L3
  EXPECT_EQ(read_probe_bytes(u64{300} << 20), u64{1200} << 20);  // a 300 MiB Xeon L3
}

TEST(bench_cli, reports_read_and_copy_bandwidth_around_cold_and_warm_walks) {
  const temp_dir dir;
  const fs::path json_path = dir / "bench.json";
  const auto r = run_ptwalk(dir, {"bench", "--gen", "small", "--backends", "reference,cpu", "--repeat", "2",
                                  "--no-compaction", "--json", json_path.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* label : {"warm med", "cold med", "% read w/c", "DRAM read", "copy", "evicts every cache"})
    EXPECT_NE(r.out.find(label), std::string::npos) << label << "\n" << r.out;

  const auto j = nlohmann::json::parse(read_text(json_path));
  const auto& machine = j["machine"];
  const u64 probe = machine["read_probe_bytes"];
  EXPECT_GE(probe, u64{1} << 30);
  EXPECT_GE(probe, 4 * machine["last_level_cache_bytes"].get<u64>());
  EXPECT_EQ(machine["last_level_cache_bytes"].get<u64>(), last_level_cache_bytes());
  const double table_bytes = j["input"]["table_bytes"];
  ASSERT_GT(table_bytes, 0);
  for (const char* name : {"reference", "cpu"}) {
    SCOPED_TRACE(name);
    const auto& b = j["backends"][name];
    const auto& bw = b["bandwidth"];
    for (const char* when : {"before", "after"})
      for (const char* kind : {"read_bytes_per_s", "page_read_bytes_per_s", "copy_bytes_per_s"}) {
        const double rate = bw[when][kind];
        EXPECT_GT(rate, 1e8) << when << " " << kind;  // any machine moves more than 100 MB/s
        EXPECT_LT(rate, 1e13) << when << " " << kind;
      }
    const double read = (bw["before"]["read_bytes_per_s"].get<double>() + bw["after"]["read_bytes_per_s"].get<double>()) / 2;
    const double copy = (bw["before"]["copy_bytes_per_s"].get<double>() + bw["after"]["copy_bytes_per_s"].get<double>()) / 2;
    const double pages = (bw["before"]["page_read_bytes_per_s"].get<double>() +
                          bw["after"]["page_read_bytes_per_s"].get<double>()) / 2;
    for (const char* kind : {"warm", "cold"}) {
      SCOPED_TRACE(kind);
      const auto& walk = b[kind];
      const double median = walk["median_s"];
      ASSERT_GT(median, 0);
      EXPECT_LE(walk["min_s"].get<double>(), median);
      EXPECT_GE(walk["max_s"].get<double>(), median);
      // Recomputed from the fleet and the probes, not read back from the report.
      EXPECT_NEAR(walk["table_bytes_per_s"].get<double>(), table_bytes / median, 1e-6 * table_bytes / median);
      EXPECT_NEAR(walk["read_fraction"].get<double>(), table_bytes / median / read, 1e-9 + 1e-6 * table_bytes / median / read);
      EXPECT_NEAR(walk["copy_fraction"].get<double>(), table_bytes / median / copy, 1e-9 + 1e-6 * table_bytes / median / copy);
      EXPECT_NEAR(walk["page_read_fraction"].get<double>(), table_bytes / median / pages,
                  1e-9 + 1e-6 * table_bytes / median / pages);
    }
    EXPECT_EQ(b["walk_median_s"], b["warm"]["median_s"]);
  }
}

}  // namespace
}  // namespace ptwalk
