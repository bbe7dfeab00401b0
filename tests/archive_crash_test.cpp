// Crash safety of `ptwalk archive`: the real binary killed with SIGKILL at
// each step of add and gc (PTWALK_ARCHIVE_CRASH_AT) and at arbitrary
// moments from outside leaves the catalog as it was, `check` clean and
// every snapshot restorable; a retried add completes; a corrupted pack
// frame or index is reported by `check` for the snapshots it damages; rm
// and gc reclaim space and keep the rest byte-identical.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "archive/catalog.hpp"
#include "input/manifest.hpp"
#include "support/archive_fleets.hpp"
#include "support/run_cli.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_ptwalk;
using testing::temp_dir;

// Splits the fleet manifest in two: the first `count` lines and the rest.
std::pair<fs::path, fs::path> split_manifest(const temp_dir& dir, const fs::path& manifest, std::size_t count) {
  std::string first, rest;
  std::size_t n = 0;
  for (const auto& spec : read_manifest(manifest)) (n++ < count ? first : rest) += format_manifest_line(spec) + "\n";
  return {dir.write("first.jsonl", first), dir.write("rest.jsonl", rest)};
}

// Starts `ptwalk ARGS` (stdout discarded), with PTWALK_ARCHIVE_CRASH_AT=step unless step is empty.
pid_t spawn_ptwalk(const std::vector<std::string>& args, const std::string& step = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!step.empty()) ::setenv("PTWALK_ARCHIVE_CRASH_AT", step.c_str(), 1);
    std::vector<char*> argv{const_cast<char*>(PTWALK_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    (void)::freopen("/dev/null", "w", stdout);
    ::execv(PTWALK_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

// True when the child ended by SIGKILL.
bool killed(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

// Runs ptwalk with PTWALK_ARCHIVE_CRASH_AT=step; true when it was killed there.
bool run_killed_at(const std::string& step, const std::vector<std::string>& args) {
  return killed(spawn_ptwalk(args, step));
}

// Starts ptwalk and SIGKILLs it after `delay` (unless it finished first); true when killed.
bool run_killed_after(std::chrono::milliseconds delay, const std::vector<std::string>& args) {
  const pid_t pid = spawn_ptwalk(args);
  std::this_thread::sleep_for(delay);
  ::kill(pid, SIGKILL);
  return killed(pid);
}

void expect_check_ok(const temp_dir& dir, const fs::path& archive) {
  const auto check = run_ptwalk(dir, {"archive", "check", archive.string()});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
}

class archive_add_killed : public ::testing::TestWithParam<const char*> {};

TEST_P(archive_add_killed, leaves_the_archive_as_it_was_and_a_retry_completes) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 3, 2);
  const auto [first, rest] = split_manifest(dir, manifest, 2);
  const auto arc = dir / "arc";
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", arc.string(), first.string()}).status, 0);
  const std::string catalog = read_text(arc / "catalog.json");

  ASSERT_TRUE(run_killed_at(GetParam(), {"archive", "add", arc.string(), rest.string()}));
  EXPECT_EQ(read_text(arc / "catalog.json"), catalog);
  expect_check_ok(dir, arc);
  testing::expect_round_trip(dir, arc, first);

  const auto retry = run_ptwalk(dir, {"archive", "add", arc.string(), rest.string()});
  ASSERT_EQ(retry.status, 0) << retry.err;
  expect_check_ok(dir, arc);
  testing::expect_round_trip(dir, arc, manifest);
  // The killed run's files are named by no catalog; gc removes them and nothing else.
  const auto gc = run_ptwalk(dir, {"archive", "gc", arc.string()});
  ASSERT_EQ(gc.status, 0) << gc.err;
  expect_check_ok(dir, arc);
  testing::expect_round_trip(dir, arc, manifest);
}

INSTANTIATE_TEST_SUITE_P(steps, archive_add_killed,
                         ::testing::Values("pack-appended", "pack-finished", "indexes-written", "before-commit"));

TEST(archive_crash, add_killed_at_arbitrary_moments_then_retried) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 2);
  const auto arc = dir / "arc";
  for (const int ms : {2, 10, 30, 80}) {
    const std::string before = read_text(arc / "catalog.json");
    if (!run_killed_after(std::chrono::milliseconds(ms), {"archive", "add", arc.string(), manifest.string()})) break;
    // Killed: the catalog is the old one or absent, never a partial one; or,
    // when the kill landed between the commit and the exit (a loaded
    // machine), the whole new one.
    if (read_text(arc / "catalog.json") != before) {
      expect_check_ok(dir, arc);
      testing::expect_round_trip(dir, arc, manifest);
      return;
    }
    if (!before.empty()) expect_check_ok(dir, arc);
  }
  if (!fs::exists(arc / "catalog.json")) {
    const auto retry = run_ptwalk(dir, {"archive", "add", arc.string(), manifest.string()});
    ASSERT_EQ(retry.status, 0) << retry.err;
  }
  expect_check_ok(dir, arc);
  testing::expect_round_trip(dir, arc, manifest);
}

TEST(archive_crash, check_reports_a_corrupted_frame_by_snapshot) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 1);
  const auto arc = dir / "arc";
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", arc.string(), manifest.string()}).status, 0);
  const auto contents = archive::read_catalog(arc);
  ASSERT_EQ(contents.packs.size(), 1u);
  {
    // A byte in the middle of the first frame: pages the base image stored first.
    std::fstream pack(arc / "packs" / (contents.packs[0].name + ".pack"), std::ios::in | std::ios::out | std::ios::binary);
    pack.seekp(100);
    pack.put('\x5a');
  }
  const auto check = run_ptwalk(dir, {"archive", "check", arc.string()});
  EXPECT_NE(check.status, 0);
  EXPECT_NE(check.out.find("frame 0"), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("snapshot base:"), std::string::npos) << check.out;
  EXPECT_NE(check.err.find("check failed"), std::string::npos) << check.err;
}

TEST(archive_crash, check_reports_a_corrupted_index_by_snapshot) {
  const temp_dir dir2;
  const auto manifest2 = testing::write_sandbox_fleet(dir2, 2, 1);
  const auto arc2 = dir2 / "arc";
  ASSERT_EQ(run_ptwalk(dir2, {"archive", "add", arc2.string(), manifest2.string()}).status, 0);
  const auto contents = archive::read_catalog(arc2);
  const auto* v2 = contents.find("v2");
  ASSERT_NE(v2, nullptr);
  {
    std::ofstream index(archive::index_path(arc2, v2->index), std::ios::app | std::ios::binary);
    index.put('x');
  }
  const auto check2 = run_ptwalk(dir2, {"archive", "check", arc2.string()});
  EXPECT_NE(check2.status, 0);
  EXPECT_NE(check2.out.find("snapshot v2:"), std::string::npos) << check2.out;
  EXPECT_EQ(check2.out.find("snapshot base:"), std::string::npos) << check2.out;
}

TEST(archive_crash, rm_and_gc_reclaim_space_and_survive_kills) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 0);
  const auto [first, rest] = split_manifest(dir, manifest, 1);  // base alone, then v1..v4 and elf
  const auto arc = dir / "arc";
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", arc.string(), first.string()}).status, 0);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", arc.string(), rest.string()}).status, 0);
  const u64 before = archive::read_catalog(arc).stored_bytes();

  ASSERT_EQ(run_ptwalk(dir, {"archive", "rm", arc.string(), "v1", "v2", "v3", "elf"}).status, 0);
  EXPECT_NE(run_ptwalk(dir, {"archive", "rm", arc.string(), "v1"}).status, 0);  // gone already
  const std::string catalog = read_text(arc / "catalog.json");
  for (const char* step : {"gc-packed", "gc-indexes-written", "before-commit"}) {
    ASSERT_TRUE(run_killed_at(step, {"archive", "gc", arc.string()})) << step;
    EXPECT_EQ(read_text(arc / "catalog.json"), catalog) << step;
    expect_check_ok(dir, arc);
  }
  const auto gc = run_ptwalk(dir, {"archive", "gc", arc.string()});
  ASSERT_EQ(gc.status, 0) << gc.err;
  EXPECT_NE(gc.out.find("1 rewritten"), std::string::npos) << gc.out;
  EXPECT_LT(archive::read_catalog(arc).stored_bytes(), before);
  expect_check_ok(dir, arc);
  std::string kept;
  for (const auto& spec : read_manifest(manifest))
    if (spec.id == "base" || spec.id == "v4") kept += format_manifest_line(spec) + "\n";
  testing::expect_round_trip(dir, arc, dir.write("kept.jsonl", kept));
  // Only the catalog's files remain.
  const auto contents = archive::read_catalog(arc);
  EXPECT_EQ(static_cast<std::size_t>(std::distance(fs::directory_iterator(arc / "packs"), fs::directory_iterator())),
            contents.packs.size());
  EXPECT_EQ(static_cast<std::size_t>(std::distance(fs::directory_iterator(arc / "indexes"), fs::directory_iterator())),
            contents.snapshots.size());
}

}  // namespace
}  // namespace ptwalk
