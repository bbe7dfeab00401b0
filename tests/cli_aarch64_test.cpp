// `ptwalk walk` and `ptwalk info` on an AArch64 image: --format/--ttbr1 and
// the manifest's "ttbr1", expected JSON lines written out by hand, and the
// strict errors of SPEC §2.1/§5.
#include <gtest/gtest.h>

#include <cstring>

#include "input/table_views.hpp"
#include "ptwalk/map.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using F = aarch64_4k_48;
using testing::run_ptwalk;

// A raw image at 0x1000 with tables allocated in this order:
//   A, TTBR0 0x1000: 0x400000 -> 0x80000 (4 KiB, EL0 rw, executable) via 0x2000/0x3000/0x4000;
//   B, TTBR0 0x5000: 0x400000 -> 0x90000 (4 KiB, read-only CoW: software bits 0b0001, nG);
//   TTBR1 0x9000, shared: 0xffff000000200000 -> 0x200000 (2 MiB block, kernel rwx, UXN).
constexpr u64 user_rw = 0x40 | 0x400 | 0x800;                       // AP[1], AF, nG
constexpr u64 user_cow = user_rw | 0x80 | (u64{1} << 55);           // + AP[2], software 0b0001
constexpr u64 kernel_rwx = 0x400 | (u64{1} << 54);                  // AF, UXN
constexpr u64 kernel_va = 0xffff'0000'0020'0000;

std::vector<std::byte> arm_image() {
  page_table_buffer tables(0x1000);
  tables.update_root(tables.alloc_table());
  EXPECT_EQ(map<F>(tables, {0x400000, 0x80000, 12, user_rw, {}}), map_status::ok);
  tables.update_root(tables.alloc_table());
  EXPECT_EQ(tables.root_table(), 0x5000u);
  EXPECT_EQ(map<F>(tables, {0x400000, 0x90000, 12, user_cow, {}}), map_status::ok);
  tables.update_root(tables.alloc_table());
  EXPECT_EQ(tables.root_table(), 0x9000u);
  EXPECT_EQ(map<F>(tables, {kernel_va, 0x200000, 21, kernel_rwx, {}}), map_status::ok);
  std::vector<std::byte> bytes(tables.words().size() * 8);
  std::memcpy(bytes.data(), tables.words().data(), bytes.size());
  return bytes;
}

const std::string expected_walk =
    R"({"space":"0x1000","type":"leaf","va":"0x400000","pa":"0x80000","size":4096,"w":true,"u":true,"x":true,"cow":false,"flags":"0xc43"})"
    "\n"
    R"({"space":"0x1000","type":"leaf","va":"0xffff000000200000","pa":"0x200000","size":2097152,"w":true,"u":false,"x":true,"cow":false,"flags":"0x40000000000401"})"
    "\n"
    R"({"space":"0x5000","type":"leaf","va":"0x400000","pa":"0x90000","size":4096,"w":false,"u":true,"x":true,"cow":true,"flags":"0x80000000000cc3"})"
    "\n"
    R"({"space":"0x5000","type":"alias","depth":0,"owner":"0x1000","our_va":"0xffff000000000000","their_va":"0xffff000000000000"})"
    "\n";

class cli_aarch64 : public ::testing::Test {
 protected:
  void SetUp() override { dir_.write("arm.raw", arm_image()); }
  std::string path(std::string_view name) const { return (dir_ / name).string(); }
  void expect_error(std::vector<std::string> args, const std::string& message) {
    args.insert(args.begin(), "walk");
    const auto r = run_ptwalk(dir_, args);
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(r.err, "ptwalk: " + message + "\n");
    EXPECT_EQ(r.out, "");
  }

  testing::temp_dir dir_;
};

TEST_F(cli_aarch64, single_image_with_format_and_ttbr1) {
  for (const char* backend : {"reference", "cpu"}) {
    const auto r = run_ptwalk(dir_, {"walk", "--raw", path("arm.raw"), "--base", "0x1000", "--format",
                                     "aarch64-4k-48", "--roots", "0x1000,0x5000", "--ttbr1", "0x0005000000009001",
                                     "--backend", backend});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, expected_walk) << backend;
    EXPECT_NE(r.err.find("distinct tables per depth 0..3: 3 3 3 2"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("aliases per depth 0..3: 1 0 0 0"), std::string::npos) << r.err;
  }
  // Without TTBR1 only the lower halves.
  const auto lower = run_ptwalk(dir_, {"walk", "--raw", path("arm.raw"), "--base", "0x1000", "--format",
                                       "aarch64-4k-48", "--roots", "0x1000,0x5000"});
  ASSERT_EQ(lower.status, 0) << lower.err;
  EXPECT_EQ(lower.out.find("0xffff"), std::string::npos);
  EXPECT_NE(lower.out.find(R"("pa":"0x90000")"), std::string::npos);
}

TEST_F(cli_aarch64, manifest_ttbr1_walk_and_info) {
  dir_.write("fleet.jsonl", R"({"id":"arm","format":"aarch64-4k-48","memory":{"raw":"arm.raw","base":"0x1000"},)"
                            R"("roots":["0x1000","0x5000"],"ttbr1":["0x9000","0x9000"]})" "\n");
  auto r = run_ptwalk(dir_, {"walk", path("fleet.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, expected_walk);
  r = run_ptwalk(dir_, {"info", path("fleet.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("snapshot arm: aarch64-4k-48, 2 roots"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  root 0x1000  ttbr1 0x9000\n  root 0x5000  ttbr1 0x9000\n"), std::string::npos) << r.out;
}

TEST_F(cli_aarch64, bad_ttbr1_fails_cleanly) {
  const std::vector<std::string> image{"--raw", path("arm.raw"), "--base", "0x1000", "--roots", "0x1000,0x5000"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = image;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_error(with({"--ttbr1", "0x9000"}), "--ttbr1 is for aarch64 formats, not x86_64");
  expect_error(with({"--format", "aarch64-4k-48", "--ttbr1", "0x9000,0x9000,0x9000"}), "--ttbr1: 3 values for 2 roots");
  expect_error(with({"--format", "aarch64-4k-48", "--ttbr1", "0x9000,0xq"}), R"(--ttbr1: bad hex in "0x9000,0xq")");
  expect_error(with({"--format", "aarch64-4k-48", "--ttbr1", "0x100000"}),
               path("arm.raw") + ": snapshot arm.raw: ttbr1 0x100000 is outside every region");
  dir_.write("x86.jsonl", R"({"id":"x","format":"x86_64","memory":{"raw":"arm.raw"},"roots":["0x1000"],"ttbr1":"0x9000"})" "\n");
  expect_error({path("x86.jsonl")}, path("x86.jsonl") + R"(:1: "ttbr1" is for aarch64 formats, not "x86_64")");
}

}  // namespace
}  // namespace ptwalk
