// `ptwalk walk` output: JSON Lines byte for byte against hand-written lines,
// chunked writing of large walks, and the summary.
#include <gtest/gtest.h>

#include <sstream>

#include <fmt/format.h>

#include "walk/walk_output.hpp"

namespace ptwalk {
namespace {

using F = x86_64_4level;

std::string jsonl(std::span<const snapshot_walk> walks) {
  std::ostringstream out;
  write_walk_jsonl(out, walks);
  return out.str();
}

// Two spaces: the first owns a 4 KiB CoW page and a 1 GiB kernel page; the
// second aliases the first's kernel PDPT and has a 2 MiB user page.
snapshot_walk two_space_walk() {
  snapshot_walk w;
  w.roots = {0x1000, 0x7fe000};
  w.records = {
      make_leaf_record<F>(0x5000 | (u64{1} << 9) | 0x1 | (u64{1} << 63), 3, 0x401000, F::perm_path_start),
      make_leaf_record<F>(0x4000'0000 | 0x183, 1, 0xffff'ff80'4000'0000, F::perm_path_start),
      make_alias_record<F>(1, 0, 0xffff'ff80'0000'0000, 0xffff'ff80'0000'0000),
      make_leaf_record<F>(0x20'0000 | 0x87, 2, 0x7f00'0020'0000, F::perm_path_start),
  };
  w.offsets = {0, 2, 4};
  return w;
}

TEST(walk_output, lines_are_byte_exact) {
  const std::vector<snapshot_walk> walks{two_space_walk()};
  EXPECT_EQ(jsonl(walks),
            R"({"space":"0x1000","type":"leaf","va":"0x401000","pa":"0x5000","size":4096,"w":false,"u":false,"x":false,"cow":true,"flags":"0x8000000000000201"})"
            "\n"
            R"({"space":"0x1000","type":"leaf","va":"0xffffff8040000000","pa":"0x40000000","size":1073741824,"w":true,"u":false,"x":true,"cow":false,"flags":"0x183"})"
            "\n"
            R"({"space":"0x7fe000","type":"alias","depth":1,"owner":"0x1000","our_va":"0xffffff8000000000","their_va":"0xffffff8000000000"})"
            "\n"
            R"({"space":"0x7fe000","type":"leaf","va":"0x7f0000200000","pa":"0x200000","size":2097152,"w":true,"u":true,"x":true,"cow":false,"flags":"0x87"})"
            "\n");
}

TEST(walk_output, snapshots_in_order_and_empty_spaces_write_nothing) {
  snapshot_walk empty;
  empty.roots = {0x9000};
  empty.offsets = {0, 0};
  snapshot_walk second;
  second.roots = {0x0, 0x3000};
  second.records = {make_alias_record<F>(0, 0, 0, 0)};
  second.offsets = {0, 0, 1};
  const std::vector<snapshot_walk> walks{empty, second};
  EXPECT_EQ(jsonl(walks),
            R"({"space":"0x3000","type":"alias","depth":0,"owner":"0x0","our_va":"0x0","their_va":"0x0"})"
            "\n");
}

TEST(walk_output, large_walks_are_written_whole) {
  // Well over one output chunk, so the writer flushes mid-walk.
  snapshot_walk w;
  w.roots = {0x1000};
  constexpr u64 count = 40'000;
  for (u64 i = 0; i < count; ++i)
    w.records.push_back(make_leaf_record<F>(0x10'0000 + i * 0x1000 + 0x3, 3, i * 0x1000, F::perm_path_start));
  w.offsets = {0, count};
  const std::vector<snapshot_walk> walks{w};
  const std::string out = jsonl(walks);
  EXPECT_GT(out.size(), std::size_t{2} << 20);
  std::istringstream lines(out);
  std::string line;
  u64 n = 0;
  while (std::getline(lines, line)) {
    const std::string expected =
        R"({"space":"0x1000","type":"leaf","va":")" + fmt::format("{:#x}", n * 0x1000) + R"(","pa":")" +
        fmt::format("{:#x}", 0x10'0000 + n * 0x1000) +
        R"(","size":4096,"w":true,"u":false,"x":true,"cow":false,"flags":"0x3"})";
    ASSERT_EQ(line, expected) << "line " << n;
    ++n;
  }
  EXPECT_EQ(n, count);
}

TEST(walk_output, summary_counts) {
  snapshot_walk a = two_space_walk();
  a.stats.tables[0] = 2;
  a.stats.tables[1] = 3;
  a.stats.aliases[1] = 1;
  a.stats.leaves_4k = 1;
  a.stats.leaves_2m = 1;
  a.stats.leaves_1g = 1;
  a.stats.entries_read = 2560;
  snapshot_walk b;
  b.roots = {0x2000};
  b.offsets = {0, 0};
  b.stats.tables[0] = 1;
  b.stats.dangling_reads = 512;
  b.stats.entries_read = 512;
  const std::vector<snapshot_walk> walks{a, b};
  EXPECT_EQ(format_walk_summary(walks, 4, "reference", 2.0),
            "walked 2 snapshots, 3 spaces: 4 records in 2.000 s (0.00 M records/s, backend reference)\n"
            "  leaves: 1 x 4 KiB, 1 x 2 MiB, 1 x 1 GiB\n"
            "  distinct tables per depth 0..3: 3 3 0 0\n"
            "  aliases per depth 0..3: 0 1 0 0\n"
            "  dangling reads: 512 of 3072 entries read\n");
}

}  // namespace
}  // namespace ptwalk
