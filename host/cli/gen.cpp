// host/cli/gen.cpp — `ptwalk gen`: write a synthetic fleet (manifest.jsonl + raw images).
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "command.hpp"
#include "generate/fleet_generator.hpp"

namespace ptwalk::cli {
namespace {

struct gen_options {
  std::string out;
  std::string shape = "small";
  std::optional<u32> snapshots, spaces, pages, kernel_pages, nanvix_groups, duplicate_roots;
  std::optional<u64> seed;
  bool large_pages = false, cow = false, self_reference = false, la57 = false, hostile = false;
  bool force = false;
};

// The shape string first, then the individual options on top of it.
fleet_shape resolve_shape(const gen_options& o) {
  fleet_shape shape = parse_fleet_shape(o.shape);
  const auto take = [](auto& field, const auto& value) {
    if (value) field = *value;
  };
  take(shape.snapshots, o.snapshots);
  take(shape.spaces_per_snapshot, o.spaces);
  take(shape.user_pages_per_space, o.pages);
  take(shape.kernel_pages, o.kernel_pages);
  take(shape.duplicate_roots, o.duplicate_roots);
  take(shape.seed, o.seed);
  if (o.nanvix_groups) {
    shape.nanvix_groups = *o.nanvix_groups;
    if (shape.nanvix_groups > 0) shape.share_kernel_half = false;
  }
  shape.large_pages |= o.large_pages;
  shape.cow |= o.cow;
  shape.self_reference |= o.self_reference;
  shape.hostile |= o.hostile;
  if (o.la57) shape.la57 = la57_mode::all;
  validate_shape(shape);
  return shape;
}

void run_gen(const gen_options& o) {
  const fleet_shape shape = resolve_shape(o);
  const auto start = std::chrono::steady_clock::now();
  const fleet_summary s = write_fleet(shape, o.out, o.force);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  fmt::print("wrote {}/manifest.jsonl in {:.2f} s\n", o.out, took.count());
  fmt::print("  shape {}\n", format_fleet_shape(shape));
  fmt::print("  {} snapshots ({} la57), {} spaces, {} image bytes ({:.1f} MiB), {} page-table pages\n",
             s.snapshots, s.la57_snapshots, s.spaces, s.image_bytes,
             static_cast<double>(s.image_bytes) / (1 << 20), s.table_pages);
}

void setup_gen(CLI::App& app) {
  auto o = std::make_shared<gen_options>();
  auto* cmd =
      app.add_subcommand("gen",
                         "Write a synthetic fleet: manifest.jsonl and one raw image per snapshot, with the\n"
                         "walk each snapshot must produce recorded in its manifest line's meta.");
  cmd->add_option("--out", o->out, "Directory to create (written in a temporary directory, then renamed)")
      ->required();
  cmd->add_option("--shape", o->shape,
                  fmt::format("Preset and overrides, e.g. linux,spaces=100,pages=64 (presets: {})",
                              fmt::join(fleet_presets(), ", ")))
      ->capture_default_str();
  cmd->add_option("--snapshots", o->snapshots, "Snapshots (images)");
  cmd->add_option("--spaces", o->spaces, "Address spaces per snapshot");
  cmd->add_option("--pages", o->pages, "4 KiB user pages per space");
  cmd->add_option("--kernel-pages", o->kernel_pages, "4 KiB pages of the kernel half");
  cmd->add_option("--nanvix-groups", o->nanvix_groups,
                  "Groups sharing the kernel's page tables (turns off --shape share_kernel)");
  cmd->add_option("--duplicate-roots", o->duplicate_roots, "Extra roots repeating earlier ones");
  cmd->add_option("--seed", o->seed, "Seed; the same shape and seed give the same bytes");
  cmd->add_flag("--large-pages", o->large_pages, "2 MiB and 1 GiB leaves");
  cmd->add_flag("--cow", o->cow, "Hyperlight copy-on-write leaves");
  cmd->add_flag("--self-reference", o->self_reference, "A self-map entry in every top-level table");
  cmd->add_flag("--la57", o->la57,
                "5-level paging in every snapshot (la57=some in --shape: every other one)");
  cmd->add_flag("--hostile", o->hostile, "Add roots with loops, outside pointers and a cut-off last page");
  cmd->add_flag("--force", o->force, "Replace --out if it exists and is not empty");
  cmd->callback([o] { run_gen(*o); });
}

}  // namespace

PTWALK_COMMAND(30, setup_gen);

}  // namespace ptwalk::cli
