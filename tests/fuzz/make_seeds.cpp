// tests/fuzz/make_seeds.cpp — writes the fuzz targets' seed corpora from the tests' builders.
//
// `ptwalk_fuzz_seeds DIR` fills DIR/manifest, DIR/elf_core, DIR/kdump and
// DIR/walker with valid inputs of every kind the tests build (so the fuzzer
// starts from files that reach deep into each parser), and with the
// hostile cases of issue 9 that once crashed or hung.
#include <elf.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "fuzz_image.hpp"
#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/cpu_notes.hpp"
#include "support/elf_builder.hpp"
#include "support/kdump_builder.hpp"
#include "support/random_forest.hpp"

namespace {

using namespace ptwalk;
using namespace ptwalk::testing;

class corpus {
 public:
  corpus(const std::filesystem::path& root, const char* name) : dir_(root / name) {
    std::filesystem::create_directories(dir_);
  }
  void add(std::span<const std::byte> bytes) {
    std::ofstream(dir_ / fmt::format("seed-{:03}", count_++), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  void add(std::string_view text) { add(std::as_bytes(std::span(text.data(), text.size()))); }

 private:
  std::filesystem::path dir_;
  unsigned count_ = 0;
};

std::vector<std::byte> pattern(std::size_t size, u8 seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(seed + 7 * i + i / 251);
  return bytes;
}

std::vector<elf_core_builder::note> guest_notes(u64 cr3, u64 cr4) {
  return {{"CORE", NT_PRSTATUS, prstatus_note(1, 0xffffffff81000000ull)},
          {"QEMU", 0, qemu_note(paging_on, cr3, cr4)},
          {"VMCOREINFO", 0, text("OSRELEASE=6.1.0\nNUMBER(pgtable_l5_enabled)=0\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n")}};
}

void manifest_seeds(corpus& out) {
  out.add(R"({"id":"a","format":"x86_64","memory":{"raw":"a.img","base":"0x1000"},"roots":["0x1000","0x2003"],)"
          R"("labels":["1","pti-user"],"meta":{"kind":"gen","n":[1,2.5,-3e10,null,true,{"x":"\u00e9"}]}})");
  out.add(R"({"id":"b","format":"x86_64-la57","memory":{"elf":"b.core"},"roots":["0x1000"]})");
  out.add(R"({"id":"c","format":"x86_64","memory":{"kdump":"c.kdump"},"roots":["0x1000"]})");
  out.add(R"({"id":"d","format":"x86_64","memory":{"regions":[{"path":"f","gpa":"0x0","size":"0x1000","offset":"0x0"},)"
          R"({"path":"g","gpa":"0x2000","size":"0x1000"}]},"roots":["0x0"],"meta":{"compaction":{"keep_pa":true}}})");
  out.add(R"({"id":"e","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"meta":{"a":[1,{"b":1e400}]}})");
  out.add(R"({"id":"f","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"meta":{"x":)" + std::string(200, '[') +
          std::string(200, ']') + "}}");
  for (const auto& s : generate_fleet(parse_fleet_shape("everything,snapshots=2,spaces=3,pages=4,kernel=8")).snapshots)
    out.add(format_manifest_line(s.spec));
}

void elf_seeds(corpus& out) {
  for (const bool extended : {false, true})
    for (const u64 align : {4, 8}) {
      elf_core_builder b;
      b.add_load(0, pattern(0x3000, 1), 0x4000);
      b.add_load(0x100000, pattern(0x1000, 2));
      b.add_load(0x1000, pattern(0x1000, 3));  // overlaps the first
      b.set_notes(guest_notes(0x1000, extended ? cr4_la57 : cr4_4level), align);
      if (extended) b.use_extended_count();
      out.add(b.build());
    }
}

void kdump_seeds(corpus& out) {
  const u32 compressions[] = {0, kdump_zlib, kdump_lzo, kdump_snappy, kdump_zstd};
  for (const u32 version : {1u, 3u, 4u, 6u})
    for (const bool incomplete : {false, true}) {
      kdump_builder b;
      b.header_version = version;
      b.status = incomplete ? kdump_incomplete : 0;
      b.notes = elf_core_builder::encode_notes(guest_notes(0x1000, cr4_4level), 4);
      b.vmcoreinfo = "OSRELEASE=6.1.0\n";
      for (u64 pfn = 0; pfn < 10; ++pfn) b.add_page(pfn, pattern(4096, static_cast<u8>(pfn)), compressions[pfn % 5]);
      b.add_zero_page(12);
      b.add_filtered_page(14);
      const auto plain = b.build();
      out.add(plain);
      out.add(kdump_builder::flatten(plain, version == 6 ? 1000 : 4096));
    }
}

void walker_seeds(corpus& out) {
  for (const unsigned levels : {4u, 5u})
    for (u64 seed = 1; seed <= 6; ++seed) {
      forest_shape shape;
      shape.levels = levels;
      shape.tables_per_depth = 3;
      shape.entries_per_table = 12;
      shape.cut_pages = seed % 3 == 0 ? 0.2 : 0.0;
      out.add(fuzz::encode_snapshot(random_forest(shape, seed).snapshot("seed")));
    }
  // Every AArch64 granule, with and without a shared TTBR1 (kernel half);
  // small enough for the walker's -max_len.
  for (const char* kernel : {"share_kernel=1", "share_kernel=0"})
    for (const auto& s : generate_fleet(parse_fleet_shape(fmt::format(
                                            "arm=mixed,snapshots=6,spaces=2,pages=2,kernel=2,large=0,frames=8,{}", kernel)))
                             .snapshots)
      out.add(fuzz::encode_snapshot(s, /*skip_zero_pages=*/true));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  corpus manifest(root, "manifest"), elf(root, "elf_core"), kdump(root, "kdump"), walker(root, "walker");
  manifest_seeds(manifest);
  elf_seeds(elf);
  kdump_seeds(kdump);
  walker_seeds(walker);
  return 0;
}
