// `archive add` under Open MPI's mpirun (3 ranks, started by the test): the
// ranks hash their shards, exchange new pages with their owners and commit
// once, and the archive equals a single-process add of the same fleet:
//  - the same snapshot entries (id, sizes, zero and newly stored page counts), in manifest order;
//  - the same set of stored page digests, each stored once;
//  - each snapshot's logical index: manifest line, size, the digest of the
//    page at every file offset, and the bytes between pages;
//  - every snapshot restores byte-identical, and `archive check` passes.
// Pack names and layout may differ (each owner writes its own pack).
// A rank that fails leaves the archive byte-for-byte as it was.
// Without MPI, shard archives (`archive add --shard I/N`) merged by
// `archive merge` are the single-process archive file for file, and an
// incomplete set of shards is refused with nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "archive/archive_read.hpp"
#include "archive/catalog.hpp"
#include "archive/pack.hpp"
#include "input/manifest.hpp"
#include "support/archive_fleets.hpp"
#include "support/run_cli.hpp"
#include "support/shell.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using archive::digest;
using testing::read_text;
using testing::run_ptwalk;
using testing::shell;
using testing::temp_dir;

testing::shell_result mpirun_add(const fs::path& archive, const fs::path& manifest) {
  return shell(fmt::format("mpirun --allow-run-as-root --oversubscribe -np 3 {} archive add {} {} --jobs 1",
                           PTWALK_BINARY, archive.string(), manifest.string()));
}

// A snapshot as its content: what must not depend on how the pages were packed.
struct logical_index {
  std::string spec_line;
  u64 file_size = 0;
  std::map<u64, digest> pages;  // file offset -> content
  std::vector<std::pair<u64, u64>> extras;
  std::vector<std::byte> extra_bytes;
  bool operator==(const logical_index&) const = default;
};

struct logical_archive {
  std::vector<std::string> entries;  // every catalog field but the index file's name and size
  std::multiset<digest> stored;      // every stored page, repeats kept
  std::map<std::string, logical_index> indexes;
};

logical_archive read_logically(const fs::path& path) {
  archive::archive_reader reader(path);
  logical_archive out;
  for (const auto& p : reader.contents().packs)
    for (const auto& id : reader.pack(p.name).ids()) out.stored.insert(id);
  for (const auto& e : reader.contents().snapshots) {
    out.entries.push_back(fmt::format("{} {} {} {} {}", e.id, e.file_bytes, e.pages, e.zero_pages, e.new_pages));
    const auto index = reader.read_index(e);
    logical_index& l = out.indexes[e.id];
    l.spec_line = index.spec_line;
    l.file_size = index.file_size;
    for (const auto& run : index.runs)
      for (u64 i = 0; i < run.count; ++i)
        l.pages[run.file_offset + i * archive::page_size] = reader.pack(index.packs[run.pack]).ids()[run.first_page + i];
    for (const auto& r : index.extras) l.extras.emplace_back(r.offset, r.size);
    l.extra_bytes = index.extra_bytes;
  }
  return out;
}

void expect_logically_equal(const fs::path& single, const fs::path& distributed) {
  const auto a = read_logically(single), b = read_logically(distributed);
  EXPECT_EQ(a.entries, b.entries);
  EXPECT_EQ(a.stored, b.stored);
  EXPECT_EQ(std::set(b.stored.begin(), b.stored.end()).size(), b.stored.size()) << "a page stored twice";
  ASSERT_EQ(a.indexes.size(), b.indexes.size());
  for (const auto& [id, index] : a.indexes) EXPECT_TRUE(index == b.indexes.at(id)) << id;
}

// Every file of the archive with its bytes.
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) out[fs::relative(entry.path(), dir).string()] = read_text(entry.path());
  return out;
}

TEST(archive_mpi, three_ranks_store_each_page_once_like_one_process) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 3);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "single").string(), manifest.string()}).status, 0);
  const auto r = mpirun_add(dir / "mpi", manifest);
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* rank : {"RANK=0 of 3", "RANK=1 of 3", "RANK=2 of 3"})
    EXPECT_NE(r.out.find(rank), std::string::npos) << r.out;
  EXPECT_EQ(archive::read_catalog(dir / "mpi").packs.size(), 3u) << "every rank owns some pages";
  // Every rank hashed on one core: the report says so once.
  EXPECT_NE(r.out.find("pages hashed by cpu (1 thread)\n"), std::string::npos) << r.out;
  expect_logically_equal(dir / "single", dir / "mpi");
  testing::expect_round_trip(dir, dir / "mpi", manifest);
  const auto check = run_ptwalk(dir, {"archive", "check", (dir / "mpi").string()});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
}

TEST(archive_mpi, adding_to_an_archive_deduplicates_against_its_pages) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 3);
  const auto specs = read_manifest(manifest);
  std::string first, rest;
  for (std::size_t i = 0; i < specs.size(); ++i) (i < 3 ? first : rest) += format_manifest_line(specs[i]) + "\n";
  const auto first_part = dir.write("first.jsonl", first), rest_part = dir.write("rest.jsonl", rest);
  for (const char* archive : {"single", "mpi"})
    ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / archive).string(), first_part.string()}).status, 0);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "single").string(), rest_part.string()}).status, 0);
  const auto r = mpirun_add(dir / "mpi", rest_part);
  ASSERT_EQ(r.status, 0) << r.out;
  expect_logically_equal(dir / "single", dir / "mpi");
  testing::expect_round_trip(dir, dir / "mpi", manifest);
}

TEST(archive_mpi, a_failing_rank_leaves_the_archive_as_it_was) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 3);
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "mpi").string(), dir.write("base.jsonl",
                                                                                   format_manifest_line(specs[0]) + "\n").string()}).status, 0);
  std::string rest;
  for (std::size_t i = 1; i < specs.size(); ++i) rest += format_manifest_line(specs[i]) + "\n";
  const auto rest_part = dir.write("rest.jsonl", rest);
  const auto before = files_of(dir / "mpi");
  // The last snapshot's ELF core cut short: the last rank fails to read it.
  ASSERT_TRUE(std::holds_alternative<elf_source>(specs.back().memory));
  const fs::path unreadable = dir / testing::file_of(specs.back());
  fs::resize_file(unreadable, 100);
  const auto r = mpirun_add(dir / "mpi", rest_part);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find(unreadable.string()), std::string::npos) << r.out;  // the failing rank names the file
  EXPECT_NE(r.out.find("another rank failed; " + (dir / "mpi").string() + " was left as it was"), std::string::npos)
      << r.out;
  EXPECT_EQ(files_of(dir / "mpi"), before);
}

// The shard archives of `manifest`, one per shard of 3.
std::vector<std::string> add_shards(const temp_dir& dir, const fs::path& manifest) {
  std::vector<std::string> parts;
  for (int i = 0; i < 3; ++i) {
    parts.push_back((dir / fmt::format("part{}", i)).string());
    const auto r = run_ptwalk(dir, {"archive", "add", parts.back(), manifest.string(), "--shard", fmt::format("{}/3", i)});
    EXPECT_EQ(r.status, 0) << r.err;
  }
  return parts;
}

// The archive's files but its locks (empty, and made by whoever opened it).
std::map<std::string, std::string> stored_files(const fs::path& archive) {
  auto files = files_of(archive);
  files.erase("lock");
  files.erase("readers.lock");
  return files;
}

TEST(archive_merge, shard_archives_merge_to_the_single_process_archive) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 3);
  ASSERT_EQ(run_ptwalk(dir, {"archive", "add", (dir / "single").string(), manifest.string()}).status, 0);
  const auto parts = add_shards(dir, manifest);
  for (const auto& part : parts) EXPECT_LT(archive::read_catalog(part).snapshots.size(), 9u) << part;
  // Given in any order, the parts merge in shard order.
  const auto r = run_ptwalk(dir, {"archive", "merge", (dir / "merged").string(), parts[2], parts[0], parts[1]});
  ASSERT_EQ(r.status, 0) << r.err;
  expect_logically_equal(dir / "single", dir / "merged");
  EXPECT_EQ(stored_files(dir / "merged"), stored_files(dir / "single"));
  testing::expect_round_trip(dir, dir / "merged", manifest);
}

TEST(archive_merge, an_incomplete_set_is_refused_and_nothing_written) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 4, 3);
  const auto parts = add_shards(dir, manifest);
  const auto r = run_ptwalk(dir, {"archive", "merge", (dir / "merged").string(), parts[0], parts[2]});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("incomplete set: shard 1 of 3 missing"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "merged"));
  // A shard archive is made new: adding a shard to an existing archive is refused.
  const auto again = run_ptwalk(dir, {"archive", "add", parts[0], manifest.string(), "--shard", "0/3"});
  EXPECT_NE(again.status, 0);
  EXPECT_NE(again.err.find("already an archive"), std::string::npos) << again.err;
}

}  // namespace
}  // namespace ptwalk
