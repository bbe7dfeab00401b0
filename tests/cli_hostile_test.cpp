// tests/cli_hostile_test.cpp — issue 9's reproducers, run as the real binary.
//
// Outputs that are not regular files are written through (a device node
// stays one, `-` is stdout); hostile inputs (a FIFO, deeply nested or
// overflowing JSON, a full disk) end in one line naming the file, exit
// status 1 and nothing left behind.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::run_ptwalk;

class cli_hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto r = run_ptwalk(dir_, {"gen", "--out", (dir_ / "fleet").string(), "--snapshots", "2"});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  [[nodiscard]] std::string manifest() const { return (dir_ / "fleet" / "manifest.jsonl").string(); }
  // The first manifest line with `meta` replaced, as a manifest of its own.
  [[nodiscard]] std::string manifest_with_meta(const std::string& meta) const {
    std::string line = testing::read_text(manifest());
    line = line.substr(0, line.find('\n'));
    line = line.substr(0, line.find(R"(,"meta":)")) + R"(,"meta":)" + meta + "}\n";
    return dir_.write("fleet/hostile.jsonl", line).string();
  }
  // Names in the temp dir (and the fleet) that look like temporaries.
  void expect_no_temporaries() const {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.path()))
      EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }

  testing::temp_dir dir_;
};

TEST_F(cli_hostile, walk_out_to_a_device_node_leaves_it_a_device) {
  const auto node = dir_ / "null";
  if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0)
    GTEST_SKIP() << "mknod needs root: " << std::strerror(errno);
  const auto r = run_ptwalk(dir_, {"walk", manifest(), "--out", node.string()});
  EXPECT_EQ(r.status, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(node.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  expect_no_temporaries();
}

TEST_F(cli_hostile, walk_out_dash_is_stdout) {
  const auto plain = run_ptwalk(dir_, {"walk", manifest()});
  const auto dash = run_ptwalk(dir_, {"walk", manifest(), "--out", "-"});
  EXPECT_EQ(dash.status, 0) << dash.err;
  EXPECT_FALSE(plain.out.empty());
  EXPECT_EQ(dash.out, plain.out);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "-"));
}

TEST_F(cli_hostile, a_fifo_image_is_refused_at_once) {
  const auto fifo = dir_ / "image.raw";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto out = dir_ / "w.jsonl";
  const auto r = run_ptwalk(dir_, {"walk", "--raw", fifo.string(), "--roots", "0x1000", "--out", out.string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, fmt::format("ptwalk: {}: is a FIFO, not a regular file\n", fifo.string()));
  EXPECT_FALSE(std::filesystem::exists(out));
  expect_no_temporaries();
}

TEST_F(cli_hostile, deeply_nested_meta_fails_in_one_line_for_every_command) {
  const std::string deep = manifest_with_meta(std::string(100'000, '[') + std::string(100'000, ']'));
  const std::string expected =
      fmt::format("ptwalk: {}:1: JSON nested deeper than 100 levels at \"meta[0][0][0][0][0][0][0]…\"\n", deep);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"info", deep}, {"walk", deep, "--out", (dir_ / "w.jsonl").string()},
        {"compact", deep, "--out", (dir_ / "compacted").string()}}) {
    const auto r = run_ptwalk(dir_, args);
    EXPECT_EQ(r.status, 1) << args[0];
    EXPECT_EQ(r.err, expected) << args[0];
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "w.jsonl"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "compacted"));
  expect_no_temporaries();
}

TEST_F(cli_hostile, a_number_overflowing_a_double_names_file_line_and_key) {
  const std::string bad = manifest_with_meta(R"({"x":1e400})");
  const auto r = run_ptwalk(dir_, {"info", bad});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, fmt::format("ptwalk: {}:1: \"meta.x\": number overflow parsing '1e400'\n", bad));
}

// A full disk, as a file size limit: the message names the output as the
// user gave it (not the staging directory) with errno, and nothing stays.
TEST_F(cli_hostile, a_full_disk_names_the_target_and_errno) {
  const auto out = dir_ / "compacted";
  const auto err = dir_ / "stderr.txt";
  // SIGXFSZ ignored (inherited through exec): the write fails with EFBIG instead.
  // One job: with several, which image hits the limit first depends on timing.
  const std::string command = fmt::format("trap '' XFSZ; ulimit -f 64; '{}' compact '{}' --jobs 1 --out '{}' 2>'{}' >/dev/null",
                                          PTWALK_BINARY, manifest(), out.string(), err.string());
  const int raw = std::system(command.c_str());
  EXPECT_EQ(WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, 1);
  EXPECT_EQ(testing::read_text(err),
            fmt::format("ptwalk: {}: write failed: File too large\n", (out / "snap-0000.img").string()));
  std::filesystem::remove(err);
  EXPECT_FALSE(std::filesystem::exists(out));
  expect_no_temporaries();
}

}  // namespace
}  // namespace ptwalk
