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

#include "command.hpp"
#include "dump_options.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"
#include "shard_options.hpp"

namespace ptwalk::cli {
namespace {

struct import_options {
  std::vector<std::string> dumps;
  std::string out;
  std::string shard;
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
                       {"kernel_only_skipped", found.kernel_only_skipped}};
  return meta;
}

// Every dump's snapshot id as one process names them: open_dump's (the
// file's stem), with -2, -3, ... on repeats; every shard computes all of them.
std::vector<std::string> snapshot_ids(const std::vector<std::string>& dumps) {
  std::map<std::string, unsigned> ids_used;
  std::vector<std::string> ids;
  for (const auto& path : dumps) {
    std::string id = std::filesystem::path(path).stem().string();
    if (const unsigned n = ++ids_used[id]; n > 1) id += fmt::format("-{}", n);
    ids.push_back(std::move(id));
  }
  return ids;
}

// The manifest line of one dump; `name_file` names the dump's file in it.
std::string manifest_line(const import_options& o, const std::string& path, std::string id,
                          const std::function<std::string(const std::string&)>& name_file) {
  auto dump = open_dump(path, o.dump.raw_base(), o.dump.format(), o.dump.ttbr1());
  const auto found = discover_dump_roots(dump, o.dump.hints(), o.dump.keep_kernel_only, o.dump.jobs, o.dump.backend());
  fmt::print(stderr, "{}", format_discovery_summary(found, path));

  snapshot_spec spec;
  spec.id = std::move(id);
  spec.format = dump.snapshot.format();
  // The dump's own source (ELF core, kdump file or raw with its base).
  spec.memory = dump.snapshot.spec.memory;
  rename_memory_files(spec.memory, [&](const std::string&) { return name_file(path); });
  for (const auto& root : found.roots) {
    spec.roots.push_back(root.root);
    spec.labels.push_back(root.label);
  }
  if (dump.ttbr1) spec.upper_roots.assign(spec.roots.size(), *dump.ttbr1);
  spec.meta = provenance(dump, found);
  return format_manifest_line(spec);
}

void run_import(const import_options& o) {
  const sharding shard = resolve_dump_shard("import", o.shard, o.dumps);
  const auto ids = snapshot_ids(o.dumps);
  const auto manifest_dir = std::filesystem::absolute(o.out).parent_path();
  // A part names dumps by absolute path; merge (or one process) relative to the manifest.
  const bool part = shard.plan && !shard.how.mpi;
  const auto name_file = [&](const std::string& file) {
    return part ? std::filesystem::absolute(file).lexically_normal().string()
                : manifest_relative_path(file, manifest_dir);
  };
  write_share("import", shard, o.dump.part_options(), o.out, [&](std::ostream& out) {
    for (std::size_t i = shard.first(); i < shard.end(o.dumps.size()); ++i)
      out << manifest_line(o, o.dumps[i], ids[i], name_file) << '\n';
  });
}

void setup_import(CLI::App& app) {
  auto o = std::make_shared<import_options>();
  auto* cmd = app.add_subcommand(
      "import",
      "Turn dumps (ELF cores, compressed kdump files, raw files) into a fleet manifest: one snapshot per "
      "dump with its discovered roots (vCPU CR3s first), labels, format and provenance.");
  cmd->add_option("dumps", o->dumps, "ELF cores, compressed kdump files or raw memory files")->required();
  cmd->add_option("--out", o->out, "manifest to write (JSON Lines); a shard's part to merge")->required();
  add_dump_options(*cmd, o->dump);
  add_shard_option(*cmd, o->shard);
  cmd->callback([o] { run_import(*o); });
}

}  // namespace

PTWALK_COMMAND(55, setup_import);

}  // namespace ptwalk::cli
