// host/cli/info.cpp — `ptwalk info`: what a manifest or an image holds, for people.
#include <elf.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "input/cpu_state.hpp"
#include "input/elf_core.hpp"
#include "input/kdump_compressed.hpp"
#include "input/manifest.hpp"

namespace ptwalk::cli {
namespace {

std::string human_size(u64 bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  unsigned unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  if (value == std::floor(value)) return fmt::format("{} {}", static_cast<u64>(value), units[unit]);
  return fmt::format("{:.1f} {}", value, units[unit]);
}

// What a note is, for the notes QEMU and kdump write.
std::string_view note_meaning(std::string_view name, u32 type) {
  if (name == "CORE") {
    switch (type) {
      case NT_PRSTATUS: return "NT_PRSTATUS";
      case NT_PRFPREG: return "NT_PRFPREG";
      case NT_PRPSINFO: return "NT_PRPSINFO";
      case NT_TASKSTRUCT: return "NT_TASKSTRUCT";
      case NT_AUXV: return "NT_AUXV";
      case NT_SIGINFO: return "NT_SIGINFO";
      case NT_FILE: return "NT_FILE";
    }
  }
  if (name == "LINUX" && type == NT_X86_XSTATE) return "NT_X86_XSTATE";
  if (name == "QEMU") return "QEMU CPU state";
  if (name == "VMCOREINFO") return "VMCOREINFO";
  return "";
}

std::string_view machine_name(u32 machine) {
  switch (machine) {
    case EM_X86_64: return "x86-64";
    case EM_AARCH64: return "aarch64";
    case EM_386: return "i386";
  }
  return "unknown";
}

// The notes and what they say about the vCPUs, alike for ELF cores and kdump files.
void print_notes(std::span<const elf_note> notes, u32 machine, const std::filesystem::path& path) {
  for (const auto& n : notes) {
    const auto meaning = note_meaning(n.name, n.type);
    fmt::print("  note {} type {:#x}{}{}, {} bytes\n", n.name, n.type, meaning.empty() ? "" : " ", meaning,
               n.desc.size());
  }
  fmt::print("{}", describe_machine_state(read_machine_state(notes, machine, path.string())));
}

void print_elf(const std::filesystem::path& path) {
  const elf_core core(path);
  fmt::print("{}: ELF64 core, machine {} ({}), {} PT_LOAD segments, {} notes\n", path.string(),
             machine_name(core.machine()), core.machine(), core.load_segments().size(),
             core.notes().size());
  for (const auto& s : core.load_segments()) {
    fmt::print("  load {:#x}..{:#x} ({}) at file offset {:#x}", s.paddr, s.paddr + s.mem_size,
               human_size(s.mem_size), s.file_offset);
    if (s.mem_size > s.file_size) fmt::print(", last {} unbacked", human_size(s.mem_size - s.file_size));
    fmt::print("\n");
  }
  print_notes(core.notes(), core.machine(), path);
}

void print_kdump(const std::filesystem::path& path) {
  const kdump_file dump(path);
  const auto& h = dump.header();
  // QEMU leaves utsname.release empty; VMCOREINFO's OSRELEASE follows with the notes.
  fmt::print("{}: compressed kdump{}, header version {}, machine {}{}, {}-byte pages, {} compression, "
             "dump level {}, {} of {:#x} frames dumped, {} notes{}\n",
             path.string(), h.flattened ? " (flattened)" : "", h.header_version, h.machine,
             h.release.empty() ? "" : ", release " + h.release, h.block_size, kdump_compression_name(h.status),
             h.dump_level, dump.dumped_pages(), h.max_mapnr, dump.notes().size(),
             (h.status & kdump_incomplete) != 0 ? ", INCOMPLETE" : "");
  for (const auto& run : dump.runs())
    fmt::print("  pages {:#x}..{:#x} ({})\n", run.first_pfn * h.block_size, (run.first_pfn + run.pages) * h.block_size,
               human_size(run.pages * h.block_size));
  print_notes(dump.notes(), dump.machine(), path);
}

void print_manifest(const std::filesystem::path& path) {
  const auto fleet = load_manifest(path);
  fmt::print("{}: {} snapshots\n", path.string(), fleet.size());
  for (const auto& s : fleet) {
    fmt::print("snapshot {}: {}, {} roots, {} regions, {} backed\n", s.id(), format_name(s.format()),
               s.roots().size(), s.image.regions().size(), human_size(s.image.backed_bytes()));
    for (const auto& r : s.image.regions())
      fmt::print("  region {:#x}..{:#x} ({}) from {}\n", r.gpa, r.end(), human_size(r.size), r.source);
    for (std::size_t i = 0; i < s.roots().size(); ++i)
      fmt::print("  root {}{}{}{}\n", hex(s.roots()[i]),
                 s.upper_roots().empty() ? "" : "  ttbr1 " + hex(s.upper_roots()[i]),
                 s.spec.labels.empty() ? "" : "  ", s.spec.labels.empty() ? "" : s.spec.labels[i]);
    if (!s.spec.meta.is_null()) fmt::print("  meta {}\n", s.spec.meta.dump());
  }
}

// A manifest is text starting with '{' (or named *.jsonl / *.json); ELF
// cores and kdump files have their magic; anything else can only be a raw image.
void run_info(const std::string& target) {
  const std::filesystem::path path(target);
  const auto extension = path.extension();
  if (extension == ".jsonl" || extension == ".json") return print_manifest(path);
  const mapped_file file(path);
  const auto bytes = file.bytes();
  if (has_elf_magic(bytes)) return print_elf(path);
  if (has_kdump_signature(bytes)) return print_kdump(path);
  for (const std::byte b : bytes) {
    const char c = static_cast<char>(b);
    if (c == '{') return print_manifest(path);
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
  }
  fmt::print("{}: raw image, {} ({:#x} bytes); walk it with ptwalk walk --raw {} --base HEX --roots ...\n",
             target, human_size(bytes.size()), bytes.size(), target);
}

void setup_info(CLI::App& app) {
  auto target = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("info", "Show what a manifest or an image holds: snapshots, regions, roots, notes.");
  cmd->add_option("target", *target, "fleet manifest, ELF core, compressed kdump file or raw image")->required();
  cmd->callback([target] { run_info(*target); });
}

}  // namespace

PTWALK_COMMAND(10, setup_info);

}  // namespace ptwalk::cli
