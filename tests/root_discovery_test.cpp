// Root discovery on hand-built images: tables sharing a known kernel half,
// the Accessed bit, dead (kernel-only) tables, PTI pairs, the census when no
// root is known, the per-page predicate itself, the GPU scan's Thrust-OMP
// build against the OpenMP scan, and the roots/import CLI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "walk/batch_walk.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"
#include "support/error_of.hpp"
#include "support/scan_image.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

constexpr u64 page = 4096;
constexpr u64 table_flags = 0x63;       // present, writable, accessed, dirty: a kernel table entry
constexpr u64 user_table_flags = 0x67;  // … and user
constexpr u64 nx = u64{1} << 63;

// A small guest: 64 pages at physical 0, tables written by hand.
class guest {
 public:
  guest() : bytes_(64 * page) {}

  void set(u64 table, unsigned index, u64 entry) {
    std::memcpy(bytes_.data() + table + 8 * index, &entry, 8);
  }
  [[nodiscard]] u64 get(u64 table, unsigned index) const {
    u64 entry;
    std::memcpy(&entry, bytes_.data() + table + 8 * index, 8);
    return entry;
  }
  // The kernel's own top table at `table`: entries 256 and 511 (and 508
  // for the PTI entry area) point at kernel PUDs.
  void kernel_table(u64 table) {
    set(table, 256, 10 * page | table_flags);
    set(table, 508, 11 * page | table_flags);
    set(table, 511, 12 * page | table_flags);
  }
  // A process table: the kernel half copied from `from`, with the Accessed
  // bit of one entry flipped as the CPU would, and one user entry.
  void process_table(u64 table, u64 from, u64 user_pud) {
    for (unsigned i = 256; i < 512; ++i) set(table, i, get(from, i));
    set(table, 256, get(from, 256) ^ entry_accessed);
    if (user_pud != 0) set(table, 0, user_pud | user_table_flags);
  }
  // A PTI pair at `kernel` (8 KiB aligned): the user table mirrors the user
  // half (the kernel copy has NX) and holds only the entry-area kernel
  // entry plus its own entry-text PUD.
  void pti_pair(u64 kernel, u64 from, u64 user_pud) {
    process_table(kernel, from, user_pud);
    const u64 user = kernel + page;
    if (user_pud != 0) {
      set(kernel, 0, get(kernel, 0) | nx);
      set(user, 0, user_pud | user_table_flags);
    }
    set(user, 508, get(from, 508));
    set(user, 511, 13 * page | table_flags);
  }

  [[nodiscard]] memory_image image() const {
    memory_image out;
    out.add_owned_region(0, bytes_, "guest");
    return out;
  }
  [[nodiscard]] const std::vector<std::byte>& bytes() const { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// The kernel at page 1, three processes, a dead process (user half cleared
// on exit) and two decoys: a kernel-half copy whose user entry points
// outside the image, and a table one kernel entry off.
guest linux_like() {
  guest g;
  g.kernel_table(1 * page);
  g.process_table(20 * page, 1 * page, 40 * page);
  g.process_table(22 * page, 1 * page, 41 * page);
  g.process_table(24 * page, 1 * page, 42 * page);
  g.process_table(26 * page, 1 * page, 0);
  g.process_table(28 * page, 1 * page, 0x7000'0000);
  g.process_table(30 * page, 1 * page, 43 * page);
  g.set(30 * page, 300, 14 * page | table_flags);
  return g;
}

std::vector<u64> roots_of(const root_discovery_result& r) {
  std::vector<u64> out;
  for (const auto& root : r.roots) out.push_back(root.root);
  return out;
}

root_discovery_options with_known(std::vector<root_hint> known) {
  root_discovery_options o;
  o.known = std::move(known);
  return o;
}

using testing::error_of;

TEST(RootDiscovery, FindsEveryTableSharingTheKnownKernelHalf) {
  const auto image = linux_like().image();
  // The vCPU's CR3 carries a PCID; the root is the table.
  const auto r = discover_roots(image, with_known({{20 * page | 0x5, "cpu0", "vCPU 0 CR3"}}), "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{20 * page, 22 * page, 24 * page}));
  EXPECT_EQ(r.roots[0].label, "cpu0");
  EXPECT_EQ(r.roots[1].label, "process");
  EXPECT_EQ(r.roots[1].evidence, "kernel half = cpu0's kernel half; 1 user entries");
  EXPECT_EQ(r.roots[0].evidence, "vCPU 0 CR3; kernel half = cpu0's kernel half; 1 user entries");
  // The kernel's table and the dead process's have empty user halves.
  EXPECT_EQ(r.kernel_only_skipped, 2u);
  EXPECT_EQ(r.pages_scanned, 64u);
  EXPECT_EQ(r.bytes_scanned, 64 * page);
  EXPECT_EQ(r.references, (std::vector<std::string>{"cpu0's kernel half"}));
}

TEST(RootDiscovery, KernelOnlyTablesAreReportedOnRequest) {
  const auto image = linux_like().image();
  auto options = with_known({{20 * page, "cpu0", ""}});
  options.keep_kernel_only = true;
  const auto r = discover_roots(image, options, "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{20 * page, 1 * page, 22 * page, 24 * page, 26 * page}));
  EXPECT_EQ(r.roots[1].label, "kernel-only");
  EXPECT_TRUE(r.roots[1].user_half_empty);
  EXPECT_EQ(r.kernel_only_skipped, 0u);
}

TEST(RootDiscovery, AKnownKernelRootWithAnEmptyUserHalfIsStillARoot) {
  const auto image = linux_like().image();
  const auto r = discover_roots(image, with_known({{1 * page, "kernel", "VMCOREINFO"}}), "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{1 * page, 20 * page, 22 * page, 24 * page}));
  EXPECT_TRUE(r.roots[0].user_half_empty);
  EXPECT_EQ(r.kernel_only_skipped, 1u);
}

TEST(RootDiscovery, PtiPairsAreFoundAndLabelled) {
  guest g;
  g.kernel_table(2 * page);
  g.pti_pair(2 * page, 2 * page, 0);  // the kernel's own pair: empty user halves
  g.pti_pair(20 * page, 2 * page, 40 * page);
  g.pti_pair(22 * page, 2 * page, 41 * page);
  g.pti_pair(24 * page, 2 * page, 0);  // an exited process's pair
  const auto image = g.image();
  const auto r = discover_roots(image, with_known({{20 * page, "cpu0", "vCPU 0 CR3"}}), "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{20 * page, 21 * page, 22 * page, 23 * page}));
  EXPECT_EQ(r.roots[0].label, "cpu0/pti-kernel");
  EXPECT_EQ(r.roots[1].label, "process/pti-user");
  EXPECT_EQ(r.roots[2].label, "process/pti-kernel");
  EXPECT_EQ(r.roots[3].label, "process/pti-user");
  EXPECT_NE(r.roots[3].evidence.find("PTI pair with 0x16000"), std::string::npos) << r.roots[3].evidence;
  EXPECT_EQ(r.references.size(), 2u);
  EXPECT_EQ(r.references[1], "kernel half of cpu0's PTI user table 0x15000");
  EXPECT_EQ(r.kernel_only_skipped, 4u);
}

TEST(RootDiscovery, PtiPartnerOfAKnownRootIsKeptEvenWhenEmpty) {
  guest g;
  g.kernel_table(2 * page);
  g.pti_pair(2 * page, 2 * page, 0);
  g.pti_pair(20 * page, 2 * page, 40 * page);
  const auto image = g.image();
  // A vCPU caught in user mode: CR3 is the user table of the pair.
  const auto r = discover_roots(image, with_known({{3 * page, "cpu0", ""}}), "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{3 * page, 2 * page, 20 * page, 21 * page}));
  EXPECT_EQ(r.roots[0].label, "cpu0/pti-user");
  EXPECT_EQ(r.roots[1].label, "kernel-only/pti-kernel");
}

TEST(RootDiscovery, CensusFindsTheSharedKernelHalfWithoutAKnownRoot) {
  const auto image = linux_like().image();
  const auto r = discover_roots(image, {}, "guest");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{20 * page, 22 * page, 24 * page}));
  ASSERT_EQ(r.references.size(), 1u);
  // Five plausible tables share the half (the decoy's user entry is implausible).
  EXPECT_EQ(r.references[0], "the kernel half 5 plausible tables share (census, first at 0x1000)");
}

TEST(RootDiscovery, ResultDoesNotDependOnTheThreadCount) {
  const auto image = linux_like().image();
  auto one = with_known({{20 * page, "cpu0", ""}});
  one.threads = 1;
  auto four = one;
  four.threads = 4;
  EXPECT_EQ(roots_of(discover_roots(image, one, "guest")), roots_of(discover_roots(image, four, "guest")));
}

TEST(RootDiscovery, FiveLevelTablesUseTheUpperHalfOfThePml5) {
  const auto image = linux_like().image();
  auto options = with_known({{22 * page, "cpu0", ""}});
  options.format = paging_format::x86_64_la57;
  EXPECT_EQ(roots_of(discover_roots(image, options, "guest")),
            (std::vector<u64>{22 * page, 20 * page, 24 * page}));
}

TEST(RootDiscovery, BadStartingPointsAreInputErrors) {
  const auto image = linux_like().image();
  EXPECT_EQ(error_of([&] { (void)discover_roots(image, with_known({{0x100000, "hint", "--hint 0x100000"}}), "g.raw"); }),
            "g.raw: hint root 0x100000 (--hint 0x100000) is outside the image");
  const memory_image zeros = guest().image();
  EXPECT_EQ(error_of([&] { (void)discover_roots(zeros, {}, "z.raw"); }),
            "z.raw: no known root (no vCPU state or VMCOREINFO; give --hint CR3) and no kernel half "
            "shared by two plausible top-level tables");
  // A known root whose kernel half is empty cannot be a reference.
  const auto r = discover_roots(image, with_known({{40 * page, "hint", ""}, {20 * page, "cpu0", ""}}), "g");
  EXPECT_EQ(r.references[0], "hint 0x28000: kernel half empty, not a reference");
  EXPECT_EQ(roots_of(r), (std::vector<u64>{40 * page, 20 * page, 22 * page, 24 * page}));
}

TEST(RootCandidatePredicate, NeedsTheWholeKernelHalfAndAPlausibleUserHalf) {
  const auto g = linux_like();
  const auto* bytes = g.bytes().data();
  std::vector<u64> half(half_entries);
  for (unsigned i = 0; i < half_entries; ++i) half[i] = g.get(1 * page, half_entries + i);
  const u64 starts[] = {0, 0x100000};
  const u64 ends[] = {64 * page, 0x200000};
  const backed_ranges_ref backed{starts, ends, 2};
  const kernel_halves_ref halves{half.data(), 1};
  const auto test = [&](u64 pa) { return test_root_candidate<x86_64_4level>(bytes + pa, halves, backed); };
  EXPECT_EQ(test(20 * page).reference, 0);
  EXPECT_FALSE(test(20 * page).user_half_empty);
  EXPECT_TRUE(test(26 * page).user_half_empty);
  EXPECT_EQ(test(28 * page).reference, -1);  // user entry outside the image
  EXPECT_EQ(test(30 * page).reference, -1);  // one kernel entry differs
  EXPECT_EQ(test(50 * page).reference, -1);  // a zero page
  // PS is reserved in a top-level entry.
  guest large = linux_like();
  large.set(20 * page, 3, 0x40000000 | 0x83);
  EXPECT_EQ(test_root_candidate<x86_64_4level>(large.bytes().data() + 20 * page, halves, backed).reference, -1);

  EXPECT_TRUE(backed.contains(0, page));
  EXPECT_TRUE(backed.contains(63 * page, page));
  EXPECT_FALSE(backed.contains(63 * page + 8, page));  // runs past the range
  EXPECT_TRUE(backed.contains(0x1ff000, page));
  EXPECT_FALSE(backed.contains(0x80000, page));  // between ranges
  EXPECT_FALSE(backed.contains(~u64{0} - 8, page));  // wraps
}

// ---- scan backends: the GPU scan's algorithm (thrust-cpu) against the OpenMP scan ----

guest pti_guest() {
  guest g;
  g.kernel_table(2 * page);
  g.pti_pair(2 * page, 2 * page, 0);
  g.pti_pair(20 * page, 2 * page, 40 * page);
  g.pti_pair(22 * page, 2 * page, 41 * page);
  g.pti_pair(24 * page, 2 * page, 0);
  return g;
}

TEST(RootScanBackends, ThrustCpuFindsWhatTheCpuScanFindsOnHandBuiltGuests) {
  const auto linux_image = linux_like().image();
  const auto pti_image = pti_guest().image();
  auto kept = with_known({{20 * page, "cpu0", ""}});
  kept.keep_kernel_only = true;
  auto la57 = with_known({{22 * page, "cpu0", ""}});
  la57.format = paging_format::x86_64_la57;
  const std::pair<const memory_image*, root_discovery_options> cases[] = {
      {&linux_image, with_known({{20 * page, "cpu0", "vCPU 0 CR3"}})},
      {&linux_image, kept},
      {&linux_image, {}},  // the census
      {&linux_image, la57},
      {&pti_image, with_known({{20 * page, "cpu0", ""}})},
      {&pti_image, with_known({{3 * page, "cpu0", ""}})},
  };
  for (std::size_t c = 0; c < std::size(cases); ++c) {
    const auto& [image, options] = cases[c];
    const auto expected = discover_roots(*image, testing::with_backend(options, scan_backend::cpu), "guest");
    ASSERT_FALSE(expected.roots.empty());
    for (const std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{0}}) {
      SCOPED_TRACE(fmt::format("case {} chunk {}", c, chunk));
      const auto actual =
          discover_roots(*image, testing::with_backend(options, scan_backend::thrust_cpu, chunk), "guest");
      EXPECT_EQ(actual.backend, scan_backend::thrust_cpu);
      testing::expect_same_discovery(expected, actual);
    }
  }
}

TEST(RootScanBackends, ThrustCpuFindsWhatTheCpuScanFindsOnRandomImagesInEveryChunking) {
  for (const bool pti : {false, true})
    for (u64 seed = 1; seed <= 2; ++seed) {
      SCOPED_TRACE(fmt::format("pti {} seed {}", pti, seed));
      const auto generated = testing::make_scan_image({.pages = 2048, .processes = 100, .pti = pti}, seed);
      const auto& image = generated.image;
      const auto known = with_known({{generated.kernel_root, "kernel", "VMCOREINFO"}});
      auto kept = known;
      kept.keep_kernel_only = true;
      for (const auto& options : {known, kept, root_discovery_options{}}) {
        const auto expected = discover_roots(image, testing::with_backend(options, scan_backend::cpu), "random");
        for (const std::size_t chunk : {std::size_t{3}, std::size_t{500}, std::size_t{0}}) {
          SCOPED_TRACE(fmt::format("chunk {} keep {} known {}", chunk, options.keep_kernel_only,
                                   options.known.size()));
          testing::expect_same_discovery(
              expected,
              discover_roots(image, testing::with_backend(options, scan_backend::thrust_cpu, chunk), "random"));
        }
      }
      // The comparison is not vacuous: the kernel's table (and its PTI
      // partner) and every live process (pair), nothing else.
      const auto found = discover_roots(image, testing::with_backend(known, scan_backend::thrust_cpu), "random");
      EXPECT_EQ(found.roots.size(), pti ? 2 + 2 * generated.live_processes : 1 + generated.live_processes);
      EXPECT_GT(generated.live_processes, 30u);
    }
}

TEST(RootScanBackends, EveryWholePageIsUploadedOnceInChunksThatNeverSpanTwoRegions) {
  const auto generated = testing::make_scan_image({.pages = 1024, .processes = 20}, 9);
  auto options = with_known({{generated.kernel_root, "kernel", ""}});
  const auto result = discover_roots(generated.image, testing::with_backend(options, scan_backend::thrust_cpu, 7),
                                     "random");
  // Regions of 512 pages, 255 whole pages (the first starts mid-page) and
  // 252 whole pages (after the gap, the last page cut short).
  EXPECT_EQ(result.pages_scanned, 512u + 255u + 252u);
  EXPECT_EQ(result.profile.pages, result.pages_scanned);
  EXPECT_EQ(result.profile.bytes_uploaded, result.pages_scanned * page);
  EXPECT_EQ(result.profile.chunks, (512u + 6) / 7 + (255u + 6) / 7 + (252u + 6) / 7);
  EXPECT_EQ(result.profile.hits, result.roots.size() + result.kernel_only_skipped);
}

TEST(RootScanBackends, AutoIsCudaOnlyWhereAGpuIsVisibleAndFaster) {
  EXPECT_EQ(resolve_scan_backend(scan_backend::automatic), gpu_visible() ? scan_backend::cuda : scan_backend::cpu);
  EXPECT_EQ(parse_scan_backend("thrust-cpu"), scan_backend::thrust_cpu);
  EXPECT_EQ(parse_scan_backend("reference"), std::nullopt);
  const auto image = linux_like().image();
  const auto r = discover_roots(image, with_known({{20 * page, "cpu0", ""}}), "guest");
  if (!gpu_visible()) {
    EXPECT_EQ(r.backend, scan_backend::cpu);
    EXPECT_EQ(r.backend_choice, "");  // nothing to weigh
  } else {
    // The choice names what ran and is in the summary line.
    EXPECT_NE(r.backend_choice.find(fmt::format("auto chose {}", scan_backend_name(r.backend))), std::string::npos)
        << r.backend_choice;
    EXPECT_NE(format_discovery_summary(r, "guest").find(r.backend_choice), std::string::npos);
  }
}

TEST(RootScanBackends, ScanCostsAreMeasuredOnTheImage) {
  const auto image = linux_like().image();
  const scan_costs costs = sample_scan_costs(image, paging_format::x86_64, 2);
  const auto scanned = discover_roots(image, with_known({{20 * page, "cpu0", ""}}), "guest").pages_scanned;
  EXPECT_EQ(costs.pages, scanned);
  EXPECT_EQ(costs.threads, 2u);
  EXPECT_GT(costs.test_page_s, 0.0);
  EXPECT_GT(costs.gather_page_s, 0.0);
  EXPECT_LT(costs.test_page_s, 1e-3);  // sane: per page, not per image
  EXPECT_LT(costs.gather_page_s, 1e-3);
  EXPECT_DOUBLE_EQ(costs.upload_page_s, 4096 / best_upload_bytes_per_s);
}

// The GPU scan gathers whole pages on the host threads and uploads them;
// the cpu scan tests each page in place. Costs in seconds per page.
TEST(RootScanBackends, FasterScanBackendWeighsTestAgainstGatherAndUpload) {
  const scan_costs typical{.pages = 262144,  // 1 GiB
                           .threads = 2,
                           .test_page_s = 60e-9,     // one cache line
                           .gather_page_s = 400e-9,  // 4 KiB memcpy
                           .upload_page_s = 4096 / 50e9,
                           .device_setup_s = 0.005};
  const auto e = estimate_scan(typical);
  EXPECT_DOUBLE_EQ(e.cpu_s, 262144 * 60e-9 / 2);
  EXPECT_DOUBLE_EQ(e.cuda_s, 0.005 + 262144 * 200e-9);  // the gather binds, not PCIe
  EXPECT_EQ(faster_scan_backend(typical), scan_backend::cpu);

  scan_costs costly_test = typical;  // a test reading the whole page, slowly
  costly_test.test_page_s = 2e-6;
  EXPECT_EQ(faster_scan_backend(costly_test), scan_backend::cuda);

  scan_costs many_threads = costly_test;  // PCIe binds once the gather is spread thin
  many_threads.threads = 64;
  EXPECT_DOUBLE_EQ(estimate_scan(many_threads).cuda_s, 0.005 + 262144 * (4096 / 50e9));
  EXPECT_EQ(faster_scan_backend(many_threads), scan_backend::cpu);  // 8.2 ms cpu vs 26.5 ms cuda

  scan_costs tiny = costly_test;  // the device's setup outweighs a few pages
  tiny.pages = 100;
  EXPECT_EQ(faster_scan_backend(tiny), scan_backend::cpu);
}

// ---- the CLI, on a raw file ----

int run(const std::string& command) { return std::system((command + " 2>/dev/null").c_str()); }

TEST(RootsCommand, PrintsEveryRootOfARawDumpFromAHint) {
  const testing::temp_dir dir;
  const auto raw = dir.write("guest.raw", linux_like().bytes());
  const auto out = dir / "roots.txt";
  ASSERT_EQ(run(fmt::format("{} roots {} --base 0x0 --hint 0x14000 > {}", PTWALK_BINARY, raw.string(),
                            out.string())),
            0);
  const auto text = testing::read_text(out);
  EXPECT_NE(text.find("\n0x14000 hint --hint 0x14000; kernel half = hint's kernel half; 1 user entries\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\n0x16000 process "), std::string::npos) << text;
  EXPECT_NE(text.find("\n0x18000 process "), std::string::npos) << text;
}

TEST(RootsCommand, SaysWhichBackendScannedAndRefusesCudaWithoutAGpu) {
  const testing::temp_dir dir;
  const auto raw = dir.write("guest.raw", linux_like().bytes());
  const auto err = dir / "err.txt";
  const auto roots = [&](std::string_view backend) {
    return std::system(fmt::format("{} roots {} --hint 0x14000 --backend {} > /dev/null 2> {}", PTWALK_BINARY,
                                   raw.string(), backend, err.string())
                           .c_str());
  };
  ASSERT_EQ(roots("cpu"), 0);
  EXPECT_NE(testing::read_text(err).find(" pages (0 MiB) in "), std::string::npos) << testing::read_text(err);
  EXPECT_NE(testing::read_text(err).find(" with backend cpu ("), std::string::npos) << testing::read_text(err);
  if (gpu_visible()) {
    ASSERT_EQ(roots("cuda"), 0);
    EXPECT_NE(testing::read_text(err).find(" with backend cuda ("), std::string::npos) << testing::read_text(err);
  } else {
    EXPECT_NE(roots("cuda"), 0);
    EXPECT_NE(testing::read_text(err).find("root scan backend cuda: "), std::string::npos)
        << testing::read_text(err);
  }
  EXPECT_NE(roots("thrust-cpu"), 0) << "not a user-facing choice";
}

TEST(ImportCommand, WritesAManifestThatLoadsWithEveryRootAndLabel) {
  const testing::temp_dir dir;
  const auto raw = dir.write("guest.raw", linux_like().bytes());
  std::filesystem::create_directories(dir / "fleet");
  const auto manifest = dir / "fleet" / "fleet.jsonl";
  ASSERT_EQ(run(fmt::format("{} import {} --hint 0x14000 --out {}", PTWALK_BINARY, raw.string(),
                            manifest.string())),
            0);
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].id, "guest");
  EXPECT_EQ(specs[0].roots, (std::vector<u64>{0x14000, 0x16000, 0x18000}));
  EXPECT_EQ(specs[0].labels, (std::vector<std::string>{"hint", "process", "process"}));
  EXPECT_EQ(std::get<raw_source>(specs[0].memory).path, "../guest.raw");
  EXPECT_EQ(specs[0].meta["source"], "ptwalk import");
  EXPECT_EQ(specs[0].meta["kind"], "raw");
  EXPECT_EQ(specs[0].meta["discovery"]["pages_scanned"], 64);
  // What changes from run to run (the backend, times) goes to stderr: shards merge to one process's bytes.
  for (const char* varying : {"backend", "seconds", "scan_seconds"})
    EXPECT_FALSE(specs[0].meta["discovery"].contains(varying)) << varying;
  EXPECT_EQ(load_manifest(manifest).at(0).roots().size(), 3u);
}

TEST(ImportCommand, RefusesATruncatedKdumpNamingTheFileAndLeavesNoManifest) {
  const testing::temp_dir dir;
  static constexpr char header[] = "KDUMP   \x06\0\0\0 rest of a diskdump header";
  const auto dump = dir.write("vmcore", std::string_view(header, sizeof header - 1));
  const auto manifest = dir / "fleet.jsonl";
  const auto err = dir / "err.txt";
  EXPECT_NE(std::system(fmt::format("{} import {} --out {} 2> {}", PTWALK_BINARY, dump.string(),
                                    manifest.string(), err.string())
                            .c_str()),
            0);
  EXPECT_EQ(testing::read_text(err),
            fmt::format("ptwalk: {}: disk_dump_header at offset 0x0 (464 bytes) runs past the end of the dump "
                        "(0x26 bytes)\n",
                        dump.string()));
  EXPECT_FALSE(std::filesystem::exists(manifest));
}

}  // namespace
}  // namespace ptwalk
