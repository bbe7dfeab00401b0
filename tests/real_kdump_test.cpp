// Real Linux guest dumps as compressed kdump files: make-dumps.py writes
// each variant with every kdump-* format its QEMU offers, in the same
// paused state as VARIANT.elf. Each must load to the same backed bytes as
// the ELF core, page for page, and give the same CPU state, the same roots
// (labels and evidence included) and the same walk; `ptwalk import` of it
// must give the ELF core's manifest line but for its memory source. Skipped
// without the dumps, or for an older generation without kdump files.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"
#include "support/real_guest.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

struct span_of_memory {
  u64 start, end;
  friend bool operator==(const span_of_memory&, const span_of_memory&) = default;
};

// The backed physical ranges, adjacent regions merged (an ELF segment and a
// kdump run need not split memory alike).
std::vector<span_of_memory> backed_ranges(const memory_image& image) {
  std::vector<span_of_memory> out;
  for (const auto& r : image.regions()) {
    if (!out.empty() && out.back().end == r.gpa)
      out.back().end = r.end();
    else
      out.push_back({r.gpa, r.end()});
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class RealKdump : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    v_ = {testing::real_guest_dir() / GetParam(), GetParam()};
    if (!std::filesystem::exists(v_.elf()))
      GTEST_SKIP() << "no real guest dump at " << v_.elf()
                   << ": run tests/real_guest/make-dumps.py (or set PTWALK_REAL_GUEST_DIR)";
    for (const auto& name : v_.description().value("kdump", std::vector<std::string>{}))
      kdumps_.push_back(v_.file(name));
    if (kdumps_.empty())
      GTEST_SKIP() << v_.file("variant.json") << " lists no kdump files: rerun tests/real_guest/make-dumps.py";
  }
  testing::variant_files v_;
  std::vector<std::filesystem::path> kdumps_;
};

TEST_P(RealKdump, LoadsTheSameBackedBytesAsTheElfCore) {
  snapshot_spec elf_spec;
  elf_spec.id = GetParam();
  elf_spec.memory = elf_source{v_.elf().string()};
  auto start = std::chrono::steady_clock::now();
  const auto elf = load_snapshot(elf_spec, {});
  const double elf_seconds = seconds_since(start);
  for (const auto& path : kdumps_) {
    SCOPED_TRACE(path.filename().string());
    snapshot_spec spec = elf_spec;
    spec.memory = kdump_source{path.string()};
    start = std::chrono::steady_clock::now();
    const auto kdump = load_snapshot(spec, {});
    const double kdump_seconds = seconds_since(start);
    ASSERT_EQ(backed_ranges(kdump.image), backed_ranges(elf.image));
    std::size_t pages = 0, differences = 0;
    for (const auto& r : elf.image.regions())
      for (u64 pa = r.gpa; pa < r.end(); pa += 4096, ++pages) {
        const u64 size = std::min<u64>(4096, r.end() - pa);
        const std::byte* theirs = kdump.image.bytes_at(pa, size);
        if (theirs == nullptr || std::memcmp(theirs, r.data + (pa - r.gpa), size) != 0)
          if (++differences <= 10) ADD_FAILURE() << "page " << hex(pa) << " differs from the ELF core's";
      }
    EXPECT_EQ(differences, 0u) << "of " << pages << " pages";
    std::cout << fmt::format("[   INFO   ] {}: {} pages ({:.0f} MiB) from a {:.1f} MiB file loaded in {:.3f} s; "
                             "the {:.1f} MiB ELF core maps in {:.4f} s\n",
                             path.filename().string(), pages, kdump.image.backed_bytes() / 1048576.0,
                             std::filesystem::file_size(path) / 1048576.0, kdump_seconds,
                             std::filesystem::file_size(v_.elf()) / 1048576.0, elf_seconds);
    RecordProperty(path.filename().string() + "_load_seconds", fmt::format("{:.3f}", kdump_seconds));
  }
}

TEST_P(RealKdump, SameCpuStateRootsAndWalkAsTheElfCore) {
  auto elf = open_dump(v_.elf(), 0, std::nullopt);
  const auto elf_roots = discover_dump_roots(elf, {}, false, 0);
  for (const auto& r : elf_roots.roots) elf.snapshot.spec.roots.push_back(r.root);
  const auto elf_walk = walk_snapshots(std::span<const loaded_snapshot>(&elf.snapshot, 1), walk_backend::cpu);

  for (const auto& path : kdumps_) {
    SCOPED_TRACE(path.filename().string());
    auto kdump = open_dump(path, 0, std::nullopt);
    EXPECT_EQ(kdump.snapshot.format(), elf.snapshot.format());
    EXPECT_EQ(kdump.format_origin, elf.format_origin);
    ASSERT_EQ(kdump.machine.vcpus.size(), elf.machine.vcpus.size());
    for (std::size_t i = 0; i < elf.machine.vcpus.size(); ++i) {
      const auto &a = kdump.machine.vcpus[i], &b = elf.machine.vcpus[i];
      EXPECT_EQ(std::tie(a.cr0, a.cr3, a.cr4, a.rip, a.rsp, a.pid, a.has_control_registers),
                std::tie(b.cr0, b.cr3, b.cr4, b.rip, b.rsp, b.pid, b.has_control_registers))
          << "vCPU " << i;
    }
    ASSERT_TRUE(kdump.machine.info.has_value());
    EXPECT_EQ(kdump.machine.info->kernel_root(), elf.machine.info->kernel_root());

    const auto roots = discover_dump_roots(kdump, {}, false, 0);
    ASSERT_EQ(roots.roots.size(), elf_roots.roots.size());
    for (std::size_t i = 0; i < roots.roots.size(); ++i) {
      EXPECT_EQ(roots.roots[i].root, elf_roots.roots[i].root) << "root " << i;
      EXPECT_EQ(roots.roots[i].label, elf_roots.roots[i].label) << "root " << i;
      EXPECT_EQ(roots.roots[i].evidence, elf_roots.roots[i].evidence) << "root " << i;
    }
    EXPECT_EQ(roots.references, elf_roots.references);

    for (const auto& r : roots.roots) kdump.snapshot.spec.roots.push_back(r.root);
    const auto walk = walk_snapshots(std::span<const loaded_snapshot>(&kdump.snapshot, 1), walk_backend::cpu);
    EXPECT_TRUE(walk == elf_walk) << "the walks of every root differ";
  }
}

TEST_P(RealKdump, ImportGivesTheElfCoresManifestLineButForItsSource) {
  const testing::temp_dir dir;
  const auto import = [&](const std::filesystem::path& dump) {
    const auto manifest = dir / (dump.filename().string() + ".jsonl");
    const auto result = testing::run_ptwalk(dir, {"import", dump.string(), "--out", manifest.string()});
    EXPECT_EQ(result.status, 0) << result.err;
    return read_manifest(manifest).at(0);
  };
  const auto elf = import(v_.elf());
  for (const auto& path : kdumps_) {
    SCOPED_TRACE(path.filename().string());
    const auto kdump = import(path);
    EXPECT_EQ(kdump.id, elf.id);
    EXPECT_EQ(kdump.format, elf.format);
    EXPECT_EQ(kdump.roots, elf.roots);
    EXPECT_EQ(kdump.labels, elf.labels);
    EXPECT_EQ(kdump.meta["kind"], "kdump-compressed");
    EXPECT_EQ(kdump.meta["vcpus"], elf.meta["vcpus"]);
    EXPECT_EQ(std::filesystem::path(std::get<kdump_source>(kdump.memory).path).filename(), path.filename());
  }
}

INSTANTIATE_TEST_SUITE_P(Guests, RealKdump, ::testing::Values("default", "pti", "la57"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ptwalk
