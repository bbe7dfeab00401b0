// host/kdump_compressed.cpp — compressed kdump headers, bitmaps, flattened streams and page decompression.
#include "input/kdump_compressed.hpp"

#include <elf.h>
#include <lzo/lzo1x.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "common/parallel_for.hpp"

namespace ptwalk {

// Header fields are copied out of the mapping as host integers.
static_assert(std::endian::native == std::endian::little, "kdump headers are read as little-endian");

namespace {

// The 64-bit layouts: QEMU's DiskDumpHeader64 and KdumpSubHeader64
// (include/sysemu/dump.h), makedumpfile's disk_dump_header and
// kdump_sub_header as a 64-bit host lays them out.
namespace layout {
constexpr u64 header_version = 8;
constexpr u64 utsname_field = 65;  // six of them from offset 12: sysname, nodename, release, ...
constexpr u64 release = 12 + 2 * utsname_field;
constexpr u64 machine = 12 + 4 * utsname_field;
constexpr u64 status = 424;  // after a struct timeval padded to 8
constexpr u64 block_size = 428;
constexpr u64 sub_hdr_size = 432;  // in blocks
constexpr u64 bitmap_blocks = 436;
constexpr u64 max_mapnr = 440;
constexpr u64 header_size = 464;

constexpr u64 dump_level = 8;
constexpr u64 split = 12;
constexpr u64 offset_vmcoreinfo = 32;
constexpr u64 size_vmcoreinfo = 40;
constexpr u64 offset_note = 48;
constexpr u64 size_note = 56;
constexpr u64 max_mapnr_64 = 96;
// Bytes of the sub-header each header_version has (fields were only appended).
constexpr u64 sub_header_size[] = {0, 12, 40, 56, 72, 88, 104};

// page_desc: offset u64, size u32, flags u32, page_flags u64.
constexpr u64 descriptor_size = 24;
}  // namespace layout

// makedumpfile's flattened format: a 4 KiB header, then records of
// big-endian (offset, size) and `size` bytes, up to an (-1, -1) record.
namespace flat {
constexpr std::string_view signature = "makedumpfile";
constexpr u64 header_size = 4096;
constexpr u64 record_header = 16;
constexpr std::int64_t type = 1;
constexpr std::int64_t end_flag = -1;
}  // namespace flat

constexpr u32 compression_flags = kdump_zlib | kdump_lzo | kdump_snappy | kdump_zstd;

// utsname.machine of the 64-bit kernels whose dumps have the layout above.
struct machine_name {
  std::string_view uname;
  u32 elf;
};
constexpr machine_name machines_64[] = {{"x86_64", EM_X86_64}, {"aarch64", EM_AARCH64},
                                        {"ppc64", EM_PPC64},   {"ppc64le", EM_PPC64},
                                        {"s390x", EM_S390},    {"riscv64", EM_RISCV}};

template <class T>
T load(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

std::int64_t load_be64(const std::byte* p) { return static_cast<std::int64_t>(__builtin_bswap64(load<u64>(p))); }

bool starts_with(std::span<const std::byte> bytes, std::string_view magic) {
  return bytes.size() >= magic.size() && std::memcmp(bytes.data(), magic.data(), magic.size()) == 0;
}

// A NUL-terminated field of at most `size` bytes.
std::string c_string(std::span<const std::byte> bytes, u64 offset, u64 size) {
  const char* p = reinterpret_cast<const char*>(bytes.data() + offset);
  return std::string(p, strnlen(p, size));
}

bool all_zero(std::span<const std::byte> bytes) {
  u64 any = 0;
  for (std::size_t i = 0; i + 8 <= bytes.size(); i += 8) any |= load<u64>(bytes.data() + i);
  return any == 0;
}

input_error error_in(const std::filesystem::path& path, std::string_view problem) {
  return input_error(fmt::format("{}: {}", path.string(), problem));
}

// One thread's decompressors, kept across pages (a zlib stream costs an
// allocation to set up), and its output page. The output has room for one
// byte more than a page, so data that decompresses to more than a page is
// told apart from data that is cut short.
class page_decoder {
 public:
  explicit page_decoder(u32 block_size) : block_size_(block_size), out_(block_size + 1) {}
  ~page_decoder() {
    if (zlib_ready_) inflateEnd(&zlib_);
    ZSTD_freeDCtx(zstd_);
  }
  page_decoder(const page_decoder&) = delete;
  page_decoder& operator=(const page_decoder&) = delete;

  // Decompresses `data` into the page; the problem when it does not give exactly one page.
  std::optional<std::string> decode(u32 flags, std::span<const std::byte> data) {
    switch (flags) {
      case kdump_zlib: return inflate_page(data);
      case kdump_lzo: {
        static const int lzo_ready = lzo_init();
        if (lzo_ready != LZO_E_OK) return "the LZO library failed to initialise";
        lzo_uint produced = out_.size();
        const int status = lzo1x_decompress_safe(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                                                 reinterpret_cast<unsigned char*>(out_.data()), &produced, nullptr);
        if (status == LZO_E_OUTPUT_OVERRUN) return "LZO data decompresses to more than one page";
        if (status != LZO_E_OK) return fmt::format("LZO data is corrupt (error {})", status);
        return size_problem("LZO", produced);
      }
      case kdump_snappy: {
        std::size_t produced = 0;
        const char* in = reinterpret_cast<const char*>(data.data());
        if (snappy_uncompressed_length(in, data.size(), &produced) != SNAPPY_OK) return "snappy data is corrupt";
        if (produced != block_size_) return size_problem("snappy", produced);
        if (snappy_uncompress(in, data.size(), reinterpret_cast<char*>(out_.data()), &produced) != SNAPPY_OK)
          return "snappy data is corrupt";
        return std::nullopt;
      }
      case kdump_zstd: {
        if (zstd_ == nullptr && (zstd_ = ZSTD_createDCtx()) == nullptr) throw std::bad_alloc();
        const std::size_t produced = ZSTD_decompressDCtx(zstd_, out_.data(), out_.size(), data.data(), data.size());
        if (ZSTD_isError(produced))
          return fmt::format("zstd data does not decompress to one page ({})", ZSTD_getErrorName(produced));
        return size_problem("zstd", produced);
      }
    }
    return fmt::format("unknown compression flags {:#x}", flags);
  }

  [[nodiscard]] std::span<const std::byte> page() const { return {out_.data(), block_size_}; }

 private:
  std::optional<std::string> size_problem(std::string_view library, u64 produced) const {
    if (produced == block_size_) return std::nullopt;
    return fmt::format("{} data decompresses to {} bytes, not one {}-byte page", library, produced, block_size_);
  }

  std::optional<std::string> inflate_page(std::span<const std::byte> data) {
    if (!zlib_ready_) {
      if (inflateInit(&zlib_) != Z_OK) throw std::bad_alloc();
      zlib_ready_ = true;
    } else {
      inflateReset(&zlib_);
    }
    zlib_.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(data.data()));
    zlib_.avail_in = static_cast<uInt>(data.size());
    zlib_.next_out = reinterpret_cast<Bytef*>(out_.data());
    zlib_.avail_out = static_cast<uInt>(out_.size());
    const int status = ::inflate(&zlib_, Z_FINISH);
    if (status == Z_STREAM_END) return size_problem("zlib", zlib_.total_out);
    if (zlib_.avail_out == 0) return "zlib data decompresses to more than one page";
    return fmt::format("zlib data is corrupt ({})", zlib_.msg != nullptr ? zlib_.msg : "truncated");
  }

  std::size_t block_size_;
  std::vector<std::byte> out_;
  z_stream zlib_{};
  bool zlib_ready_ = false;
  ZSTD_DCtx* zstd_ = nullptr;
};

}  // namespace

// The dump's bytes at their logical offsets: the file itself, or what the
// records of a flattened stream put where (a later record overwrites an
// earlier one; bytes no record wrote read as zero, as in the sparse file
// makedumpfile -R would write).
class kdump_file::stream {
 public:
  explicit stream(const mapped_file& file) : file_(file) {
    const auto bytes = file.bytes();
    if (!starts_with(bytes, flat::signature)) {
      pieces_.push_back({0, bytes.size(), 0});
      size_ = bytes.size();
      return;
    }
    flattened_ = true;
    if (bytes.size() < flat::header_size) throw error_in(file.path(), "truncated flattened kdump header");
    if (const auto type = load_be64(bytes.data() + 16); type != flat::type)
      throw error_in(file.path(), fmt::format("flattened kdump stream of type {} (expected {})", type, flat::type));
    std::map<u64, piece> pieces;
    for (u64 at = flat::header_size;;) {
      if (bytes.size() - at < flat::record_header)
        throw error_in(file.path(), fmt::format("flattened kdump stream ends at offset {:#x} without its end record",
                                                at));
      const std::int64_t offset = load_be64(bytes.data() + at);
      const std::int64_t size = load_be64(bytes.data() + at + 8);
      at += flat::record_header;
      if (offset == flat::end_flag) break;
      if (offset < 0 || size < 0 || static_cast<u64>(size) > bytes.size() - at)
        throw error_in(file.path(), fmt::format("flattened kdump record at offset {:#x} (offset {}, {} bytes) runs "
                                                "past the end of the file ({:#x} bytes)",
                                                at - flat::record_header, offset, size, bytes.size()));
      if (size > 0) overwrite(pieces, {static_cast<u64>(offset), static_cast<u64>(size), at});
      at += static_cast<u64>(size);
    }
    for (const auto& [offset, p] : pieces) pieces_.push_back(p);
    size_ = pieces_.empty() ? 0 : pieces_.back().end();
  }

  [[nodiscard]] bool flattened() const { return flattened_; }
  [[nodiscard]] u64 size() const { return size_; }

  // `size` bytes at `offset`: a view into the mapping when one piece holds
  // them all, else assembled in `scratch`; nullopt past the end.
  [[nodiscard]] std::optional<std::span<const std::byte>> view(u64 offset, u64 size,
                                                               std::vector<std::byte>& scratch) const {
    if (offset > size_ || size > size_ - offset) return std::nullopt;
    auto it = std::upper_bound(pieces_.begin(), pieces_.end(), offset,
                               [](u64 at, const piece& p) { return at < p.offset; });
    if (it != pieces_.begin() && std::prev(it)->end() >= offset + size && std::prev(it)->end() > offset) {
      const piece& p = *std::prev(it);
      return file_.bytes().subspan(p.file_pos + (offset - p.offset), size);
    }
    // Only a flattened stream gets here. No read needs more than the stream
    // holds (the bitmaps, which may lie in holes, are scanned piece by piece).
    if (size > file_.bytes().size()) return std::nullopt;
    scratch.assign(size, std::byte{0});
    for_each_stored(offset, size, [&](u64 at, std::span<const std::byte> bytes) {
      std::memcpy(scratch.data() + (at - offset), bytes.data(), bytes.size());
    });
    return std::span<const std::byte>(scratch);
  }

  // Calls fn(offset, bytes) for each stored part of [offset, offset + size)
  // in order, skipping the holes (which read as zero): work in proportion to
  // the file, however large a range its headers claim.
  template <class Fn>
  void for_each_stored(u64 offset, u64 size, Fn&& fn) const {
    auto it = std::upper_bound(pieces_.begin(), pieces_.end(), offset,
                               [](u64 at, const piece& p) { return at < p.offset; });
    if (it != pieces_.begin()) --it;
    for (; it != pieces_.end() && it->offset < offset + size; ++it) {
      const u64 lo = std::max(offset, it->offset), hi = std::min(offset + size, it->end());
      if (lo < hi) fn(lo, file_.bytes().subspan(it->file_pos + (lo - it->offset), hi - lo));
    }
  }

  // Bytes the file stores (a flattened stream's logical size may be far larger).
  [[nodiscard]] u64 stored_bytes() const {
    u64 total = 0;
    for (const piece& p : pieces_) total += p.size;
    return total;
  }

  // Throws an input_error naming `what` when [offset, offset + size) runs past the end.
  void check_inside(u64 offset, u64 size, std::string_view what) const {
    if (offset <= size_ && size <= size_ - offset) return;
    throw error_in(file_.path(), fmt::format("{} at offset {:#x} ({} bytes) runs past the end of the dump "
                                             "({:#x} bytes)",
                                             what, offset, size, size_));
  }

  // The same, throwing an input_error that names `what` past the end.
  [[nodiscard]] std::span<const std::byte> read(u64 offset, u64 size, std::string_view what,
                                                std::vector<std::byte>& scratch) const {
    check_inside(offset, size, what);
    if (const auto bytes = view(offset, size, scratch)) return *bytes;
    throw error_in(file_.path(), fmt::format("{} at offset {:#x} ({} bytes) is larger than the whole file", what,
                                             offset, size));
  }

 private:
  struct piece {
    u64 offset = 0;  // logical
    u64 size = 0;
    u64 file_pos = 0;
    [[nodiscard]] u64 end() const { return offset + size; }
  };

  // Puts `p` in `pieces` (disjoint, keyed by offset), cutting what it overlaps.
  static void overwrite(std::map<u64, piece>& pieces, piece p) {
    auto it = pieces.lower_bound(p.offset);
    if (it != pieces.begin() && std::prev(it)->second.end() > p.offset) --it;
    while (it != pieces.end() && it->second.offset < p.end()) {
      const piece old = it->second;
      it = pieces.erase(it);
      if (old.offset < p.offset) pieces.emplace(old.offset, piece{old.offset, p.offset - old.offset, old.file_pos});
      if (old.end() > p.end())
        pieces.emplace(p.end(), piece{p.end(), old.end() - p.end(), old.file_pos + (p.end() - old.offset)});
    }
    pieces.emplace(p.offset, p);
  }

  const mapped_file& file_;
  bool flattened_ = false;
  std::vector<piece> pieces_;  // sorted by offset, disjoint
  u64 size_ = 0;
};

bool has_kdump_signature(std::span<const std::byte> bytes) {
  return starts_with(bytes, "KDUMP   ") || starts_with(bytes, "DISKDUMP") || starts_with(bytes, flat::signature);
}

std::string kdump_compression_name(u32 flags) {
  std::vector<std::string_view> names;
  if (flags & kdump_zlib) names.push_back("zlib");
  if (flags & kdump_lzo) names.push_back("lzo");
  if (flags & kdump_snappy) names.push_back("snappy");
  if (flags & kdump_zstd) names.push_back("zstd");
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, "+"));
}

kdump_file::kdump_file(const std::filesystem::path& path) : kdump_file(std::make_shared<const mapped_file>(path)) {}

kdump_file::kdump_file(std::shared_ptr<const mapped_file> file)
    : file_(std::move(file)), stream_(std::make_unique<const stream>(*file_)) {
  parse();
}

kdump_file::~kdump_file() = default;

const std::filesystem::path& kdump_file::path() const { return file_->path(); }

u64 kdump_file::dumped_pages() const {
  u64 total = 0;
  for (const auto& run : runs_) total += run.pages;
  return total;
}

void kdump_file::parse() {
  const stream& s = *stream_;
  const auto fail = [&](std::string_view problem) { return error_in(path(), problem); };
  header_.flattened = s.flattened();

  std::vector<std::byte> header_scratch, sub_scratch, scratch;
  const auto signature = s.view(0, 8, scratch);
  if (signature && starts_with(*signature, "DISKDUMP"))
    throw fail("a diskdump file (\"DISKDUMP\" header, the format before kdump's) is not supported");
  if (!signature || !starts_with(*signature, "KDUMP   "))
    throw fail("not a compressed kdump file (no \"KDUMP   \" signature)");
  const auto head = s.read(0, layout::header_size, "disk_dump_header", header_scratch);
  header_.header_version = load<u32>(head.data() + layout::header_version);
  header_.machine = c_string(head, layout::machine, layout::utsname_field);
  header_.release = c_string(head, layout::release, layout::utsname_field);
  header_.status = load<u32>(head.data() + layout::status);
  header_.block_size = load<u32>(head.data() + layout::block_size);
  const u32 sub_blocks = load<u32>(head.data() + layout::sub_hdr_size);
  const u32 bitmap_blocks = load<u32>(head.data() + layout::bitmap_blocks);

  const auto known = std::find_if(std::begin(machines_64), std::end(machines_64),
                                  [&](const machine_name& m) { return m.uname == header_.machine; });
  // QEMU 7.2 writes "Unknown" for aarch64 guests (no ELF_MACHINE_UNAME for
  // Arm): their NT_PRSTATUS notes tell, once read below.
  const bool machine_from_notes = header_.machine == "Unknown";
  if (known == std::end(machines_64) && !machine_from_notes)
    throw fail(fmt::format("machine \"{}\": only dumps of 64-bit kernels (x86_64, aarch64, ppc64, s390x, riscv64) "
                           "are read",
                           header_.machine));
  machine_ = machine_from_notes ? EM_NONE : known->elf;
  if (header_.header_version == 0) throw fail("kdump header version 0 (expected 1 or later)");
  const u64 bs = header_.block_size;
  if (!std::has_single_bit(bs) || bs < 4096 || bs > 65536)
    throw fail(fmt::format("block size {} is not a power of two from 4096 to 65536", bs));

  const u64 sub_size = layout::sub_header_size[std::min<u32>(header_.header_version, 6)];
  if (sub_blocks * bs < sub_size)
    throw fail(fmt::format("sub-header of {} blocks cannot hold version {}'s {} bytes", sub_blocks,
                           header_.header_version, sub_size));
  const auto sub = s.read(bs, sub_size, "kdump_sub_header", sub_scratch);
  header_.dump_level = load<u32>(sub.data() + layout::dump_level);
  if (header_.header_version >= 2 && load<u32>(sub.data() + layout::split) != 0)
    throw fail("one part of a split dump (makedumpfile --split): join the parts with makedumpfile --reassemble");
  header_.max_mapnr = header_.header_version >= 6 ? load<u64>(sub.data() + layout::max_mapnr_64)
                                                  : load<u32>(head.data() + layout::max_mapnr);
  const unsigned shift = std::countr_zero(bs);
  if (header_.max_mapnr > (u64{1} << (64 - shift)))
    throw fail(fmt::format("max_mapnr {:#x} pages of {} bytes lie past 2^64", header_.max_mapnr, bs));

  // The two bitmaps fill bitmap_blocks; the second says which frames were dumped.
  const u64 bitmap_bytes = u64{bitmap_blocks} * bs;
  const u64 bitmap_needed = (header_.max_mapnr + 7) / 8;
  if (bitmap_bytes / 2 < bitmap_needed)
    throw fail(fmt::format("bitmaps of {} blocks cannot cover max_mapnr {:#x} ({} bytes each needed)", bitmap_blocks,
                           header_.max_mapnr, bitmap_needed));
  const u64 bitmaps_at = bs * (1 + u64{sub_blocks});
  descriptors_at_ = bitmaps_at + bitmap_bytes;
  find_runs(bitmaps_at + bitmap_bytes / 2, bitmap_needed);

  if (header_.header_version >= 4) {
    const u64 at = load<u64>(sub.data() + layout::offset_note), size = load<u64>(sub.data() + layout::size_note);
    const auto notes = s.read(at, size, "note area", scratch);
    note_bytes_.assign(notes.begin(), notes.end());
    parse_elf_notes(note_bytes_, 4, path().string(), at, "note area", notes_);
  }
  constexpr std::size_t aarch64_prstatus_size = 392;
  if (machine_from_notes) {
    if (!std::any_of(notes_.begin(), notes_.end(), [](const elf_note& n) {
          return n.name == "CORE" && n.type == NT_PRSTATUS && n.desc.size() == aarch64_prstatus_size;
        }))
      throw fail("machine \"Unknown\" and no aarch64 NT_PRSTATUS note to tell it by");
    machine_ = EM_AARCH64;
  }
  // QEMU writes i386 notes while the vCPUs are outside long mode (its ELF
  // cores then say EM_386), under a utsname that still says x86_64.
  constexpr std::size_t i386_prstatus_size = 144;
  if (machine_ == EM_X86_64 && std::any_of(notes_.begin(), notes_.end(), [](const elf_note& n) {
        return n.name == "CORE" && n.type == NT_PRSTATUS && n.desc.size() == i386_prstatus_size;
      }))
    machine_ = EM_386;
  const bool has_vmcoreinfo_note =
      std::any_of(notes_.begin(), notes_.end(), [](const elf_note& n) { return n.name == "VMCOREINFO"; });
  if (header_.header_version >= 3 && !has_vmcoreinfo_note) {
    const u64 at = load<u64>(sub.data() + layout::offset_vmcoreinfo);
    const u64 size = load<u64>(sub.data() + layout::size_vmcoreinfo);
    const auto text = s.read(at, size, "VMCOREINFO", scratch);
    vmcoreinfo_bytes_.assign(text.begin(), text.end());
    if (!vmcoreinfo_bytes_.empty()) notes_.push_back({"VMCOREINFO", 0, vmcoreinfo_bytes_});
  }
}

// Runs of set bits in the 2nd bitmap, read in place from the parts of it
// the file stores (a flattened stream leaves zero blocks out). Descriptors
// follow the set bits in order; in an incomplete dump a page whose
// descriptor was never written (zero size, or past the end of the file) was
// lost and ends its run.
void kdump_file::find_runs(u64 bitmap_at, u64 bitmap_size) {
  const stream& s = *stream_;
  const bool incomplete = (header_.status & kdump_incomplete) != 0;
  std::vector<std::byte> scratch, descriptor_scratch;
  u64 next_descriptor = 0;
  const auto lost = [&](u64 descriptor) {
    const auto bytes = s.view(descriptors_at_ + descriptor * layout::descriptor_size, layout::descriptor_size,
                              descriptor_scratch);
    return !bytes || load<u32>(bytes->data() + 8) == 0;
  };
  // Appends `pages` frames from `pfn` whose descriptors start at next_descriptor.
  // Every page kept needs a stored descriptor: a bitmap claiming more is
  // refused before its runs are allocated or decompressed.
  const u64 descriptors_stored = s.stored_bytes() / layout::descriptor_size;
  const auto extend = [&](u64 pfn, u64 pages) {
    if (pages > descriptors_stored - std::min(descriptors_stored, next_descriptor))
      throw error_in(path(), fmt::format("the 2nd bitmap marks more dumped pages than the dump, {:#x} bytes, has "
                                         "page descriptors for",
                                         s.stored_bytes()));
    kdump_run* last = runs_.empty() ? nullptr : &runs_.back();
    if (last != nullptr && last->first_pfn + last->pages == pfn &&
        last->first_descriptor + last->pages == next_descriptor)
      last->pages += pages;
    else
      runs_.push_back({pfn, pages, next_descriptor});
    next_descriptor += pages;
  };
  const auto add = [&](u64 pfn, u64 pages) {
    if (!incomplete) return extend(pfn, pages);
    for (u64 i = 0; i < pages; ++i) {
      if (lost(next_descriptor))
        ++next_descriptor;
      else
        extend(pfn + i, 1);
    }
  };
  s.check_inside(bitmap_at, bitmap_size, "2nd bitmap");
  s.for_each_stored(bitmap_at, bitmap_size, [&](u64 at, std::span<const std::byte> bytes) {
    // Up to 8 bytes at a time; bit i of byte b of the bitmap is frame 8b+i.
    for (u64 i = 0; i < bytes.size(); i += 8) {
      u64 word = 0;
      std::memcpy(&word, bytes.data() + i, std::min<u64>(8, bytes.size() - i));
      const u64 first_pfn = (at - bitmap_at + i) * 8;
      if (header_.max_mapnr - first_pfn < 64) word &= (u64{1} << (header_.max_mapnr - first_pfn)) - 1;
      for (unsigned bit = 0; word != 0;) {
        const unsigned zeros = std::countr_zero(word);
        word >>= zeros;
        bit += zeros;
        const unsigned ones = std::countr_one(word);
        add(first_pfn + bit, ones);
        word = ones == 64 ? 0 : word >> ones;
        bit += ones;
      }
    }
  });
  if (!incomplete && (next_descriptor > (s.size() - std::min(s.size(), descriptors_at_)) / layout::descriptor_size))
    throw error_in(path(), fmt::format("{} page descriptors at offset {:#x} run past the end of the dump ({:#x} bytes)",
                                       next_descriptor, descriptors_at_, s.size()));
}

void kdump_file::add_regions(memory_image& image, unsigned jobs) const {
  const u64 bs = header_.block_size;
  // The runs lie back to back in one mapping; run r starts at page first_page[r] of it.
  std::vector<std::pair<u64, u64>> ranges;
  std::vector<u64> first_page;
  u64 mapped_pages = 0;
  for (const auto& run : runs_) {
    ranges.emplace_back(run.first_pfn * bs, run.pages * bs);
    first_page.push_back(mapped_pages);
    mapped_pages += run.pages;
  }
  const std::span<std::byte> pages = image.add_zeroed_regions(ranges, path().string() + " (decompressed)");

  // Tasks of up to 1024 pages, so threads balance over runs of any length.
  struct task {
    std::size_t run;
    u64 first, pages;
  };
  constexpr u64 task_pages = 1024;
  std::vector<task> tasks;
  for (std::size_t r = 0; r < runs_.size(); ++r)
    for (u64 first = 0; first < runs_[r].pages; first += task_pages)
      tasks.push_back({r, first, std::min(task_pages, runs_[r].pages - first)});

  struct worker_state {
    explicit worker_state(u32 block_size) : decoder(block_size) {}
    page_decoder decoder;
    std::vector<std::byte> descriptor_scratch, data_scratch;
  };
  std::vector<std::unique_ptr<worker_state>> workers(resolve_jobs(jobs));
  const stream& s = *stream_;
  parallel_for_chunks(tasks.size(), 1, jobs, [&](unsigned worker, std::size_t t) {
    auto& state = workers[worker];
    if (!state) state = std::make_unique<worker_state>(header_.block_size);
    const task& job = tasks[t];
    const kdump_run& run = runs_[job.run];
    const auto descriptors = s.read(descriptors_at_ + (run.first_descriptor + job.first) * layout::descriptor_size,
                                    job.pages * layout::descriptor_size, "page descriptors", state->descriptor_scratch);
    for (u64 i = 0; i < job.pages; ++i) {
      const std::byte* d = descriptors.data() + i * layout::descriptor_size;
      const u64 offset = load<u64>(d);
      const u32 size = load<u32>(d + 8), flags = load<u32>(d + 12);
      const u64 pfn = run.first_pfn + job.first + i;
      const auto page_error = [&](std::string_view problem) {
        return error_in(path(), fmt::format("page at pfn {:#x} (data at offset {:#x}, {} bytes): {}", pfn, offset,
                                            size, problem));
      };
      const auto data = s.view(offset, size, state->data_scratch);
      if (!data) throw page_error(fmt::format("runs past the end of the dump ({:#x} bytes)", s.size()));
      std::span<const std::byte> page = *data;
      if ((flags & compression_flags) != 0) {
        if (auto problem = state->decoder.decode(flags, *data)) throw page_error(*problem);
        page = state->decoder.page();
      } else if (flags != 0) {
        throw page_error(fmt::format("unknown flags {:#x}", flags));
      } else if (size != bs) {
        throw page_error(fmt::format("stored uncompressed, but not as one {}-byte page", bs));
      }
      if (!all_zero(page)) std::memcpy(pages.data() + (first_page[job.run] + job.first + i) * bs, page.data(), bs);
    }
  });
}

}  // namespace ptwalk
