// tests/support/kdump_builder.hpp — small compressed kdump files built by hand, for tests.
//
// Lays out what makedumpfile and QEMU write, from the published layout
// (QEMU's include/sysemu/dump.h): the disk_dump_header block, the
// kdump_sub_header followed by the ELF notes and VMCOREINFO, the 1st and
// 2nd bitmaps, one page_desc per dumped frame, then the page data, each
// page compressed with the library the test names (zero pages share one
// stored page, as QEMU writes them). `flatten` turns a file into
// makedumpfile's flattened stream. Tests break the bytes it returns, at
// the offsets `layout` reports, to check each validation.
#pragma once

#include <lzo/lzo1x.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "input/kdump_compressed.hpp"
#include "support/cpu_notes.hpp"

namespace ptwalk::testing {

// `bytes` compressed on their own with the library `flag` names (0: as they are).
inline std::vector<std::byte> kdump_compress(u32 flag, std::span<const std::byte> bytes) {
  std::vector<std::byte> out(bytes.size() * 2 + 1024);
  std::size_t size = out.size();
  const auto* in = reinterpret_cast<const char*>(bytes.data());
  auto* to = reinterpret_cast<char*>(out.data());
  switch (flag) {
    case 0: return {bytes.begin(), bytes.end()};
    case kdump_zlib: {
      uLongf n = size;
      if (compress2(reinterpret_cast<Bytef*>(to), &n, reinterpret_cast<const Bytef*>(in), bytes.size(), 1) != Z_OK)
        throw std::runtime_error("compress2 failed");
      size = n;
      break;
    }
    case kdump_lzo: {
      std::vector<unsigned char> work(LZO1X_1_MEM_COMPRESS);
      lzo_uint n = size;
      if (lzo_init() != LZO_E_OK ||
          lzo1x_1_compress(reinterpret_cast<const unsigned char*>(in), bytes.size(),
                           reinterpret_cast<unsigned char*>(to), &n, work.data()) != LZO_E_OK)
        throw std::runtime_error("lzo1x_1_compress failed");
      size = n;
      break;
    }
    case kdump_snappy:
      if (snappy_compress(in, bytes.size(), to, &size) != SNAPPY_OK) throw std::runtime_error("snappy_compress failed");
      break;
    case kdump_zstd:
      size = ZSTD_compress(to, size, in, bytes.size(), 1);
      if (ZSTD_isError(size)) throw std::runtime_error("ZSTD_compress failed");
      break;
    default: throw std::runtime_error("unknown compression");
  }
  out.resize(size);
  return out;
}

class kdump_builder {
 public:
  u32 block_size = 4096;
  u32 header_version = 6;
  std::string machine = "x86_64";
  std::string release = "6.1.0-test";
  u32 status = 0;  // besides the compressions used, which are added
  u32 dump_level = 1;
  u64 max_mapnr = 0;  // 0: one past the highest frame
  std::vector<std::byte> notes;  // the note area (elf_core_builder::encode_notes)
  std::string vmcoreinfo;        // the sub-header's own VMCOREINFO text

  // Where build() put things.
  struct layout {
    u64 sub_header = 0, notes = 0, vmcoreinfo = 0, bitmaps = 0, bitmap_bytes = 0, descriptors = 0, data = 0;
    std::map<u64, u64> descriptor_of;  // pfn → offset of its page_desc
  };

  // A dumped frame stored with `compression` (0: as it is). A payload whose
  // size is not one page is stored as given, to test the reader.
  void add_page(u64 pfn, std::span<const std::byte> bytes, u32 compression) {
    pages_[pfn] = {kdump_compress(compression, bytes), compression, false};
  }
  // A dumped zero frame: every one shares one stored page.
  void add_zero_page(u64 pfn) { pages_[pfn] = {{}, 0, true}; }
  // A frame in the 1st bitmap only: it exists, but the dump level left it out.
  void add_filtered_page(u64 pfn) { filtered_.push_back(pfn); }

  [[nodiscard]] std::vector<std::byte> build(layout* where = nullptr) const {
    layout l;
    const u64 bs = block_size;
    u64 frames = max_mapnr;
    if (frames == 0) {
      for (const auto& [pfn, p] : pages_) frames = std::max(frames, pfn + 1);
      for (const u64 pfn : filtered_) frames = std::max(frames, pfn + 1);
    }
    const u64 sub_header_size = 104;
    l.sub_header = bs;
    l.notes = bs + sub_header_size;
    l.vmcoreinfo = l.notes + notes.size();
    const u64 sub_blocks = (sub_header_size + notes.size() + vmcoreinfo.size() + bs - 1) / bs;
    l.bitmap_bytes = ((frames + 7) / 8 + bs - 1) / bs * bs;  // each of the two
    l.bitmaps = bs * (1 + sub_blocks);
    l.descriptors = l.bitmaps + 2 * l.bitmap_bytes;
    l.data = l.descriptors + 24 * pages_.size();

    std::vector<std::byte> out(l.data);
    u32 used = 0;
    for (const auto& [pfn, p] : pages_) used |= p.compression;

    // disk_dump_header
    std::memcpy(out.data(), "KDUMP   ", 8);
    store<u32>(out, 8, header_version);
    std::memcpy(out.data() + 12 + 2 * 65, release.data(), std::min<std::size_t>(release.size(), 64));
    std::memcpy(out.data() + 12 + 4 * 65, machine.data(), std::min<std::size_t>(machine.size(), 64));
    store<u32>(out, 424, status | used);
    store<u32>(out, 428, block_size);
    store<u32>(out, 432, static_cast<u32>(sub_blocks));
    store<u32>(out, 436, static_cast<u32>(2 * l.bitmap_bytes / bs));
    store<u32>(out, 440, static_cast<u32>(std::min<u64>(frames, 0xffffffff)));
    store<u32>(out, 460, 1);  // nr_cpus

    // kdump_sub_header: fields up to the header version.
    store<u64>(out, l.sub_header + 0, 0);  // phys_base
    store<u32>(out, l.sub_header + 8, dump_level);
    if (header_version >= 3) {
      store<u64>(out, l.sub_header + 32, l.vmcoreinfo);
      store<u64>(out, l.sub_header + 40, vmcoreinfo.size());
    }
    if (header_version >= 4) {
      store<u64>(out, l.sub_header + 48, l.notes);
      store<u64>(out, l.sub_header + 56, notes.size());
    }
    if (header_version >= 6) store<u64>(out, l.sub_header + 96, frames);
    std::copy(notes.begin(), notes.end(), out.begin() + static_cast<std::ptrdiff_t>(l.notes));
    std::memcpy(out.data() + l.vmcoreinfo, vmcoreinfo.data(), vmcoreinfo.size());

    // Bitmaps: the 1st has every frame that exists, the 2nd every dumped one.
    const auto set_bit = [&](u64 bitmap, u64 pfn) { out[bitmap + pfn / 8] |= std::byte(1u << (pfn % 8)); };
    for (const u64 pfn : filtered_) set_bit(l.bitmaps, pfn);
    for (const auto& [pfn, p] : pages_) {
      set_bit(l.bitmaps, pfn);
      set_bit(l.bitmaps + l.bitmap_bytes, pfn);
    }

    // Descriptors in pfn order, then the data: the shared zero page first.
    u64 zero_page = 0;
    if (std::any_of(pages_.begin(), pages_.end(), [](const auto& e) { return e.second.zero; })) {
      zero_page = out.size();
      out.resize(out.size() + bs);
    }
    u64 descriptor = l.descriptors;
    for (const auto& [pfn, p] : pages_) {
      const u64 offset = p.zero ? zero_page : out.size();
      if (!p.zero) out.insert(out.end(), p.stored.begin(), p.stored.end());
      store<u64>(out, descriptor, offset);
      store<u32>(out, descriptor + 8, static_cast<u32>(p.zero ? bs : p.stored.size()));
      store<u32>(out, descriptor + 12, p.compression);
      l.descriptor_of[pfn] = descriptor;
      descriptor += 24;
    }
    if (where != nullptr) *where = l;
    return out;
  }

  // `file` as makedumpfile -F streams it: records of `record` bytes, in the
  // order 1, 0, 3, 2, 5, 4, …, after a garbage record over the first 3.5
  // records that they overwrite; all-zero records between the first four
  // and the last are left out (holes in the rearranged file read as zero).
  [[nodiscard]] static std::vector<std::byte> flatten(std::span<const std::byte> file, u64 record) {
    std::vector<std::byte> out(4096);
    std::memcpy(out.data(), "makedumpfile", 12);
    const auto be64 = [&](std::int64_t v) {
      const u64 b = __builtin_bswap64(static_cast<u64>(v));
      const auto* p = reinterpret_cast<const std::byte*>(&b);
      out.insert(out.end(), p, p + 8);
    };
    std::memcpy(out.data() + 16, std::array<u8, 8>{0, 0, 0, 0, 0, 0, 0, 1}.data(), 8);  // type 1
    std::memcpy(out.data() + 24, std::array<u8, 8>{0, 0, 0, 0, 0, 0, 0, 1}.data(), 8);  // version 1
    const auto emit = [&](u64 offset, std::span<const std::byte> bytes) {
      be64(static_cast<std::int64_t>(offset));
      be64(static_cast<std::int64_t>(bytes.size()));
      out.insert(out.end(), bytes.begin(), bytes.end());
    };
    const std::vector<std::byte> garbage(record * 3, std::byte{0xa5});
    emit(record / 2, garbage);
    const u64 count = (file.size() + record - 1) / record;
    for (u64 pair = 0; pair < count; pair += 2)
      for (const u64 i : {pair + 1, pair}) {
        if (i >= count) continue;
        const auto bytes = file.subspan(i * record, std::min<u64>(record, file.size() - i * record));
        const bool zero = std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
        if (zero && i >= 4 && i + 1 < count) continue;
        emit(i * record, bytes);
      }
    be64(-1);
    be64(-1);
    return out;
  }

 private:
  struct page {
    std::vector<std::byte> stored;
    u32 compression = 0;
    bool zero = false;
  };
  std::map<u64, page> pages_;
  std::vector<u64> filtered_;
};

}  // namespace ptwalk::testing
