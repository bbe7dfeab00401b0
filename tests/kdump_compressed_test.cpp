// Compressed kdump files built by hand (tests/support/kdump_builder.hpp):
// every compression back to its page bytes, flattened streams, notes and
// VMCOREINFO, header versions, incomplete dumps, every malformed file as a
// one-line error, the "kdump" manifest source, and the CLI on a tiny guest.
#include <gtest/gtest.h>

#include <elf.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "input/cpu_state.hpp"
#include "input/kdump_compressed.hpp"
#include "input/manifest.hpp"
#include "support/error_of.hpp"
#include "support/cpu_notes.hpp"
#include "support/elf_builder.hpp"
#include "support/kdump_builder.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::kdump_builder;
using testing::store;

std::vector<std::byte> pattern(std::size_t size, u8 seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(seed + 7 * i + i / 251);
  return bytes;
}

memory_image load(const std::filesystem::path& path, unsigned jobs = 0) {
  memory_image image;
  kdump_file(path).add_regions(image, jobs);
  return image;
}

using testing::error_of;

struct range {
  u64 gpa, size;
  friend bool operator==(const range&, const range&) = default;
};
std::vector<range> regions_of(const memory_image& image) {
  std::vector<range> out;
  for (const auto& r : image.regions()) out.push_back({r.gpa, r.size});
  return out;
}

bool page_equals(const memory_image& image, u64 pa, std::span<const std::byte> expected) {
  const std::byte* p = image.bytes_at(pa, expected.size());
  return p != nullptr && std::memcmp(p, expected.data(), expected.size()) == 0;
}

constexpr u32 compressions[] = {0, kdump_zlib, kdump_lzo, kdump_snappy, kdump_zstd};

TEST(KdumpCompressed, EveryCompressionGivesBackItsPageAndFilteredFramesAreUnbacked) {
  const testing::temp_dir dir;
  kdump_builder b;
  b.max_mapnr = 0x200;
  for (u64 pfn = 0; pfn < 5; ++pfn) b.add_page(pfn, pattern(4096, static_cast<u8>(pfn)), compressions[pfn]);
  b.add_zero_page(5);
  b.add_filtered_page(6);
  b.add_page(8, pattern(4096, 8), kdump_zlib);
  b.add_zero_page(0x100);
  b.add_page(0x101, pattern(4096, 9), kdump_zstd);
  const auto path = dir.write("vm.kdump", b.build());

  const kdump_file dump(path);
  EXPECT_FALSE(dump.header().flattened);
  EXPECT_EQ(dump.header().header_version, 6u);
  EXPECT_EQ(dump.header().machine, "x86_64");
  EXPECT_EQ(dump.header().release, "6.1.0-test");
  EXPECT_EQ(dump.header().block_size, 4096u);
  EXPECT_EQ(dump.header().max_mapnr, 0x200u);
  EXPECT_EQ(dump.header().dump_level, 1u);
  EXPECT_EQ(kdump_compression_name(dump.header().status), "zlib+lzo+snappy+zstd");
  EXPECT_EQ(dump.machine(), u32{EM_X86_64});
  EXPECT_EQ(dump.dumped_pages(), 9u);

  const auto image = load(path);
  EXPECT_EQ(regions_of(image), (std::vector<range>{{0, 0x6000}, {0x8000, 0x1000}, {0x100000, 0x2000}}));
  for (u64 pfn = 0; pfn < 5; ++pfn)
    EXPECT_TRUE(page_equals(image, pfn << 12, pattern(4096, static_cast<u8>(pfn)))) << "pfn " << pfn;
  EXPECT_TRUE(page_equals(image, 0x5000, std::vector<std::byte>(4096)));
  EXPECT_TRUE(page_equals(image, 0x8000, pattern(4096, 8)));
  EXPECT_TRUE(page_equals(image, 0x100000, std::vector<std::byte>(4096)));
  EXPECT_TRUE(page_equals(image, 0x101000, pattern(4096, 9)));
  // Filtered by the dump level, or never RAM: unbacked, read as dangling.
  EXPECT_EQ(image.find(0x6000, 8), nullptr);
  EXPECT_EQ(image.find(0x7000, 8), nullptr);
  EXPECT_EQ(image.find(0x102000, 8), nullptr);
}

TEST(KdumpCompressed, ManyPagesDecompressTheSameOnAnyNumberOfThreads) {
  const testing::temp_dir dir;
  kdump_builder b;
  // Three runs, one longer than a task (1024 pages), every compression mixed in.
  std::vector<u64> pfns;
  for (u64 pfn = 0; pfn < 2600; ++pfn) pfns.push_back(pfn);
  for (u64 pfn = 3000; pfn < 3100; ++pfn) pfns.push_back(pfn);
  for (u64 pfn = 0x10000; pfn < 0x10010; ++pfn) pfns.push_back(pfn);
  for (const u64 pfn : pfns) {
    if (pfn % 7 == 3)
      b.add_zero_page(pfn);
    else
      b.add_page(pfn, pattern(4096, static_cast<u8>(pfn * 13)), compressions[pfn % 5]);
  }
  const auto path = dir.write("many.kdump", b.build());
  const auto one = load(path, 1), three = load(path, 3);
  EXPECT_EQ(regions_of(one), (std::vector<range>{{0, 2600 << 12}, {3000 << 12, 100 << 12}, {0x10000000, 16 << 12}}));
  EXPECT_EQ(regions_of(three), regions_of(one));
  for (const u64 pfn : pfns) {
    const auto expected = pfn % 7 == 3 ? std::vector<std::byte>(4096) : pattern(4096, static_cast<u8>(pfn * 13));
    ASSERT_TRUE(page_equals(one, pfn << 12, expected)) << "pfn " << pfn;
    ASSERT_TRUE(page_equals(three, pfn << 12, expected)) << "pfn " << pfn;
  }
}

TEST(KdumpCompressed, TensOfThousandsOfRunsEachARegion) {
  const testing::temp_dir dir;
  // Every other frame filtered out (makedumpfile -d 31 fragments a dump):
  // 70,000 runs, each its own region of one mapping.
  kdump_builder b;
  constexpr u64 runs = 70'000;
  for (u64 pfn = 0; pfn < 2 * runs; pfn += 2) b.add_zero_page(pfn);
  b.add_page(2 * runs - 2, pattern(4096, 7), kdump_zstd);
  const auto image = load(dir.write("fragmented.kdump", b.build()));
  EXPECT_EQ(image.regions().size(), runs);
  EXPECT_EQ(image.find(0x1000, 8), nullptr);
  EXPECT_TRUE(page_equals(image, (2 * runs - 2) << 12, pattern(4096, 7)));
}

std::vector<std::byte> guest_notes(u64 cr3, std::string_view vmcoreinfo) {
  return testing::elf_core_builder::encode_notes(
      {{"CORE", NT_PRSTATUS, testing::prstatus_note(1, 0xffffffff81000000ull)},
       {"QEMU", 0, testing::qemu_note(testing::paging_on, cr3, testing::cr4_4level)},
       {"VMCOREINFO", 0, testing::text(vmcoreinfo)}},
      4);
}

TEST(KdumpCompressed, FlattenedStreamReadsLikeTheFileItFlattens) {
  const testing::temp_dir dir;
  kdump_builder b;
  b.notes = guest_notes(0x1062003, "OSRELEASE=6.1.0-56-amd64\n");
  for (u64 pfn = 0; pfn < 40; ++pfn) b.add_page(pfn, pattern(4096, static_cast<u8>(pfn)), compressions[pfn % 5]);
  b.add_zero_page(45);
  const auto plain_bytes = b.build();
  const auto plain = dir.write("plain.kdump", plain_bytes);
  // Records smaller than a page split headers, notes, bitmaps and pages.
  const auto flat = dir.write("flat.kdump", kdump_builder::flatten(plain_bytes, 1000));

  const kdump_file a(plain), f(flat);
  EXPECT_TRUE(f.header().flattened);
  EXPECT_EQ(f.header().max_mapnr, a.header().max_mapnr);
  ASSERT_EQ(f.notes().size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(f.notes()[i].name, a.notes()[i].name);
    EXPECT_EQ(f.notes()[i].type, a.notes()[i].type);
    EXPECT_TRUE(std::ranges::equal(f.notes()[i].desc, a.notes()[i].desc));
  }
  const auto from_plain = load(plain), from_flat = load(flat);
  EXPECT_EQ(regions_of(from_flat), regions_of(from_plain));
  for (u64 pfn = 0; pfn < 40; ++pfn)
    EXPECT_TRUE(page_equals(from_flat, pfn << 12, pattern(4096, static_cast<u8>(pfn)))) << "pfn " << pfn;
  EXPECT_TRUE(page_equals(from_flat, 45 << 12, std::vector<std::byte>(4096)));
}

TEST(KdumpCompressed, FlattenedStreamSmallerThanItsOwnBitmaps) {
  const testing::temp_dir dir;
  // A 4 GiB address space (QEMU dumps the BIOS below 4 GiB) with two
  // pages: 256 KiB of bitmaps, mostly holes the stream never writes.
  kdump_builder b;
  b.max_mapnr = u64{1} << 20;
  b.add_page(0, pattern(4096, 1), kdump_zlib);
  b.add_page(0xfffff, pattern(4096, 2), kdump_zlib);
  const auto flat = kdump_builder::flatten(b.build(), 4096);
  ASSERT_LT(flat.size(), 128u << 10);
  const auto image = load(dir.write("sparse.kdump", flat));
  EXPECT_EQ(regions_of(image), (std::vector<range>{{0, 0x1000}, {0xfffff000, 0x1000}}));
  EXPECT_TRUE(page_equals(image, 0xfffff000, pattern(4096, 2)));
}

TEST(KdumpCompressed, NotesGiveTheVcpusAndVmcoreinfoAsInAnElfCore) {
  const testing::temp_dir dir;
  kdump_builder b;
  b.notes = guest_notes(0x1062003, "OSRELEASE=6.1.0-56-amd64\nNUMBER(pgtable_l5_enabled)=0\n");
  b.vmcoreinfo = "OSRELEASE=ignored, the note has it\n";
  b.add_page(0, pattern(4096, 1), kdump_zlib);
  const kdump_file dump(dir.write("vm.kdump", b.build()));
  ASSERT_EQ(dump.notes().size(), 3u);
  const auto state = read_machine_state(dump.notes(), dump.machine(), dump.path().string());
  ASSERT_EQ(state.vcpus.size(), 1u);
  EXPECT_EQ(state.vcpus[0].pid, 1u);
  EXPECT_EQ(state.vcpus[0].cr3, 0x1062003u);
  EXPECT_EQ(state.vcpus[0].root(), 0x1062000u);
  ASSERT_TRUE(state.info.has_value());
  EXPECT_EQ(state.info->os_release(), "6.1.0-56-amd64");
  EXPECT_EQ(state.implied_format("vm.kdump"), paging_format::x86_64);
}

TEST(KdumpCompressed, OlderHeaderVersionsAndVmcoreinfoOnlyInTheSubHeader) {
  const testing::temp_dir dir;
  // Version 3: no note area, VMCOREINFO in its own field; max_mapnr in the
  // 32-bit header field (max_mapnr_64 came with version 6).
  kdump_builder b;
  b.header_version = 3;
  b.vmcoreinfo = "OSRELEASE=4.18.0\nNUMBER(pgtable_l5_enabled)=1\n";
  b.max_mapnr = 0x80;
  b.add_page(0x7f, pattern(4096, 3), kdump_lzo);
  const auto path = dir.write("v3.kdump", b.build());
  const kdump_file dump(path);
  EXPECT_EQ(dump.header().max_mapnr, 0x80u);
  ASSERT_EQ(dump.notes().size(), 1u);
  EXPECT_EQ(dump.notes()[0].name, "VMCOREINFO");
  const auto state = read_machine_state(dump.notes(), dump.machine(), path.string());
  EXPECT_TRUE(state.vcpus.empty());
  EXPECT_EQ(state.implied_format("v3.kdump"), paging_format::x86_64_la57);
  EXPECT_TRUE(page_equals(load(path), 0x7f000, pattern(4096, 3)));

  // Version 5 has notes but still the 32-bit max_mapnr.
  b.header_version = 5;
  b.vmcoreinfo.clear();
  b.notes = guest_notes(0x5000, "OSRELEASE=5.14\n");
  const auto v5 = dir.write("v5.kdump", b.build());
  EXPECT_EQ(kdump_file(v5).notes().size(), 3u);
  EXPECT_TRUE(page_equals(load(v5), 0x7f000, pattern(4096, 3)));
}

TEST(KdumpCompressed, VcpuOutsideLongModeHasI386NotesUnderAnX86_64Utsname) {
  const testing::temp_dir dir;
  kdump_builder b;
  // What QEMU writes for a guest still in its firmware: a 144-byte i386 NT_PRSTATUS.
  b.notes = testing::elf_core_builder::encode_notes(
      {{"CORE", NT_PRSTATUS, std::vector<std::byte>(144)}, {"QEMU", 0, testing::qemu_note(0x60000010, 0, 0, 0xfff0)}},
      4);
  b.add_page(0, pattern(4096, 1), 0);
  const kdump_file dump(dir.write("reset.kdump", b.build()));
  EXPECT_EQ(dump.machine(), u32{EM_386});
  const auto state = read_machine_state(dump.notes(), dump.machine(), "reset.kdump");
  ASSERT_EQ(state.vcpus.size(), 1u);
  EXPECT_FALSE(state.vcpus[0].paging_enabled());
}

TEST(KdumpCompressed, AnIncompleteDumpLosesOnlyThePagesItNeverWrote) {
  const testing::temp_dir dir;
  kdump_builder b;
  b.status = kdump_incomplete;
  for (u64 pfn = 0; pfn < 4; ++pfn) b.add_page(pfn, pattern(4096, static_cast<u8>(pfn)), kdump_zlib);
  kdump_builder::layout where;
  auto bytes = b.build(&where);
  // makedumpfile ran out of space: pfn 1's descriptor was never written.
  std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(where.descriptor_of[1]), 24, std::byte{0});
  const auto image = load(dir.write("partial.kdump", bytes));
  EXPECT_EQ(regions_of(image), (std::vector<range>{{0, 0x1000}, {0x2000, 0x2000}}));
  EXPECT_TRUE(page_equals(image, 0x3000, pattern(4096, 3)));
  // The same hole in a complete dump is an error.
  b.status = 0;
  bytes = b.build(&where);
  std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(where.descriptor_of[1]), 24, std::byte{0});
  const auto broken = dir.write("broken.kdump", bytes);
  EXPECT_EQ(error_of([&] { (void)load(broken); }),
            broken.string() + ": page at pfn 0x1 (data at offset 0x0, 0 bytes): stored uncompressed, but not as one "
                              "4096-byte page");
}

// A small valid dump to break: three pages, notes, VMCOREINFO.
kdump_builder small_dump() {
  kdump_builder b;
  b.notes = guest_notes(0x1000, "OSRELEASE=6.1\n");
  b.vmcoreinfo = "OSRELEASE=6.1\n";
  for (u64 pfn = 0; pfn < 3; ++pfn) b.add_page(pfn, pattern(4096, static_cast<u8>(pfn)), kdump_zlib);
  return b;
}

class KdumpErrors : public ::testing::Test {
 protected:
  // The error loading `bytes` gives, without the file name in front.
  std::string error(std::span<const std::byte> bytes) {
    const auto path = dir_.write("bad.kdump", bytes);
    const std::string message = error_of([&] { (void)load(path); });
    const std::string prefix = path.string() + ": ";
    if (message.rfind(prefix, 0) != 0) return "(does not name the file) " + message;
    if (message.find('\n') != std::string::npos) return "(more than one line) " + message;
    return message.substr(prefix.size());
  }
  testing::temp_dir dir_;
};

TEST_F(KdumpErrors, HeaderProblems) {
  kdump_builder::layout l;
  const auto good = small_dump().build(&l);
  auto bytes = good;
  bytes.resize(100);
  EXPECT_EQ(error(bytes), "disk_dump_header at offset 0x0 (464 bytes) runs past the end of the dump (0x64 bytes)");
  bytes = good;
  std::memcpy(bytes.data(), "KDUMP!!!", 8);
  EXPECT_EQ(error(bytes), "not a compressed kdump file (no \"KDUMP   \" signature)");
  std::memcpy(bytes.data(), "DISKDUMP", 8);
  EXPECT_EQ(error(bytes), "a diskdump file (\"DISKDUMP\" header, the format before kdump's) is not supported");
  bytes = good;
  store<u32>(bytes, 8, 0);
  EXPECT_EQ(error(bytes), "kdump header version 0 (expected 1 or later)");
  bytes = good;
  store<u32>(bytes, 428, 5000);
  EXPECT_EQ(error(bytes), "block size 5000 is not a power of two from 4096 to 65536");
  bytes = good;
  std::memcpy(bytes.data() + 12 + 4 * 65, "i686\0\0", 6);
  EXPECT_EQ(error(bytes),
            "machine \"i686\": only dumps of 64-bit kernels (x86_64, aarch64, ppc64, s390x, riscv64) are read");
  bytes = good;
  store<u32>(bytes, 432, 0);
  EXPECT_EQ(error(bytes), "sub-header of 0 blocks cannot hold version 6's 104 bytes");
  bytes = good;
  store<u32>(bytes, l.sub_header + 12, 1);
  EXPECT_EQ(error(bytes),
            "one part of a split dump (makedumpfile --split): join the parts with makedumpfile --reassemble");
}

TEST_F(KdumpErrors, AbsurdMaxMapnrAndBitmapsPastTheEnd) {
  kdump_builder::layout l;
  const auto good = small_dump().build(&l);
  auto bytes = good;
  store<u64>(bytes, l.sub_header + 96, u64{1} << 60);
  EXPECT_EQ(error(bytes), "max_mapnr 0x1000000000000000 pages of 4096 bytes lie past 2^64");
  store<u64>(bytes, l.sub_header + 96, u64{1} << 40);
  EXPECT_EQ(error(bytes), "bitmaps of 2 blocks cannot cover max_mapnr 0x10000000000 (137438953472 bytes each needed)");
  // Bitmaps the header sizes for a large guest, in a file that stops early.
  bytes = good;
  store<u32>(bytes, 436, 64);
  store<u64>(bytes, l.sub_header + 96, u64{1} << 20);
  EXPECT_EQ(error(bytes), fmt::format("2nd bitmap at offset {:#x} (131072 bytes) runs past the end of the dump ({:#x} "
                                      "bytes)",
                                      l.bitmaps + 32 * 4096, good.size()));
}

TEST_F(KdumpErrors, NotesAndVmcoreinfoPastTheEnd) {
  kdump_builder::layout l;
  const auto good = small_dump().build(&l);
  auto bytes = good;
  store<u64>(bytes, l.sub_header + 56, u64{1} << 60);
  EXPECT_EQ(error(bytes), fmt::format("note area at offset {:#x} (1152921504606846976 bytes) runs past the end of the "
                                      "dump ({:#x} bytes)",
                                      l.notes, good.size()));
  bytes = good;
  store<u32>(bytes, l.notes + 4, 100000);  // the first note's descsz
  EXPECT_EQ(error(bytes), fmt::format("note at offset {:#x} runs past its note area", l.notes));
  // VMCOREINFO is only read where no note carries it.
  auto b = small_dump();
  b.notes.clear();
  bytes = b.build(&l);
  store<u64>(bytes, l.sub_header + 32, bytes.size() - 4);
  EXPECT_EQ(error(bytes),
            fmt::format("VMCOREINFO at offset {:#x} (14 bytes) runs past the end of the dump ({:#x} bytes)",
                        bytes.size() - 4, bytes.size()));
}

TEST_F(KdumpErrors, DescriptorsAndPagesOutsideTheFile) {
  kdump_builder::layout l;
  const auto good = small_dump().build(&l);
  auto bytes = good;
  bytes.resize(l.descriptors + 30);
  EXPECT_EQ(error(bytes), fmt::format("3 page descriptors at offset {:#x} run past the end of the dump ({:#x} bytes)",
                                      l.descriptors, bytes.size()));
  bytes = good;
  const u64 d = l.descriptor_of[2];
  const u32 size = testing::load<u32>(bytes, d + 8);
  store<u64>(bytes, d, bytes.size() - 10);
  EXPECT_EQ(error(bytes), fmt::format("page at pfn 0x2 (data at offset {:#x}, {} bytes): runs past the end of the dump "
                                      "({:#x} bytes)",
                                      bytes.size() - 10, size, bytes.size()));
  bytes = good;
  store<u32>(bytes, l.descriptor_of[1] + 12, 0x40);
  EXPECT_EQ(error(bytes).substr(error(bytes).find(':') + 2), "unknown flags 0x40");
  store<u32>(bytes, l.descriptor_of[1] + 12, kdump_zlib | kdump_lzo);
  EXPECT_EQ(error(bytes).substr(error(bytes).find(':') + 2), "unknown compression flags 0x3");
  store<u32>(bytes, l.descriptor_of[1] + 12, 0);
  EXPECT_EQ(error(bytes).substr(error(bytes).find(':') + 2), "stored uncompressed, but not as one 4096-byte page");
  bytes = good;
  const u64 data = testing::load<u64>(bytes, l.descriptor_of[0]);
  bytes[data] = std::byte{0xff};  // the zlib header
  EXPECT_EQ(error(bytes).substr(error(bytes).find(':') + 2), "zlib data is corrupt (incorrect header check)");
}

// A page whose payload decompresses to `size` bytes, with every compression.
TEST_F(KdumpErrors, PagesThatDoNotDecompressToOnePage) {
  const std::pair<u32, std::string_view> cases[] = {
      {kdump_zlib, "zlib"}, {kdump_lzo, "LZO"}, {kdump_snappy, "snappy"}, {kdump_zstd, "zstd"}};
  for (const auto& [flag, name] : cases) {
    kdump_builder b;
    b.add_page(0, pattern(4096, 1), flag);
    b.add_page(1, pattern(4000, 2), flag);
    const auto short_page = error(b.build());
    EXPECT_EQ(short_page.substr(short_page.find(':') + 2),
              fmt::format("{} data decompresses to 4000 bytes, not one 4096-byte page", name));
    b.add_page(1, pattern(8192, 2), flag);
    const auto long_page = error(b.build());
    const std::string expected = flag == kdump_snappy ? "snappy data decompresses to 8192 bytes, not one 4096-byte page"
                                 : flag == kdump_zstd ? "zstd data does not decompress to one page (Destination "
                                                        "buffer is too small)"
                                                      : fmt::format("{} data decompresses to more than one page", name);
    EXPECT_EQ(long_page.substr(long_page.find(':') + 2), expected);
    EXPECT_EQ(long_page.substr(0, 12), "page at pfn ");
  }
}

TEST_F(KdumpErrors, BrokenFlattenedStreams) {
  const auto plain = small_dump().build();
  const auto good = kdump_builder::flatten(plain, 1000);
  auto bytes = good;
  bytes.resize(2000);
  EXPECT_EQ(error(bytes), "truncated flattened kdump header");
  bytes = good;
  bytes[23] = std::byte{2};  // the big-endian type
  EXPECT_EQ(error(bytes), "flattened kdump stream of type 2 (expected 1)");
  bytes = good;
  bytes.resize(bytes.size() - 16);  // no end record
  EXPECT_EQ(error(bytes),
            fmt::format("flattened kdump stream ends at offset {:#x} without its end record", bytes.size()));
  bytes = good;
  bytes[4096 + 8] = std::byte{0x7f};  // the first record's size, big-endian
  EXPECT_EQ(error(bytes),
            fmt::format("flattened kdump record at offset 0x1000 (offset 500, {} bytes) runs past the end of the "
                        "file ({:#x} bytes)",
                        (std::int64_t{0x7f} << 56) + 3000, bytes.size()));
}

// A flattened stream with one more record of `bytes` at logical `offset`.
std::vector<std::byte> with_record(std::vector<std::byte> flat, u64 offset, std::span<const std::byte> bytes) {
  std::vector<std::byte> end(flat.end() - 16, flat.end());  // the (-1, -1) end record
  flat.resize(flat.size() - 16);
  for (const u64 v : {offset, u64{bytes.size()}}) {
    const u64 big_endian = __builtin_bswap64(v);
    const auto* p = reinterpret_cast<const std::byte*>(&big_endian);
    flat.insert(flat.end(), p, p + 8);
  }
  flat.insert(flat.end(), bytes.begin(), bytes.end());
  flat.insert(flat.end(), end.begin(), end.end());
  return flat;
}

// Issue 9, case 5: 12 KiB whose headers claim 2^43-byte bitmaps, in a
// stream whose last record lies far out, took over an hour (every hole
// zero-filled and scanned); only what the file stores is read now.
TEST_F(KdumpErrors, FlattenedBitmapsClaimedInAHoleCostNothing) {
  kdump_builder::layout l;
  auto plain = small_dump().build(&l);
  store<u32>(plain, 436, 0xffffffff);             // bitmap blocks: 2^44 bytes, 2^43 for each bitmap
  const u64 max_mapnr = (u64{1} << 46) - (u64{1} << 15);  // as many frames as that covers
  store<u64>(plain, l.sub_header + 96, max_mapnr);
  const std::byte one{1};
  const auto flat = with_record(kdump_builder::flatten(plain, 4096), u64{1} << 45, std::span(&one, 1));
  ASSERT_LT(flat.size(), 40u << 10);
  const auto path = dir_.write("hole.kdump", flat);
  const kdump_file dump(path);
  EXPECT_EQ(dump.header().max_mapnr, max_mapnr);
  EXPECT_EQ(dump.dumped_pages(), 0u);  // the 2nd bitmap lies wholly in the hole
}

TEST_F(KdumpErrors, MoreDumpedPagesThanStoredDescriptors) {
  // A stored 2nd bitmap of 128 KiB of ones: a million dumped pages, in a file
  // with room for a few thousand descriptors.
  kdump_builder b;
  b.max_mapnr = u64{1} << 20;
  b.add_page(0, pattern(4096, 1), kdump_zlib);
  kdump_builder::layout l;
  const auto plain = b.build(&l);
  const std::vector<std::byte> ones(l.bitmap_bytes, std::byte{0xff});
  const auto flat = with_record(kdump_builder::flatten(plain, 4096), l.bitmaps + l.bitmap_bytes, ones);
  const std::string message = error(flat);
  EXPECT_TRUE(message.starts_with("the 2nd bitmap marks more dumped pages than the dump, 0x") &&
              message.ends_with(" bytes, has page descriptors for"))
      << message;
}

TEST(KdumpManifest, KdumpIsAMemorySourceAndElfNamingOneSaysSo) {
  const testing::temp_dir dir;
  kdump_builder b;
  b.add_page(1, pattern(4096, 1), kdump_snappy);
  dir.write("vm.kdump", kdump_builder::flatten(b.build(), 4096));
  const auto manifest = dir / "fleet.jsonl";
  constexpr std::string_view line =
      R"({"id":"a","format":"x86_64","memory":{"kdump":"vm.kdump"},"roots":["0x1000"]})";
  const auto spec = parse_manifest_line(line, manifest, 1);
  EXPECT_EQ(std::get<kdump_source>(spec.memory).path, "vm.kdump");
  EXPECT_EQ(format_manifest_line(spec), line);
  const auto loaded = load_snapshot(spec, dir.path());
  EXPECT_EQ(regions_of(loaded.image), (std::vector<range>{{0x1000, 0x1000}}));
  EXPECT_TRUE(page_equals(loaded.image, 0x1000, pattern(4096, 1)));

  EXPECT_EQ(error_of([&] {
              (void)parse_manifest_line(
                  R"({"id":"a","format":"x86_64","memory":{"kdump":"x","elf":"y"},"roots":["0x0"]})", manifest, 3);
            }),
            manifest.string() + ":3: \"memory\" must be an object with exactly one of \"raw\", \"elf\", \"kdump\", "
                                "\"regions\", \"archive\"");
  snapshot_spec as_elf = spec;
  as_elf.memory = elf_source{"vm.kdump"};
  EXPECT_EQ(error_of([&] { (void)load_snapshot(as_elf, dir.path()); }),
            (dir / "vm.kdump").string() + ": a compressed kdump file, not an ELF core: name it as {\"kdump\": …}");
}

// A tiny guest: one 4-level space mapping VA 0x5000 to frame 5 (and the same
// PDPT for its kernel half), its tables in frames 1..4, vCPU 0 on it; as a
// flattened kdump and as a raw file.
struct tiny_guest {
  std::filesystem::path kdump, raw;
};
tiny_guest write_tiny_guest(const testing::temp_dir& dir) {
  std::vector<std::vector<std::byte>> frames(6, std::vector<std::byte>(4096));
  const auto entry = [&](u64 frame, unsigned index, u64 value) { store<u64>(frames[frame], index * 8, value); };
  entry(1, 0, 0x2000 | 0x7);
  entry(1, 256, 0x2000 | 0x3);  // a kernel half, for root discovery to compare
  entry(2, 0, 0x3000 | 0x7);
  entry(3, 0, 0x4000 | 0x7);
  entry(4, 5, 0x5000 | 0x7);
  frames[5] = pattern(4096, 5);
  kdump_builder b;
  b.notes = guest_notes(0x1000, "OSRELEASE=6.1.0-56-amd64\n");
  std::vector<std::byte> raw;
  for (u64 pfn = 0; pfn < frames.size(); ++pfn) {
    b.add_page(pfn, frames[pfn], compressions[pfn % 5]);
    raw.insert(raw.end(), frames[pfn].begin(), frames[pfn].end());
  }
  return {dir.write("guest.kdump", kdump_builder::flatten(b.build(), 2048)), dir.write("guest.raw", raw)};
}

TEST(KdumpCli, InfoWalkAndImportReadAKdumpLikeTheSameBytesRaw) {
  const testing::temp_dir dir;
  const auto guest = write_tiny_guest(dir);

  const auto info = testing::run_ptwalk(dir, {"info", guest.kdump.string()});
  ASSERT_EQ(info.status, 0) << info.err;
  EXPECT_NE(info.out.find(": compressed kdump (flattened), header version 6, machine x86_64, release 6.1.0-test, "
                          "4096-byte pages, zlib+lzo+snappy+zstd compression, dump level 1, 6 of 0x6 frames dumped, 3 "
                          "notes\n  pages 0x0..0x6000 (24 KiB)\n"),
            std::string::npos)
      << info.out;
  EXPECT_NE(info.out.find("cr3 0x1000 cr4 0x6f0 → root 0x1000 format x86_64"), std::string::npos) << info.out;

  const auto from_kdump = testing::run_ptwalk(dir, {"walk", "--kdump", guest.kdump.string(), "--roots", "0x1000"});
  const auto from_raw = testing::run_ptwalk(dir, {"walk", "--raw", guest.raw.string(), "--roots", "0x1000"});
  ASSERT_EQ(from_kdump.status, 0) << from_kdump.err;
  ASSERT_EQ(from_raw.status, 0) << from_raw.err;
  EXPECT_NE(from_kdump.out.find(R"("va":"0x5000","pa":"0x5000","size":4096)"), std::string::npos) << from_kdump.out;
  EXPECT_EQ(from_kdump.out, from_raw.out);

  const auto manifest = dir / "fleet.jsonl";
  const auto imported = testing::run_ptwalk(dir, {"import", guest.kdump.string(), "--out", manifest.string()});
  ASSERT_EQ(imported.status, 0) << imported.err;
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].id, "guest");
  EXPECT_EQ(std::get<kdump_source>(specs[0].memory).path, "guest.kdump");
  EXPECT_EQ(specs[0].meta["kind"], "kdump-compressed");
  ASSERT_FALSE(specs[0].roots.empty());
  EXPECT_EQ(specs[0].roots[0], 0x1000u);
  EXPECT_EQ(specs[0].labels[0], "cpu0");
  const auto walked = testing::run_ptwalk(dir, {"walk", manifest.string()});
  ASSERT_EQ(walked.status, 0) << walked.err;
  EXPECT_EQ(walked.out.substr(0, from_raw.out.size()), from_raw.out);
}

}  // namespace
}  // namespace ptwalk
