// host/cli/roots.cpp — `ptwalk roots`: find every address space's top-level table in each dump.
//
// One block per dump, in the order given: "# DUMP: format ..." comments,
// then one root per line. Sharded like walk: a shard lists its share of the
// dumps after a shard record; `ptwalk merge` lays the parts end to end.
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "command.hpp"
#include "dump_options.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"
#include "shard_options.hpp"

namespace ptwalk::cli {
namespace {

struct roots_options {
  std::vector<std::string> images;
  std::string out;
  std::string shard;
  dump_options dump;
};

void write_roots(const roots_options& o, const std::string& image, std::ostream& out) {
  const auto dump = open_dump(image, o.dump.raw_base(), o.dump.format(), o.dump.ttbr1());
  const auto result =
      discover_dump_roots(dump, o.dump.hints(), o.dump.keep_kernel_only, o.dump.jobs, o.dump.backend());
  out << fmt::format("# {}: format {} ({}); references:\n", image, format_name(dump.snapshot.format()),
                     dump.format_origin);
  if (dump.ttbr1) out << fmt::format("# ttbr1 {} ({})\n", hex(*dump.ttbr1), dump.ttbr1_origin);
  for (const auto& r : result.references) out << fmt::format("#   {}\n", r);
  for (const auto& root : result.roots) out << fmt::format("{} {} {}\n", hex(root.root), root.label, root.evidence);
  fmt::print(stderr, "{}", format_discovery_summary(result, image));
}

void run_roots(const roots_options& o) {
  const sharding shard = resolve_dump_shard("roots", o.shard, o.images);
  write_share("roots", shard, o.dump.part_options(), o.out, [&](std::ostream& out) {
    for (std::size_t i = shard.first(); i < shard.end(o.images.size()); ++i) write_roots(o, o.images[i], out);
  });
}

void setup_roots(CLI::App& app) {
  auto o = std::make_shared<roots_options>();
  auto* cmd = app.add_subcommand(
      "roots",
      "Find every address space's top-level table in each dump (ELF core, compressed kdump or raw) by its "
      "kernel half (x86-64) or its shape (AArch64 TTBR0 tables); print one root per line: ROOT LABEL EVIDENCE.");
  cmd->add_option("images", o->images,
                  "ELF cores (QEMU dump-guest-memory, kdump), compressed kdump files or raw memory files")
      ->required();
  cmd->add_option("--out", o->out, "output file (default: stdout)");
  add_dump_options(*cmd, o->dump);
  add_shard_option(*cmd, o->shard);
  cmd->callback([o] { run_roots(*o); });
}

}  // namespace

PTWALK_COMMAND(60, setup_roots);

}  // namespace ptwalk::cli
