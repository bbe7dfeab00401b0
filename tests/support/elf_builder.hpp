// tests/support/elf_builder.hpp — small ELF64 core files built by hand, for tests.
//
// Lays out what QEMU's dump-guest-memory writes: the ELF header, the
// program headers (PT_NOTE first, then PT_LOAD in the order added), and
// the segment contents, from the <elf.h> structs. Tests break the bytes it
// returns to check each validation.
#pragma once

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "ptwalk/config.hpp"

namespace ptwalk::testing {

class elf_core_builder {
 public:
  struct note {
    std::string name;
    u32 type = 0;
    std::vector<std::byte> desc;
  };

  // A PT_LOAD at `paddr` backed by `bytes`, covering max(mem_size, bytes) bytes.
  void add_load(u64 paddr, std::vector<std::byte> bytes, u64 mem_size = 0) {
    loads_.push_back({paddr, std::move(bytes), mem_size});
  }
  // One PT_NOTE segment holding `notes`, padded to `align` (4, or 8).
  void set_notes(std::vector<note> notes, u64 align = 4) {
    notes_ = std::move(notes);
    note_align_ = align;
  }
  // Writes the program header count through section header 0 (PN_XNUM), as
  // QEMU does for guests with more than 65534 segments.
  void use_extended_count() { extended_count_ = true; }

  [[nodiscard]] std::vector<std::byte> build() const {
    const bool has_notes = !notes_.empty();
    const std::size_t phnum = loads_.size() + (has_notes ? 1 : 0);
    std::vector<std::byte> out(sizeof(Elf64_Ehdr) + phnum * sizeof(Elf64_Phdr) +
                               (extended_count_ ? sizeof(Elf64_Shdr) : 0));
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_CORE;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = extended_count_ ? PN_XNUM : static_cast<Elf64_Half>(phnum);
    if (extended_count_) {
      Elf64_Shdr section0{};
      section0.sh_info = static_cast<u32>(phnum);
      eh.e_shoff = sizeof(Elf64_Ehdr) + phnum * sizeof(Elf64_Phdr);
      eh.e_shentsize = sizeof(Elf64_Shdr);
      eh.e_shnum = 1;
      std::memcpy(out.data() + eh.e_shoff, &section0, sizeof(section0));
    }
    std::memcpy(out.data(), &eh, sizeof(eh));

    std::size_t index = 0;
    const auto add_segment = [&](u32 type, u64 paddr, const std::vector<std::byte>& bytes, u64 mem_size,
                                 u64 align) {
      Elf64_Phdr ph{};
      ph.p_type = type;
      ph.p_flags = type == PT_LOAD ? PF_R | PF_W | PF_X : 0;
      ph.p_offset = out.size();
      ph.p_paddr = paddr;
      ph.p_filesz = bytes.size();
      ph.p_memsz = std::max<u64>(mem_size, bytes.size());
      ph.p_align = align;
      std::memcpy(out.data() + sizeof(Elf64_Ehdr) + index++ * sizeof(Elf64_Phdr), &ph, sizeof(ph));
      out.insert(out.end(), bytes.begin(), bytes.end());
    };
    if (has_notes) add_segment(PT_NOTE, 0, encode_notes(notes_, note_align_), 0, note_align_);
    for (const auto& load : loads_) add_segment(PT_LOAD, load.paddr, load.bytes, load.mem_size, 0);
    return out;
  }

  // Notes as a PT_NOTE segment (or a kdump note area) holds them, padded to `align`.
  [[nodiscard]] static std::vector<std::byte> encode_notes(const std::vector<note>& notes, u64 align) {
    std::vector<std::byte> out;
    const auto pad = [&] { out.resize((out.size() + align - 1) / align * align); };
    for (const auto& n : notes) {
      Elf64_Nhdr nh{static_cast<u32>(n.name.size() + 1), static_cast<u32>(n.desc.size()), n.type};
      const auto* header = reinterpret_cast<const std::byte*>(&nh);
      out.insert(out.end(), header, header + sizeof(nh));
      const auto* name = reinterpret_cast<const std::byte*>(n.name.c_str());
      out.insert(out.end(), name, name + n.name.size() + 1);
      pad();
      out.insert(out.end(), n.desc.begin(), n.desc.end());
      pad();
    }
    return out;
  }

  // Offset of program header `index` in the built file.
  static constexpr std::size_t phdr_offset(std::size_t index) {
    return sizeof(Elf64_Ehdr) + index * sizeof(Elf64_Phdr);
  }

 private:
  struct load {
    u64 paddr;
    std::vector<std::byte> bytes;
    u64 mem_size;
  };

  std::vector<load> loads_;
  std::vector<note> notes_;
  u64 note_align_ = 4;
  bool extended_count_ = false;
};

}  // namespace ptwalk::testing
