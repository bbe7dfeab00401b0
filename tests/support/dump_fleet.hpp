// tests/support/dump_fleet.hpp — a generated fleet as QEMU-style ELF cores, for `roots` and `import`.
//
// Each snapshot of a generated fleet becomes an ELF core: its raw image as
// one PT_LOAD at guest-physical 0 and a QEMU CPU-state note whose CR3 is the
// snapshot's first root (CR4.LA57 as its format says), so discovery starts
// from the CPU state as on a real dump. The cores differ in size, so cuts
// by bytes and by count differ.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/cpu_notes.hpp"
#include "support/elf_builder.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk::testing {

// Writes the fleet `shape` as DIR/dumps/<id>.core; returns their paths in manifest order.
inline std::vector<std::string> write_dump_fleet(const temp_dir& dir, const std::string& shape) {
  namespace fs = std::filesystem;
  const fs::path generated = dir / "generated", dumps = dir / "dumps";
  (void)write_fleet(parse_fleet_shape(shape), generated);
  fs::create_directories(dumps);
  std::vector<std::string> paths;
  for (const snapshot_spec& spec : read_manifest(generated / "manifest.jsonl")) {
    const std::string image = read_text(generated / std::get<raw_source>(spec.memory).path);
    const auto* bytes = reinterpret_cast<const std::byte*>(image.data());
    elf_core_builder elf;
    const u64 cr4 = spec.format == paging_format::x86_64_la57 ? cr4_la57 : cr4_4level;
    elf.set_notes({{"CORE", NT_PRSTATUS, prstatus_note(1, 0)},
                   {"QEMU", 0, qemu_note(paging_on, spec.roots.front(), cr4)}});
    elf.add_load(0, std::vector<std::byte>(bytes, bytes + image.size()));
    const auto core = elf.build();
    paths.push_back(dir.write(fmt::format("dumps/{}.core", spec.id), core).string());
  }
  fs::remove_all(generated);
  return paths;
}

}  // namespace ptwalk::testing
