// `ptwalk compact`, `ptwalk verify` and `ptwalk demo` as the real binary on
// generated fleets: round trips that verify for every fleet shape and
// policy, byte-identical output at any thread count, a corrupted output
// caught by verify, and failed runs that leave nothing behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "compact/compact_job.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_result;
using testing::run_ptwalk;
using testing::temp_dir;

// Every file of a directory with its bytes.
std::map<std::string, std::string> contents(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out[entry.path().filename().string()] = read_text(entry.path());
  return out;
}

// Names in `dir` other than `keep`: leftovers such as staging directories.
std::vector<std::string> others(const fs::path& dir, std::initializer_list<std::string> keep) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) out.push_back(name);
  }
  return out;
}

fs::path generate(const temp_dir& dir, const std::string& shape, const std::string& name = "fleet") {
  (void)write_fleet(parse_fleet_shape(shape), dir / name);
  return dir / name / "manifest.jsonl";
}

class compact_shapes : public ::testing::TestWithParam<const char*> {};

TEST_P(compact_shapes, round_trip_verifies) {
  const temp_dir dir;
  const fs::path fleet = generate(dir, GetParam());
  const auto compact = run_ptwalk(dir, {"compact", fleet.string(), "--out", (dir / "out").string(), "--verify"});
  ASSERT_EQ(compact.status, 0) << compact.err;
  EXPECT_NE(compact.out.find("verify: OK"), std::string::npos) << compact.out;
  const auto verify = run_ptwalk(dir, {"verify", fleet.string(), (dir / "out/manifest.jsonl").string()});
  EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("verify: OK, no differences"), std::string::npos) << verify.out;
  EXPECT_EQ(read_manifest(dir / "out/manifest.jsonl").size(), read_manifest(fleet).size());
  EXPECT_TRUE(others(dir.path(), {"fleet", "out"}).empty());
}

// Small versions of every preset; "everything" adds hostile roots, a
// self-map, duplicates, CoW and large pages (a 1 GiB direct map, so one
// snapshot only: every pass over a sparse GiB costs a second; LA57 is in
// the compact_cli fleet).
INSTANTIATE_TEST_SUITE_P(
    presets, compact_shapes,
    ::testing::Values("small", "linux,snapshots=2,spaces=8,pages=32,kernel=128,large=0",
                      "nanvix,snapshots=1,spaces=8,pages=16,kernel=64", "hyperlight,snapshots=4,pages=32",
                      "recursive,snapshots=1,spaces=4,pages=16,kernel=64",
                      "everything,snapshots=1,spaces=4,pages=16,kernel=64"));

class compact_cli : public ::testing::Test {
 protected:
  temp_dir dir;
  // Hostile roots give unbacked leaves and swap-like entries; CoW and
  // duplicates are there too. No large pages, to keep it small.
  fs::path fleet = generate(dir, "everything,snapshots=3,spaces=4,pages=16,kernel=64,large=0");

  run_result compact(std::vector<std::string> extra, const std::string& out = "out") {
    std::vector<std::string> args{"compact", fleet.string(), "--out", (dir / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_ptwalk(dir, args);
  }
  nlohmann::json policy_of(const std::string& out) {
    const auto specs = read_manifest(dir / out / "manifest.jsonl");
    return specs.front().meta["compaction"];
  }
};

TEST_F(compact_cli, every_policy_verifies_and_is_recorded) {
  const auto keep_pa = compact({"--keep-pa", "--verify"}, "keep-pa");
  ASSERT_EQ(keep_pa.status, 0) << keep_pa.err;
  EXPECT_TRUE(policy_of("keep-pa")["keep_pa"].get<bool>());
  EXPECT_TRUE(policy_of("keep-pa")["keep_unbacked"].get<bool>());  // implied

  const auto keep_unbacked = compact({"--keep-unbacked", "--verify"}, "keep-unbacked");
  ASSERT_EQ(keep_unbacked.status, 0) << keep_unbacked.err;
  EXPECT_NE(keep_unbacked.out.find(" 0 unbacked dropped"), std::string::npos) << keep_unbacked.out;
  EXPECT_TRUE(policy_of("keep-unbacked")["keep_unbacked"].get<bool>());

  const auto cow = compact({"--cow-writable", "--verify"}, "cow");
  ASSERT_EQ(cow.status, 0) << cow.err;
  EXPECT_TRUE(policy_of("cow")["cow_writable"].get<bool>());
  EXPECT_GT(policy_of("cow")["leaves_made_cow"].get<u64>(), 0u);

  const auto plain = compact({"--verify"}, "plain");
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_GT(policy_of("plain")["unbacked_leaves_dropped"].get<u64>(), 0u);  // hostile roots have one
  for (const char* out : {"keep-pa", "keep-unbacked", "cow", "plain"}) {
    const auto verify = run_ptwalk(dir, {"verify", fleet.string(), (dir / out / "manifest.jsonl").string()});
    EXPECT_EQ(verify.status, 0) << out << ": " << verify.out;
  }
}

TEST_F(compact_cli, any_thread_count_gives_the_same_bytes) {
  ASSERT_EQ(compact({"--jobs", "1"}, "serial").status, 0);
  ASSERT_EQ(compact({"--jobs", "4", "--batch", "1"}, "parallel").status, 0);
  const auto serial = contents(dir / "serial"), parallel = contents(dir / "parallel");
  EXPECT_EQ(serial.size(), 4u);  // three images and the manifest
  EXPECT_TRUE(serial == parallel);
}

TEST_F(compact_cli, verify_names_a_corrupted_byte) {
  ASSERT_EQ(compact({}).status, 0);
  // The data region starts at 0 with a mapped frame; flip its first byte.
  const auto spec = read_manifest(dir / "out/manifest.jsonl").front();
  const fs::path image = dir / "out" / std::get<raw_source>(spec.memory).path;
  std::fstream file(image, std::ios::in | std::ios::out | std::ios::binary);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x5a);
  file.seekp(0);
  file.write(&byte, 1);
  file.close();
  const auto verify = run_ptwalk(dir, {"verify", fleet.string(), (dir / "out/manifest.jsonl").string()});
  EXPECT_EQ(verify.status, 1);
  EXPECT_NE(verify.out.find(fmt::format("{} space", spec.id)), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find("byte at offset 0x0 of the page"), std::string::npos) << verify.out;
  EXPECT_NE(verify.err.find("1 difference from " + fleet.string()), std::string::npos) << verify.err;
}

TEST_F(compact_cli, report_and_progress) {
  const auto r = compact({"--report", (dir / "report.json").string(), "--progress", "--verify"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("compact: 3/3 snapshots (100%)"), std::string::npos) << r.err;
  const auto report = nlohmann::json::parse(read_text(dir / "report.json"));
  EXPECT_EQ(report["snapshots"], 3);
  EXPECT_TRUE(report["committed"].get<bool>());
  EXPECT_TRUE(report["verify"]["ok"].get<bool>());
  EXPECT_EQ(report["tables_per_depth"].size(), 5u);  // LA57 in the fleet
  for (const char* phase : {"load", "walk", "first_batch", "relink", "write", "verify", "stall", "total"})
    EXPECT_TRUE(report["seconds"].contains(phase)) << phase;
  EXPECT_LT(report["bytes_out"].get<u64>(), report["bytes_in"].get<u64>());
  // Without --progress, and stderr not a terminal: no progress lines.
  EXPECT_EQ(compact({"--force"}).err, "");
}

TEST_F(compact_cli, bad_input_midway_leaves_no_output) {
  // The second snapshot's image is missing: the first is already compacted
  // (batches of one) when the job fails.
  auto specs = read_manifest(fleet);
  std::get<raw_source>(specs[1].memory).path = "missing.img";
  std::string lines;
  for (const auto& spec : specs) lines += format_manifest_line(spec) + "\n";
  const fs::path broken = dir.write("fleet/broken.jsonl", lines);
  const auto r = run_ptwalk(dir, {"compact", broken.string(), "--out", (dir / "out").string(), "--batch", "1",
                                  "--jobs", "1"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.img"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_TRUE(others(dir.path(), {"fleet"}).empty());
}

TEST_F(compact_cli, a_malformed_manifest_line_fails_before_any_work) {
  std::string text = read_text(fleet);
  text.insert(text.find('\n') + 1, "{\"id\": \"x\", \"format\": \"x86_64\", \"bogus\": 1}\n");
  const fs::path broken = dir.write("fleet/broken.jsonl", text);
  const auto r = run_ptwalk(dir, {"compact", broken.string(), "--out", (dir / "out").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(broken.string() + ":2:"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_TRUE(others(dir.path(), {"fleet"}).empty());
}

TEST_F(compact_cli, an_unwritable_output_fails_cleanly) {
  dir.write("a-file", "not a directory");
  const auto r = compact({}, "a-file/out");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("a-file/out"), std::string::npos) << r.err;
  const auto report = compact({"--report", (dir / "a-file/report.json").string()});
  EXPECT_EQ(report.status, 1);
  EXPECT_FALSE(fs::exists(dir / "out"));  // the report path is checked before the job runs
  EXPECT_TRUE(others(dir.path(), {"fleet", "a-file"}).empty());
}

TEST_F(compact_cli, an_existing_output_is_replaced_whole_or_not_at_all) {
  fs::create_directories(dir / "out");
  dir.write("out/precious.txt", "keep me");
  const auto refused = compact({});
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("exists and is not empty (use --force"), std::string::npos) << refused.err;
  EXPECT_EQ(read_text(dir / "out/precious.txt"), "keep me");

  // A failing run with --force leaves the old directory as it was.
  auto specs = read_manifest(fleet);
  std::get<raw_source>(specs.back().memory).path = "missing.img";
  std::string lines;
  for (const auto& spec : specs) lines += format_manifest_line(spec) + "\n";
  const fs::path broken = dir.write("fleet/broken.jsonl", lines);
  EXPECT_EQ(run_ptwalk(dir, {"compact", broken.string(), "--out", (dir / "out").string(), "--force"}).status, 1);
  EXPECT_EQ(contents(dir / "out").size(), 1u);

  // A successful one replaces it entirely.
  EXPECT_EQ(compact({"--force"}).status, 0);
  EXPECT_FALSE(fs::exists(dir / "out/precious.txt"));
  EXPECT_TRUE(fs::exists(dir / "out/manifest.jsonl"));
  EXPECT_TRUE(others(dir.path(), {"fleet", "out"}).empty());
}

TEST_F(compact_cli, the_job_library_matches_the_binary) {
  ASSERT_EQ(compact({"--jobs", "2"}).status, 0);
  compact_options options;
  options.jobs = 3;
  options.batch_size = 2;
  const compact_report report = run_compact_job(fleet, dir / "library", options);
  EXPECT_TRUE(report.committed);
  EXPECT_EQ(report.snapshots, 3u);
  EXPECT_GE(report.seconds.total, report.seconds.first_batch);
  EXPECT_TRUE(contents(dir / "out") == contents(dir / "library"));
}

// st_blocks × 512 and st_size of every image file a manifest names, stat'ed here.
std::pair<u64, u64> allocated_and_size(const fs::path& manifest) {
  u64 allocated = 0, size = 0;
  for (const snapshot_spec& spec : read_manifest(manifest)) {
    struct stat st {};
    const fs::path image = manifest.parent_path() / std::get<raw_source>(spec.memory).path;
    EXPECT_EQ(::stat(image.c_str(), &st), 0) << image;
    allocated += static_cast<u64>(st.st_blocks) * 512;
    size += static_cast<u64>(st.st_size);
  }
  return {allocated, size};
}

std::string mib(u64 bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

TEST(compact_disk_cli, reports_bytes_allocated_on_disk_beside_logical_sizes) {
  const temp_dir dir;
  // A 1 GiB direct map: 1 GiB images, almost all of them holes.
  const fs::path fleet = generate(dir, "linux,snapshots=2,spaces=2,pages=16,kernel=32,large");
  const auto r = run_ptwalk(dir, {"compact", fleet.string(), "--out", (dir / "out").string(), "--report",
                                  (dir / "report.json").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto [in_allocated, in_size] = allocated_and_size(fleet);
  const auto [out_allocated, out_size] = allocated_and_size(dir / "out/manifest.jsonl");
  EXPECT_GE(in_size, u64{2} << 30);
  EXPECT_LT(in_allocated, in_size / 8) << "the generated images are sparse";

  const auto report = nlohmann::json::parse(read_text(dir / "report.json"));
  EXPECT_EQ(report["disk"]["in"]["files"], 2);
  EXPECT_EQ(report["disk"]["in"]["allocated_bytes"], in_allocated);
  EXPECT_EQ(report["disk"]["in"]["file_bytes"], in_size);
  EXPECT_EQ(report["disk"]["out"]["files"], 2);
  EXPECT_EQ(report["disk"]["out"]["allocated_bytes"], out_allocated);
  EXPECT_EQ(report["disk"]["out"]["file_bytes"], out_size);
  EXPECT_NE(r.out.find(fmt::format("on disk: {} in, {} out", mib(in_allocated), mib(out_allocated))),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(fmt::format("files {} in, {} out", mib(in_size), mib(out_size))), std::string::npos) << r.out;

  const auto v = run_ptwalk(dir, {"verify", fleet.string(), (dir / "out/manifest.jsonl").string()});
  ASSERT_EQ(v.status, 0) << v.out << v.err;
  EXPECT_NE(v.out.find(fmt::format("on disk: {} before, {} after allocated (files {} before, {} after",
                                   mib(in_allocated), mib(out_allocated), mib(in_size), mib(out_size))),
            std::string::npos)
      << v.out;
}

TEST(demo_cli, runs_with_no_arguments_explains_and_cleans_up) {
  const temp_dir dir;
  const auto r = run_ptwalk(dir, {"demo"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* words : {"what just happened", "shared kernel half", "Nanvix", "still there: OK",
                            "Files removed", "on disk:"})
    EXPECT_NE(r.out.find(words), std::string::npos) << words << "\n" << r.out;
  // Each kind of image before the whole fleet, and no kind dominates: no 1 GiB image in the demo.
  const auto per_kind = r.out.find("Size of each kind of image"), whole = r.out.find("The whole fleet:");
  ASSERT_NE(per_kind, std::string::npos) << r.out;
  ASSERT_NE(whole, std::string::npos) << r.out;
  EXPECT_LT(per_kind, whole);
  for (const char* kind : {"- linux ", "- nanvix ", "- hyperlight ", "- large "})
    EXPECT_NE(r.out.find(kind, per_kind), std::string::npos) << kind << "\n" << r.out;
  const double fleet_mib = std::stod(r.out.substr(whole + std::string_view("The whole fleet: ").size()));
  EXPECT_GT(fleet_mib, 1);
  EXPECT_LT(fleet_mib, 64) << r.out;
  // The temporary directory it names is gone.
  const auto at = r.out.find("/ptwalk-demo-");
  ASSERT_NE(at, std::string::npos);
  const auto start = r.out.rfind(' ', at) + 1;
  const fs::path used = r.out.substr(start, r.out.find('\n', at) - start);
  EXPECT_FALSE(fs::exists(used)) << used;

  // --keep wants a new or empty directory, and says so before any work.
  fs::create_directories(dir / "full");
  dir.write("full/file", "x");
  const auto kept = run_ptwalk(dir, {"demo", "--keep", (dir / "full").string()});
  EXPECT_EQ(kept.status, 1);
  EXPECT_NE(kept.err.find("exists and is not empty"), std::string::npos) << kept.err;
}

}  // namespace
}  // namespace ptwalk
