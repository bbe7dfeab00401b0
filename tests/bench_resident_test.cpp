// `ptwalk bench` (the real binary) on the resident walks: a row per device
// backend (thrust-cpu here; cuda where built and a GPU is visible), its
// JSON under backends.<name>.resident with the upload, the timed walks and
// the walk's own byte counters, and none with --no-resident.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ptwalk/config.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_ptwalk;
using testing::temp_dir;

TEST(bench_resident, reports_upload_walks_and_bytes_moved) {
  const temp_dir dir;
  const fs::path json_path = dir / "bench.json";
  const auto r = run_ptwalk(dir, {"bench", "--gen", "small", "--backends", "reference,thrust-cpu", "--repeat", "3",
                                  "--no-compaction", "--json", json_path.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* label : {"resident: the images uploaded", "H200 goal s", "thrust-cpu resident resident upload",
                            "thrust-cpu resident device gather"})
    EXPECT_NE(r.out.find(label), std::string::npos) << label << "\n" << r.out;

  const auto j = nlohmann::json::parse(read_text(json_path));
  const double table_bytes = j["input"]["table_bytes"];
  ASSERT_GT(table_bytes, 0);
  EXPECT_FALSE(j["backends"]["reference"].contains("resident"));
  const auto& resident = j["backends"]["thrust-cpu"]["resident"];
  ASSERT_FALSE(resident.contains("skipped")) << resident.dump();
  EXPECT_GT(resident["upload_s"].get<double>(), 0);
  const u64 device_bytes = resident["device_bytes"];
  EXPECT_GE(device_bytes, table_bytes);  // every table page is non-zero and resident
  const auto& walk = resident["walk"];
  const double median = walk["median_s"];
  ASSERT_GT(median, 0);
  EXPECT_LE(walk["min_s"].get<double>(), median);
  EXPECT_GE(walk["max_s"].get<double>(), median);
  EXPECT_NEAR(resident["table_bytes_per_s"].get<double>(), table_bytes / median, 1e-6 * table_bytes / median);
  EXPECT_NEAR(resident["h200_goal_s"].get<double>(), table_bytes / 2.4e12, 1e-6 * table_bytes / 2.4e12);

  const auto& moved = resident["bytes_moved"];
  EXPECT_EQ(moved["resident upload"]["pcie_bytes"].get<u64>(), device_bytes);
  // On a walk no table page crosses PCIe: the uploads are the roots' seeds.
  EXPECT_LT(moved["upload"]["pcie_bytes"].get<double>(), table_bytes / 4);
  // The device gather only resolves where each table's pages lie; the
  // expansion reads the tables in place (it used to copy them: >= 2x the
  // table bytes), so every table is read by the kernels at least once.
  EXPECT_GT(moved["device gather"]["device_bytes"].get<double>(), 0);
  EXPECT_LT(moved["device gather"]["device_bytes"].get<double>(), table_bytes / 4);
  EXPECT_GE(moved["kernel"]["device_bytes"].get<double>(), table_bytes);
  // One counting pass for leaves and child tables together, then a selection
  // per kind present: 2.3x the table bytes; the old separate counts read the
  // 128 non-last tables of these 218 once more (2.9x).
  EXPECT_LT(moved["kernel"]["device_bytes"].get<double>(), 2.6 * table_bytes);
  EXPECT_TRUE(moved["device gather"]["on_device"].get<bool>());
  EXPECT_FALSE(moved.contains("gather"));  // no host gather
  // The counters' time on an H200 is recomputed from them.
  double h200 = 0;
  for (const char* phase : {"host", "upload", "device gather", "kernel", "download"})
    if (moved.contains(phase))
      h200 += moved[phase]["pcie_bytes"].get<double>() / 50e9 + moved[phase]["device_bytes"].get<double>() / 4.8e12;
  EXPECT_NEAR(resident["h200_counter_s"].get<double>(), h200, 1e-9);
}

TEST(bench_resident, no_resident_leaves_it_out) {
  const temp_dir dir;
  const fs::path json_path = dir / "bench.json";
  const auto r = run_ptwalk(dir, {"bench", "--gen", "small", "--backends", "thrust-cpu", "--repeat", "1",
                                  "--no-compaction", "--no-resident", "--json", json_path.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("resident"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(read_text(json_path));
  EXPECT_FALSE(j["backends"]["thrust-cpu"].contains("resident"));
}

}  // namespace
}  // namespace ptwalk
