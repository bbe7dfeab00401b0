// host/elf_core.cpp — strict ELF64 core parsing: header, program headers, notes.
#include "input/elf_core.hpp"

#include <elf.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>

#include <fmt/format.h>

namespace ptwalk {

// Headers are copied out of the mapping as host structs.
static_assert(std::endian::native == std::endian::little, "ELF cores are read as little-endian");

namespace {

// Copies a T from `offset` if the file holds all of it.
template <class T>
bool read_struct(std::span<const std::byte> bytes, u64 offset, T& out) {
  if (offset > bytes.size() || sizeof(T) > bytes.size() - offset) return false;
  std::memcpy(&out, bytes.data() + offset, sizeof(T));
  return true;
}

bool fits(u64 offset, u64 size, u64 file_size) {
  return offset <= file_size && size <= file_size - offset;
}

constexpr u64 align_up(u64 value, u64 align) { return (value + align - 1) & ~(align - 1); }

}  // namespace

bool has_elf_magic(std::span<const std::byte> bytes) {
  return bytes.size() >= SELFMAG && std::memcmp(bytes.data(), ELFMAG, SELFMAG) == 0;
}

elf_core::elf_core(const std::filesystem::path& path)
    : elf_core(std::make_shared<const mapped_file>(path)) {}

elf_core::elf_core(std::shared_ptr<const mapped_file> file) : file_(std::move(file)) { parse(); }

void elf_core::parse() {
  const auto bytes = file_->bytes();
  const auto fail = [&](std::string_view problem) {
    return input_error(fmt::format("{}: {}", file_->path().string(), problem));
  };
  if (!has_elf_magic(bytes)) throw fail("not an ELF file (bad magic)");
  if (bytes.size() < EI_NIDENT) throw fail("truncated ELF header");
  if (static_cast<u8>(bytes[EI_CLASS]) != ELFCLASS64) throw fail("not a 64-bit ELF file");
  if (static_cast<u8>(bytes[EI_DATA]) != ELFDATA2LSB) throw fail("not a little-endian ELF file");
  Elf64_Ehdr header{};
  if (!read_struct(bytes, 0, header)) throw fail("truncated ELF header");
  if (header.e_type != ET_CORE)
    throw fail(fmt::format("not an ELF core file (e_type {})", header.e_type));
  machine_ = header.e_machine;

  // With PN_XNUM program headers (QEMU writes it for huge guests) the real
  // count is in section header 0's sh_info.
  u64 phnum = header.e_phnum;
  if (phnum == PN_XNUM) {
    Elf64_Shdr section0{};
    if (header.e_shoff == 0 || !read_struct(bytes, header.e_shoff, section0))
      throw fail("truncated section header 0 (needed for the PN_XNUM program header count)");
    phnum = section0.sh_info;
  }
  if (phnum == 0) return;
  if (header.e_phentsize != sizeof(Elf64_Phdr))
    throw fail(fmt::format("program header size {} (expected {})", header.e_phentsize,
                           sizeof(Elf64_Phdr)));
  if (!fits(header.e_phoff, phnum * sizeof(Elf64_Phdr), bytes.size()))
    throw fail(fmt::format("truncated program headers ({} at offset {:#x}, file is {:#x} bytes)",
                           phnum, header.e_phoff, bytes.size()));

  for (u64 i = 0; i < phnum; ++i) {
    Elf64_Phdr ph{};
    (void)read_struct(bytes, header.e_phoff + i * sizeof(Elf64_Phdr), ph);
    if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE) continue;
    if (!fits(ph.p_offset, ph.p_filesz, bytes.size()))
      throw fail(fmt::format("segment {} (offset {:#x}, {:#x} bytes) runs past the end of the file "
                             "({:#x} bytes)",
                             i, ph.p_offset, ph.p_filesz, bytes.size()));
    if (ph.p_type == PT_NOTE) {
      parse_elf_notes(bytes.subspan(ph.p_offset, ph.p_filesz), ph.p_align == 8 ? 8 : 4,
                      file_->path().string(), ph.p_offset, "PT_NOTE segment", notes_);
      continue;
    }
    if (ph.p_filesz > ph.p_memsz)
      throw fail(fmt::format("segment {}: file size {:#x} exceeds memory size {:#x}", i,
                             ph.p_filesz, ph.p_memsz));
    if (ph.p_paddr + ph.p_memsz < ph.p_paddr)
      throw fail(fmt::format("segment {}: physical range {:#x}+{:#x} wraps past 2^64", i,
                             ph.p_paddr, ph.p_memsz));
    loads_.push_back({ph.p_paddr, ph.p_vaddr, ph.p_offset, ph.p_filesz, ph.p_memsz, ph.p_flags});
  }
}

void parse_elf_notes(std::span<const std::byte> bytes, u64 pad, std::string_view file, u64 file_offset,
                     std::string_view area, std::vector<elf_note>& out) {
  u64 at = 0;
  while (at < bytes.size()) {
    Elf64_Nhdr nh{};
    if (!read_struct(bytes, at, nh))
      throw input_error(fmt::format("{}: truncated note header at offset {:#x}", file, file_offset + at));
    const u64 name_at = at + sizeof(nh);
    const u64 desc_at = align_up(name_at + nh.n_namesz, pad);
    const u64 next = align_up(desc_at + nh.n_descsz, pad);
    // The last note's padding may be cut off; its name and descriptor may not.
    if (!fits(name_at, nh.n_namesz, bytes.size()) || !fits(desc_at, nh.n_descsz, bytes.size()))
      throw input_error(fmt::format("{}: note at offset {:#x} runs past its {}", file, file_offset + at, area));
    std::string_view name(reinterpret_cast<const char*>(bytes.data() + name_at), nh.n_namesz);
    if (const auto nul = name.find('\0'); nul != std::string_view::npos) name = name.substr(0, nul);
    out.push_back({name, nh.n_type, bytes.subspan(desc_at, nh.n_descsz)});
    at = next;
  }
}

void add_elf_regions(memory_image& image, const elf_core& core) {
  std::map<u64, u64> covered;  // start → end of the physical ranges added so far, disjoint
  for (const auto& segment : core.load_segments()) {
    u64 lo = segment.paddr;
    const u64 hi = segment.paddr + segment.file_size;
    // Add the parts of [lo, hi) that no earlier segment covers.
    auto next = covered.upper_bound(lo);
    if (next != covered.begin() && std::prev(next)->second > lo) lo = std::prev(next)->second;
    while (lo < hi) {
      const u64 piece_end = next == covered.end() ? hi : std::min(hi, next->first);
      if (piece_end > lo) {
        image.add_file_region(core.file(), segment.file_offset + (lo - segment.paddr),
                              piece_end - lo, lo);
        covered.emplace(lo, piece_end);
      }
      if (next == covered.end()) break;
      lo = std::max(lo, next->second);
      ++next;
    }
  }
}

}  // namespace ptwalk
