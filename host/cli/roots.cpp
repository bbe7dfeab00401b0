// host/cli/roots.cpp — `ptwalk roots`: find every address space's top-level table in one dump.
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "command.hpp"
#include "dump_options.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"

namespace ptwalk::cli {
namespace {

struct roots_options {
  std::string image;
  dump_options dump;
};

void run_roots(const roots_options& o) {
  const auto dump = open_dump(o.image, o.dump.raw_base(), o.dump.format(), o.dump.ttbr1());
  const auto result =
      discover_dump_roots(dump, o.dump.hints(), o.dump.keep_kernel_only, o.dump.jobs, o.dump.backend());
  fmt::print("# {}: format {} ({}); references:\n", o.image, format_name(dump.snapshot.format()),
             dump.format_origin);
  if (dump.ttbr1) fmt::print("# ttbr1 {} ({})\n", hex(*dump.ttbr1), dump.ttbr1_origin);
  for (const auto& r : result.references) fmt::print("#   {}\n", r);
  for (const auto& root : result.roots) fmt::print("{} {} {}\n", hex(root.root), root.label, root.evidence);
  if (!std::cout.flush()) throw input_error("stdout: write failed");
  fmt::print(stderr, "{}", format_discovery_summary(result, o.image));
}

void setup_roots(CLI::App& app) {
  auto o = std::make_shared<roots_options>();
  auto* cmd = app.add_subcommand(
      "roots",
      "Find every address space's top-level table in a dump (ELF core, compressed kdump or raw) by its "
      "kernel half (x86-64) or its shape (AArch64 TTBR0 tables); print one root per line: ROOT LABEL EVIDENCE.");
  cmd->add_option("image", o->image,
                  "ELF core (QEMU dump-guest-memory, kdump), compressed kdump file or raw memory file")
      ->required();
  add_dump_options(*cmd, o->dump);
  cmd->callback([o] { run_roots(*o); });
}

}  // namespace

PTWALK_COMMAND(60, setup_roots);

}  // namespace ptwalk::cli
