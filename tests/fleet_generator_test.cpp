// The fleet generator against the reference walk: every shape's walk reports
// exactly the tables, aliases and leaves the generator tallied while building;
// small shapes against counts worked out by hand; leaves inside the image;
// determinism; the written directory loads back to the same walk.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"

namespace ptwalk {
namespace {

namespace fs = std::filesystem;

std::string stats_text(const walk_stats& s) {
  std::string out;
  for (unsigned d = 0; d < max_levels; ++d)
    out += fmt::format("d{}: {} tables {} aliases; ", d, s.tables[d], s.aliases[d]);
  return out + fmt::format("leaves {}/{}/{}, dangling {}, read {}", s.leaves_4k, s.leaves_2m, s.leaves_1g,
                           s.dangling_reads, s.entries_read);
}

// Walks every snapshot and checks it against what the generator recorded.
void expect_walks_match(const fleet_shape& shape) {
  SCOPED_TRACE(format_fleet_shape(shape));
  const generated_fleet fleet = generate_fleet(shape);
  ASSERT_EQ(fleet.snapshots.size(), shape.snapshots);
  for (std::size_t i = 0; i < fleet.snapshots.size(); ++i) {
    const loaded_snapshot& snap = fleet.snapshots[i];
    const snapshot_expectation& want = fleet.expected[i];
    const snapshot_walk walk = reference_walk(snap);
    EXPECT_EQ(walk.stats, want.stats) << snap.id() << "\n walk:     " << stats_text(walk.stats)
                                      << "\n expected: " << stats_text(want.stats);
    // Leaves map frames the image backs, except the hostile unbacked one;
    // aliases name an earlier space.
    u64 unbacked = 0;
    for (std::size_t space = 0; space < walk.space_count(); ++space) {
      for (const auto& r : walk.records_of(space)) {
        if (r.is_leaf())
          unbacked += snap.image.find(r.pa, r.size()) == nullptr ? 1 : 0;
        else
          EXPECT_LE(r.owner, space) << snap.id() << " space " << space;
      }
    }
    EXPECT_EQ(unbacked, want.unbacked_leaves) << snap.id();
    EXPECT_EQ(snap.image.backed_bytes(), want.image_bytes) << snap.id();
    EXPECT_EQ(snap.format() == paging_format::x86_64_la57,
              shape.la57 == la57_mode::all || (shape.la57 == la57_mode::some && i % 2 == 1));
  }
}

fleet_shape shape(std::string_view text) { return parse_fleet_shape(text); }

TEST(fleet_generator, every_preset_walks_as_recorded) {
  for (const auto preset : fleet_presets()) {
    // The presets' shapes, shrunk to keep the suite quick.
    fleet_shape s = shape(preset);
    s.spaces_per_snapshot = std::min<u32>(s.spaces_per_snapshot, 12);
    s.user_pages_per_space = std::min<u32>(s.user_pages_per_space, 96);
    s.nanvix_groups = std::min(s.nanvix_groups, s.spaces_per_snapshot);
    expect_walks_match(s);
  }
}

TEST(fleet_generator, feature_combinations_walk_as_recorded) {
  for (const char* text : {
           "spaces=5,share_kernel=0",
           "spaces=7,share_kernel=0,nanvix=3,self_ref",
           "spaces=6,share_kernel=0,nanvix=2,large,la57",
           "spaces=4,large,self_ref,la57=some,snapshots=3",
           "spaces=4,large,self_ref,share_kernel=0,cow",
           "spaces=3,hostile,la57,dups=5",
           "spaces=3,hostile,self_ref,large,share_kernel=0,nanvix=3",
           "spaces=2,pages=0,kernel=0,hostile",
           "spaces=3,pages=1,kernel=1,frames=8",
           "spaces=2,pages=3000,kernel=2000,large",
       })
    expect_walks_match(shape(text));
}

// Counts worked out by hand from the layout, independent of the generator's tally.
walk_stats hand_stats(std::initializer_list<u64> tables, std::initializer_list<u64> aliases, u64 leaves_4k) {
  walk_stats s;
  std::copy(tables.begin(), tables.end(), s.tables);
  std::copy(aliases.begin(), aliases.end(), s.aliases);
  s.leaves_4k = leaves_4k;
  for (const u64 t : tables) s.entries_read += 512 * t;
  return s;
}

walk_stats first_snapshot_stats(std::string_view text) {
  return reference_walk(generate_fleet(shape(text)).snapshots[0]).stats;
}

TEST(fleet_generator, small_shapes_match_hand_counts) {
  // One kernel page (in vmemmap), no user pages. Linux: three roots share one
  // PDPT → PD → PT chain; the other two spaces alias it at depth 1.
  EXPECT_EQ(first_snapshot_stats("spaces=3,pages=0,kernel=1"), hand_stats({3, 1, 1, 1}, {0, 2, 0, 0}, 1));
  // Nanvix, two groups of two: private roots, PDPTs and PDs; one PT per
  // group, aliased by the group's second space.
  EXPECT_EQ(first_snapshot_stats("spaces=4,pages=0,kernel=1,share_kernel=0,nanvix=2"),
            hand_stats({4, 4, 4, 2}, {0, 0, 0, 2}, 2));
  // Self-map: root R → PDPT P → PD D → PT T → page, and R[493] = R. R is
  // walked at depths 0-3, P at 1-3, D at 2-3, T at 3; at depth 3, D, P and R
  // (two entries) read as 4 KiB leaves.
  EXPECT_EQ(first_snapshot_stats("spaces=1,pages=0,kernel=1,self_ref"),
            hand_stats({1, 2, 3, 4}, {0, 0, 0, 0}, 5));
  // A duplicate root is one depth-0 alias and nothing more.
  EXPECT_EQ(first_snapshot_stats("spaces=1,pages=0,kernel=1,dups=2"),
            hand_stats({1, 1, 1, 1}, {2, 0, 0, 0}, 1));
}

TEST(fleet_generator, hostile_walk_is_bounded) {
  for (const char* text : {"spaces=2,hostile", "spaces=2,hostile,la57,self_ref,large"}) {
    const generated_fleet fleet = generate_fleet(shape(text));
    for (const auto& snap : fleet.snapshots) {
      const snapshot_walk walk = reference_walk(snap);
      u64 keys = 0;
      for (const u64 t : walk.stats.tables) keys += t;
      EXPECT_LE(walk.records.size(), 512 * keys);
      EXPECT_EQ(walk.stats.entries_read, 512 * keys);
      EXPECT_GT(walk.stats.dangling_reads, 0u);
      EXPECT_NE(snap.image.backed_bytes() % 4096, 0u) << "the last page is cut off";
      // The loop root: 512 leaves, all mapping the root itself.
      const std::size_t loop = snap.roots().size() - 3;
      const auto records = walk.records_of(loop);
      const auto leaves = std::count_if(records.begin(), records.end(), [&](const auto& r) {
        return r.is_leaf() && r.pa == snap.roots()[loop] && r.size() == 4096;
      });
      EXPECT_EQ(leaves, 512);
    }
  }
}

TEST(fleet_generator, leaves_look_like_a_linux_guest) {
  const generated_fleet fleet = generate_fleet(shape("snapshots=2,spaces=4,pages=256,large,cow,la57=some"));
  for (const auto& snap : fleet.snapshots) {
    const unsigned va_bits = snap.format() == paging_format::x86_64_la57 ? 57 : 48;
    const u64 upper_half = ~u64{0} << (va_bits - 1);
    u64 user = 0, kernel = 0, cow = 0, read_only = 0, no_exec = 0, exec = 0, large = 0;
    for (const auto& r : reference_walk(snap).records) {
      if (!r.is_leaf()) continue;
      const mapping m = r.as_mapping();
      EXPECT_EQ(m.va % m.size, 0u);
      EXPECT_EQ(m.pa % m.size, 0u);
      EXPECT_EQ(m.user, m.va < upper_half) << std::hex << m.va;  // user pages low, kernel pages high
      EXPECT_TRUE(m.va < (u64{1} << (va_bits - 1)) || m.va >= upper_half);
      if (m.cow) {
        EXPECT_FALSE(m.writable);
      }
      user += m.user;
      kernel += !m.user;
      cow += m.cow;
      read_only += !m.writable;
      no_exec += !m.executable;
      exec += m.executable;
      large += m.size > 4096;
    }
    EXPECT_GT(user, 0u);
    EXPECT_GT(kernel, 0u);
    EXPECT_GT(cow, 0u);
    EXPECT_GT(read_only, cow);
    EXPECT_GT(no_exec, 0u);
    EXPECT_GT(exec, 0u);
    EXPECT_GT(large, 0u);
  }
}

bool same_image(const loaded_snapshot& a, const loaded_snapshot& b) {
  const image_region &x = a.image.regions().front(), &y = b.image.regions().front();
  return x.size == y.size && std::memcmp(x.data, y.data, x.size) == 0;
}

// Byte for byte (without large pages, whose 1 GiB frame makes the images big
// and empty); with them, the same walks and manifest lines.
TEST(fleet_generator, same_seed_same_bytes) {
  for (const char* text : {"everything,large=0,spaces=6,pages=64", "everything,spaces=6,pages=64"}) {
    const fleet_shape s = shape(text);
    const generated_fleet a = generate_fleet(s), b = generate_fleet(s);
    fleet_shape other = s;
    other.seed = 2;
    const generated_fleet c = generate_fleet(other);
    for (std::size_t i = 0; i < a.snapshots.size(); ++i) {
      EXPECT_EQ(format_manifest_line(a.snapshots[i].spec), format_manifest_line(b.snapshots[i].spec));
      EXPECT_NE(format_manifest_line(a.snapshots[i].spec), format_manifest_line(c.snapshots[i].spec));
      if (s.large_pages) {
        EXPECT_EQ(reference_walk(a.snapshots[i]), reference_walk(b.snapshots[i]));
      } else {
        EXPECT_TRUE(same_image(a.snapshots[i], b.snapshots[i]));
        EXPECT_FALSE(same_image(a.snapshots[i], c.snapshots[i]));
      }
    }
  }
}

class fleet_dir_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("ptwalk-gen-{}-{}", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                       ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::string file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST_F(fleet_dir_test, written_fleet_loads_back_to_the_same_walk) {
  for (const char* text :
       {"linux,spaces=6,pages=64", "nanvix,spaces=8,la57=some,self_ref", "everything,spaces=4"}) {
    SCOPED_TRACE(text);
    const fleet_shape s = shape(text);
    const fs::path out = dir_ / "fleet";
    const fleet_summary summary = write_fleet(s, out, true);
    const generated_fleet memory = generate_fleet(s);
    const auto loaded = load_manifest(out / "manifest.jsonl");
    ASSERT_EQ(loaded.size(), memory.snapshots.size());
    u64 table_pages = 0, spaces = 0;
    for (std::size_t i = 0; i < loaded.size(); ++i) {
      EXPECT_EQ(loaded[i].roots(), memory.snapshots[i].roots());
      EXPECT_EQ(loaded[i].image.backed_bytes(), memory.expected[i].image_bytes);
      EXPECT_EQ(reference_walk(loaded[i]), reference_walk(memory.snapshots[i]));
      table_pages += memory.expected[i].table_pages;
      spaces += memory.snapshots[i].roots().size();
    }
    EXPECT_EQ(summary.snapshots, s.snapshots);
    EXPECT_EQ(summary.spaces, spaces);
    EXPECT_EQ(summary.table_pages, table_pages);
  }
}

TEST_F(fleet_dir_test, files_are_deterministic_and_runs_leave_nothing_behind) {
  const fleet_shape s = shape("everything,large=0,spaces=3,pages=32");
  write_fleet(s, dir_ / "a");
  write_fleet(s, dir_ / "b");
  for (const auto& entry : fs::directory_iterator(dir_ / "a"))
    EXPECT_TRUE(file_text(entry.path()) == file_text(dir_ / "b" / entry.path().filename())) << entry.path();
  // A non-empty target is refused without --force, and left as it was.
  const std::string manifest = file_text(dir_ / "a" / "manifest.jsonl");
  fleet_shape other = s;
  other.seed = 9;
  EXPECT_THROW(write_fleet(other, dir_ / "a"), input_error);
  EXPECT_EQ(file_text(dir_ / "a" / "manifest.jsonl"), manifest);
  write_fleet(other, dir_ / "a", true);
  EXPECT_NE(file_text(dir_ / "a" / "manifest.jsonl"), manifest);
  // An empty directory is filled; a file is never replaced.
  fs::create_directory(dir_ / "empty");
  write_fleet(s, dir_ / "empty");
  EXPECT_TRUE(fs::exists(dir_ / "empty" / "manifest.jsonl"));
  std::ofstream(dir_ / "file") << "keep";
  EXPECT_THROW(write_fleet(s, dir_ / "file", true), input_error);
  EXPECT_EQ(file_text(dir_ / "file"), "keep");
  // A target whose parents do not exist yet gets them.
  write_fleet(s, dir_ / "nested" / "deeper");
  EXPECT_EQ(file_text(dir_ / "nested" / "deeper" / "manifest.jsonl"), file_text(dir_ / "b" / "manifest.jsonl"));
  // Nothing else is left: no temporary directories.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 5);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "nested"), fs::directory_iterator()), 1);
}

TEST_F(fleet_dir_test, gen_command_writes_and_reports) {
  const auto gen = [&](const std::string& args) {
    const std::string command = fmt::format("{} gen {} >{} 2>{}", PTWALK_BINARY, args,
                                            (dir_ / "out").string(), (dir_ / "err").string());
    const int raw = std::system(command.c_str());
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  };
  const fs::path out = dir_ / "fleet";
  ASSERT_EQ(gen(fmt::format("--out {} --shape small,kernel=64 --spaces 3 --hostile --seed 5", out.string())),
            0);
  // Three spaces and three hostile roots in each of the two snapshots.
  EXPECT_NE(file_text(dir_ / "out").find("2 snapshots (0 la57), 12 spaces"), std::string::npos)
      << file_text(dir_ / "out");
  const auto loaded = load_manifest(out / "manifest.jsonl");
  ASSERT_EQ(loaded.size(), 2u);
  const generated_fleet memory = generate_fleet(shape("small,kernel=64,spaces=3,hostile,seed=5"));
  EXPECT_EQ(reference_walk(loaded[1]).stats, memory.expected[1].stats);

  EXPECT_EQ(gen(fmt::format("--out {} --shape nosuch", (dir_ / "bad").string())), 1);
  EXPECT_EQ(file_text(dir_ / "err"), "ptwalk: fleet shape: unknown preset or key \"nosuch\"\n");
  EXPECT_FALSE(fs::exists(dir_ / "bad"));
  EXPECT_EQ(gen(fmt::format("--out {}", out.string())), 1);
  EXPECT_EQ(file_text(dir_ / "err"),
            fmt::format("ptwalk: {}: exists and is not empty (use --force to replace it)\n", out.string()));
}

TEST(fleet_shape_text, presets_overrides_and_canonical_form) {
  EXPECT_EQ(shape(""), fleet_shape{});
  EXPECT_EQ(shape("small"), fleet_shape{});
  const fleet_shape s = shape("linux, spaces=100,pages=64,cow,la57=some,seed=7");
  EXPECT_EQ(s.spaces_per_snapshot, 100u);
  EXPECT_EQ(s.user_pages_per_space, 64u);
  EXPECT_TRUE(s.cow && s.large_pages && s.share_kernel_half);
  EXPECT_EQ(s.la57, la57_mode::some);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(shape("la57").la57, la57_mode::all);
  EXPECT_EQ(format_fleet_shape(fleet_shape{}),
            "snapshots=2,spaces=8,pages=64,kernel=256,share_kernel=1,nanvix=0,large=0,cow=0,self_ref=0,"
            "dups=0,la57=off,arm=off,hostile=0,frames=0,seed=1");
  for (const auto preset : fleet_presets())
    EXPECT_EQ(shape(format_fleet_shape(shape(preset))), shape(preset));
}

TEST(fleet_shape_text, bad_text_is_an_input_error) {
  for (const char* text : {"nosuch", "spaces", "spaces=x", "spaces=-1", "cow=2", "la57=maybe", "spaces=0",
                           "cow,linux", "nanvix=2", "share_kernel=0,nanvix=99", "frames=3", "seed=1=2"})
    EXPECT_THROW((void)parse_fleet_shape(text), input_error) << text;
}

}  // namespace
}  // namespace ptwalk
