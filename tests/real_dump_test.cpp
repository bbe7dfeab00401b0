// Real Linux guest dumps (tests/real_guest/make-dumps.py): ptwalk against
// QEMU's own page walk ("info tlb"), root discovery against the processes
// the guest listed, kernel-half sharing, backend agreement, and the
// import → compact --keep-pa → verify pipeline through the CLI.
//
// The dumps are found as tests/support/real_guest.hpp says; without them
// every test here is skipped, saying how to make them. .ci/run makes them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "walk/batch_walk.hpp"
#include "input/manifest.hpp"
#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"
#include "discovery/root_discovery.hpp"
#include "support/real_guest.hpp"
#include "support/scan_image.hpp"
#include "support/temp_dir.hpp"
#include "input/table_views.hpp"

namespace ptwalk {
namespace {

using testing::read_file;
using testing::variant_files;

// A process the guest listed: a page of its stack and the frame behind it.
struct guest_process {
  u32 pid = 0;
  u64 stack_va = 0;
  u64 pa = 0;
};

std::vector<guest_process> listed_processes(const variant_files& v, std::size_t& count_line) {
  const std::string console = read_file(v.file("console.log"));
  std::vector<guest_process> out;
  const std::regex line(R"(PTWALK-PROC pid=(\d+) stack_va=0x([0-9a-f]+) pfn=0x([0-9a-f]+))");
  for (std::sregex_iterator it(console.begin(), console.end(), line), end; it != end; ++it)
    out.push_back({static_cast<u32>(std::stoul((*it)[1])), std::stoull((*it)[2], nullptr, 16),
                   std::stoull((*it)[3], nullptr, 16) << 12});
  std::smatch count;
  count_line = std::regex_search(console, count, std::regex(R"(PTWALK-PROCS count=(\d+))"))
                   ? std::stoul(count[1])
                   : 0;
  return out;
}

// A leaf as QEMU's "info tlb" prints it: VA: PA XGPDACTUW.
struct tlb_line {
  u64 va = 0;
  u64 pa = 0;
  std::string flags;
  friend bool operator==(const tlb_line&, const tlb_line&) = default;
};

std::vector<tlb_line> parse_info_tlb(const std::filesystem::path& path) {
  std::vector<tlb_line> out;
  std::istringstream in(read_file(path));
  for (std::string va, pa, flags; in >> va >> pa >> flags;) {
    va.pop_back();  // the colon
    out.push_back({std::stoull(va, nullptr, 16), std::stoull(pa, nullptr, 16), flags});
  }
  return out;
}

// The same letters from a leaf's raw entry bits. QEMU prints a 4 KiB PTE
// with bit 7 (PAT there, PS above) cleared.
std::string tlb_flags(u64 flags, unsigned size_log2) {
  if (size_log2 == 12) flags &= ~u64{1 << 7};
  std::string out;
  const std::pair<u64, char> letters[] = {{u64{1} << 63, 'X'}, {1 << 8, 'G'}, {1 << 7, 'P'},
                                          {1 << 6, 'D'},       {1 << 5, 'A'}, {1 << 4, 'C'},
                                          {1 << 3, 'T'},       {1 << 2, 'U'}, {1 << 1, 'W'}};
  for (const auto& [bit, letter] : letters) out += (flags & bit) != 0 ? letter : '-';
  return out;
}

// Every leaf one root maps, its own and those under tables it reaches twice
// (an alias to its own earlier VA is replayed at the later VA).
template <class Format>
std::vector<tlb_line> expanded_leaves(const snapshot_walk& walk) {
  std::vector<tlb_line> out;
  std::vector<unsigned> sizes;
  for (const auto& r : walk.records_of(0)) {
    if (r.is_leaf()) {
      out.push_back({r.va, r.pa, tlb_flags(r.flags, r.size_log2)});
      continue;
    }
    EXPECT_EQ(r.owner, 0u) << "a one-root walk can only alias itself";
    const u64 span = Format::entry_span(r.depth - 1u);
    const std::size_t end = out.size();
    for (std::size_t i = 0; i < end; ++i)
      if (out[i].va >= r.pa && out[i].va - r.pa < span) {
        tlb_line copy = out[i];
        copy.va = r.va + (out[i].va - r.pa);
        out.push_back(copy);
      }
  }
  return out;
}

u64 register_value(const std::string& text, std::string_view name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(fmt::format(R"({}=([0-9a-f]+))", name)))) return ~u64{0};
  return std::stoull(m[1], nullptr, 16);
}

int run(const std::string& command) { return std::system(command.c_str()); }

class RealDump : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    v_ = {testing::real_guest_dir() / GetParam(), GetParam()};
    if (!std::filesystem::exists(v_.elf()))
      GTEST_SKIP() << "no real guest dump at " << v_.elf()
                   << ": run tests/real_guest/make-dumps.py (or set PTWALK_REAL_GUEST_DIR)";
  }
  variant_files v_;
};

TEST_P(RealDump, CpuNotesMatchQemuInfoRegisters) {
  const auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto description = v_.description();
  ASSERT_EQ(dump.machine.vcpus.size(), description["vcpus"].get<std::size_t>());
  for (const auto& cpu : dump.machine.vcpus) {
    const std::string registers = read_file(v_.file(fmt::format("registers-cpu{}.txt", cpu.index)));
    EXPECT_EQ(cpu.cr3, register_value(registers, "CR3")) << "vCPU " << cpu.index;
    EXPECT_EQ(cpu.cr4, register_value(registers, "CR4")) << "vCPU " << cpu.index;
    EXPECT_EQ(cpu.cr0, register_value(registers, "CR0")) << "vCPU " << cpu.index;
  }
  EXPECT_EQ(format_name(dump.snapshot.format()), description["format"].get<std::string>());
  ASSERT_TRUE(dump.machine.info.has_value()) << "the guest loads qemu_fw_cfg, so VMCOREINFO is there";
  EXPECT_EQ(dump.machine.info->format(), dump.snapshot.format());
}

TEST_P(RealDump, EveryVcpuWalkEqualsQemuInfoTlb) {
  auto dump = open_dump(v_.elf(), 0, std::nullopt);
  for (const auto& cpu : dump.machine.vcpus) {
    dump.snapshot.spec.roots = {cpu.cr3};
    const auto walk = reference_walk(dump.snapshot);
    const auto ours = visit_format(dump.snapshot.format(), [&]<class F>() { return expanded_leaves<F>(walk); });
    const auto qemu = parse_info_tlb(v_.file(fmt::format("tlb-cpu{}.txt", cpu.index)));
    ASSERT_GT(qemu.size(), 1000u) << "vCPU " << cpu.index;
    EXPECT_EQ(ours.size(), qemu.size()) << "vCPU " << cpu.index;
    std::size_t differences = 0;
    for (std::size_t i = 0; i < std::min(ours.size(), qemu.size()) && differences < 10; ++i)
      if (!(ours[i] == qemu[i])) {
        ADD_FAILURE() << "vCPU " << cpu.index << " leaf " << i << ": ptwalk " << hex(ours[i].va) << " "
                      << hex(ours[i].pa) << " " << ours[i].flags << ", info tlb " << hex(qemu[i].va) << " "
                      << hex(qemu[i].pa) << " " << qemu[i].flags;
        ++differences;
      }
  }
}

// Which discovered roots map a process's stack page to the frame the guest saw.
std::vector<u64> roots_mapping(const opened_dump& dump, const std::vector<discovered_root>& roots,
                               const guest_process& p) {
  std::vector<u64> out;
  for (const auto& root : roots) {
    const image_table_view view(dump.snapshot.image, root.root);
    const auto m = visit_format(dump.snapshot.format(),
                                [&]<class F>() { return virt_to_phys<F>(view, p.stack_va); });
    if (m && m->pa + (p.stack_va - m->va) == p.pa) out.push_back(root.root);
  }
  return out;
}

TEST_P(RealDump, RootDiscoveryFindsEveryProcessTheGuestListed) {
  auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto found = discover_dump_roots(dump, {}, false, 0);
  std::size_t count = 0;
  const auto processes = listed_processes(v_, count);
  ASSERT_EQ(processes.size(), count);
  ASSERT_GE(count, 300u) << "the guest starts 300 sleepers, 6 huge-page holders and init";
  const bool pti = GetParam() == "pti";

  // vCPU roots come first, in vCPU order.
  const auto known = dump.machine.known_roots();
  for (std::size_t i = 0; i < known.size(); ++i) {
    ASSERT_LT(i, found.roots.size());
    EXPECT_EQ(found.roots[i].root, root_table_address<x86_64_4level>(known[i].root));
    EXPECT_EQ(found.roots[i].label.substr(0, known[i].label.size()), known[i].label);
  }

  // Every process is one space: one root maps its stack page (under PTI,
  // its pair: the kernel table and the user table 4 KiB above).
  std::set<u64> process_roots;
  for (const auto& p : processes) {
    const auto roots = roots_mapping(dump, found.roots, p);
    if (pti) {
      ASSERT_EQ(roots.size(), 2u) << "pid " << p.pid;
      EXPECT_EQ(roots[0] + 4096, roots[1]) << "pid " << p.pid;
    } else {
      ASSERT_EQ(roots.size(), 1u) << "pid " << p.pid;
    }
    for (const u64 r : roots) EXPECT_TRUE(process_roots.insert(r).second) << "pid " << p.pid << " shares " << hex(r);
  }

  // Every other root maps nothing user-accessible: the kernel's own tables,
  // init_top_pgt, text_poke's poking_mm (each a pair under PTI) and the
  // real-mode trampoline's table.
  for (const auto& r : found.roots) dump.snapshot.spec.roots.push_back(r.root);
  const auto walk = reference_walk(dump.snapshot);
  std::vector<std::string> extras;
  for (std::size_t s = 0; s < walk.space_count(); ++s) {
    if (process_roots.count(walk.roots[s]) != 0) continue;
    extras.push_back(fmt::format("{} {}", hex(walk.roots[s]), found.roots[s].label));
    for (const auto& r : walk.records_of(s))
      EXPECT_FALSE(r.is_leaf() && (r.perms & perm_user) != 0)
          << found.roots[s].label << " " << hex(walk.roots[s]) << " maps user page " << hex(r.va);
  }
  EXPECT_LE(extras.size(), pti ? 5u : 3u) << fmt::format("{}", fmt::join(extras, ", "));
  RecordProperty("processes", static_cast<int>(count));
  RecordProperty("roots", static_cast<int>(found.roots.size()));
}

TEST_P(RealDump, CensusWithoutCpuStateFindsTheSameSpaces) {
  const auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto with_state = discover_dump_roots(dump, {}, false, 0);
  root_discovery_options blind;  // as for a raw dump: no vCPU, no VMCOREINFO, no hint
  blind.format = dump.snapshot.format();
  const auto census = discover_roots(dump.snapshot.image, blind, "census");
  std::set<u64> expected, found;
  for (const auto& r : with_state.roots)
    if (!r.user_half_empty) expected.insert(r.root);
  for (const auto& r : census.roots) found.insert(r.root);
  EXPECT_EQ(found, expected);
  EXPECT_EQ(census.references.size(), with_state.references.size()) << "the PTI user half is found too";
}

// The GPU scan's algorithm (its Thrust-OMP build; the GPU too where one is
// visible) selects exactly the OpenMP scan's candidates, with the known
// roots (every candidate kept) and in the census; each says its pages/s.
TEST_P(RealDump, EveryScanBackendSelectsTheSameCandidates) {
  const auto dump = open_dump(v_.elf(), 0, std::nullopt);
  root_discovery_options kept;
  kept.format = dump.snapshot.format();
  kept.known = dump.machine.known_roots();
  kept.keep_kernel_only = true;
  root_discovery_options census;
  census.format = dump.snapshot.format();
  std::vector<scan_backend> others{scan_backend::thrust_cpu};
  if (gpu_visible()) others.push_back(scan_backend::cuda);
  for (const auto& [options, what] : {std::pair{kept, "known roots"}, std::pair{census, "census"}}) {
    const std::string origin = fmt::format("{} ({})", GetParam(), what);
    const auto expected =
        discover_roots(dump.snapshot.image, testing::with_backend(options, scan_backend::cpu), origin);
    EXPECT_GE(expected.roots.size(), 300u) << origin;
    std::cout << "[   INFO   ] " << format_discovery_summary(expected, origin);
    for (const scan_backend backend : others) {
      SCOPED_TRACE(fmt::format("{}: {}", origin, scan_backend_name(backend)));
      const auto actual = discover_roots(dump.snapshot.image, testing::with_backend(options, backend), origin);
      testing::expect_same_discovery(expected, actual);
      std::cout << "[   INFO   ] " << format_discovery_summary(actual, origin);
    }
  }
}

TEST_P(RealDump, KernelHalfHasOneOwnerAndEveryOtherSpaceAliasesItAtDepthOne) {
  auto dump = open_dump(v_.elf(), 0, std::nullopt);
  const auto found = discover_dump_roots(dump, {}, false, 0);
  for (const auto& r : found.roots) dump.snapshot.spec.roots.push_back(r.root);
  const auto walk = reference_walk(dump.snapshot);
  const bool la57 = dump.snapshot.format() == paging_format::x86_64_la57;
  const u64 kernel_half_start = la57 ? 0xff00'0000'0000'0000ull : 0xffff'8000'0000'0000ull;

  // Spaces that own any kernel-half table: one per distinct kernel half
  // (under PTI the user tables' trampoline half is a second one).
  std::set<u32> owners;
  for (std::size_t s = 0; s < walk.space_count(); ++s) {
    bool owns = false;
    for (const auto& r : walk.records_of(s)) {
      if (r.va < kernel_half_start) continue;
      if (r.is_leaf() || r.depth != 1) {
        owns = true;
        continue;
      }
      owners.insert(r.owner);
    }
    if (owns) owners.insert(static_cast<u32>(s));
  }
  EXPECT_EQ(owners.size(), found.references.size()) << "owners of kernel-half tables";
  EXPECT_TRUE(owners.count(0)) << "the first root (vCPU 0) owns the kernel half";
  EXPECT_EQ(walk.stats.aliases[0], 0u);
}

TEST_P(RealDump, EveryBackendWalksEveryRootIdentically) {
  auto dump = open_dump(v_.elf(), 0, std::nullopt);
  for (const auto& r : discover_dump_roots(dump, {}, false, 0).roots) dump.snapshot.spec.roots.push_back(r.root);
  const std::span<const loaded_snapshot> fleet(&dump.snapshot, 1);
  const auto reference = walk_snapshots(fleet, walk_backend::reference);
  EXPECT_EQ(walk_snapshots(fleet, walk_backend::cpu), reference);
  std::vector<snapshot_walk> gpu;
  try {
    gpu = walk_snapshots(fleet, walk_backend::cuda);
  } catch (const std::exception& e) {
    std::cout << "[   INFO   ] cuda backend not checked: " << e.what() << "\n";
    return;
  }
  EXPECT_EQ(gpu, reference);
}

TEST_P(RealDump, ImportCompactKeepPaVerify) {
  const testing::temp_dir dir;
  const auto manifest = dir / "fleet.jsonl";
  ASSERT_EQ(run(fmt::format("{} import {} --out {} 2>/dev/null", PTWALK_BINARY, v_.elf().string(),
                            manifest.string())),
            0);
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].id, GetParam());
  EXPECT_EQ(format_name(specs[0].format), v_.description()["format"].get<std::string>());
  EXPECT_EQ(specs[0].labels.at(0).substr(0, 4), "cpu0");
  EXPECT_EQ(specs[0].meta["kind"], "elf-core");
  EXPECT_EQ(run(fmt::format("{} compact {} --keep-pa --verify --out {} > {} 2>&1", PTWALK_BINARY,
                            manifest.string(), (dir / "compacted").string(), (dir / "compact.log").string())),
            0)
      << testing::read_text(dir / "compact.log");
  EXPECT_EQ(run(fmt::format("{} verify {} {} > {} 2>&1", PTWALK_BINARY, manifest.string(),
                            (dir / "compacted" / "manifest.jsonl").string(), (dir / "verify.log").string())),
            0)
      << testing::read_text(dir / "verify.log");
}

INSTANTIATE_TEST_SUITE_P(Guests, RealDump, ::testing::Values("default", "pti", "la57"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ptwalk
