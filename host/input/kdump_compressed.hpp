// host/kdump_compressed.hpp — compressed kdump files ("KDUMP   ") as guest memory.
//
// The format makedumpfile -c/-l/-p/-z writes and QEMU's dump-guest-memory
// writes with format kdump-zlib/-lzo/-snappy (and kdump-raw-* since 8.2):
// a disk_dump_header block, a kdump_sub_header (phys_base, dump level, and
// where the ELF notes and VMCOREINFO are), two bitmaps over page frame
// numbers (1st: frames that exist; 2nd: frames that were dumped), one
// page_desc per dumped frame in pfn order (file offset, stored size,
// compression), then the pages, each stored as is or compressed on its own
// with zlib, LZO, snappy or zstd. The flattened form (makedumpfile -F, and
// QEMU's kdump-* before 8.2) is a "makedumpfile" header and a stream of
// (offset, size, bytes) records of that same file; it is read through the
// records in place, without rearranging it first (makedumpfile -R).
//
// Unlike an ELF core, a compressed page cannot be mapped. Every consumer of
// an image (walkers, the GPU gather, the root scan) reads plain pointers, so
// pages are decompressed once, up front and over all cores, into memory the
// image owns; a page that decompresses to zeros is never written, and costs
// no memory (QEMU stores a guest's free memory as one shared zero page).
// Frames the 2nd bitmap leaves out (filtered by the dump level, or no RAM)
// are unbacked, as are pages an incomplete dump lost. Parsing is strict and
// bounds every field by the file; errors are input_errors naming the file.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "input/elf_core.hpp"
#include "input/memory_image.hpp"

namespace ptwalk {

// Page compression flags (page_desc.flags; the header's status has the one used).
inline constexpr u32 kdump_zlib = 0x1;
inline constexpr u32 kdump_lzo = 0x2;
inline constexpr u32 kdump_snappy = 0x4;
inline constexpr u32 kdump_incomplete = 0x8;  // status only: the dump ran out of space
inline constexpr u32 kdump_zstd = 0x20;

// What the headers say, for `ptwalk info`.
struct kdump_header {
  bool flattened = false;  // read from a "makedumpfile" flattened stream
  u32 header_version = 0;
  u32 status = 0;  // compression used, incomplete
  u32 block_size = 0;  // bytes per page and per header block
  u64 max_mapnr = 0;  // frames the bitmaps cover
  u32 dump_level = 0;  // makedumpfile -d: which kinds of pages were left out
  std::string machine;  // utsname.machine, e.g. "x86_64"
  std::string release;  // utsname.release, e.g. "6.1.0-56-amd64"
};

// Consecutive dumped frames whose descriptors are consecutive too.
struct kdump_run {
  u64 first_pfn = 0;
  u64 pages = 0;
  u64 first_descriptor = 0;  // index into the page_desc array
};

class kdump_file {
 public:
  // Maps and validates `path`: headers, notes, bitmaps, the extent of the
  // descriptor array. Pages are checked when they are decompressed.
  explicit kdump_file(const std::filesystem::path& path);
  // Validates an already mapped file (kept mapped while this object lives).
  explicit kdump_file(std::shared_ptr<const mapped_file> file);
  ~kdump_file();
  kdump_file(const kdump_file&) = delete;
  kdump_file& operator=(const kdump_file&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const;
  [[nodiscard]] const kdump_header& header() const { return header_; }
  // The ELF e_machine utsname.machine names (EM_X86_64, EM_AARCH64), or 0.
  [[nodiscard]] u32 machine() const { return machine_; }
  // The sub-header's ELF notes (QEMU CPU state, NT_PRSTATUS, VMCOREINFO);
  // VMCOREINFO from its own sub-header field when no note carries it.
  [[nodiscard]] std::span<const elf_note> notes() const { return notes_; }
  // Dumped frames in pfn order.
  [[nodiscard]] std::span<const kdump_run> runs() const { return runs_; }
  [[nodiscard]] u64 dumped_pages() const;

  // Decompresses every dumped page into `image`, one region per run, on
  // `jobs` threads (0: every core). Throws input_error naming the first bad
  // page (descriptor outside the file, unknown compression, a page that
  // does not decompress to exactly one block).
  void add_regions(memory_image& image, unsigned jobs = 0) const;

 private:
  class stream;  // the file's bytes at their logical offsets (flattened or not)

  void parse();
  void find_runs(u64 bitmap_at, u64 bitmap_size);

  std::shared_ptr<const mapped_file> file_;
  std::unique_ptr<const stream> stream_;
  kdump_header header_;
  u32 machine_ = 0;
  u64 descriptors_at_ = 0;  // logical offset of page_desc 0
  std::vector<std::byte> note_bytes_;  // notes copied out (a flattened file may split them)
  std::vector<std::byte> vmcoreinfo_bytes_;
  std::vector<elf_note> notes_;
  std::vector<kdump_run> runs_;
};

// True when `bytes` start like a kdump-family file ("KDUMP   ", the older
// "DISKDUMP", or a "makedumpfile" flattened stream); kdump_file reads the
// first and tells what the others are.
[[nodiscard]] bool has_kdump_signature(std::span<const std::byte> bytes);

// Names the compression flags in `flags` ("zlib", "lzo", "snappy", "zstd",
// "none"), e.g. for a header's status.
[[nodiscard]] std::string kdump_compression_name(u32 flags);

}  // namespace ptwalk
