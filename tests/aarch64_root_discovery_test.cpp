// AArch64 root discovery on a built image: Linux-like processes (TTBR0
// tables with user pages at both ends of the lower half), one shared TTBR1
// table, and what must not be taken for a process: the processes' own
// level-1 tables (shaped like top tables), an idmap-like table that maps
// only kernel memory, tables with an implausible subtree, a table entry
// with ignored bits set or pointing outside the image. Every scan backend
// must pick the same roots. The real guest is tests/real_arm64_dump_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>

#include "discovery/root_discovery.hpp"
#include "walk/batch_walk.hpp"
#include "support/elf_builder.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"
#include "support/scan_image.hpp"

namespace ptwalk {
namespace {

using Format = aarch64_4k_48;

constexpr u64 ram = 0x4000'0000;
constexpr u64 page = 4096;
// Linux's attribute bits: AF, inner shareable, normal memory; nG on user pages.
constexpr u64 af_sh = (u64{1} << 10) | (u64{3} << 8) | (u64{1} << 2);
constexpr u64 user_page = af_sh | Format::bit_ap_el0 | Format::bit_not_global | Format::bit_pxn;
constexpr u64 kernel_block = af_sh | Format::bit_uxn;

class arm64_image {
 public:
  explicit arm64_image(u64 pages) : bytes_(image_.add_zeroed_region(ram, pages * page)) {}

  u64 claim() { return ram + page * next_++; }
  void set(u64 table, unsigned index, u64 entry) { std::memcpy(&bytes_[table - ram + 8 * index], &entry, 8); }
  // A table descriptor as Linux writes a user one (PXNTable) or a kernel one (UXNTable).
  static u64 table(u64 pa, bool user) { return Format::make_table_entry(pa, user ? Format::bit_pxn_table : Format::bit_uxn_table); }

  // pgd → pud → pmd → pte → one user page at index `index` of the top table.
  u64 user_path(u64 top, unsigned index) {
    u64 parent = top;
    unsigned at = index;
    for (unsigned depth = 1; depth < Format::levels; ++depth) {
      const u64 child = claim();
      set(parent, at, table(child, true));
      parent = child;
      at = 3;
    }
    set(parent, at, Format::make_leaf_entry(claim(), Format::levels - 1, user_page));
    return top;
  }
  u64 process() {
    const u64 top = claim();
    user_path(top, 0);    // text and heap
    user_path(top, 511);  // the stack near 2^48
    return top;
  }
  // top → pud → pmd with one 2 MiB kernel block.
  u64 kernel_table(unsigned index) {
    const u64 top = claim(), pud = claim(), pmd = claim();
    set(top, index, table(pud, false));
    set(pud, 0, table(pmd, false));
    set(pmd, 0, Format::make_leaf_entry(ram, 2, kernel_block));
    return top;
  }
  [[nodiscard]] const memory_image& image() const { return image_; }

 private:
  memory_image image_;
  std::span<std::byte> bytes_;
  u64 next_ = 0;
};

std::vector<u64> roots_of(const root_discovery_result& r) {
  std::vector<u64> out;
  for (const auto& root : r.roots) out.push_back(root.root);
  return out;
}

struct built {
  arm64_image image{1024};
  u64 ttbr1 = 0, idmap = 0;
  std::vector<u64> processes;
};

built linux_like() {
  built b;
  b.ttbr1 = b.image.kernel_table(256);
  for (int i = 0; i < 20; ++i) b.processes.push_back(b.image.process());
  b.idmap = b.image.kernel_table(0);
  // Implausible below: a level-1 table with a non-zero invalid entry (only
  // the last level holds swap entries).
  const u64 broken = b.image.process();
  const u64 broken_pud = Format::table_address(load_entry(
      b.image.image().bytes_at(broken, page), 0));
  b.image.set(broken_pud, 7, 0x1234'5000);
  // Rejected by the page test: ignored bits set, or a table outside the image.
  b.image.set(b.image.process(), 5, arm64_image::table(b.image.claim(), true) | (u64{1} << 10));
  b.image.set(b.image.process(), 6, arm64_image::table(ram + 0x1000'0000, true));
  return b;
}

root_discovery_options options_for(const built& b, scan_backend backend) {
  root_discovery_options o;
  o.format = paging_format::aarch64_4k_48;
  o.ttbr1 = b.ttbr1 | (u64{0x42} << 48) | 1;  // ASID and CnP are not part of the table address
  o.backend = backend;
  return o;
}

TEST(Aarch64RootDiscovery, FindsEveryProcessAndNothingElse) {
  const built b = linux_like();
  const auto found = discover_roots(b.image.image(), options_for(b, scan_backend::cpu), "arm64");
  EXPECT_EQ(roots_of(found), b.processes);
  for (const auto& r : found.roots) EXPECT_EQ(r.label, "process");
  EXPECT_EQ(found.kernel_only_skipped, 1u) << "the idmap-like table";
  EXPECT_EQ(found.pages_scanned, 1024u);
}

TEST(Aarch64RootDiscovery, KernelOnlyTablesAreKeptWhenAsked) {
  const built b = linux_like();
  auto options = options_for(b, scan_backend::cpu);
  options.keep_kernel_only = true;
  const auto found = discover_roots(b.image.image(), options, "arm64");
  auto expected = b.processes;
  expected.push_back(b.idmap);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(roots_of(found), expected);
  EXPECT_EQ(found.roots.back().label, "kernel-only");
}

TEST(Aarch64RootDiscovery, WithoutTtbr1TheKernelTableIsKernelOnly) {
  const built b = linux_like();
  auto options = options_for(b, scan_backend::cpu);
  options.ttbr1.reset();
  options.keep_kernel_only = true;
  const auto found = discover_roots(b.image.image(), options, "arm64");
  EXPECT_EQ(found.roots.front().root, b.ttbr1);
  EXPECT_EQ(found.roots.front().label, "kernel-only");
}

TEST(Aarch64RootDiscovery, HintsComeFirstOnce) {
  const built b = linux_like();
  auto options = options_for(b, scan_backend::cpu);
  options.known = {{b.processes[7] | 1, "hint", "--hint"}};
  const auto found = discover_roots(b.image.image(), options, "arm64");
  ASSERT_EQ(found.roots.size(), b.processes.size());
  EXPECT_EQ(found.roots[0].root, b.processes[7]);
  EXPECT_EQ(found.roots[0].label, "hint");
}

TEST(Aarch64RootDiscovery, EveryScanBackendFindsTheSameRoots) {
  const built b = linux_like();
  const auto expected = discover_roots(b.image.image(), options_for(b, scan_backend::cpu), "arm64");
  std::vector<scan_backend> others{scan_backend::thrust_cpu};
  if (gpu_visible()) others.push_back(scan_backend::cuda);
  for (const scan_backend backend : others) {
    SCOPED_TRACE(scan_backend_name(backend));
    auto options = options_for(b, backend);
    options.chunk_pages = 100;  // chunk boundaries fall between tables and their children
    testing::expect_same_discovery(expected, discover_roots(b.image.image(), options, "arm64"));
  }
}

// Every page a table whose 512 entries all point at the next page: every
// page is a hit and every path is long, yet each table is checked once
// (the work is bounded by the tables, not the paths). Only the first page,
// which no other points at, can be a root; and it is a valid tree by the
// architecture's rules: its level-3 "tables" are EL0-executable pages.
TEST(Aarch64RootDiscovery, HostileChainOfTablesIsBoundedAndYieldsNothing) {
  arm64_image b(2048);
  u64 previous = b.claim();
  for (int i = 1; i < 2048; ++i) {
    const u64 next = b.claim();
    for (unsigned e = 0; e < 512; ++e) b.set(previous, e, arm64_image::table(next, true));
    previous = next;
  }
  root_discovery_options options;
  options.format = paging_format::aarch64_4k_48;
  options.backend = scan_backend::cpu;
  options.keep_kernel_only = true;
  const auto found = discover_roots(b.image(), options, "chain");
  ASSERT_EQ(found.roots.size(), 1u);
  EXPECT_EQ(found.roots[0].root, ram);
  EXPECT_EQ(found.references.back(),
            "2047 pages shaped like upper-level tables: 2046 pointed at by another, 0 implausible below, 1 TTBR0 "
            "tables (0 reach no user leaf)");
}

TEST(Aarch64RootDiscovery, BadInputsAreOneLineErrors) {
  const built b = linux_like();
  auto options = options_for(b, scan_backend::cpu);
  options.ttbr1 = 0x1000;
  EXPECT_EQ(testing::error_of([&] { (void)discover_roots(b.image.image(), options, "arm64"); }),
            "arm64: TTBR1 table 0x1000 is outside the image");
  options = options_for(b, scan_backend::cpu);
  options.format = paging_format::aarch64_16k_47;
  EXPECT_EQ(testing::error_of([&] { (void)discover_roots(b.image.image(), options, "arm64"); }),
            "arm64: root discovery scans 4 KiB top tables; aarch64-16k-47 is not supported (give the roots in a "
            "manifest)");
}

// open_dump: a raw arm64 dump needs --format; --ttbr1 then names the
// kernel's table; on an x86 format --ttbr1 is an error naming the file.
TEST(Aarch64RootDiscovery, OpenDumpTakesTtbr1OnlyForAarch64) {
  const testing::temp_dir dir;
  const auto raw = dir.write("arm64.raw", std::vector<std::byte>(4 * page));
  const auto dump = open_dump(raw, ram, paging_format::aarch64_4k_48, 0x5000'4000'1000'0001ull);
  EXPECT_EQ(dump.ttbr1, 0x5000'4000'1000'0001ull);
  EXPECT_EQ(dump.ttbr1_origin, "--ttbr1");
  EXPECT_EQ(testing::error_of([&] { (void)open_dump(raw, 0, paging_format::x86_64, 0x1000); }),
            raw.string() + ": --ttbr1 is for aarch64 formats, not x86_64");
}

}  // namespace
}  // namespace ptwalk
