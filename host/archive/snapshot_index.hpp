// host/archive/snapshot_index.hpp — one snapshot's index: its image file as stored pages plus the rest.
//
// An image file (raw, or an ELF core) is rebuilt from: its size; runs of
// whole guest-physical pages, each placed at a file offset and taken from
// consecutive pages of one pack; and the bytes no stored or zero page
// covers (ELF headers and notes, partial pages), kept verbatim. Zero pages
// are holes. Pages are cut on the guest-physical grid, not the file's, so
// the same guest page is the same stored page in a raw image and in an
// ELF core whose segments start at any file offset.
//
// On disk (indexes/NAME.idx, NAME its SHA-256) the index is one zstd frame:
// a magic line, a JSON line (manifest line, size, packs, counts), then the
// runs column by column with offsets delta-coded, then the extra ranges and
// their bytes — so `zstd -dc` shows what it is.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "ptwalk/config.hpp"

namespace ptwalk::archive {

struct page_run {
  u64 file_offset = 0;  // where the first page goes in the image file
  u64 count = 0;        // pages
  u32 pack = 0;         // position in snapshot_index::packs
  u64 first_page = 0;   // page number in that pack
};

struct byte_range {
  u64 offset = 0;
  u64 size = 0;
};

struct snapshot_index {
  std::string spec_line;               // the manifest line as added (its memory names the original file)
  u64 file_size = 0;
  std::vector<std::string> packs;      // pack names the runs refer to
  std::vector<page_run> runs;          // by file offset
  std::vector<byte_range> extras;      // file bytes outside whole pages, by offset
  std::vector<std::byte> extra_bytes;  // their bytes, back to back
};

// Appends one page at `file_offset` from (pack, page), extending the last
// run when both sides continue it.
void append_page(std::vector<page_run>& runs, u64 file_offset, u32 pack, u64 page);

[[nodiscard]] std::vector<std::byte> encode_index(const snapshot_index& index);
// Throws input_error naming `file` when the bytes are not a well-formed index.
[[nodiscard]] snapshot_index decode_index(std::span<const std::byte> bytes, const std::filesystem::path& file);

}  // namespace ptwalk::archive
