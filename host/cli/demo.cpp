// host/cli/demo.cpp — `ptwalk demo`: generate a small fleet, compact it, verify it, explain it.
//
// The first thing a newcomer runs (scripts/demo.sh). It needs no input: it
// writes five small generated fleets (Linux-like, Nanvix-like,
// Hyperlight-like, 2 MiB large pages, AArch64) into one manifest in a temporary
// directory, runs the same job as `ptwalk compact --verify`, and tells in
// plain words what was shared, how much smaller each kind of image became
// (guest memory and allocated disk) and that every address of every space
// still maps the same bytes.
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "command.hpp"
#include "common/disk_usage.hpp"
#include "compact/compact_job.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "progress_line.hpp"

namespace ptwalk::cli {
namespace {

namespace fs = std::filesystem;

struct demo_options {
  std::string keep;
  std::string backend = "auto";
  unsigned jobs = 0;
};

struct demo_part {
  std::string_view name;
  std::string_view shape;
  std::string_view what;
};

constexpr demo_part demo_parts[] = {
    {"linux", "linux,large=0,snapshots=2,spaces=8,pages=64,kernel=256,seed=7",
     "Linux-like: 8 processes each (2 listed twice, as under PTI), all sharing the kernel half"},
    {"nanvix", "nanvix,snapshots=1,spaces=8,nanvix=2,pages=32,kernel=128,seed=7",
     "Nanvix-like: 8 spaces in 2 groups that share the kernel's last-level page tables"},
    {"hyperlight", "hyperlight,snapshots=2,pages=64,seed=7",
     "Hyperlight-like sandboxes: one space each, half the writable pages copy-on-write"},
    {"large", "linux,snapshots=1,spaces=4,pages=32,kernel=128,dups=0,gib=0,seed=7",
     "large pages: 2 MiB kernel text and a 2 MiB THP in each process"},
    {"arm64", "small,arm=4k-48,snapshots=1,spaces=8,pages=64,kernel=256,large,gib=0,seed=7",
     "AArch64 (4 KiB granule): 8 processes with their own TTBR0 sharing one TTBR1 (swapper_pg_dir)"},
};

// A directory for the demo: --keep DIR (kept), or a fresh temporary one
// that is removed when the demo ends, however it ends.
class demo_dir {
 public:
  explicit demo_dir(const std::string& keep) : keep_(!keep.empty()) {
    if (keep_) {
      path_ = fs::absolute(keep);
      std::error_code ec;
      if (fs::exists(path_, ec) && !fs::is_empty(path_, ec))
        throw input_error(fmt::format("{}: exists and is not empty; the demo needs a new directory", keep));
      fs::create_directories(path_, ec);
      if (ec) throw input_error(fmt::format("{}: cannot create directory: {}", keep, ec.message()));
      return;
    }
    std::string pattern = (fs::temp_directory_path() / "ptwalk-demo-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw input_error(fmt::format("{}: cannot create a temporary directory", pattern));
    path_ = pattern;
  }
  ~demo_dir() {
    std::error_code ignored;
    if (!keep_) fs::remove_all(path_, ignored);
  }
  demo_dir(const demo_dir&) = delete;
  demo_dir& operator=(const demo_dir&) = delete;

  [[nodiscard]] const fs::path& path() const { return path_; }
  [[nodiscard]] bool kept() const { return keep_; }

 private:
  bool keep_;
  fs::path path_;
};

// Writes every part's fleet into its own folder and one manifest for all.
fs::path write_demo_fleet(const fs::path& dir) {
  std::vector<std::string> lines;
  for (const demo_part& part : demo_parts) {
    const fs::path part_dir = dir / part.name;
    (void)write_fleet(parse_fleet_shape(part.shape), part_dir);
    for (snapshot_spec spec : read_manifest(part_dir / "manifest.jsonl")) {
      spec.id = fmt::format("{}-{}", part.name, spec.id);
      auto& raw = std::get<raw_source>(spec.memory);
      raw.path = (fs::path(part.name) / raw.path).string();
      lines.push_back(format_manifest_line(spec));
    }
  }
  const fs::path manifest = dir / "manifest.jsonl";
  atomic_output_file out(manifest);
  for (const auto& line : lines) out.stream() << line << '\n';
  out.commit();
  return manifest;
}

std::string mib(u64 bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

double percent(u64 part, u64 whole) {
  return whole != 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

struct part_size {
  std::string_view name;
  std::vector<fs::path> in_files, out_files;
  disk_usage in, out;
};

// Each part's image files before and after, as the manifests name them:
// their sizes (the guest memory they back) and what they take on disk.
std::vector<part_size> part_sizes(const fs::path& fleet, const fs::path& compacted) {
  std::vector<part_size> sizes;
  for (const demo_part& part : demo_parts) sizes.emplace_back().name = part.name;
  auto add = [&](const fs::path& manifest, std::vector<fs::path> part_size::*files) {
    for (const snapshot_spec& spec : read_manifest(manifest))
      for (part_size& p : sizes)
        if (spec.id.starts_with(fmt::format("{}-", p.name)))
          for (auto& file : memory_files(spec.memory, manifest.parent_path())) (p.*files).push_back(std::move(file));
  };
  add(fleet, &part_size::in_files);
  add(compacted / "manifest.jsonl", &part_size::out_files);
  for (part_size& p : sizes) {
    p.in = disk_usage_of(p.in_files);
    p.out = disk_usage_of(p.out_files);
  }
  return sizes;
}

void explain(const compact_report& r, const fs::path& fleet, const fs::path& compacted, const demo_dir& dir) {
  const std::vector<part_size> sizes = part_sizes(fleet, compacted);
  const u64 last = r.levels - 1;
  fmt::print("\nptwalk demo: what just happened\n\n");
  fmt::print("1. Generated {} guest memory images ({} of guest memory):\n", r.snapshots, mib(r.compaction.bytes_in));
  for (const demo_part& part : demo_parts) fmt::print("   - {}\n", part.what);
  fmt::print("\n2. Walked all {} address spaces (walker: {}): {} pages mapped ({} of 4 KiB, {} of 2 MiB, "
             "{} of 1 GiB).\n   Page tables shared between address spaces (kept shared in the output):\n",
             r.compaction.spaces, r.backend, r.walk.leaves(),
             r.walk.leaves_4k, r.walk.leaves_2m, r.walk.leaves_1g);
  fmt::print("   - {} top-level tables reached again (roots listed twice, the AArch64 TTBR1 every process "
             "shares) stay one table\n", r.walk.aliases[0]);
  fmt::print("   - {} top-level entries point at another space's tables: the shared kernel half\n",
             r.walk.aliases[1]);
  fmt::print("   - {} last-level page tables are shared between spaces (Nanvix groups)\n", r.walk.aliases[last]);
  u64 tables = 0;
  for (unsigned d = 0; d < r.levels; ++d) tables += r.walk.tables[d];
  fmt::print("   Without sharing every space would need its own copy; with it the fleet has {} distinct tables.\n",
             tables);
  fmt::print("\n3. Compacted every image: one copy of each of the {} frames some page maps, packed from address 0\n"
             "   (2 MiB and 1 GiB frames first, aligned; {} small frames found inside a large one reuse it),\n"
             "   then {} rebuilt page tables with {} links to shared tables. Pages whose memory the image\n"
             "   does not have: {} dropped. Not-present entries with OS bits kept: {}.\n",
             r.compaction.frames_copied, r.compaction.frames_nested, r.compaction.tables, r.compaction.links,
             r.compaction.leaves_dropped_unbacked, r.compaction.os_private_entries);
  fmt::print("   Size of each kind of image (guest memory; allocated on disk, the files being sparse):\n");
  for (const part_size& p : sizes)
    fmt::print("   - {:<10} {:>9} -> {:>9} ({:>3.0f}%); on disk {:>9} -> {:>9} ({:>3.0f}%)\n", p.name,
               mib(p.in.file_bytes), mib(p.out.file_bytes), percent(p.out.file_bytes, p.in.file_bytes),
               mib(p.in.allocated_bytes), mib(p.out.allocated_bytes),
               percent(p.out.allocated_bytes, p.in.allocated_bytes));
  fmt::print("   The whole fleet: {} -> {} ({:.0f}%); on disk {} -> {} ({:.0f}%).\n", mib(r.compaction.bytes_in),
             mib(r.compaction.bytes_out), percent(r.compaction.bytes_out, r.compaction.bytes_in),
             mib(r.disk_in.allocated_bytes), mib(r.disk_out.allocated_bytes),
             percent(r.disk_out.allocated_bytes, r.disk_in.allocated_bytes));
  fmt::print("   Frames no page maps are gone. An image whose 1 GiB direct map maps all of its memory, as a\n"
             "   general OS's does, cannot shrink this way: for such images use --keep-pa (see the README).\n");
  const u64 gone = r.verify.counts.links_to_empty_tables;
  fmt::print("\n4. Verified, independently of the compactor: {} pages in {} spaces map the same {} of bytes\n"
             "   with the same permissions and CoW markers, and all {} links to shared tables are still there{}: {}.\n",
             r.verify.counts.leaves_checked, r.verify.counts.spaces, mib(r.verify.counts.bytes_compared),
             r.verify.counts.links_checked,
             gone == 0 ? std::string() : fmt::format(" ({} more went with tables that map nothing now)", gone),
             r.verify.ok() ? "OK" : "FAILED");
  fmt::print("\nThe same by hand:\n  ptwalk compact {} --out {} --verify\n  ptwalk verify {} {}/manifest.jsonl\n",
             fleet.string(), compacted.string(), fleet.string(), compacted.string());
  fmt::print("{}\n", dir.kept() ? fmt::format("Files kept in {}.", dir.path().string())
                                : "(Files removed; run with --keep DIR to keep them.)");
}

void run_demo(const demo_options& o) {
  const demo_dir dir(o.keep);
  fmt::print("ptwalk demo: generating a small fleet in {}\n", dir.path().string());
  std::fflush(stdout);
  const fs::path manifest = write_demo_fleet(dir.path() / "fleet");
  const fs::path out = dir.path() / "compacted";

  compact_options options;
  options.verify = true;
  options.backend = *parse_backend(o.backend);
  options.jobs = o.jobs;
  progress_line progress("compact", false);
  const compact_report report = run_compact_job(manifest, out, options, progress.callback());
  progress.finish();
  fmt::print("\n{}", report.format());
  explain(report, manifest, out, dir);
  if (!report.committed)
    throw input_error(fmt::format("demo: verification found {} differences", report.verify.counts.difference_count));
}

void setup_demo(CLI::App& app) {
  auto o = std::make_shared<demo_options>();
  auto* cmd = app.add_subcommand(
      "demo", "Generate a small fleet, compact it with verification, and explain the result (no input needed).");
  cmd->add_option("--keep", o->keep, "keep the fleet and its compacted copy in this (new or empty) directory");
  cmd->add_option("--backend", o->backend, "walker")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--jobs", o->jobs, "compaction threads (default: every core)");
  cmd->callback([o] { run_demo(*o); });
}

}  // namespace

PTWALK_COMMAND(5, setup_demo);

}  // namespace ptwalk::cli
