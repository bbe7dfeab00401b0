// host/archive/pack.hpp — pack files: the archive's stored pages, compressed.
//
// A pack holds distinct non-zero pages, numbered 0..pages-1 in the order
// they were added, in standard zstd frames of up to `frame_pages` pages
// each (256 KiB: large enough to compress well, small enough that reading
// one page decompresses little). A final zstd skippable frame is the
// pack's table: every page's SHA-256, every frame's offset, size and page
// count, and a fixed footer. So `zstd -d` of a pack prints its pages, the
// pack describes itself (check and gc need nothing else), and its name is
// the SHA-256 of that table: packs written by different writers never
// collide and a damaged table is caught by its name. The layout follows
// restic's pack files (blobs, then a header locating them); docs/ARCHIVE.md.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "archive/durable_file.hpp"
#include "archive/page_hash.hpp"
#include "input/memory_image.hpp"

namespace ptwalk::archive {

inline constexpr u32 frame_pages = 64;

struct pack_frame {
  u64 offset = 0;           // of the zstd frame in the file
  u32 compressed_size = 0;  // bytes of the frame
  u32 pages = 0;            // pages it decompresses to
  u64 first_page = 0;       // number of its first page in the pack
};

// Writes one pack: append pages, then finish() puts it in place under its name.
// Destroyed unfinished (an error, a kill), it leaves only a temporary file
// that no catalog names and `gc` removes.
class pack_writer {
 public:
  pack_writer(std::filesystem::path packs_dir, int level);
  ~pack_writer();
  pack_writer(const pack_writer&) = delete;
  pack_writer& operator=(const pack_writer&) = delete;

  // Compresses `pages` (frames on `jobs` threads) and appends them in order;
  // returns the pack number of the first.
  u64 append(std::span<const std::byte* const> pages, std::span<const digest> ids, unsigned jobs);
  // Writes the table, fsyncs, renames to packs/NAME.pack and returns NAME.
  std::string finish();

  [[nodiscard]] u64 pages() const { return ids_.size(); }
  [[nodiscard]] u64 bytes() const { return size_; }

 private:
  std::filesystem::path dir_, temporary_;
  int level_;
  file_descriptor fd_;
  u64 size_ = 0;
  std::vector<digest> ids_;
  std::vector<pack_frame> frames_;
  bool finished_ = false;
};

// A pack opened for reading (mapped; the table parsed and checked for shape).
class pack_reader {
 public:
  // Throws input_error naming the file when it is not a well-formed pack.
  explicit pack_reader(const std::filesystem::path& file);

  [[nodiscard]] const std::filesystem::path& path() const { return file_.path(); }
  [[nodiscard]] u64 pages() const { return ids_.size(); }
  [[nodiscard]] std::span<const digest> ids() const { return ids_; }
  [[nodiscard]] std::span<const pack_frame> frames() const { return frames_; }
  [[nodiscard]] u64 file_bytes() const { return file_.bytes().size(); }
  // SHA-256 of the table, hex: equals the file's name when the table is intact.
  [[nodiscard]] const std::string& table_name() const { return table_name_; }
  // The frame holding `page` (< pages()).
  [[nodiscard]] u32 frame_of(u64 page) const;
  // Decompresses frame `f` into `out` (frames()[f].pages pages); throws
  // input_error when the frame does not decompress to exactly that.
  void decompress(u32 f, std::span<std::byte> out) const;

 private:
  mapped_file file_;
  std::vector<digest> ids_;
  std::vector<pack_frame> frames_;
  std::string table_name_;
};

[[nodiscard]] std::filesystem::path pack_path(const std::filesystem::path& archive, const std::string& name);

}  // namespace ptwalk::archive
