// The cluster paths on the real engines, started by the test: a single-node
// Slurm cluster from Debian's packages (scripts/slurm/local-cluster.sh) runs
// the shipped job scripts — array jobs of compact and walk over a generated
// fleet, one task dying mid-write and requeued, the dependent merge; array
// jobs of import and roots over generated ELF cores — and Open MPI's mpirun
// runs walk on 3 ranks, directly and inside a Slurm job, and roots and import.
// Every output must be byte-identical to one process's. Nothing is mocked
// and nothing is skipped: a machine where an engine cannot start fails here.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/dump_fleet.hpp"
#include "support/run_cli.hpp"
#include "support/shell.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_ptwalk;
using testing::shell;
using testing::shell_result;
using testing::temp_dir;

const fs::path scripts = fs::path(PTWALK_SOURCE_DIR) / "scripts/slurm";

// Every file of a directory with its bytes.
std::map<std::string, std::string> contents(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out[entry.path().filename().string()] = read_text(entry.path());
  return out;
}

fs::path fleet_in(const temp_dir& dir) {
  // Every part far larger than the flaky task's file-size limit.
  (void)write_fleet(parse_fleet_shape("linux,snapshots=6,spaces=32,pages=512,kernel=256,large=0"), dir / "fleet");
  return dir / "fleet/manifest.jsonl";
}

// The cluster of this test, in the test's own folder; stopped whatever happens.
class local_slurm {
 public:
  explicit local_slurm(const fs::path& state) : env_(fmt::format("export PTWALK_SLURM_DIR={} SLURM_CONF={}/slurm.conf;",
                                                                 state.string(), state.string())) {
    started_ = shell(fmt::format("{} {}/local-cluster.sh start", env_, scripts.string()));
  }
  ~local_slurm() { (void)shell(fmt::format("{} {}/local-cluster.sh stop", env_, scripts.string())); }
  [[nodiscard]] const shell_result& started() const { return started_; }
  // Runs a command with this cluster's SLURM_CONF.
  [[nodiscard]] shell_result run(const std::string& command) const { return shell(env_ + " " + command); }
  // Waits until none of `jobs` (comma-separated ids) is pending or running.
  [[nodiscard]] bool wait_done(const std::string& jobs, const std::string& but_not = "") const {
    for (int i = 0; i < 600; ++i) {
      const auto queued = run(fmt::format("squeue -h -j {} -o \"%i %r\"", jobs)).out;
      bool waiting = false;
      for (std::size_t at = 0; at < queued.size();) {
        const auto end = queued.find('\n', at);
        const std::string line = queued.substr(at, end - at);
        if (!line.empty() && (but_not.empty() || line.find(but_not) == std::string::npos)) waiting = true;
        at = end == std::string::npos ? queued.size() : end + 1;
      }
      if (!waiting) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

 private:
  std::string env_;
  shell_result started_;
};

// A ptwalk that, as the first run of array task 1, dies mid-write: its part
// outgrows a 4 KiB file-size limit (as a full quota would stop it) and the
// kernel ends it with SIGXFSZ at that write. Unlike a kill timed from outside,
// this cannot miss on a loaded machine, where a small shard may be written
// and renamed between two polls.
void write_flaky_ptwalk(const temp_dir& dir) {
  (void)dir.write("ptwalk-flaky", fmt::format(R"(#!/usr/bin/env bash
if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ -z "${{SLURM_RESTART_COUNT:-}}" ]; then
  ulimit -f 4
fi
exec {} "$@"
)",
                                              PTWALK_BINARY));
  fs::permissions(dir / "ptwalk-flaky", fs::perms::owner_all);
}

TEST(slurm_cluster, array_jobs_with_a_killed_and_requeued_task_merge_to_one_process) {
  const temp_dir dir;
  // Short: munge's socket path must fit in 108 bytes.
  const local_slurm slurm(fmt::format("/tmp/ptwalk-slurm-test-{}", ::getpid()));
  ASSERT_EQ(slurm.started().status, 0) << slurm.started().out;
  const fs::path fleet = fleet_in(dir);
  ASSERT_EQ(run_ptwalk(dir, {"walk", fleet.string(), "--out", (dir / "single.jsonl").string()}).status, 0);
  ASSERT_EQ(run_ptwalk(dir, {"compact", fleet.string(), "--out", (dir / "single").string()}).status, 0);
  write_flaky_ptwalk(dir);

  // The shipped submit script: 3 array tasks and a merge job after them, for each command.
  std::map<std::string, std::pair<std::string, std::string>> jobs;  // command -> (array, merge)
  for (const std::string command : {"compact", "walk"}) {
    const std::string out = (dir / (command == "walk" ? "walked.jsonl" : "compacted")).string();
    const auto submitted = slurm.run(fmt::format("cd {} && PTWALK={} PTWALK_GPUS_PER_TASK=0 {}/submit.sh {} {} {} 3",
                                                 dir.path().string(), (dir / "ptwalk-flaky").string(),
                                                 scripts.string(), command, fleet.string(), out));
    ASSERT_EQ(submitted.status, 0) << submitted.out;
    const auto space = submitted.out.find(' ');
    jobs[command] = {submitted.out.substr(0, space), submitted.out.substr(space + 1, submitted.out.find('\n') - space - 1)};
  }
  const std::string arrays = jobs["compact"].first + "," + jobs["walk"].first;
  ASSERT_TRUE(slurm.wait_done(arrays)) << slurm.run("squeue; scontrol show jobs").out;
  // Task 1 failed, so the merges wait on a dependency that can no longer be met.
  for (const auto& [command, ids] : jobs) {
    const auto state = slurm.run(fmt::format("squeue -h -j {} -o %T", ids.second)).out;
    EXPECT_EQ(state, "PENDING\n") << command;
    (void)slurm.run("scancel " + ids.second);
    const std::string parts = (dir / (command == "walk" ? "walked.jsonl.parts" : "compacted.parts")).string();
    EXPECT_FALSE(fs::exists(parts + "/part-00001")) << command;
    for (const auto& entry : fs::directory_iterator(parts))  // the dying task removed its temporary
      EXPECT_FALSE(entry.path().filename().string().starts_with(".part-00001.tmp-")) << entry.path();
    EXPECT_TRUE(fs::exists(parts + "/part-00002")) << command;
    // Merging what is there fails and names the missing shard.
    const auto merge = shell(fmt::format("{} merge --out {}/early {}/part-*", PTWALK_BINARY, dir.path().string(), parts));
    EXPECT_NE(merge.status, 0);
    EXPECT_NE(merge.out.find("incomplete set: shard 1 of 3 missing"), std::string::npos) << merge.out;
  }
  EXPECT_FALSE(fs::exists(dir / "early"));

  // Requeue the failed tasks (they keep the array's variables), then merge again.
  const std::string task1 = jobs["compact"].first + "_1," + jobs["walk"].first + "_1";
  const auto requeue = slurm.run(fmt::format("scontrol requeue {} && for t in {}; do scontrol update jobid=$t StartTime=now; done",
                                             task1, jobs["compact"].first + "_1 " + jobs["walk"].first + "_1"));
  ASSERT_EQ(requeue.status, 0) << requeue.out;
  ASSERT_TRUE(slurm.wait_done(arrays)) << slurm.run("squeue").out;
  for (const auto& [command, ids] : jobs) {
    const bool walk = command == "walk";
    const std::string out = (dir / (walk ? "walked.jsonl" : "compacted")).string();
    const auto merged = slurm.run(fmt::format("cd {} && PTWALK={} sbatch --wait -o merge-{}.log {}/merge.sbatch {}.parts {}{}",
                                              dir.path().string(), PTWALK_BINARY, command, scripts.string(), out, out,
                                              walk ? "" : " --force"));
    ASSERT_EQ(merged.status, 0) << merged.out << read_text(dir / ("merge-" + command + ".log"));
  }
  EXPECT_EQ(read_text(dir / "walked.jsonl"), read_text(dir / "single.jsonl"));
  EXPECT_GT(read_text(dir / "walked.jsonl").size(), 100'000u);
  EXPECT_TRUE(contents(dir / "compacted") == contents(dir / "single"));
  EXPECT_EQ(contents(dir / "compacted").size(), 7u);  // six images and the manifest

  // The MPI job script inside the allocation: 3 ranks, one output.
  const auto mpi = slurm.run(fmt::format(
      "cd {} && PTWALK={} PTWALK_MPIRUN=\"mpirun --allow-run-as-root --oversubscribe\" sbatch --wait -n 3 -o mpi.log "
      "{}/mpi.sbatch {} {}/mpi.jsonl",
      dir.path().string(), PTWALK_BINARY, scripts.string(), fleet.string(), dir.path().string()));
  ASSERT_EQ(mpi.status, 0) << mpi.out << read_text(dir / "mpi.log");
  EXPECT_EQ(read_text(dir / "mpi.jsonl"), read_text(dir / "single.jsonl"));
  EXPECT_NE(read_text(dir / "mpi.log").find("shard 2/3 (OMPI_COMM_WORLD_RANK=2 of 3)"), std::string::npos);

  // archive add the same way: pack names differ from one process's, so the
  // archive is checked by what it holds: its snapshots walk as the fleet does.
  const auto add = slurm.run(fmt::format(
      "cd {} && PTWALK={} PTWALK_MPIRUN=\"mpirun --allow-run-as-root --oversubscribe\" sbatch --wait -n 3 -o add.log "
      "{}/mpi.sbatch archive-add {} {}/arc --jobs 1",
      dir.path().string(), PTWALK_BINARY, scripts.string(), fleet.string(), dir.path().string()));
  ASSERT_EQ(add.status, 0) << add.out << read_text(dir / "add.log");
  EXPECT_NE(read_text(dir / "add.log").find("archive add: 6 snapshots"), std::string::npos) << read_text(dir / "add.log");
  const auto archived = shell(fmt::format("cd {0} && {1} archive check arc && {1} archive ls arc --manifest > arc.jsonl && "
                                          "{1} walk arc.jsonl --out arc-walk.jsonl",
                                          dir.path().string(), PTWALK_BINARY));
  ASSERT_EQ(archived.status, 0) << archived.out;
  EXPECT_EQ(read_text(dir / "arc-walk.jsonl"), read_text(dir / "single.jsonl"));
  EXPECT_NE(read_text(dir / "add.log").find("ptwalk archive add: shard 2/3 (OMPI_COMM_WORLD_RANK=2 of 3)"),
            std::string::npos);
}

// The dumps of a generated fleet of ELF cores, and a file listing them as submit.sh takes them.
std::vector<std::string> dumps_in(const temp_dir& dir) {
  const auto dumps = testing::write_dump_fleet(dir, "linux,snapshots=5,spaces=8,pages=64,kernel=64,large=0,la57=some");
  std::string list;
  for (const auto& dump : dumps) list += dump + "\n";
  (void)dir.write("dumps.txt", list);
  return dumps;
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += " " + w;
  return out;
}

TEST(slurm_cluster, import_and_roots_array_jobs_merge_to_one_process) {
  const temp_dir dir;
  const local_slurm slurm(fmt::format("/tmp/ptwalk-slurm-dumps-{}", ::getpid()));
  ASSERT_EQ(slurm.started().status, 0) << slurm.started().out;
  const auto dumps = dumps_in(dir);
  fs::create_directories(dir / "fleet");
  for (const auto& [command, out] : {std::pair{"import", "fleet/single.jsonl"}, std::pair{"roots", "single.txt"}}) {
    const auto single =
        shell(fmt::format("{} {}{} --out {}", PTWALK_BINARY, command, joined(dumps), (dir / out).string()));
    ASSERT_EQ(single.status, 0) << single.out;
  }

  // The shipped submit script: 3 array tasks and the merge job after them, for each command.
  std::vector<std::string> jobs;
  for (const std::string command : {"import", "roots"}) {
    const std::string out = (dir / (command == "import" ? "fleet/manifest.jsonl" : "roots.txt")).string();
    const auto submitted = slurm.run(fmt::format("cd {} && PTWALK={} PTWALK_GPUS_PER_TASK=0 {}/submit.sh {} {} {} 3",
                                                 dir.path().string(), PTWALK_BINARY, scripts.string(), command,
                                                 (dir / "dumps.txt").string(), out));
    ASSERT_EQ(submitted.status, 0) << submitted.out;
    const auto space = submitted.out.find(' ');
    jobs.push_back(submitted.out.substr(0, space));
    jobs.push_back(submitted.out.substr(space + 1, submitted.out.find('\n') - space - 1));
  }
  ASSERT_TRUE(slurm.wait_done(fmt::format("{},{},{},{}", jobs[0], jobs[1], jobs[2], jobs[3])))
      << slurm.run("squeue; scontrol show jobs").out;
  for (const char* part : {"fleet/manifest.jsonl.parts/part-00000", "fleet/manifest.jsonl.parts/part-00002",
                           "roots.txt.parts/part-00001"})
    EXPECT_TRUE(fs::exists(dir / part)) << part;
  const std::string manifest = read_text(dir / "fleet/single.jsonl");
  EXPECT_EQ(read_text(dir / "fleet/manifest.jsonl"), manifest) << shell("cat " + (dir / "*.log").string()).out;
  EXPECT_EQ(read_text(dir / "roots.txt"), read_text(dir / "single.txt"));
  EXPECT_EQ(read_manifest(dir / "fleet/manifest.jsonl").size(), dumps.size());
  const std::string logs = shell("cat " + (dir / "ptwalk-shard-*.log").string()).out;
  EXPECT_NE(logs.find("ptwalk import: shard 2/3 (SLURM_ARRAY_TASK_ID=2 of 3): dumps "), std::string::npos) << logs;

  // The MPI job script with import: 3 ranks inside the allocation, one manifest.
  const auto mpi = slurm.run(fmt::format(
      "cd {} && PTWALK={} PTWALK_MPIRUN=\"mpirun --allow-run-as-root --oversubscribe\" sbatch --wait -n 3 -o mpi.log "
      "{}/mpi.sbatch import {} {}",
      dir.path().string(), PTWALK_BINARY, scripts.string(), (dir / "dumps.txt").string(),
      (dir / "fleet/mpi.jsonl").string()));
  ASSERT_EQ(mpi.status, 0) << mpi.out << read_text(dir / "mpi.log");
  EXPECT_EQ(read_text(dir / "fleet/mpi.jsonl"), manifest);
  EXPECT_NE(read_text(dir / "mpi.log").find("ptwalk import: shard 2/3 (OMPI_COMM_WORLD_RANK=2 of 3): dumps "),
            std::string::npos)
      << read_text(dir / "mpi.log");
}

std::string mpirun_walk(const fs::path& manifest, const fs::path& out) {
  return fmt::format("mpirun --allow-run-as-root --oversubscribe -np 3 {} walk {} --out {}", PTWALK_BINARY,
                     manifest.string(), out.string());
}

TEST(mpi_launch, three_ranks_write_the_bytes_of_one_process) {
  const temp_dir dir;
  const fs::path fleet = fleet_in(dir);
  ASSERT_EQ(run_ptwalk(dir, {"walk", fleet.string(), "--out", (dir / "single.jsonl").string()}).status, 0);
  const auto r = shell(mpirun_walk(fleet, dir / "mpi.jsonl"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(read_text(dir / "mpi.jsonl"), read_text(dir / "single.jsonl"));
  for (const char* rank : {"RANK=0 of 3", "RANK=1 of 3", "RANK=2 of 3"})
    EXPECT_NE(r.out.find(rank), std::string::npos) << r.out;
}

TEST(mpi_launch, a_failing_rank_leaves_nothing_written) {
  const temp_dir dir;
  const fs::path fleet = fleet_in(dir);
  // The last snapshot's image cut to one page: its roots lie outside it, so the last rank fails to load it.
  const auto last = read_manifest(fleet).back();
  fs::resize_file(fleet.parent_path() / std::get<raw_source>(last.memory).path, 4096);
  const auto r = shell(mpirun_walk(fleet, dir / "mpi.jsonl"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("another rank failed; " + (dir / "mpi.jsonl").string() + " was not written"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(last.id), std::string::npos) << r.out;  // the failing rank names the snapshot
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_TRUE(entry.path().filename() == "fleet") << entry.path();
}

TEST(mpi_launch, roots_and_import_on_three_ranks_write_the_bytes_of_one_process) {
  const temp_dir dir;
  const auto dumps = dumps_in(dir);
  fs::create_directories(dir / "fleet");
  for (const std::string command : {"import", "roots"}) {
    const std::string single = (dir / ("fleet/single-" + command)).string();
    const std::string mpi = (dir / ("fleet/mpi-" + command)).string();
    const auto one = shell(fmt::format("{} {}{} --out {}", PTWALK_BINARY, command, joined(dumps), single));
    ASSERT_EQ(one.status, 0) << one.out;
    const auto r = shell(fmt::format("mpirun --allow-run-as-root --oversubscribe -np 3 {} {}{} --out {}", PTWALK_BINARY,
                                     command, joined(dumps), mpi));
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(read_text(mpi), read_text(single)) << command;
    EXPECT_GT(read_text(single).size(), 1000u) << command;
    for (const char* rank : {"(OMPI_COMM_WORLD_RANK=0 of 3): dumps", "(OMPI_COMM_WORLD_RANK=2 of 3): dumps"})
      EXPECT_NE(r.out.find(rank), std::string::npos) << r.out;
  }
  EXPECT_EQ(read_manifest(dir / "fleet/mpi-import").size(), dumps.size());
}

}  // namespace
}  // namespace ptwalk
