// `ptwalk walk` and `ptwalk info` run as the real binary on images and
// manifests written to a temp dir: expected JSON lines written out by hand,
// and every bad-input path (exit status, one-line message naming the file,
// no output file left behind).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "ptwalk/map.hpp"
#include "support/cpu_notes.hpp"
#include "support/elf_builder.hpp"
#include "support/run_cli.hpp"
#include "support/shell.hpp"
#include "support/temp_dir.hpp"
#include "input/table_views.hpp"

namespace ptwalk {
namespace {

using F = x86_64_4level;

using testing::run_ptwalk;

// Two spaces in a raw image at 0x1000 (tables allocated in this order):
//   A, root 0x1000: 0x400000 -> 0x80000 (4 KiB, user rwx) via 0x2000/0x3000/0x4000,
//                   kernel 0xffff800000000000 -> 0x200000 (2 MiB, NX) via PDPT 0x5000, PD 0x6000;
//   B, root 0x7000: 0x400000 -> 0x90000 (4 KiB, read-only CoW) via 0x8000/0x9000/0xa000,
//                   and A's kernel PDPT at PML4 entry 256.
constexpr u64 image_base = 0x1000;
constexpr u64 root_a = 0x1000, root_b = 0x7000;
constexpr u64 kernel_va = 0xffff'8000'0000'0000;

std::vector<std::byte> two_space_image() {
  page_table_buffer tables(image_base);
  tables.update_root(tables.alloc_table());
  EXPECT_EQ(map<F>(tables, {0x400000, 0x80000, 12, 0x7, {}}), map_status::ok);
  EXPECT_EQ(map<F>(tables, {kernel_va, 0x200000, 21, 0x3 | F::bit_no_execute, {}}), map_status::ok);
  tables.update_root(tables.alloc_table());
  EXPECT_EQ(tables.root_table(), root_b);
  EXPECT_EQ(map<F>(tables, {0x400000, 0x90000, 12, 0x205, {}}), map_status::ok);
  tables.write_entry(root_b + 8 * 256, tables.read_entry(root_a + 8 * 256));
  std::vector<std::byte> bytes(tables.words().size() * 8);
  std::memcpy(bytes.data(), tables.words().data(), bytes.size());
  return bytes;
}

const std::string a_user =
    R"({"space":"0x1000","type":"leaf","va":"0x400000","pa":"0x80000","size":4096,"w":true,"u":true,"x":true,"cow":false,"flags":"0x7"})"
    "\n";
const std::string a_kernel =
    R"({"space":"0x1000","type":"leaf","va":"0xffff800000000000","pa":"0x200000","size":2097152,"w":true,"u":false,"x":false,"cow":false,"flags":"0x8000000000000083"})"
    "\n";
const std::string b_user =
    R"({"space":"0x7000","type":"leaf","va":"0x400000","pa":"0x90000","size":4096,"w":false,"u":true,"x":true,"cow":true,"flags":"0x205"})"
    "\n";
const std::string b_kernel_alias =
    R"({"space":"0x7000","type":"alias","depth":1,"owner":"0x1000","our_va":"0xffff800000000000","their_va":"0xffff800000000000"})"
    "\n";
const std::string whole_walk = a_user + a_kernel + b_user + b_kernel_alias;

std::string raw_line(std::string_view id, std::string_view roots) {
  return fmt::format(R"({{"id":"{}","format":"x86_64","memory":{{"raw":"img.raw","base":"0x1000"}},"roots":[{}]}})"
                     "\n",
                     id, roots);
}

class cli_walk : public ::testing::Test {
 protected:
  void SetUp() override { dir_.write("img.raw", two_space_image()); }
  std::string path(std::string_view name) const { return (dir_ / name).string(); }

  testing::temp_dir dir_;
};

TEST_F(cli_walk, manifest_to_stdout_and_summary_to_stderr) {
  dir_.write("fleet.jsonl", raw_line("vm", R"("0x1000","0x7000")"));
  const auto r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--backend", "reference"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, whole_walk);
  EXPECT_NE(r.err.find("walked 1 snapshots, 2 spaces: 4 records"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("leaves: 2 x 4 KiB, 1 x 2 MiB, 0 x 1 GiB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("distinct tables per depth 0..3: 2 3 3 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("aliases per depth 0..3: 0 1 0 0"), std::string::npos) << r.err;
}

TEST_F(cli_walk, fleet_order_snapshot_selection_and_out_file) {
  // Snapshot "b" lists B first, so B owns the kernel PDPT there; roots carry CR3 bits.
  dir_.write("fleet.jsonl", raw_line("a", R"("0x1000","0x7000")") + "\n" + raw_line("b", R"("0x7018","0x1fff")"));
  const std::string b_first =
      b_user +
      R"({"space":"0x7000","type":"leaf","va":"0xffff800000000000","pa":"0x200000","size":2097152,"w":true,"u":false,"x":false,"cow":false,"flags":"0x8000000000000083"})"
      "\n" +
      a_user +
      R"({"space":"0x1000","type":"alias","depth":1,"owner":"0x7000","our_va":"0xffff800000000000","their_va":"0xffff800000000000"})"
      "\n";
  auto r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--out", path("all.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(testing::read_text(dir_ / "all.jsonl"), whole_walk + b_first);

  r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--snapshot", "b"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, b_first);
}

TEST_F(cli_walk, va_range_is_half_open_and_may_run_to_the_end) {
  dir_.write("fleet.jsonl", raw_line("vm", R"("0x1000","0x7000")"));
  auto r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--va-range", "0x0:0x401000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, a_user + b_user);
  r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--va-range", "0x0:0x400000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--va-range", "0xffff800000000000:"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, a_kernel + b_kernel_alias);
}

TEST_F(cli_walk, single_raw_image_with_roots_list_or_file) {
  auto r = run_ptwalk(dir_, {"walk", "--raw", path("img.raw"), "--base", "0x1000", "--roots", "0x1000,0x7000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, whole_walk);
  dir_.write("roots.txt", "# A then B\n0x1000\n\n0x7000  # B\n");
  r = run_ptwalk(dir_, {"walk", "--raw", path("img.raw"), "--base", "0x1000", "--roots", path("roots.txt")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, whole_walk);
  // A list longer than any file name is still a list (the second space
  // repeated: each repeat is a depth-0 alias).
  std::string long_list = "0x1000";
  for (int i = 0; i < 200; ++i) long_list += ",0x7000";
  r = run_ptwalk(dir_, {"walk", "--raw", path("img.raw"), "--base", "0x1000", "--roots", long_list});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with(whole_walk));
}

TEST_F(cli_walk, single_elf_image) {
  testing::elf_core_builder elf;
  elf.set_notes({{"CORE", NT_PRSTATUS, std::vector<std::byte>(336)}});
  elf.add_load(image_base, two_space_image(), 0x100000);
  dir_.write("vm.elf", elf.build());
  auto r = run_ptwalk(dir_, {"walk", "--elf", path("vm.elf"), "--roots", "0x1000,0x7000", "--out", path("o.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(testing::read_text(dir_ / "o.jsonl"), whole_walk);
  // The same core through a manifest, relative to the manifest's directory.
  std::filesystem::create_directories(dir_ / "m");
  std::filesystem::rename(dir_ / "vm.elf", dir_ / "m" / "vm.elf");
  dir_.write("m/fleet.jsonl", R"({"id":"e","format":"x86_64","memory":{"elf":"vm.elf"},"roots":["0x1000","0x7000"]})" "\n");
  r = run_ptwalk(dir_, {"walk", path("m/fleet.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, whole_walk);
}

// Without --roots, an ELF core is walked at the roots `ptwalk roots` finds:
// the vCPU's CR3 (B) first, then A, which shares B's kernel half.
TEST_F(cli_walk, elf_without_roots_walks_the_discovered_roots) {
  testing::elf_core_builder elf;
  elf.set_notes({{"CORE", NT_PRSTATUS, testing::prstatus_note(1, 0)},
                 {"QEMU", 0, testing::qemu_note(testing::paging_on, root_b, testing::cr4_4level)}});
  elf.add_load(image_base, two_space_image(), 0x100000);
  dir_.write("vm.elf", elf.build());
  const auto roots = run_ptwalk(dir_, {"roots", path("vm.elf")});
  ASSERT_EQ(roots.status, 0) << roots.err;
  std::string listed;
  for (std::size_t at = 0; (at = roots.out.find("\n0x", at)) != std::string::npos; ++at)
    listed += (listed.empty() ? "" : ",") + roots.out.substr(at + 1, roots.out.find(' ', at) - at - 1);
  ASSERT_EQ(listed, "0x7000,0x1000") << roots.out;

  const auto given = run_ptwalk(dir_, {"walk", "--elf", path("vm.elf"), "--roots", listed});
  ASSERT_EQ(given.status, 0) << given.err;
  const auto discovered = run_ptwalk(dir_, {"walk", "--elf", path("vm.elf")});
  ASSERT_EQ(discovered.status, 0) << discovered.err;
  EXPECT_EQ(discovered.out, given.out);
  // B first: it owns the kernel PDPT, and A's entry 256 is the alias now.
  EXPECT_EQ(discovered.out.substr(0, b_user.size()), b_user);
  EXPECT_NE(discovered.err.find("no --roots given: walking the 2 roots `ptwalk roots` finds"), std::string::npos)
      << discovered.err;
  EXPECT_NE(discovered.err.find("format x86_64 (CR4.LA57 of the vCPUs)"), std::string::npos) << discovered.err;
}

// Runs a walk that must fail on bad input: exit 1, one stderr line with
// `message`, nothing written to stdout, and no output file (nor temporary).
void expect_bad_input(const testing::temp_dir& dir, std::vector<std::string> args, const std::string& message) {
  const auto out = dir / "out.jsonl";
  args.insert(args.begin(), "walk");
  args.push_back("--out");
  args.push_back(out.string());
  const auto r = run_ptwalk(dir, args);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.err, "ptwalk: " + message + "\n");
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(std::filesystem::exists(out));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
}

TEST_F(cli_walk, bad_input_fails_cleanly) {
  const std::string good = raw_line("vm", R"("0x1000")");
  expect_bad_input(dir_, {path("none.jsonl")}, path("none.jsonl") + ": cannot open: No such file or directory");

  dir_.write("missing_image.jsonl", R"({"id":"vm","format":"x86_64","memory":{"raw":"gone.raw"},"roots":["0x1000"]})" "\n");
  expect_bad_input(dir_, {path("missing_image.jsonl")}, path("gone.raw") + ": cannot open: No such file or directory");

  dir_.write("malformed.jsonl", good + R"({"id":"x","format":"x86_64",)" + "\n");
  expect_bad_input(dir_, {path("malformed.jsonl")},
                   path("malformed.jsonl") +
                       ":2: malformed JSON at column 29: syntax error while parsing object key - unexpected end of "
                       "input; expected string literal");

  dir_.write("unknown_key.jsonl",
             "\n" + good + R"({"id":"x","format":"x86_64","memory":{"raw":"img.raw"},"roots":["0x1000"],"pid":1})" "\n");
  expect_bad_input(dir_, {path("unknown_key.jsonl")}, path("unknown_key.jsonl") + R"(:3: unknown key "pid")");

  dir_.write("unknown_format.jsonl",
             R"({"id":"x","format":"riscv-sv39","memory":{"raw":"img.raw"},"roots":["0x1000"]})" "\n");
  expect_bad_input(dir_, {path("unknown_format.jsonl")},
                   path("unknown_format.jsonl") + R"(:1: unknown format "riscv-sv39" (expected one of )" + format_names() + ")");

  dir_.write("outside.jsonl", raw_line("vm", R"("0x1000","0xb000")"));
  expect_bad_input(dir_, {path("outside.jsonl")}, path("outside.jsonl") + ": snapshot vm: root 0xb000 is outside every region");
  // Without --base the 40 KiB image sits at 0x0, so its last table is at 0x9000.
  expect_bad_input(dir_, {"--raw", path("img.raw"), "--roots", "0x9000,0xa000"},
                   path("img.raw") + ": snapshot img.raw: root 0xa000 is outside every region");

  dir_.write("fleet.jsonl", good);
  expect_bad_input(dir_, {path("fleet.jsonl"), "--snapshot", "other"}, path("fleet.jsonl") + R"(: no snapshot with id "other")");
  expect_bad_input(dir_, {path("fleet.jsonl"), "--va-range", "0x1000"},
                   R"(--va-range: "0x1000": expected LO:HI or LO: in hex)");
  expect_bad_input(dir_, {path("fleet.jsonl"), "--va-range", "0x2000:0x1000"},
                   R"(--va-range: "0x2000:0x1000": empty range (HI must be above LO))");
  expect_bad_input(dir_, {path("fleet.jsonl"), "--va-range", "0xq:"}, R"(--va-range: "0xq:": bad hex LO)");

  testing::elf_core_builder elf;
  elf.add_load(image_base, two_space_image());
  auto truncated = elf.build();
  truncated.resize(truncated.size() - 0x100);
  dir_.write("cut.elf", truncated);
  expect_bad_input(dir_, {"--elf", path("cut.elf"), "--roots", "0x1000"},
                   path("cut.elf") + fmt::format(": segment 0 (offset 0x78, {:#x} bytes) runs past the end of the file ({:#x} bytes)",
                                                 truncated.size() + 0x100 - 0x78, truncated.size()));
  expect_bad_input(dir_, {"--raw", path("img.raw")},
                   "walk: --raw needs --roots (a raw file has no CPU state to find them from; see ptwalk roots)");
  expect_bad_input(dir_, {"--elf", path("img.raw")}, path("img.raw") + ": not an ELF core");
  expect_bad_input(dir_, {"--raw", path("img.raw"), "--roots", path("no-roots.txt")},
                   R"(--roots: ")" + path("no-roots.txt") + R"(" is neither a file nor a comma-separated list of hex roots)");
}

TEST_F(cli_walk, failed_run_keeps_an_existing_output) {
  dir_.write("out.jsonl", "previous\n");
  dir_.write("bad.jsonl", "{]\n");
  const auto r = run_ptwalk(dir_, {"walk", path("bad.jsonl"), "--out", path("out.jsonl")});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(testing::read_text(dir_ / "out.jsonl"), "previous\n");
}

// A device that takes no bytes: the one-line error alone, no walk summary
// claiming records that never arrived.
TEST_F(cli_walk, full_device_gets_one_line_and_no_summary) {
  dir_.write("fleet.jsonl", raw_line("vm", R"("0x1000")"));
  const auto r = run_ptwalk(dir_, {"walk", path("fleet.jsonl"), "--out", "/dev/full"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "ptwalk: /dev/full: write failed: No space left on device\n");
  // stdout on that device: the same, named stdout, with its errno.
  const char* carried = std::getenv("PTWALK_BINARY");
  const auto piped = testing::shell(fmt::format("{{ {} walk {} >/dev/full; }}", carried && *carried ? carried : PTWALK_BINARY,
                                                path("fleet.jsonl")));
  EXPECT_EQ(piped.status, 1);
  EXPECT_EQ(piped.out, "ptwalk: stdout: write failed: No space left on device\n");
}

TEST_F(cli_walk, info_on_manifest_and_elf) {
  dir_.write("fleet.jsonl", R"({"id":"vm","format":"x86_64","memory":{"raw":"img.raw","base":"0x1000"},)"
                            R"("roots":["0x1000","0x7000"],"labels":["init","pti-user"]})" "\n");
  auto r = run_ptwalk(dir_, {"info", path("fleet.jsonl")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, path("fleet.jsonl") + ": 1 snapshots\n"
                   "snapshot vm: x86_64, 2 roots, 1 regions, 40 KiB backed\n"
                   "  region 0x1000..0xb000 (40 KiB) from " + path("img.raw") + "@0x0\n"
                   "  root 0x1000  init\n"
                   "  root 0x7000  pti-user\n");

  testing::elf_core_builder elf;
  elf.set_notes({{"CORE", NT_PRSTATUS, std::vector<std::byte>(336)}, {"VMCOREINFO", 0, std::vector<std::byte>(10)}});
  elf.add_load(0x0, std::vector<std::byte>(0xa0000), 0xa0000);
  elf.add_load(0x100000, std::vector<std::byte>(0x1000), 0x3000);
  dir_.write("vm.core", elf.build());
  r = run_ptwalk(dir_, {"info", path("vm.core")});
  ASSERT_EQ(r.status, 0) << r.err;
  // The CPU state read from the notes follows; cpu_state's tests check it.
  const std::string layout = path("vm.core") + ": ELF64 core, machine x86-64 (62), 2 PT_LOAD segments, 2 notes\n"
                             "  load 0x0..0xa0000 (640 KiB) at file offset 0x270\n"
                             "  load 0x100000..0x103000 (12 KiB) at file offset 0xa0270, last 8 KiB unbacked\n"
                             "  note CORE type 0x1 NT_PRSTATUS, 336 bytes\n"
                             "  note VMCOREINFO type 0x0 VMCOREINFO, 10 bytes\n";
  EXPECT_EQ(r.out.substr(0, layout.size()), layout);
}

}  // namespace
}  // namespace ptwalk
