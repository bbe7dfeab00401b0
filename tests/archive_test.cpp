// `ptwalk archive` as the real binary: generated sandbox fleets (variants,
// copy-on-write children, an ELF core) and the real Linux dumps round-trip
// byte-identical through add/restore; the add report matches an
// independent count of the fleet's pages; walking snapshots from the
// archive gives the same records as walking the originals.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "archive/catalog.hpp"
#include "input/manifest.hpp"
#include "support/archive_fleets.hpp"
#include "support/real_guest.hpp"
#include "support/run_cli.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_ptwalk;
using testing::temp_dir;

// The fleet's pages on the guest-physical grid, counted from the loaded images.
struct page_census {
  u64 pages = 0, zero = 0, distinct = 0;
};
page_census census(const fs::path& manifest) {
  page_census out;
  std::set<std::string> contents;
  for (const auto& snapshot : load_manifest(manifest))
    for (const auto& region : snapshot.image.regions())
      for (u64 gpa = (region.gpa + 4095) / 4096 * 4096; gpa + 4096 <= region.end(); gpa += 4096) {
        const std::string page(reinterpret_cast<const char*>(region.data + (gpa - region.gpa)), 4096);
        ++out.pages;
        if (page.find_first_not_of('\0') == std::string::npos) ++out.zero;
        else contents.insert(page);
      }
  out.distinct = contents.size();
  return out;
}

u64 number_after(const std::string& text, const std::string& label) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(text, m, std::regex(label + " ([0-9]+)"))) << label << " in " << text;
  return m.empty() ? 0 : std::stoull(m[1]);
}

TEST(archive_cli, sandbox_fleet_round_trips_and_reports_independent_counts) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 6, 4);
  const auto add = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string()});
  ASSERT_EQ(add.status, 0) << add.err;
  const page_census expected = census(manifest);
  EXPECT_EQ(number_after(add.out, "pages in"), expected.pages) << add.out;
  EXPECT_EQ(number_after(add.out, "zero"), expected.zero) << add.out;
  EXPECT_EQ(number_after(add.out, "newly stored"), expected.distinct) << add.out;
  EXPECT_EQ(number_after(add.out, "already stored"), expected.pages - expected.zero - expected.distinct) << add.out;
  testing::expect_round_trip(dir, dir / "arc", manifest);

  const auto check = run_ptwalk(dir, {"archive", "check", (dir / "arc").string()});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
  const auto ls = run_ptwalk(dir, {"archive", "ls", (dir / "arc").string()});
  ASSERT_EQ(ls.status, 0) << ls.err;
  EXPECT_NE(ls.out.find("cow4"), std::string::npos) << ls.out;
}

TEST(archive_cli, the_add_report_names_the_hash_backend_and_goes_to_a_json_file_whole) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 1);
  // An unwritable --report fails before the archive is created.
  const auto refused = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string(), "--report",
                                        (dir / "missing-dir/report.json").string()});
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("missing-dir/report.json"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(dir / "arc"));

  const auto add = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string(), "--backend", "cpu",
                                    "--jobs", "2", "--report", (dir / "report.json").string()});
  ASSERT_EQ(add.status, 0) << add.err;
  EXPECT_NE(add.out.find("  pages hashed by cpu (2 threads)\n"), std::string::npos) << add.out;
  const auto report = nlohmann::json::parse(read_text(dir / "report.json"));
  const page_census expected = census(manifest);
  EXPECT_EQ(report.at("hash_backend"), "cpu");
  EXPECT_EQ(report.at("hash_threads"), 2);
  EXPECT_EQ(report.at("snapshots"), read_manifest(manifest).size());
  EXPECT_EQ(report.at("pages"), expected.pages);
  EXPECT_EQ(report.at("zero_pages"), expected.zero);
  EXPECT_EQ(report.at("newly_stored"), expected.distinct);
  EXPECT_EQ(report.at("already_stored"), expected.pages - expected.zero - expected.distinct);
  EXPECT_EQ(report.at("archive_stored_pages"), expected.distinct);
  EXPECT_EQ(report.at("archive_bytes").get<u64>(), archive::read_catalog(dir / "arc").stored_bytes());
  // Nothing but the report beside the archive: the atomic writer's temporary is gone.
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".report.json.tmp"), std::string::npos) << entry.path();
}

TEST(archive_cli, adding_again_stores_nothing_new_and_duplicate_ids_change_nothing) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 1);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string()}).status, 0);
  const std::string catalog = read_text(dir / "arc/catalog.json");

  const auto again = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string()});
  EXPECT_NE(again.status, 0);
  EXPECT_NE(again.err.find("already in the archive"), std::string::npos) << again.err;
  EXPECT_EQ(read_text(dir / "arc/catalog.json"), catalog);

  // The same images under new ids: every page is already held.
  std::string renamed;
  for (auto spec : read_manifest(manifest)) {
    spec.id += "-again";
    renamed += format_manifest_line(spec) + "\n";
  }
  const auto second = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), dir.write("again.jsonl", renamed).string()});
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_EQ(number_after(second.out, "newly stored"), 0u) << second.out;
  testing::expect_round_trip(dir, dir / "arc", dir / "again.jsonl");
}

TEST(archive_cli, walking_from_the_archive_matches_walking_the_originals) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 2);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string()}).status, 0);
  const auto ls = run_ptwalk(dir, {"archive", "ls", (dir / "arc").string(), "--manifest"});
  ASSERT_EQ(ls.status, 0) << ls.err;
  EXPECT_NE(ls.out.find("\"archive\""), std::string::npos) << ls.out;
  const auto archived = dir.write("archived.jsonl", ls.out);
  const auto original_walk = run_ptwalk(dir, {"walk", manifest.string(), "--backend", "reference"});
  const auto archived_walk = run_ptwalk(dir, {"walk", archived.string(), "--backend", "reference"});
  ASSERT_EQ(original_walk.status, 0) << original_walk.err;
  ASSERT_EQ(archived_walk.status, 0) << archived_walk.err;
  EXPECT_FALSE(original_walk.out.empty());
  EXPECT_EQ(archived_walk.out, original_walk.out);
  EXPECT_EQ(run_ptwalk(dir, {"info", archived.string()}).status, 0);
}

TEST(archive_cli, bad_archive_sources_are_one_line_errors) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 1, 0);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string()}).status, 0);
  const auto missing = dir.write("m.jsonl", R"({"id":"x","format":"x86_64","memory":{"archive":"arc","snapshot":"nope"},"roots":["0x1000"]})" "\n");
  const auto walk = run_ptwalk(dir, {"walk", missing.string()});
  EXPECT_NE(walk.status, 0);
  EXPECT_NE(walk.err.find("no snapshot nope"), std::string::npos) << walk.err;
  const auto kdump = dir.write("k.jsonl", R"({"id":"k","format":"x86_64","memory":{"kdump":"k.kdump"},"roots":["0x1000"]})" "\n");
  const auto add_kdump = run_ptwalk(dir, {"archive", "add", (dir / "new-arc").string(), kdump.string()});
  EXPECT_NE(add_kdump.status, 0);
  EXPECT_NE(add_kdump.err.find("convert compressed kdump files"), std::string::npos) << add_kdump.err;
  EXPECT_FALSE(fs::exists(dir / "new-arc"));
  const auto not_archive = run_ptwalk(dir, {"archive", "ls", dir.path().string()});
  EXPECT_NE(not_archive.status, 0);
  EXPECT_NE(not_archive.err.find("not a ptwalk archive"), std::string::npos) << not_archive.err;
  EXPECT_FALSE(fs::exists(dir / "readers.lock"));
}

TEST(archive_cli, real_linux_dumps_round_trip_and_walk_in_place) {
  const auto manifest = testing::real_x86_manifest();
  if (!manifest) GTEST_SKIP() << "no real dumps in " << testing::real_guest_dir();
  const temp_dir dir;
  const auto fleet = dir.write("real.jsonl", *manifest);
  const auto add = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), fleet.string()});
  ASSERT_EQ(add.status, 0) << add.err;
  const page_census expected = census(fleet);
  EXPECT_EQ(number_after(add.out, "newly stored"), expected.distinct) << add.out;
  testing::expect_round_trip(dir, dir / "arc", fleet);
  const auto ls = run_ptwalk(dir, {"archive", "ls", (dir / "arc").string(), "--manifest"});
  const auto archived = dir.write("archived.jsonl", ls.out);
  const auto original_walk = run_ptwalk(dir, {"walk", fleet.string(), "--snapshot", "pti"});
  const auto archived_walk = run_ptwalk(dir, {"walk", archived.string(), "--snapshot", "pti"});
  ASSERT_EQ(archived_walk.status, 0) << archived_walk.err;
  EXPECT_GT(original_walk.out.size(), 1000u);
  EXPECT_EQ(archived_walk.out, original_walk.out);
}


TEST(archive_cli, add_compact_archives_the_compacted_images) {
  const testing::temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 1);
  const auto compact = testing::run_ptwalk(dir, {"compact", manifest.string(), "--out", (dir / "c").string()});
  ASSERT_EQ(compact.status, 0) << compact.err;
  const auto add = testing::run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string(), "--compact"});
  ASSERT_EQ(add.status, 0) << add.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "c/manifest.jsonl"));
  // No staging directory is left beside the archive.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".arc.compact"), std::string::npos);
  const auto ls = testing::run_ptwalk(dir, {"archive", "ls", (dir / "arc").string(), "--manifest"});
  const auto archived = dir.write("archived.jsonl", ls.out);
  const auto from_archive = testing::run_ptwalk(dir, {"walk", archived.string()});
  const auto from_compacted = testing::run_ptwalk(dir, {"walk", (dir / "c/manifest.jsonl").string()});
  ASSERT_EQ(from_archive.status, 0) << from_archive.err;
  EXPECT_FALSE(from_compacted.out.empty());
  EXPECT_EQ(from_archive.out, from_compacted.out);
}


TEST(archive_cli, bench_archive_reports_every_row_and_cleans_up) {
  const testing::temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 1);
  const auto bench = testing::run_ptwalk(
      dir, {"bench", manifest.string(), "--archive", "--threads", "2", "--job-dir", (dir / "scratch").string()});
  ASSERT_EQ(bench.status, 0) << bench.err;
  for (const char* row : {"archive add", "zstd -3, each image", "zstd -3 --long=27, concat", "archive restore",
                          "load from archive", "walk from archive (eager)", "walk from archive (lazy)"})
    EXPECT_NE(bench.out.find(row), std::string::npos) << row << "\n" << bench.out;
  EXPECT_TRUE(std::filesystem::is_empty(dir / "scratch"));
}

}  // namespace
}  // namespace ptwalk
