// host/elf_core.hpp — ELF64 core files as guest memory (QEMU dump-guest-memory, kdump).
//
// An ELF core describes guest-physical memory with PT_LOAD segments
// (p_paddr → p_filesz bytes at p_offset; the rest of p_memsz is unbacked)
// and carries CPU state and OS hints in PT_NOTE segments (NT_PRSTATUS,
// QEMU's CPU state, VMCOREINFO). The file is mapped, never read whole:
// segments and notes are views into the mapping. Parsing is strict; every
// problem is an input_error naming the file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "input/memory_image.hpp"

namespace ptwalk {

struct elf_load_segment {
  u64 paddr = 0;
  u64 vaddr = 0;
  u64 file_offset = 0;
  u64 file_size = 0;  // bytes backed by the file
  u64 mem_size = 0;   // bytes the segment covers; beyond file_size they are unbacked
  u32 flags = 0;      // PF_R/PF_W/PF_X
};

struct elf_note {
  std::string_view name;          // without its terminating NUL ("CORE", "QEMU", "VMCOREINFO")
  u32 type = 0;                   // NT_PRSTATUS, …; meaning depends on the name
  std::span<const std::byte> desc;  // descriptor bytes, inside the mapping
};

class elf_core {
 public:
  // Maps and validates `path`.
  explicit elf_core(const std::filesystem::path& path);
  // Validates an already mapped file (the core keeps it mapped).
  explicit elf_core(std::shared_ptr<const mapped_file> file);

  [[nodiscard]] const std::filesystem::path& path() const { return file_->path(); }
  [[nodiscard]] u32 machine() const { return machine_; }  // e_machine: EM_X86_64, EM_AARCH64, …
  [[nodiscard]] std::span<const elf_load_segment> load_segments() const { return loads_; }
  // Notes in file order; views stay valid while this core lives.
  [[nodiscard]] std::span<const elf_note> notes() const { return notes_; }
  [[nodiscard]] const std::shared_ptr<const mapped_file>& file() const { return file_; }

 private:
  void parse();

  std::shared_ptr<const mapped_file> file_;
  u32 machine_ = 0;
  std::vector<elf_load_segment> loads_;
  std::vector<elf_note> notes_;
};

// Appends the notes in `bytes` to `out` as views into `bytes`: (namesz,
// descsz, type, name, desc) with name and desc padded to `pad` (4, or 8 in
// a PT_NOTE segment aligned to 8, as binutils reads them). ELF cores and
// compressed kdump files carry the same notes. Errors name `file`, the
// note's offset (`bytes` start at `file_offset`) and `area` ("PT_NOTE
// segment", …).
void parse_elf_notes(std::span<const std::byte> bytes, u64 pad, std::string_view file, u64 file_offset,
                     std::string_view area, std::vector<elf_note>& out);

// True when `bytes` start with the ELF magic (to tell cores from raw images).
[[nodiscard]] bool has_elf_magic(std::span<const std::byte> bytes);

// Adds the file-backed part of every PT_LOAD segment to `image`. Where
// segments overlap (kdump repeats the kernel text as its own segment), the
// first segment in file order backs the overlap and later ones fill only
// the gaps, so overlap is never an error.
void add_elf_regions(memory_image& image, const elf_core& core);

}  // namespace ptwalk
