// host/cli/import.cpp — `ptwalk import`: turn memory dumps into a fleet manifest with discovered roots.
//
// One manifest line per dump: the dump as its memory source (path relative
// to the manifest), the paging format its CPU state implies, the roots root
// discovery finds (vCPU CR3s first, then the kernel's, then the rest by
// address), their labels, and in "meta" where it all came from: the dump,
// the vCPU registers, the references and per-root evidence, the scan.
#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "command.hpp"
#include "dump_options.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"

namespace ptwalk::cli {
namespace {

struct import_options {
  std::vector<std::string> dumps;
  std::string out;
  dump_options dump;
};

nlohmann::json provenance(const opened_dump& dump, const root_discovery_result& found) {
  nlohmann::json meta;
  meta["source"] = "ptwalk import";
  meta["dump"] = dump.path.string();
  const auto& memory = dump.snapshot.spec.memory;
  meta["kind"] = std::holds_alternative<elf_source>(memory)     ? "elf-core"
                 : std::holds_alternative<kdump_source>(memory) ? "kdump-compressed"
                                                                : "raw";
  meta["format_from"] = dump.format_origin;
  if (dump.ttbr1) meta["ttbr1_from"] = dump.ttbr1_origin;
  auto vcpus = nlohmann::json::array();
  for (const auto& cpu : dump.machine.vcpus) {
    nlohmann::json v{{"index", cpu.index}, {"rip", hex(cpu.rip)}};
    if (cpu.has_control_registers) {
      v["cr0"] = hex(cpu.cr0);
      v["cr3"] = hex(cpu.cr3);
      v["cr4"] = hex(cpu.cr4);
    }
    if (cpu.pid) v["pid"] = *cpu.pid;
    vcpus.push_back(std::move(v));
  }
  if (!vcpus.empty()) meta["vcpus"] = std::move(vcpus);
  if (const auto& info = dump.machine.info) {
    if (const auto release = info->os_release()) meta["os_release"] = *release;
  }
  auto evidence = nlohmann::json::array();
  for (const auto& root : found.roots) evidence.push_back(root.evidence);
  meta["discovery"] = {{"references", found.references},
                       {"evidence", std::move(evidence)},
                       {"pages_scanned", found.pages_scanned},
                       {"kernel_only_skipped", found.kernel_only_skipped},
                       {"backend", scan_backend_name(found.backend)},
                       {"scan_seconds", found.scan_seconds},
                       {"seconds", found.seconds}};
  return meta;
}

void run_import(const import_options& o) {
  const std::filesystem::path manifest(o.out);
  // Created first so an unwritable destination fails before the scans.
  atomic_output_file out(manifest);
  const auto manifest_dir = std::filesystem::absolute(manifest).parent_path();
  std::map<std::string, unsigned> ids_used;
  const auto hints = o.dump.hints();
  for (const auto& path : o.dumps) {
    auto dump = open_dump(path, o.dump.raw_base(), o.dump.format(), o.dump.ttbr1());
    const auto found = discover_dump_roots(dump, hints, o.dump.keep_kernel_only, o.dump.jobs, o.dump.backend());
    fmt::print(stderr, "{}", format_discovery_summary(found, path));

    snapshot_spec spec;
    spec.id = dump.snapshot.id();
    if (const unsigned n = ++ids_used[spec.id]; n > 1) spec.id += fmt::format("-{}", n);
    spec.format = dump.snapshot.format();
    const auto relative = std::filesystem::absolute(path).lexically_relative(manifest_dir).string();
    // The dump's own source (ELF core, kdump file or raw with its base), named relative to the manifest.
    spec.memory = dump.snapshot.spec.memory;
    std::visit(
        [&](auto& source) {
          if constexpr (requires { source.path; }) source.path = relative;
        },
        spec.memory);
    for (const auto& root : found.roots) {
      spec.roots.push_back(root.root);
      spec.labels.push_back(root.label);
    }
    if (dump.ttbr1) spec.upper_roots.assign(spec.roots.size(), *dump.ttbr1);
    spec.meta = provenance(dump, found);
    out.stream() << format_manifest_line(spec) << '\n';
  }
  out.commit();
}

void setup_import(CLI::App& app) {
  auto o = std::make_shared<import_options>();
  auto* cmd = app.add_subcommand(
      "import",
      "Turn dumps (ELF cores, compressed kdump files, raw files) into a fleet manifest: one snapshot per "
      "dump with its discovered roots (vCPU CR3s first), labels, format and provenance.");
  cmd->add_option("dumps", o->dumps, "ELF cores, compressed kdump files or raw memory files")->required();
  cmd->add_option("--out", o->out, "manifest to write (JSON Lines)")->required();
  add_dump_options(*cmd, o->dump);
  cmd->callback([o] { run_import(*o); });
}

}  // namespace

PTWALK_COMMAND(55, setup_import);

}  // namespace ptwalk::cli
