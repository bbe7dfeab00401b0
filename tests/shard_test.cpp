// Sharding and merging: the launcher's variables read as each engine sets
// them, cuts checked against an independent computation of the balance, and
// the real binary's shards of generated fleets merged back to exactly the
// bytes one process writes (walk files, compact directories, the report,
// roots listings and import manifests of generated ELF cores); sets that
// are incomplete, mixed or not parts refused with nothing written.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <thread>

#include <sys/stat.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cluster/gpu_choice.hpp"
#include "cluster/shard.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/dump_fleet.hpp"
#include "support/error_of.hpp"
#include "support/kdump_builder.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::read_text;
using testing::run_ptwalk;
using testing::temp_dir;

environment env_of(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](std::string_view name) -> std::optional<std::string> {
    const auto it = variables.find(std::string(name));
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

TEST(launch, slurm_array_task_is_its_index_from_the_minimum) {
  const auto l = detect_launch("", env_of({{"SLURM_ARRAY_TASK_ID", "12"}, {"SLURM_ARRAY_TASK_COUNT", "5"},
                                           {"SLURM_ARRAY_TASK_MIN", "10"}, {"SLURM_ARRAY_TASK_MAX", "14"},
                                           {"SLURM_ARRAY_TASK_STEP", "1"}, {"SLURM_PROCID", "0"},
                                           {"SLURM_LOCALID", "0"}}));
  ASSERT_TRUE(l.shard);
  EXPECT_EQ(*l.shard, (shard_id{2, 5}));
  EXPECT_FALSE(l.mpi);
  EXPECT_EQ(l.origin, "SLURM_ARRAY_TASK_ID=12 of 5");
  EXPECT_EQ(l.local_rank, 0u);
}

TEST(launch, an_array_with_gaps_or_steps_needs_an_explicit_shard) {
  EXPECT_NE(error_of([] {
              (void)detect_launch("", env_of({{"SLURM_ARRAY_TASK_ID", "4"}, {"SLURM_ARRAY_TASK_COUNT", "3"},
                                              {"SLURM_ARRAY_TASK_MIN", "0"}, {"SLURM_ARRAY_TASK_MAX", "4"},
                                              {"SLURM_ARRAY_TASK_STEP", "2"}}));
            }).find("is not one of N consecutive tasks"),
            std::string::npos);
  // --shard wins over the variables, malformed or not.
  const auto l = detect_launch("1/2", env_of({{"SLURM_ARRAY_TASK_ID", "x"}}));
  EXPECT_EQ(*l.shard, (shard_id{1, 2}));
}

TEST(launch, the_batch_script_is_no_step_but_a_step_task_is) {
  // sbatch's batch script has SLURM_PROCID=0 and SLURM_NTASKS but no step id: one process.
  EXPECT_FALSE(detect_launch("", env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}})).shard);
  const auto step = detect_launch("", env_of({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_STEP_ID", "0"},
                                              {"SLURM_LOCALID", "1"}}));
  EXPECT_EQ(*step.shard, (shard_id{3, 4}));
  EXPECT_FALSE(step.mpi);  // srun tasks are shards, each with its own part
  EXPECT_EQ(step.local_rank, 1u);
  // A one-task step is a plain run.
  EXPECT_FALSE(detect_launch("", env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_STEP_ID", "0"}})).shard);
}

TEST(launch, mpi_ranks_work_together_and_win_over_the_slurm_step) {
  const auto ompi = detect_launch("", env_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "3"},
                                              {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"SLURM_PROCID", "0"},
                                              {"SLURM_NTASKS", "1"}, {"SLURM_STEP_ID", "0"}}));
  EXPECT_EQ(*ompi.shard, (shard_id{2, 3}));
  EXPECT_TRUE(ompi.mpi);
  EXPECT_EQ(ompi.local_rank, 2u);
  const auto pmi = detect_launch("", env_of({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "1"}}));
  EXPECT_EQ(*pmi.shard, (shard_id{1, 2}));
  EXPECT_TRUE(pmi.mpi);
  EXPECT_FALSE(detect_launch("", env_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}})).shard);
  // "none" ignores the launcher; bad values are named.
  EXPECT_FALSE(detect_launch("none", env_of({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}})).shard);
  EXPECT_EQ(error_of([] { (void)detect_launch("", env_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "2"}})); }),
            "PMI_RANK=2 is not below PMI_SIZE=2");
  EXPECT_EQ(error_of([] { (void)detect_launch("", env_of({{"OMPI_COMM_WORLD_SIZE", "3"}})); }),
            "OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not");
  EXPECT_EQ(error_of([] { (void)detect_launch("", env_of({{"PMI_RANK", "one"}, {"PMI_SIZE", "2"}})); }),
            "PMI_RANK=\"one\": expected a non-negative integer");
}

TEST(launch, an_array_task_running_a_step_takes_its_tasks_share) {
  const auto l = detect_launch("", env_of({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "3"},
                                           {"SLURM_ARRAY_TASK_MIN", "0"}, {"SLURM_PROCID", "1"},
                                           {"SLURM_NTASKS", "2"}, {"SLURM_STEP_ID", "0"}}));
  EXPECT_EQ(*l.shard, (shard_id{3, 6}));
}

TEST(launch, shard_text_is_checked) {
  for (const char* bad : {"3/3", "1", "a/2", "1/0", "-1/2", "1/2/3", ""})
    EXPECT_EQ(error_of([&] { (void)parse_shard(bad); }), fmt::format("--shard: \"{}\": expected I/N with 0 <= I < N", bad));
}

TEST(gpu, the_launchers_choice_wins_else_local_rank_modulo_devices) {
  EXPECT_FALSE(choose_gpu(5, env_of({{"CUDA_VISIBLE_DEVICES", "3"}}), 8).set_visible);
  EXPECT_EQ(choose_gpu(5, env_of({}), 4).set_visible, "1");
  EXPECT_EQ(choose_gpu(5, env_of({}), 4).description, "device 1 of 4 (local rank 5)");
  EXPECT_FALSE(choose_gpu(5, env_of({}), 0).set_visible);
  EXPECT_FALSE(choose_gpu(std::nullopt, env_of({}), 4).set_visible);
}

// Independently: the balance a cut at snapshot boundaries can reach is
// within one snapshot's work of i/N of the total, and the shards tile the manifest.
TEST(cuts, contiguous_covering_and_balanced_by_work) {
  const std::vector<std::vector<std::uint64_t>> cases{
      {}, {5}, {1, 1, 1, 1, 1, 1, 1}, {100, 1, 1, 1, 1, 1, 100}, {0, 0, 0}, {1'000'000, 3, 3, 3, 3, 3, 3, 3, 3, 1'000'000}};
  for (const auto& work : cases)
    for (std::size_t n : {1u, 2u, 3u, 4u, 11u}) {
      const auto cuts = shard_cuts(work, n);
      ASSERT_EQ(cuts.size(), n + 1);
      EXPECT_EQ(cuts.front(), 0u);
      EXPECT_EQ(cuts.back(), work.size());
      EXPECT_TRUE(std::is_sorted(cuts.begin(), cuts.end()));
      std::vector<double> prefix{0};
      for (auto w : work) prefix.push_back(prefix.back() + static_cast<double>(w) + 1);
      const double largest = work.empty() ? 0 : static_cast<double>(*std::max_element(work.begin(), work.end())) + 1;
      for (std::size_t k = 1; k < n; ++k)
        EXPECT_LE(std::abs(prefix[cuts[k]] - prefix.back() * static_cast<double>(k) / static_cast<double>(n)), largest)
            << "cut " << k << " of " << n;
    }
  // Two heavy snapshots at the ends go to different shards, not 5 lines each.
  EXPECT_EQ(shard_cuts(std::vector<std::uint64_t>{100, 1, 1, 1, 1, 1, 1, 1, 1, 100}, 2),
            (std::vector<std::size_t>{0, 5, 10}));
  EXPECT_EQ(shard_cuts(std::vector<std::uint64_t>{1000, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2),
            (std::vector<std::size_t>{0, 1, 10}));
}

class sharded_cli : public ::testing::Test {
 protected:
  temp_dir dir;
  // Uneven snapshots (LA57 every other one), so work and line counts cut differently.
  fs::path fleet = [&] {
    (void)write_fleet(parse_fleet_shape("linux,snapshots=7,spaces=6,pages=24,kernel=64,large=0,la57=some"),
                      dir / "fleet");
    return dir / "fleet/manifest.jsonl";
  }();

  void run_ok(const std::vector<std::string>& args) {
    const auto r = run_ptwalk(dir, args);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  std::vector<std::string> walk_parts(std::size_t n, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> parts;
    for (std::size_t i = 0; i < n; ++i) {
      parts.push_back((dir / fmt::format("walk-{}-{}", n, i)).string());
      std::vector<std::string> args{"walk", fleet.string(), "--shard", fmt::format("{}/{}", i, n), "--out", parts.back()};
      args.insert(args.end(), extra.begin(), extra.end());
      run_ok(args);
    }
    return parts;
  }
  testing::run_result merge(const std::string& out, std::vector<std::string> parts) {
    parts.insert(parts.begin(), {"merge", "--out", (dir / out).string()});
    return run_ptwalk(dir, parts);
  }
};

TEST_F(sharded_cli, walk_shards_merge_to_the_single_process_bytes) {
  run_ok({"walk", fleet.string(), "--out", (dir / "single.jsonl").string()});
  const std::string single = read_text(dir / "single.jsonl");
  ASSERT_GT(single.size(), 1000u);
  EXPECT_EQ(single.find("\"type\":\"shard\""), std::string::npos);  // plain runs carry no record
  // 9 shards of 7 snapshots: some are empty.
  for (std::size_t n : {1u, 2u, 3u, 9u}) {
    auto parts = walk_parts(n);
    std::reverse(parts.begin(), parts.end());  // any order
    const auto r = merge(fmt::format("merged-{}.jsonl", n), parts);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_text(dir / fmt::format("merged-{}.jsonl", n)), single) << n << " shards";
  }
  // A --va-range walk merges to its own single-process bytes.
  run_ok({"walk", fleet.string(), "--va-range", "0:800000000000", "--out", (dir / "low.jsonl").string()});
  ASSERT_EQ(merge("low-merged.jsonl", walk_parts(2, {"--va-range", "0:800000000000"})).status, 0);
  EXPECT_EQ(read_text(dir / "low-merged.jsonl"), read_text(dir / "low.jsonl"));
}

TEST_F(sharded_cli, the_launchers_variables_shard_and_none_ignores_them) {
  ::setenv("SLURM_ARRAY_TASK_ID", "1", 1);
  ::setenv("SLURM_ARRAY_TASK_COUNT", "2", 1);
  const auto sharded = run_ptwalk(dir, {"walk", fleet.string(), "--out", (dir / "task1").string()});
  const auto plain = run_ptwalk(dir, {"walk", fleet.string(), "--shard", "none", "--out", (dir / "plain").string()});
  ::unsetenv("SLURM_ARRAY_TASK_ID");
  ::unsetenv("SLURM_ARRAY_TASK_COUNT");
  ASSERT_EQ(sharded.status, 0) << sharded.err;
  EXPECT_NE(sharded.err.find("ptwalk walk: shard 1/2 (SLURM_ARRAY_TASK_ID=1 of 2): snapshots "), std::string::npos)
      << sharded.err;
  EXPECT_EQ(read_text(dir / "task1"), read_text(walk_parts(2)[1]));
  run_ok({"walk", fleet.string(), "--out", (dir / "single").string()});
  EXPECT_EQ(read_text(dir / "plain"), read_text(dir / "single"));
}

TEST_F(sharded_cli, compact_shards_merge_to_the_single_process_directory_and_report) {
  run_ok({"compact", fleet.string(), "--out", (dir / "single").string(), "--verify", "--report",
          (dir / "single.json").string()});
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < 3; ++i) {
    parts.push_back((dir / fmt::format("part-{}", i)).string());
    run_ok({"compact", fleet.string(), "--shard", fmt::format("{}/3", i), "--out", parts.back(), "--verify"});
  }
  const auto r = run_ptwalk(dir, {"merge", "--out", (dir / "merged").string(), "--report",
                                  (dir / "merged.json").string(), parts[2], parts[0], parts[1]});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir / "single")) {
    names.push_back(entry.path().filename().string());
    EXPECT_EQ(read_text(dir / "merged" / names.back()), read_text(entry.path())) << names.back();
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "merged"), fs::directory_iterator{}),
            static_cast<std::ptrdiff_t>(names.size()));
  EXPECT_EQ(names.size(), 8u);
  // The report: every count as one process reports it; only times and the path differ.
  auto single = nlohmann::json::parse(read_text(dir / "single.json"));
  auto merged = nlohmann::json::parse(read_text(dir / "merged.json"));
  EXPECT_EQ(merged["out_dir"], (dir / "merged").string());
  for (auto* j : {&single, &merged}) {
    j->erase("seconds");
    j->erase("out_dir");
  }
  EXPECT_EQ(merged, single);
  // A shard checks its share against the merged output.
  const auto verify = run_ptwalk(dir, {"verify", fleet.string(), (dir / "merged/manifest.jsonl").string(), "--shard", "1/3"});
  EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
  EXPECT_NE(verify.err.find("ptwalk verify: shard 1/3"), std::string::npos) << verify.err;
}

TEST_F(sharded_cli, incomplete_mixed_or_foreign_sets_are_refused_with_nothing_written) {
  const auto parts = walk_parts(3);
  auto r = merge("out.jsonl", {parts[0], parts[2]});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, fmt::format("ptwalk: merge: incomplete set: shard 1 of 3 missing (parts of {}); rerun it and merge "
                               "again\n", fleet.string()));
  r = merge("out.jsonl", {parts[0]});
  EXPECT_NE(r.err.find("shards 1, 2 of 3 missing"), std::string::npos) << r.err;
  r = merge("out.jsonl", {parts[0], parts[1], parts[1], parts[2]});
  EXPECT_NE(r.err.find("shard 1/3 given twice"), std::string::npos) << r.err;
  // Another shard count, other options, another manifest.
  const auto halves = walk_parts(2);
  r = merge("out.jsonl", {parts[0], parts[1], halves[1]});
  EXPECT_NE(r.err.find("shard counts (3 vs 2) differ"), std::string::npos) << r.err;
  run_ok({"walk", fleet.string(), "--shard", "2/3", "--va-range", "0:1000", "--out", (dir / "ranged").string()});
  r = merge("out.jsonl", {parts[0], parts[1], (dir / "ranged").string()});
  EXPECT_NE(r.err.find("options ("), std::string::npos) << r.err;
  (void)write_fleet(parse_fleet_shape("linux,snapshots=7,spaces=6,pages=24,kernel=64,large=0,seed=9"), dir / "other");
  run_ok({"walk", (dir / "other/manifest.jsonl").string(), "--shard", "2/3", "--out", (dir / "foreign").string()});
  r = merge("out.jsonl", {parts[0], parts[1], (dir / "foreign").string()});
  EXPECT_NE(r.err.find("are not parts of one job: manifests ("), std::string::npos) << r.err;
  // A plain output is no part.
  run_ok({"walk", fleet.string(), "--out", (dir / "plain").string()});
  r = merge("out.jsonl", {(dir / "plain").string()});
  EXPECT_NE(r.err.find("plain: not a shard part (no shard record)"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out.jsonl"));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

// A walk to a pipe (or /dev/null) writes into it; renaming a file over it
// would replace the node (a job timing `--out /dev/null` once did).
TEST_F(sharded_cli, an_output_that_is_a_pipe_is_written_not_replaced) {
  const fs::path fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] { received = read_text(fifo); });
  const auto r = run_ptwalk(dir, {"walk", fleet.string(), "--out", fifo.string()});
  reader.join();
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::is_fifo(fifo));
  run_ok({"walk", fleet.string(), "--out", (dir / "file.jsonl").string()});
  EXPECT_EQ(received, read_text(dir / "file.jsonl"));
}

// A list of dumps is cut by file size, and its identity is its names and sizes.
TEST(dump_shards, cut_by_file_size_and_known_by_names_and_sizes) {
  const temp_dir dir;
  std::vector<std::string> dumps;
  for (const std::size_t size : {1000u, 1u, 1u, 1u, 1u, 1u, 1u, 1u, 1u, 1u})
    dumps.push_back(dir.write(fmt::format("d{}", dumps.size()), std::string(size, 'x')).string());
  const auto first = plan_dump_shard(dumps, {0, 2}), second = plan_dump_shard(dumps, {1, 2});
  EXPECT_EQ(first.first, 0u);
  EXPECT_EQ(first.end, 1u);  // the big dump alone, not 5 dumps
  EXPECT_EQ(second.first, 1u);
  EXPECT_EQ(second.end, 10u);
  EXPECT_EQ(first.snapshots, 10u);
  EXPECT_EQ(first.manifest_sha256, second.manifest_sha256);
  EXPECT_EQ(first.manifest, fmt::format("the 10 dumps {} .. {}", dumps.front(), dumps.back()));
  EXPECT_EQ(describe_dump_shard(first, "--shard 0/2", dumps),
            fmt::format("shard 0/2 (--shard 0/2): dumps 0..0 of 10 ({} .. {})", dumps[0], dumps[0]));
  // Another size, another order or another list is another job.
  (void)dir.write("d3", std::string(2, 'x'));
  const auto grown = plan_dump_shard(dumps, {0, 2});
  EXPECT_NE(grown.manifest_sha256, first.manifest_sha256);
  std::swap(dumps[1], dumps[2]);
  EXPECT_NE(plan_dump_shard(dumps, {0, 2}).manifest_sha256, grown.manifest_sha256);
  dumps.pop_back();
  EXPECT_NE(plan_dump_shard(dumps, {0, 2}).manifest_sha256, grown.manifest_sha256);
  dumps.push_back((dir / "missing").string());
  EXPECT_NE(error_of([&] { (void)plan_dump_shard(dumps, {0, 2}); }).find("missing: cannot read its size"),
            std::string::npos);
}

// A compressed kdump weighs the guest memory it yields, counted from its
// headers: QEMU stores free memory as one shared zero page, so its file
// says little. The job is still known by the file's size.
TEST(dump_shards, a_compressed_kdump_weighs_its_dumped_pages_not_its_file) {
  const temp_dir dir;
  testing::kdump_builder builder;
  const std::vector<std::byte> page(builder.block_size, std::byte{0x5a});
  for (u64 pfn = 0; pfn < 1000; ++pfn) builder.add_zero_page(pfn);
  builder.add_page(1000, page, kdump_zlib);
  builder.add_page(1001, page, kdump_zstd);
  builder.add_page(1003, page, 0);
  builder.add_filtered_page(1002);  // left out by the dump level: no memory
  const auto kdump = builder.build();
  const std::uint64_t memory = 1003 * std::uint64_t{builder.block_size};  // the pages added, counted here
  ASSERT_LT(kdump.size() * 20, memory);
  const fs::path file = dir.write("a.kdump", kdump);
  const fs::path flattened = dir.write("b.kdump", testing::kdump_builder::flatten(kdump, 8192));
  EXPECT_EQ(dump_work(file), memory);
  EXPECT_EQ(dump_work(flattened), memory);
  const fs::path elf = dir.write("c.core", std::string(5000, 'x'));  // not a kdump: its size
  EXPECT_EQ(dump_work(elf), 5000u);
  EXPECT_EQ(dump_work(dir.write("tiny", "KD")), 2u);

  // In a manifest too.
  snapshot_spec spec;
  spec.memory = kdump_source{"a.kdump"};
  spec.roots = {0x1000, 0x2000};
  EXPECT_EQ(snapshot_work(spec, dir.path()), memory + 2 * root_work_bytes);

  // Weighed by memory, the kdump is half the work: a shard of its own. By
  // file size it would be a sliver, sharing the first shard with a raw dump.
  const std::vector<std::string> dumps{file.string(), dir.write("r1", std::string(memory / 2, 'r')).string(),
                                       dir.write("r2", std::string(memory / 2, 'r')).string()};
  const auto first = plan_dump_shard(dumps, {0, 2}), second = plan_dump_shard(dumps, {1, 2});
  EXPECT_EQ(first.end, 1u);
  EXPECT_EQ(second.first, 1u);
  EXPECT_EQ(second.end, 3u);
  // The same names and file sizes are the same job, whatever the files decompress to.
  (void)dir.write("a.kdump", std::string(kdump.size(), 'x'));
  const auto raw = plan_dump_shard(dumps, {0, 2});
  EXPECT_EQ(raw.manifest_sha256, first.manifest_sha256);
  EXPECT_EQ(raw.end, 2u);

  // A damaged kdump is named when the shards are cut.
  auto broken = kdump;
  broken.resize(600);
  (void)dir.write("a.kdump", broken);
  const std::string error = error_of([&] { (void)plan_dump_shard(dumps, {0, 2}); });
  EXPECT_EQ(error.rfind(file.string() + ": ", 0), 0u) << error;
}

class sharded_dumps : public ::testing::Test {
 protected:
  temp_dir dir;
  // Five ELF cores (LA57 every other one) and the first again from another
  // folder: one process names it snap-0000-2, whichever shard imports it.
  std::vector<std::string> dumps = [&] {
    auto paths = testing::write_dump_fleet(dir, "linux,snapshots=5,spaces=6,pages=24,kernel=64,large=0,la57=some");
    fs::create_directories(dir / "again");
    const fs::path copy = dir / "again" / fs::path(paths.front()).filename();
    fs::copy_file(paths.front(), copy);
    paths.push_back(copy.string());
    return paths;
  }();

  void run_ok(const std::vector<std::string>& args) {
    const auto r = run_ptwalk(dir, args);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  // `command DUMPS... --out OUT EXTRA...`
  std::vector<std::string> args(const std::string& command, const fs::path& out,
                                const std::vector<std::string>& extra = {}, std::vector<std::string> inputs = {}) {
    if (inputs.empty()) inputs = dumps;
    std::vector<std::string> a{command};
    a.insert(a.end(), inputs.begin(), inputs.end());
    a.insert(a.end(), {"--out", out.string()});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // The n parts of `command`, in a folder of their own (not the merged output's).
  std::vector<std::string> parts(const std::string& command, std::size_t n,
                                 const std::vector<std::string>& extra = {}) {
    const fs::path folder = dir / fmt::format("{}-parts-{}{}", command, n, fmt::join(extra, ""));
    fs::create_directories(folder);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back((folder / fmt::format("part-{}", i)).string());
      auto a = args(command, out.back(), extra);
      a.insert(a.end(), {"--shard", fmt::format("{}/{}", i, n)});
      run_ok(a);
    }
    return out;
  }
  testing::run_result merge(const fs::path& out, std::vector<std::string> parts) {
    parts.insert(parts.begin(), {"merge", "--out", out.string()});
    return run_ptwalk(dir, parts);
  }
};

TEST_F(sharded_dumps, roots_and_import_shards_merge_to_the_single_process_bytes) {
  fs::create_directories(dir / "fleet");
  run_ok(args("roots", dir / "single.txt"));
  run_ok(args("import", dir / "fleet/manifest.jsonl"));
  const std::string roots = read_text(dir / "single.txt"), manifest = read_text(dir / "fleet/manifest.jsonl");
  // Independently: one block per dump in order, each starting at its CPU's root; a manifest
  // naming each dump relative to itself, with unique ids, that walks.
  std::size_t at = 0;
  for (const auto& dump : dumps) {
    const auto block = roots.find(fmt::format("# {}: format ", dump), at);
    ASSERT_NE(block, std::string::npos) << dump;
    at = block + 1;
  }
  EXPECT_NE(roots.find(" cpu0 "), std::string::npos);
  const auto specs = read_manifest(dir / "fleet/manifest.jsonl");
  ASSERT_EQ(specs.size(), dumps.size());
  EXPECT_EQ(specs.front().id, "snap-0000");
  EXPECT_EQ(specs.back().id, "snap-0000-2");
  EXPECT_EQ(std::get<elf_source>(specs.front().memory).path, "../dumps/snap-0000.core");
  EXPECT_EQ(std::get<elf_source>(specs.back().memory).path, "../again/snap-0000.core");
  EXPECT_EQ(specs[1].format, paging_format::x86_64_la57);
  for (const auto& spec : specs) EXPECT_EQ(spec.roots.size(), 6u) << spec.id;
  EXPECT_EQ(manifest.find("seconds"), std::string::npos);  // nothing that changes from run to run
  EXPECT_EQ(manifest.find("backend"), std::string::npos);
  run_ok({"walk", (dir / "fleet/manifest.jsonl").string(), "--out", (dir / "walk.jsonl").string()});

  // 7 shards of 6 dumps: some are empty.
  for (std::size_t n : {1u, 2u, 3u, 7u}) {
    auto roots_parts = parts("roots", n), import_parts = parts("import", n);
    std::reverse(roots_parts.begin(), roots_parts.end());  // any order
    auto r = merge(dir / fmt::format("roots-{}.txt", n), roots_parts);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_text(dir / fmt::format("roots-{}.txt", n)), roots) << n << " shards";
    r = merge(dir / fmt::format("fleet/import-{}.jsonl", n), import_parts);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_text(dir / fmt::format("fleet/import-{}.jsonl", n)), manifest) << n << " shards";
  }
  // Options that change the bytes merge to their own single-process bytes.
  run_ok(args("import", dir / "fleet/kept.jsonl", {"--keep-kernel-only"}));
  ASSERT_EQ(merge(dir / "fleet/kept-merged.jsonl", parts("import", 2, {"--keep-kernel-only"})).status, 0);
  EXPECT_EQ(read_text(dir / "fleet/kept-merged.jsonl"), read_text(dir / "fleet/kept.jsonl"));
}

TEST_F(sharded_dumps, one_dump_lists_as_before_on_stdout_or_in_out) {
  const auto r = run_ptwalk(dir, {"roots", dumps[1]});
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string header = fmt::format("# {}: format x86_64-la57 (CR4.LA57 of the vCPUs); references:\n", dumps[1]);
  EXPECT_EQ(r.out.rfind(header, 0), 0u) << r.out;
  EXPECT_EQ(r.out.find("\"type\""), std::string::npos);
  run_ok({"roots", dumps[1], "--out", (dir / "one.txt").string()});
  EXPECT_EQ(read_text(dir / "one.txt"), r.out);
}

// A dump that cannot be read fails the run (sharded or not) with one line
// naming it, and leaves no output, not even the other dumps' part.
TEST_F(sharded_dumps, a_bad_dump_fails_naming_it_and_writes_nothing) {
  const fs::path bad = dir.write("dumps/broken.core", std::string_view("\x7f" "ELF and then nothing"));
  auto with_bad = dumps;
  with_bad.push_back(bad.string());
  for (const std::string command : {"roots", "import"})
    for (const std::vector<std::string>& shard : {std::vector<std::string>{}, {"--shard", "1/2"}}) {
      const fs::path out = dir / (command + "-out");
      const auto r = run_ptwalk(dir, args(command, out, shard, with_bad));
      EXPECT_EQ(r.status, 1) << command;
      EXPECT_NE(r.err.find("ptwalk: " + bad.string() + ": "), std::string::npos) << r.err;
      EXPECT_FALSE(fs::exists(out)) << command;
    }
  const auto r = run_ptwalk(dir, args("import", dir / "out", {"--shard", "0/2"}, {dumps[0], (dir / "gone").string()}));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find((dir / "gone").string() + ": cannot read its size"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST_F(sharded_dumps, the_launchers_variables_shard_roots_and_import) {
  ::setenv("SLURM_ARRAY_TASK_ID", "1", 1);
  ::setenv("SLURM_ARRAY_TASK_COUNT", "2", 1);
  const auto sharded = run_ptwalk(dir, args("import", dir / "task1"));
  ::unsetenv("SLURM_ARRAY_TASK_ID");
  ::unsetenv("SLURM_ARRAY_TASK_COUNT");
  ASSERT_EQ(sharded.status, 0) << sharded.err;
  EXPECT_NE(sharded.err.find("ptwalk import: shard 1/2 (SLURM_ARRAY_TASK_ID=1 of 2): dumps "), std::string::npos)
      << sharded.err;
  EXPECT_NE(sharded.err.find("; GPU: "), std::string::npos) << sharded.err;
  EXPECT_EQ(read_text(dir / "task1"), read_text(parts("import", 2)[1]));
}

TEST_F(sharded_dumps, incomplete_or_mismatched_sets_are_refused_with_nothing_written) {
  const auto imported = parts("import", 3);
  const fs::path out = dir / "merged.jsonl";
  auto r = merge(out, {imported[0], imported[2]});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, fmt::format("ptwalk: merge: incomplete set: shard 1 of 3 missing (parts of the 6 dumps {} .. {}); "
                               "rerun it and merge again\n",
                               dumps.front(), dumps.back()));
  r = merge(out, {imported[1]});
  EXPECT_NE(r.err.find("shards 0, 2 of 3 missing"), std::string::npos) << r.err;
  // Roots parts are no import parts.
  const auto listed = parts("roots", 3);
  r = merge(out, {imported[0], listed[1], imported[2]});
  EXPECT_NE(r.err.find("are not parts of one job: commands (import vs roots) differ"), std::string::npos) << r.err;
  // Other options, another list of dumps, another size of one of them.
  const auto hinted = parts("import", 3, {"--keep-kernel-only"});
  r = merge(out, {imported[0], imported[1], hinted[2]});
  EXPECT_NE(r.err.find("are not parts of one job: options ("), std::string::npos) << r.err;
  auto fewer = dumps;
  fewer.pop_back();
  auto a = args("import", dir / "fewer-2", {"--shard", "2/3"}, fewer);
  run_ok(a);
  r = merge(out, {imported[0], imported[1], (dir / "fewer-2").string()});
  EXPECT_NE(r.err.find("are not parts of one job: manifests ("), std::string::npos) << r.err;
  std::ofstream(dumps.back(), std::ios::app) << "grown";
  run_ok(args("import", dir / "grown-2", {"--shard", "2/3"}));
  r = merge(out, {imported[0], imported[1], (dir / "grown-2").string()});
  EXPECT_NE(r.err.find("are not parts of one job: manifests ("), std::string::npos) << r.err;
  // A part cut short by hand (a line lost) is refused, not merged.
  const std::string whole = read_text(imported[2]);
  const fs::path cut = dir / "cut-2";
  (void)dir.write("cut-2", whole.substr(0, whole.rfind('\n', whole.size() - 2) + 1));
  r = merge(out, {imported[0], imported[1], cut.string()});
  EXPECT_NE(r.err.find("manifest lines for the shard's"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

}  // namespace
}  // namespace ptwalk
