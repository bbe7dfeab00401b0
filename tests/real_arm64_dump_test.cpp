// The real arm64 Linux guest (tests/real_guest/make-arm64-dumps.py) against
// truth that does not come from ptwalk: the vCPUs' TTBR0_EL1/TTBR1_EL1/TCR_EL1
// read over QEMU's gdbstub, QEMU's own stage-1 walk (HMP gva2gpa) for a
// sample of user and kernel VAs, and every process's /proc/PID/pagemap as
// the guest kernel saw it. Also: discovery finds every process (precision
// and recall), the kernel half has one owner, CoW pages after fork, backend
// agreement, the kdump file, and import → walk → compact --keep-pa --verify
// → verify through the CLI.
//
// Without the dump every test is skipped, saying how to make it; .ci/run makes it.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "discovery/root_discovery.hpp"
#include "input/manifest.hpp"
#include "support/real_guest.hpp"
#include "support/run_cli.hpp"
#include "support/scan_image.hpp"
#include "support/temp_dir.hpp"
#include "ptwalk/walk.hpp"
#include "walk/batch_walk.hpp"

namespace ptwalk {
namespace {

using Format = aarch64_4k_48;
using testing::read_file;
using testing::variant_files;

constexpr u64 upper_half_start = 0xffff'0000'0000'0000ull;
constexpr u64 page_size = 4096;

struct guest_vma {
  u64 lo = 0, hi = 0;
  std::string perms, name;
};

// One process as the guest kernel saw it: its VMAs and present pages (VA → raw pagemap entry).
struct guest_process {
  u32 pid = 0;
  std::string comm;
  std::vector<guest_vma> vmas;
  std::map<u64, u64> pages;

  [[nodiscard]] const guest_vma* vma_of(u64 va) const {
    for (const auto& v : vmas)
      if (va >= v.lo && va < v.hi) return &v;
    return nullptr;
  }
};

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
constexpr u64 pagemap_pfn_mask = (u64{1} << 55) - 1;
constexpr u64 pagemap_exclusive = u64{1} << 56;
constexpr u64 pagemap_file_or_shared = u64{1} << 61;

std::vector<guest_process> read_pagemap(const variant_files& v) {
  std::istringstream in(read_file(v.file("pagemap.txt")));
  std::vector<guest_process> out;
  std::size_t pages = 0;
  for (std::string kind; in >> kind;) {
    if (kind == "process") {
      out.emplace_back();
      in >> out.back().pid >> out.back().comm;
    } else if (kind == "vma") {
      guest_vma vma;
      std::string lo, hi;
      in >> lo >> hi >> vma.perms >> vma.name;
      vma.lo = std::stoull(lo, nullptr, 16);
      vma.hi = std::stoull(hi, nullptr, 16);
      out.back().vmas.push_back(vma);
    } else if (kind == "page") {
      std::string va, entry;
      in >> va >> entry;
      out.back().pages.emplace(std::stoull(va, nullptr, 16), std::stoull(entry, nullptr, 16));
      ++pages;
    } else if (kind == "end") {
      std::size_t processes = 0, total = 0;
      in >> processes >> total;
      EXPECT_EQ(processes, out.size());
      EXPECT_EQ(total, pages);
    } else {
      std::string rest;
      std::getline(in, rest);  // kva lines: the generator's sample
    }
  }
  return out;
}

u64 sysreg(const variant_files& v, unsigned cpu, std::string_view name) {
  const std::string text = read_file(v.file(fmt::format("sysregs-cpu{}.txt", cpu)));
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(fmt::format(R"(\b{}=0x([0-9a-f]+))", name))))
    throw std::runtime_error(fmt::format("no {} for vCPU {}", name, cpu));
  return std::stoull(m[1], nullptr, 16);
}

// A space's leaves by VA: what ptwalk says a VA translates to.
class leaf_index {
 public:
  explicit leaf_index(std::span<const space_aware_mapping> records) {
    for (const auto& r : records)
      if (r.is_leaf()) leaves_.push_back(r);
  }
  [[nodiscard]] const space_aware_mapping* find(u64 va) const {
    auto it = std::upper_bound(leaves_.begin(), leaves_.end(), va,
                               [](u64 v, const space_aware_mapping& r) { return v < r.va; });
    if (it == leaves_.begin()) return nullptr;
    --it;
    return va - it->va < it->size() ? &*it : nullptr;
  }
  [[nodiscard]] std::optional<u64> translate(u64 va) const {
    const auto* leaf = find(va);
    if (leaf == nullptr) return std::nullopt;
    return leaf->pa + (va - leaf->va);
  }
  // 4 KiB pages of the lower half, blocks counted by their pages.
  [[nodiscard]] u64 lower_half_pages() const {
    u64 pages = 0;
    for (const auto& r : leaves_)
      if (r.va < upper_half_start) pages += r.size() / page_size;
    return pages;
  }

 private:
  std::vector<space_aware_mapping> leaves_;
};

class RealArm64Dump : public ::testing::Test {
 protected:
  void SetUp() override {
    v_ = {testing::real_guest_arm64_dir() / "default", "default"};
    if (!std::filesystem::exists(v_.elf()))
      GTEST_SKIP() << "no real arm64 guest dump at " << v_.elf()
                   << ": run tests/real_guest/make-arm64-dumps.py (or set PTWALK_REAL_GUEST_ARM64_DIR)";
  }

  // The dump with every discovered root and the VMCOREINFO TTBR1 for each.
  [[nodiscard]] std::pair<opened_dump, root_discovery_result> discovered(
      scan_backend backend = scan_backend::cpu) const {
    auto dump = open_dump(v_.elf(), 0, std::nullopt);
    auto found = discover_dump_roots(dump, {}, false, 0, backend);
    for (const auto& r : found.roots) dump.snapshot.spec.roots.push_back(r.root);
    dump.snapshot.spec.upper_roots.assign(found.roots.size(), *dump.ttbr1);
    return {std::move(dump), std::move(found)};
  }

  variant_files v_;
};

TEST_F(RealArm64Dump, VmcoreinfoGivesTheFormatAndTheTtbr1TheVcpusHold) {
  const auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto description = v_.description();
  EXPECT_EQ(format_name(dump.snapshot.format()), description["format"].get<std::string>());
  ASSERT_TRUE(dump.ttbr1.has_value()) << "the guest loads qemu_fw_cfg, so VMCOREINFO is there";
  ASSERT_EQ(dump.machine.vcpus.size(), description["vcpus"].get<std::size_t>());
  for (const auto& cpu : dump.machine.vcpus) {
    EXPECT_TRUE(cpu.pid.has_value()) << "NT_PRSTATUS of vCPU " << cpu.index;
    // The gdbstub's view of the same paused vCPU.
    EXPECT_EQ(root_table_address<Format>(sysreg(v_, cpu.index, "TTBR1_EL1")), *dump.ttbr1) << "vCPU " << cpu.index;
    const u64 tcr = sysreg(v_, cpu.index, "TCR_EL1");
    EXPECT_EQ(tcr & 0x3f, 64u - Format::va_bits) << "T0SZ";
    EXPECT_EQ((tcr >> 16) & 0x3f, 64u - Format::va_bits) << "T1SZ";
    EXPECT_EQ((tcr >> 14) & 3, 0u) << "TG0: 4 KiB";
    EXPECT_EQ((tcr >> 30) & 3, 2u) << "TG1: 4 KiB";
  }
}

// QEMU's own walk of each vCPU's TTBR0 and TTBR1 (gva2gpa, at EL1 without
// PAN so user and kernel pages are both readable) against ptwalk's walk of
// the same two tables, VA by VA, mapped and unmapped.
TEST_F(RealArm64Dump, EveryVcpuWalkEqualsQemuGva2gpa) {
  auto dump = open_dump(v_.elf(), 0, std::nullopt);
  std::size_t user_mapped_on_any = 0;
  for (unsigned cpu = 0; cpu < dump.machine.vcpus.size(); ++cpu) {
    SCOPED_TRACE(fmt::format("vCPU {}", cpu));
    dump.snapshot.spec.roots = {sysreg(v_, cpu, "TTBR0_EL1")};
    dump.snapshot.spec.upper_roots = {sysreg(v_, cpu, "TTBR1_EL1")};
    const auto walk = reference_walk(dump.snapshot);
    for (const auto& r : walk.records_of(0)) ASSERT_TRUE(r.is_leaf()) << "one space aliases nothing here";
    const leaf_index ours(walk.records_of(0));
    std::istringstream in(read_file(v_.file(fmt::format("gva2gpa-cpu{}.txt", cpu))));
    std::size_t user_mapped = 0, kernel_mapped = 0, unmapped = 0, differences = 0;
    for (std::string va_text, pa_text; in >> va_text >> pa_text;) {
      const u64 va = std::stoull(va_text, nullptr, 16);
      std::optional<u64> qemu;
      if (pa_text != "-") qemu = std::stoull(pa_text, nullptr, 16);
      const auto ptwalk = ours.translate(va);
      if (ptwalk != qemu && ++differences <= 10)
        ADD_FAILURE() << hex(va) << ": ptwalk " << (ptwalk ? hex(*ptwalk) : "unmapped") << ", gva2gpa " << pa_text;
      (qemu ? (va >= upper_half_start ? kernel_mapped : user_mapped) : unmapped) += 1;
    }
    EXPECT_EQ(differences, 0u);
    // The sample reaches the kernel half of every vCPU, and misses too.
    EXPECT_GE(kernel_mapped, 100u);
    EXPECT_GE(unmapped, 100u);
    user_mapped_on_any += user_mapped;
    RecordProperty(fmt::format("cpu{}_sampled", cpu), static_cast<int>(user_mapped + kernel_mapped + unmapped));
  }
  // And the user half of the processes the vCPUs hold (spinners, as a rule).
  EXPECT_GE(user_mapped_on_any, 20u);
}

// Every process the guest listed is exactly one discovered root, whose walk
// maps exactly the pages its pagemap says are present, to the same frames.
TEST_F(RealArm64Dump, DiscoveryFindsEveryProcessAndItsWalkEqualsItsPagemap) {
  const auto processes = read_pagemap(v_);
  ASSERT_GE(processes.size(), 300u) << "300 sleepers, THP holders, a CoW family, spinners, init";
  const auto [dump, found] = discovered();
  const auto walk = reference_walk(dump.snapshot);
  std::vector<leaf_index> spaces;
  for (std::size_t s = 0; s < walk.space_count(); ++s) spaces.emplace_back(walk.records_of(s));

  std::set<std::size_t> matched;
  for (const auto& p : processes) {
    SCOPED_TRACE(fmt::format("pid {} ({})", p.pid, p.comm));
    ASSERT_FALSE(p.pages.empty());
    const auto& [first_va, first_entry] = *p.pages.begin();
    std::vector<std::size_t> candidates;
    for (std::size_t s = 0; s < spaces.size(); ++s)
      if (spaces[s].translate(first_va) == (first_entry & pagemap_pfn_mask) * page_size) candidates.push_back(s);
    // Processes forked without exec share frames until written; the one
    // whose walk has every page is the process.
    std::size_t owner = spaces.size();
    for (const std::size_t s : candidates) {
      const bool all = std::all_of(p.pages.begin(), p.pages.end(), [&](const auto& page) {
        return spaces[s].translate(page.first) == (page.second & pagemap_pfn_mask) * page_size;
      });
      if (all && spaces[s].lower_half_pages() == p.pages.size()) {
        ASSERT_EQ(owner, spaces.size()) << "two roots walk exactly this process's pages";
        owner = s;
      }
    }
    ASSERT_LT(owner, spaces.size()) << "no discovered root maps exactly the " << p.pages.size()
                                    << " pages its pagemap lists";
    EXPECT_TRUE(matched.insert(owner).second) << "root " << hex(walk.roots[owner]) << " is two processes";
  }
  // Precision: the roots that are no listed process. The pagemap writer
  // (a guest_helper) lists everyone but itself.
  std::vector<std::string> extras;
  for (std::size_t s = 0; s < walk.space_count(); ++s)
    if (matched.count(s) == 0) extras.push_back(fmt::format("{} {}", hex(walk.roots[s]), found.roots[s].label));
  EXPECT_LE(extras.size(), 1u) << fmt::format("{}", fmt::join(extras, ", "));
  const double recall = static_cast<double>(matched.size()) / static_cast<double>(processes.size());
  const double precision = static_cast<double>(matched.size() + std::min<std::size_t>(extras.size(), 1)) /
                           static_cast<double>(found.roots.size());
  std::cout << fmt::format("[   INFO   ] arm64 discovery: {} processes, {} roots, recall {:.3f}, precision {:.3f} "
                           "(counting the pagemap writer)\n",
                           processes.size(), found.roots.size(), recall, precision);
  RecordProperty("processes", static_cast<int>(processes.size()));
  RecordProperty("roots", static_cast<int>(found.roots.size()));
}

// As for a raw dump (no VMCOREINFO, so no TTBR1; only the format given):
// the kernel's table is then one more hit, kernel-only, and skipped.
TEST_F(RealArm64Dump, DiscoveryWithoutVmcoreinfoFindsTheSameRoots) {
  const auto [dump, found] = discovered();
  root_discovery_options blind;
  blind.format = paging_format::aarch64_4k_48;
  blind.backend = scan_backend::cpu;
  const auto without = discover_roots(dump.snapshot.image, blind, "raw");
  EXPECT_EQ(without.roots, found.roots);
  EXPECT_EQ(without.kernel_only_skipped, found.kernel_only_skipped + 1) << "swapper_pg_dir";
}

// After fork, Linux write-protects private writable pages in both processes
// and marks the dirty ones with PTE_DIRTY (software bit 55), nG set: the
// SPEC's CoW marker. The pagemap tells which frames several processes map.
TEST_F(RealArm64Dump, PagesSharedAfterForkAreReadOnlyAndDirtyOnesAreCow) {
  const auto processes = read_pagemap(v_);
  const auto [dump, found] = discovered();
  const auto walk = reference_walk(dump.snapshot);
  std::map<u64, unsigned> mappers;  // pfn → private anonymous mappings of it
  for (const auto& p : processes)
    for (const auto& [va, entry] : p.pages)
      if ((entry & pagemap_file_or_shared) == 0) ++mappers[entry & pagemap_pfn_mask];
  std::size_t shared = 0, cow = 0;
  for (std::size_t s = 0; s < walk.space_count(); ++s)
    for (const auto& r : walk.records_of(s)) {
      if (!r.is_leaf() || r.va >= upper_half_start || r.size() != page_size) continue;
      if ((r.perms & perm_cow) != 0) ++cow;
      const auto it = mappers.find(r.pa / page_size);
      if (it == mappers.end() || it->second < 2) continue;
      ++shared;
      EXPECT_EQ(r.perms & perm_writable, 0) << hex(r.va) << " of " << hex(walk.roots[s]) << " is shared by "
                                            << it->second << " processes and writable";
    }
  EXPECT_GE(shared, 64u * 8) << "the CoW family shares 64 pages among 9 processes";
  EXPECT_GE(cow, 64u * 8) << "their pages were written before fork";
  RecordProperty("shared_private_pages", static_cast<int>(shared));
  RecordProperty("cow_leaves", static_cast<int>(cow));
}

TEST_F(RealArm64Dump, KernelHalfHasOneOwnerAndEveryOtherSpaceOneDepthZeroAlias) {
  const auto [dump, found] = discovered();
  const auto walk = reference_walk(dump.snapshot);
  ASSERT_GE(walk.space_count(), 300u);
  std::size_t kernel_leaves = 0;
  for (const auto& r : walk.records_of(0)) {
    EXPECT_FALSE(!r.is_leaf() && r.va >= upper_half_start) << "the first space owns the kernel half";
    kernel_leaves += r.is_leaf() && r.va >= upper_half_start;
  }
  EXPECT_GT(kernel_leaves, 1000u);
  for (std::size_t s = 1; s < walk.space_count(); ++s) {
    std::vector<space_aware_mapping> upper;
    for (const auto& r : walk.records_of(s))
      if (r.va >= upper_half_start) upper.push_back(r);
    ASSERT_EQ(upper.size(), 1u) << hex(walk.roots[s]);
    EXPECT_FALSE(upper[0].is_leaf());
    EXPECT_EQ(upper[0].depth, 0u);
    EXPECT_EQ(upper[0].owner, 0u);
    EXPECT_EQ(upper[0].va, upper_half_start);
    EXPECT_EQ(upper[0].pa, upper_half_start);
  }
  EXPECT_EQ(walk.stats.aliases[0], walk.space_count() - 1);
}

// The GPU scan's algorithm (its Thrust-OMP build; the GPU too where one is
// visible) selects exactly the cpu scan's roots; each says its pages/s.
TEST_F(RealArm64Dump, EveryScanBackendFindsTheSameRoots) {
  const auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto expected = discover_dump_roots(dump, {}, true, 0, scan_backend::cpu);
  std::cout << "[   INFO   ] " << format_discovery_summary(expected, "arm64");
  std::vector<scan_backend> others{scan_backend::thrust_cpu};
  if (gpu_visible()) others.push_back(scan_backend::cuda);
  for (const scan_backend backend : others) {
    SCOPED_TRACE(scan_backend_name(backend));
    const auto actual = discover_dump_roots(dump, {}, true, 0, backend);
    testing::expect_same_discovery(expected, actual);
    std::cout << "[   INFO   ] " << format_discovery_summary(actual, "arm64");
  }
}

TEST_F(RealArm64Dump, EveryBackendWalksEveryRootIdentically) {
  const auto [dump, found] = discovered();
  const std::span<const loaded_snapshot> fleet(&dump.snapshot, 1);
  const auto reference = walk_snapshots(fleet, walk_backend::reference);
  for (const walk_backend backend : {walk_backend::cpu, walk_backend::thrust_cpu, walk_backend::cuda}) {
    std::vector<snapshot_walk> walked;
    try {
      walked = walk_snapshots(fleet, backend);
    } catch (const std::exception& e) {
      std::cout << "[   INFO   ] " << backend_name(backend) << " backend not checked: " << e.what() << "\n";
      continue;
    }
    EXPECT_EQ(walked, reference) << backend_name(backend);
  }
}

TEST_F(RealArm64Dump, KdumpFileGivesTheSameFormatTtbr1AndRoots) {
  const auto kdump = v_.file("default.kdump-zlib");
  if (!std::filesystem::exists(kdump)) GTEST_SKIP() << "this QEMU wrote no kdump-zlib file";
  const auto elf = open_dump(v_.elf(), 0, std::nullopt);
  const auto compressed = open_dump(kdump, 0, std::nullopt);
  EXPECT_EQ(compressed.snapshot.format(), elf.snapshot.format());
  EXPECT_EQ(compressed.ttbr1, elf.ttbr1);
  EXPECT_EQ(discover_dump_roots(compressed, {}, false, 0, scan_backend::cpu).roots,
            discover_dump_roots(elf, {}, false, 0, scan_backend::cpu).roots);
}

// `ptwalk import` writes the format, the VMCOREINFO TTBR1 for every root and
// the discovered roots; `walk` of that manifest equals the reference walk.
TEST_F(RealArm64Dump, ImportThenWalkThroughTheCli) {
  const testing::temp_dir dir;
  const auto manifest = (dir / "fleet.jsonl").string();
  const auto imported = testing::run_ptwalk(dir, {"import", v_.elf().string(), "--out", manifest});
  ASSERT_EQ(imported.status, 0) << imported.err;
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(specs.size(), 1u);
  const auto [dump, found] = discovered();
  EXPECT_EQ(specs[0].format, paging_format::aarch64_4k_48);
  EXPECT_EQ(specs[0].roots, dump.snapshot.spec.roots);
  EXPECT_EQ(specs[0].upper_roots, dump.snapshot.spec.upper_roots);
  EXPECT_EQ(specs[0].meta["ttbr1_from"], "VMCOREINFO swapper_pg_dir - kimage_voffset");

  const auto walked = testing::run_ptwalk(dir, {"walk", manifest, "--backend", "reference"});
  ASSERT_EQ(walked.status, 0) << walked.err;
  const auto reference = reference_walk(dump.snapshot);
  EXPECT_EQ(static_cast<std::size_t>(std::count(walked.out.begin(), walked.out.end(), '\n')),
            reference.records.size());
}

TEST_F(RealArm64Dump, ImportCompactKeepPaVerifyThroughTheCli) {
  const testing::temp_dir dir;
  const auto manifest = (dir / "fleet.jsonl").string();
  ASSERT_EQ(testing::run_ptwalk(dir, {"import", v_.elf().string(), "--out", manifest}).status, 0);
  const auto compacted = testing::run_ptwalk(
      dir, {"compact", manifest, "--keep-pa", "--verify", "--out", (dir / "compacted").string()});
  if (compacted.err.find("is not supported here yet") != std::string::npos)
    GTEST_SKIP() << "AArch64 compaction is not in this build yet: " << compacted.err;
  ASSERT_EQ(compacted.status, 0) << compacted.err;
  const auto verified =
      testing::run_ptwalk(dir, {"verify", manifest, (dir / "compacted" / "manifest.jsonl").string()});
  EXPECT_EQ(verified.status, 0) << verified.out << verified.err;
}

}  // namespace
}  // namespace ptwalk
