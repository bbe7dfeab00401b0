// ELF64 core parsing: load segments and notes of hand-built cores, their
// regions in an image, and every validation error on broken files.
#include <gtest/gtest.h>

#include <cstring>

#include <fmt/format.h>

#include "input/elf_core.hpp"
#include "support/error_of.hpp"
#include "support/elf_builder.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::elf_core_builder;

std::vector<std::byte> pattern(std::size_t size, u8 seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(seed + 3 * i);
  return bytes;
}
std::vector<std::byte> text_bytes(std::string_view text) {
  const auto* p = reinterpret_cast<const std::byte*>(text.data());
  return {p, p + text.size()};
}

using testing::error_of;

// A QEMU-like core: CPU notes, low memory, and high memory whose last page is unbacked.
elf_core_builder qemu_like_core() {
  elf_core_builder b;
  b.set_notes({{"CORE", NT_PRSTATUS, pattern(336, 1)},
               {"QEMU", 0, pattern(5, 2)},
               {"VMCOREINFO", 0, text_bytes("OSRELEASE=6.1.0\nPAGESIZE=4096\n")}});
  b.add_load(0x0, pattern(0x3000, 10));
  b.add_load(0x100000, pattern(0x2000, 20), 0x3000);
  return b;
}

TEST(elf_core, load_segments_and_notes) {
  testing::temp_dir dir;
  const auto path = dir.write("vm.elf", qemu_like_core().build());
  const elf_core core(path);
  EXPECT_EQ(core.machine(), u32{EM_X86_64});
  ASSERT_EQ(core.load_segments().size(), 2u);
  const auto& low = core.load_segments()[0];
  const auto& high = core.load_segments()[1];
  EXPECT_EQ(low.paddr, 0u);
  EXPECT_EQ(low.file_size, 0x3000u);
  EXPECT_EQ(low.mem_size, 0x3000u);
  EXPECT_EQ(high.paddr, 0x100000u);
  EXPECT_EQ(high.file_size, 0x2000u);
  EXPECT_EQ(high.mem_size, 0x3000u);
  EXPECT_EQ(high.flags, u32{PF_R | PF_W | PF_X});

  ASSERT_EQ(core.notes().size(), 3u);
  EXPECT_EQ(core.notes()[0].name, "CORE");
  EXPECT_EQ(core.notes()[0].type, u32{NT_PRSTATUS});
  EXPECT_EQ(std::vector(core.notes()[0].desc.begin(), core.notes()[0].desc.end()), pattern(336, 1));
  EXPECT_EQ(core.notes()[1].name, "QEMU");
  EXPECT_EQ(std::vector(core.notes()[1].desc.begin(), core.notes()[1].desc.end()), pattern(5, 2));
  EXPECT_EQ(core.notes()[2].name, "VMCOREINFO");
  const auto& info = core.notes()[2].desc;
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(info.data()), info.size()),
            "OSRELEASE=6.1.0\nPAGESIZE=4096\n");
}

TEST(elf_core, regions_are_the_file_backed_part_of_each_load) {
  testing::temp_dir dir;
  const auto path = dir.write("vm.elf", qemu_like_core().build());
  memory_image image;
  add_elf_regions(image, elf_core(path));
  ASSERT_EQ(image.regions().size(), 2u);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x0, 0x3000), pattern(0x3000, 10).data(), 0x3000), 0);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x100000, 0x2000), pattern(0x2000, 20).data(), 0x2000), 0);
  // p_memsz beyond p_filesz is unbacked: reads there are dangling.
  bool backed = true;
  EXPECT_EQ(image.read_u64(0x102000, backed), 0u);
  EXPECT_FALSE(backed);
}

TEST(elf_core, overlapping_loads_keep_the_first_and_fill_gaps) {
  // kdump repeats the kernel text (here 0x1000..0x3000) ahead of the RAM segment.
  elf_core_builder b;
  b.add_load(0x1000, pattern(0x2000, 50));
  b.add_load(0x0, pattern(0x5000, 60));
  b.add_load(0x4000, pattern(0x2000, 70));  // overlaps the RAM tail, adds 0x5000..0x6000
  testing::temp_dir dir;
  memory_image image;
  add_elf_regions(image, elf_core(dir.write("kdump.elf", b.build())));
  std::vector<std::pair<u64, u64>> regions;
  for (const auto& r : image.regions()) regions.emplace_back(r.gpa, r.size);
  EXPECT_EQ(regions, (std::vector<std::pair<u64, u64>>{
                         {0x0, 0x1000}, {0x1000, 0x2000}, {0x3000, 0x2000}, {0x5000, 0x1000}}));
  const auto ram = pattern(0x5000, 60);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x1000, 0x2000), pattern(0x2000, 50).data(), 0x2000), 0);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x0, 0x1000), ram.data(), 0x1000), 0);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x3000, 0x2000), ram.data() + 0x3000, 0x2000), 0);
  EXPECT_EQ(std::memcmp(image.bytes_at(0x5000, 0x1000), pattern(0x2000, 70).data() + 0x1000, 0x1000), 0);
}

TEST(elf_core, extended_program_header_count) {
  elf_core_builder b = qemu_like_core();
  b.use_extended_count();
  testing::temp_dir dir;
  const elf_core core(dir.write("big.elf", b.build()));
  EXPECT_EQ(core.load_segments().size(), 2u);
  EXPECT_EQ(core.notes().size(), 3u);
}

TEST(elf_core, notes_aligned_to_eight) {
  elf_core_builder b;
  b.set_notes({{"CORE", 1, pattern(12, 0)}, {"LINUX", NT_X86_XSTATE, pattern(3, 9)}}, 8);
  testing::temp_dir dir;
  const elf_core core(dir.write("n8.elf", b.build()));
  ASSERT_EQ(core.notes().size(), 2u);
  EXPECT_EQ(core.notes()[1].name, "LINUX");
  EXPECT_EQ(core.notes()[1].type, u32{NT_X86_XSTATE});
  EXPECT_EQ(std::vector(core.notes()[1].desc.begin(), core.notes()[1].desc.end()), pattern(3, 9));
}

TEST(elf_core, magic_detection) {
  EXPECT_TRUE(has_elf_magic(qemu_like_core().build()));
  EXPECT_FALSE(has_elf_magic(text_bytes("\x7f" "EL")));
  EXPECT_FALSE(has_elf_magic(text_bytes("{\"id\":1}")));
}

// Builds a good core, lets `breakage` damage its bytes, and returns the parse error.
template <class Breakage>
std::string error_after(Breakage&& breakage) {
  auto bytes = qemu_like_core().build();
  breakage(bytes);
  testing::temp_dir dir;
  const auto path = dir.write("bad.elf", bytes);
  const std::string message = error_of([&] { (void)elf_core(path); });
  const std::string prefix = path.string() + ": ";
  return message.starts_with(prefix) ? message.substr(prefix.size()) : "(not naming the file) " + message;
}

template <class Field>
void patch(std::vector<std::byte>& bytes, std::size_t offset, Field value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(value));
}

TEST(elf_core, broken_files_are_named_with_their_problem) {
  EXPECT_EQ(error_after([](auto& b) { b.clear(); }), "not an ELF file (bad magic)");
  EXPECT_EQ(error_after([](auto& b) { b[1] = std::byte{'X'}; }), "not an ELF file (bad magic)");
  EXPECT_EQ(error_after([](auto& b) { b.resize(10); }), "truncated ELF header");
  EXPECT_EQ(error_after([](auto& b) { b.resize(40); }), "truncated ELF header");
  EXPECT_EQ(error_after([](auto& b) { b[EI_CLASS] = std::byte{ELFCLASS32}; }), "not a 64-bit ELF file");
  EXPECT_EQ(error_after([](auto& b) { b[EI_DATA] = std::byte{ELFDATA2MSB}; }), "not a little-endian ELF file");
  EXPECT_EQ(error_after([](auto& b) { patch<Elf64_Half>(b, offsetof(Elf64_Ehdr, e_type), ET_EXEC); }),
            "not an ELF core file (e_type 2)");
  EXPECT_EQ(error_after([](auto& b) { patch<Elf64_Half>(b, offsetof(Elf64_Ehdr, e_phentsize), 32); }),
            "program header size 32 (expected 56)");
  // Cut inside the third program header.
  EXPECT_EQ(error_after([](auto& b) { b.resize(elf_core_builder::phdr_offset(2) + 20); }),
            "truncated program headers (3 at offset 0x40, file is 0xc4 bytes)");
  // Cut inside the last segment's bytes.
  EXPECT_EQ(error_after([](auto& b) { b.resize(b.size() - 1); }),
            fmt::format("segment 2 (offset {:#x}, 0x2000 bytes) runs past the end of the file ({:#x} bytes)",
                        qemu_like_core().build().size() - 0x2000, qemu_like_core().build().size() - 1));
  EXPECT_EQ(error_after([](auto& b) {
              patch<Elf64_Xword>(b, elf_core_builder::phdr_offset(1) + offsetof(Elf64_Phdr, p_memsz), 0x10);
            }),
            "segment 1: file size 0x3000 exceeds memory size 0x10");
  EXPECT_EQ(error_after([](auto& b) {
              patch<Elf64_Xword>(b, elf_core_builder::phdr_offset(2) + offsetof(Elf64_Phdr, p_paddr), ~u64{0xfff});
            }),
            "segment 2: physical range 0xfffffffffffff000+0x3000 wraps past 2^64");
  // The first note claims a descriptor longer than the whole PT_NOTE segment.
  EXPECT_EQ(error_after([](auto& b) {
              u64 notes_at = 0;
              std::memcpy(&notes_at, b.data() + elf_core_builder::phdr_offset(0) + offsetof(Elf64_Phdr, p_offset), 8);
              patch<Elf64_Word>(b, notes_at + offsetof(Elf64_Nhdr, n_descsz), 0x10000);
            }),
            fmt::format("note at offset {:#x} runs past its PT_NOTE segment",
                        elf_core_builder::phdr_offset(3)));
  EXPECT_EQ(error_after([](auto& b) {
              patch<Elf64_Half>(b, offsetof(Elf64_Ehdr, e_phnum), PN_XNUM);
              patch<Elf64_Xword>(b, offsetof(Elf64_Ehdr, e_shoff), b.size() - 8);
            }),
            "truncated section header 0 (needed for the PN_XNUM program header count)");
}

TEST(elf_core, missing_file_is_named) {
  testing::temp_dir dir;
  EXPECT_EQ(error_of([&] { (void)elf_core(dir / "none.elf"); }),
            (dir / "none.elf").string() + ": cannot open: No such file or directory");
}

}  // namespace
}  // namespace ptwalk
