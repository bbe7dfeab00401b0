// Lazy reading of archived snapshots (lazy_mapping over userfaultfd): a
// synthetic page source read through a tiny cache from many threads gives
// back exactly its pages; archived images read lazily equal the eagerly
// rebuilt ones byte for byte; walk, compact and verify of archived
// snapshots print what they print for the originals, lazily, through a
// 64 KiB cache and eagerly; a damaged stored frame found lazily is a
// one-line error naming archive, snapshot and page, with no output left.
// Where userfaultfd is refused, reading falls back to eager with one note
// and the same output; the lazy tests skip there (eager is tested anyway).
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <thread>

#include "archive/archive_read.hpp"
#include "archive/page_hash.hpp"
#include "common/byte_size.hpp"
#include "common/lazy_mapping.hpp"
#include "input/manifest.hpp"
#include "support/archive_fleets.hpp"
#include "support/real_guest.hpp"
#include "support/run_cli.hpp"
#include "support/scoped_env.hpp"
#include "support/shell.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;
using testing::run_ptwalk;
using testing::scoped_env;
using testing::temp_dir;

// Page i holds its number in every 8-byte word, except every third page, which is zero.
class numbered_pages final : public page_source {
 public:
  bool fill(std::size_t page, std::span<std::byte, lazy_page_size> out) override {
    if (page % 3 == 0) return false;
    const u64 value = page * 0x9e3779b97f4a7c15ULL;
    for (std::size_t at = 0; at < out.size(); at += 8) std::memcpy(out.data() + at, &value, 8);
    return true;
  }
};

// Sets the process-wide resident bound for one test.
class scoped_resident_limit {
 public:
  explicit scoped_resident_limit(std::size_t bytes) : previous_(lazy_mapping::resident_limit()) {
    lazy_mapping::set_resident_limit(bytes);
  }
  ~scoped_resident_limit() { lazy_mapping::set_resident_limit(previous_); }

 private:
  std::size_t previous_;
};

TEST(lazy_mapping, pages_read_from_many_threads_through_a_tiny_cache_are_the_sources) {
  const scoped_resident_limit limit(64 << 10);
  constexpr std::size_t pages = 2000;
  auto made = lazy_mapping::create("numbered", pages * lazy_page_size - 100, std::make_unique<numbered_pages>());
  if (auto* why = std::get_if<std::string>(&made)) GTEST_SKIP() << "userfaultfd refused: " << *why;
  const auto& mapping = *std::get<std::unique_ptr<lazy_mapping>>(made);
  EXPECT_EQ(mapping.size(), pages * lazy_page_size - 100);
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&, t] {
      for (int pass = 0; pass < 2; ++pass)
        for (std::size_t k = 0; k < pages; ++k) {
          const std::size_t page = (k * 7 + t * 131) % pages;  // each thread its own order
          u64 first, last;
          std::memcpy(&first, mapping.data() + page * lazy_page_size, 8);
          std::memcpy(&last, mapping.data() + page * lazy_page_size + lazy_page_size - 200, 8);
          const u64 expected = page % 3 == 0 ? 0 : page * 0x9e3779b97f4a7c15ULL;
          if (first != expected || last != expected) ++wrong;
        }
    });
  for (auto& r : readers) r.join();
  EXPECT_EQ(wrong.load(), 0);
  const lazy_stats stats = mapping.stats();
  EXPECT_GE(stats.filled, pages * 2 / 3);        // every data page at least once
  EXPECT_GT(stats.evicted, 0u);                  // 16 pages cannot hold them
  EXPECT_LE(stats.filled - stats.evicted, 16u);  // resident now: at most the bound
  EXPECT_LT(stats.faults, stats.filled + stats.zero);  // a fault fills its absent neighbours too
  EXPECT_GE(stats.zero, 1u);
}

TEST(lazy_mapping, a_size_no_address_space_holds_is_an_error_naming_the_mapping) {
  const auto probe = lazy_mapping::create("probe", 4096, std::make_unique<numbered_pages>());
  if (const auto* why = std::get_if<std::string>(&probe)) GTEST_SKIP() << "userfaultfd refused: " << *why;
  try {
    (void)lazy_mapping::create("huge image", std::size_t{1} << 60, std::make_unique<numbered_pages>());
    ADD_FAILURE() << "2^60 bytes were reserved";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("huge image: cannot reserve"), std::string::npos) << e.what();
  }
}

TEST(lazy_mapping, byte_sizes_parse_with_suffixes_and_refuse_nonsense) {
  EXPECT_EQ(parse_byte_size("4096", "X"), 4096u);
  EXPECT_EQ(parse_byte_size("64K", "X"), 64u << 10);
  EXPECT_EQ(parse_byte_size("256M", "X"), 256u << 20);
  EXPECT_EQ(parse_byte_size("1G", "X"), std::size_t{1} << 30);
  for (const char* bad : {"", "M", "12Q", "-5", "1e3", "99999999999999999999G"})
    EXPECT_THROW((void)parse_byte_size(bad, "PTWALK_ARCHIVE_CACHE"), std::invalid_argument) << bad;
}

// The archived snapshots of `manifest` as a manifest that reads them in place.
fs::path archive_fleet(const temp_dir& dir, const fs::path& manifest) {
  const auto add = run_ptwalk(dir, {"archive", "add", (dir / "arc").string(), manifest.string(), "--backend", "cpu"});
  EXPECT_EQ(add.status, 0) << add.err;
  const auto ls = run_ptwalk(dir, {"archive", "ls", (dir / "arc").string(), "--manifest"});
  EXPECT_EQ(ls.status, 0) << ls.err;
  return dir.write("archived.jsonl", ls.out);
}

TEST(archive_lazy, lazily_read_images_equal_the_eagerly_rebuilt_ones) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 2);
  const auto archived = archive_fleet(dir, manifest);
  const scoped_resident_limit limit(64 << 10);
  for (const auto& spec : read_manifest(archived)) {
    const auto& source = std::get<archive_source>(spec.memory);
    memory_image lazy, eager;
    try {
      archive::add_archived_regions(lazy, source, dir.path(), archive::archive_read_mode::lazy);
    } catch (const std::runtime_error& e) {
      GTEST_SKIP() << e.what();
    }
    archive::add_archived_regions(eager, source, dir.path(), archive::archive_read_mode::eager);
    ASSERT_EQ(lazy.regions().size(), eager.regions().size()) << spec.id;
    for (std::size_t i = 0; i < lazy.regions().size(); ++i) {
      const auto &a = lazy.regions()[i], &b = eager.regions()[i];
      ASSERT_EQ(a.gpa, b.gpa);
      ASSERT_EQ(a.size, b.size);
      EXPECT_NE(a.data, b.data);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.size), 0) << spec.id << " region " << i;
    }
  }
}

// What walk, compact and verify print for `manifest`; compact's output files too.
std::string outputs(const temp_dir& dir, const fs::path& manifest, const std::string& tag, bool keep_pa = false) {
  std::string all;
  const auto walk = run_ptwalk(dir, {"walk", manifest.string(), "--backend", "reference"});
  EXPECT_EQ(walk.status, 0) << tag << ": " << walk.err;
  EXPECT_FALSE(walk.out.empty());
  all += walk.out;
  const auto out = dir / ("compacted-" + tag);
  std::vector<std::string> compact_args{"compact", manifest.string(), "--out", out.string(), "--jobs", "2"};
  if (keep_pa) compact_args.push_back("--keep-pa");
  const auto compact = run_ptwalk(dir, compact_args);
  EXPECT_EQ(compact.status, 0) << tag << ": " << compact.err;
  // Each output file by name and SHA-256 (the real dumps compact to hundreds of MiB).
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(out)) {
    const std::string name = fs::relative(entry.path(), out).string();
    if (!entry.is_regular_file() || name == "manifest.jsonl" || name.find("report") != std::string::npos) continue;
    const mapped_file file(entry.path());
    all += name + " " + archive::to_hex(archive::sha256(file.bytes())) + "\n";
    ++files;
  }
  EXPECT_GT(files, 0) << tag;
  const auto verify = run_ptwalk(dir, {"verify", manifest.string(), (out / "manifest.jsonl").string()});
  EXPECT_EQ(verify.status, 0) << tag << ": " << verify.out << verify.err;
  fs::remove_all(out);
  return all;
}

TEST(archive_lazy, walk_compact_and_verify_of_archived_snapshots_match_the_originals) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 2);
  const auto archived = archive_fleet(dir, manifest);
  const std::string original = outputs(dir, manifest, "original");
  {
    const scoped_env stats("PTWALK_ARCHIVE_STATS", "1");
    const auto walk = run_ptwalk(dir, {"walk", archived.string(), "--backend", "reference"});
    ASSERT_EQ(walk.status, 0) << walk.err;
    if (walk.err.find("pages filled") == std::string::npos) GTEST_SKIP() << "not lazy here: " << walk.err;
  }
  EXPECT_EQ(outputs(dir, archived, "lazy"), original);
  {
    const scoped_env tiny("PTWALK_ARCHIVE_CACHE", "64K");
    EXPECT_EQ(outputs(dir, archived, "tiny"), original);
    const scoped_env stats("PTWALK_ARCHIVE_STATS", "1");
    const auto walk = run_ptwalk(dir, {"walk", archived.string(), "--backend", "reference"});
    std::smatch evicted;
    ASSERT_TRUE(std::regex_search(walk.err, evicted, std::regex("([0-9]+) evicted"))) << walk.err;
    EXPECT_GT(std::stoull(evicted[1]), 0u) << walk.err;
  }
  {
    const scoped_env eager("PTWALK_ARCHIVE_EAGER", "1");
    const scoped_env stats("PTWALK_ARCHIVE_STATS", "1");
    EXPECT_EQ(outputs(dir, archived, "eager"), original);
    const auto walk = run_ptwalk(dir, {"walk", archived.string(), "--backend", "reference"});
    EXPECT_EQ(walk.err.find("pages filled"), std::string::npos) << walk.err;
  }
  const scoped_env nonsense("PTWALK_ARCHIVE_CACHE", "lots");
  const auto refused = run_ptwalk(dir, {"walk", archived.string()});
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("PTWALK_ARCHIVE_CACHE"), std::string::npos) << refused.err;
}

TEST(archive_lazy, a_damaged_frame_read_lazily_is_a_one_line_error_and_leaves_no_output) {
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 1, 0);
  const auto archived = archive_fleet(dir, manifest);
  {
    const scoped_env stats("PTWALK_ARCHIVE_STATS", "1");
    const auto walk = run_ptwalk(dir, {"walk", archived.string()});
    if (walk.err.find("pages filled") == std::string::npos) GTEST_SKIP() << "not lazy here: " << walk.err;
  }
  // Flip one byte in the middle of every frame of every pack: whatever page the walk reads first is damaged.
  for (const auto& entry : fs::directory_iterator(dir / "arc/packs")) {
    std::vector<archive::pack_frame> frames;
    {
      const archive::pack_reader pack(entry.path());
      frames.assign(pack.frames().begin(), pack.frames().end());
    }
    std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    for (const auto& f : frames) {
      const auto at = static_cast<std::streamoff>(f.offset + f.compressed_size / 2);
      file.seekg(at);
      const char byte = static_cast<char>(file.get() ^ 0x5a);
      file.seekp(at);
      file.put(byte);
    }
  }
  const auto out = dir / "compacted";
  const auto compact = run_ptwalk(dir, {"compact", archived.string(), "--out", out.string(), "--jobs", "2"});
  EXPECT_EQ(compact.status, 1);
  EXPECT_EQ(std::count(compact.err.begin(), compact.err.end(), '\n'), 1) << compact.err;
  EXPECT_NE(compact.err.find((dir / "arc").string() + ": snapshot "), std::string::npos) << compact.err;
  EXPECT_TRUE(std::regex_search(compact.err, std::regex(": page [0-9]+ \\(file offset 0x[0-9a-f]+\\)"))) << compact.err;
  EXPECT_FALSE(fs::exists(out));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find("compacted"), std::string::npos) << entry.path();
}

TEST(archive_lazy, refused_userfaultfd_falls_back_to_eager_with_one_note_and_the_same_output) {
  // Root without CAP_SYS_PTRACE, where unprivileged userfaultfd is off, is refused it.
  if (::geteuid() != 0 || testing::read_file("/proc/sys/vm/unprivileged_userfaultfd") != "0\n" ||
      testing::shell("command -v setpriv").status != 0)
    GTEST_SKIP() << "needs root, vm.unprivileged_userfaultfd=0 and setpriv";
  const temp_dir dir;
  const auto manifest = testing::write_sandbox_fleet(dir, 2, 0);
  const auto archived = archive_fleet(dir, manifest);
  const auto original = run_ptwalk(dir, {"walk", manifest.string(), "--backend", "reference"});
  ASSERT_EQ(original.status, 0) << original.err;
  const auto refused = testing::shell(fmt::format(
      "cd '{}' && (PTWALK_ARCHIVE_STATS=1 setpriv --inh-caps=-sys_ptrace --bounding-set=-sys_ptrace {} walk '{}' "
      "--backend reference 2>stderr.txt)",
      dir.path().string(), PTWALK_BINARY, archived.string()));
  ASSERT_EQ(refused.status, 0) << refused.out;
  EXPECT_EQ(refused.out, original.out);
  const std::string err = testing::read_text(dir / "stderr.txt");
  const std::string note = "ptwalk: note: userfaultfd: Operation not permitted: archived snapshots are decompressed whole";
  EXPECT_NE(err.find(note), std::string::npos) << err;
  EXPECT_EQ(err.find(note), err.rfind(note)) << "one note for all snapshots: " << err;
  EXPECT_EQ(err.find("pages filled"), std::string::npos) << err;
}

TEST(archive_lazy, real_linux_dumps_walk_and_compact_the_same_from_the_archive) {
  const auto manifest = testing::real_x86_manifest();
  if (!manifest) GTEST_SKIP() << "no real dumps in " << testing::real_guest_dir();
  const temp_dir dir;
  const auto fleet = dir.write("real.jsonl", *manifest);
  const auto archived = archive_fleet(dir, fleet);
  const std::string original = outputs(dir, fleet, "original", true);
  const scoped_env cache("PTWALK_ARCHIVE_CACHE", "1M");
  EXPECT_EQ(outputs(dir, archived, "lazy", true), original);
}

}  // namespace
}  // namespace ptwalk
