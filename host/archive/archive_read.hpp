// host/archive/archive_read.hpp — rebuilding archived image files: to disk (restore) or to memory (walk in place).
//
// A snapshot's image file is rebuilt from its index: every frame its pages
// need is decompressed once, on all cores, and each page is written at its
// file offsets; zero pages are never touched (holes on disk, untouched
// anonymous memory in a mapping), so they cost nothing.
//
// Read in place (a manifest's {"archive", "snapshot"} memory), the image is
// lazy by default: a lazy_mapping whose pages are rebuilt one by one when
// first read, from a small cache of decompressed frames, each stored page
// checked against its SHA-256 — a walk reads its page tables and little
// else. Without userfaultfd, or with PTWALK_ARCHIVE_EAGER=1, the whole
// image is rebuilt first instead (docs/ARCHIVE.md).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "archive/catalog.hpp"
#include "archive/pack.hpp"
#include "archive/snapshot_index.hpp"
#include "input/snapshot.hpp"

namespace ptwalk::archive {

// An archive opened for reading: the catalog as of opening, packs mapped on
// first use. Holds the readers' lock, so gc deletes nothing it could read.
class archive_reader {
 public:
  explicit archive_reader(const std::filesystem::path& archive);

  [[nodiscard]] const std::filesystem::path& path() const { return archive_; }
  [[nodiscard]] const catalog& contents() const { return catalog_; }
  // The entry of `id`; throws input_error naming the archive when there is none.
  [[nodiscard]] const snapshot_entry& entry(std::string_view id) const;
  // Reads and decodes the index; throws input_error when it is missing or damaged.
  [[nodiscard]] snapshot_index read_index(const snapshot_entry& entry) const;
  [[nodiscard]] const pack_reader& pack(const std::string& name) { return *shared_pack(name); }
  [[nodiscard]] std::shared_ptr<const pack_reader> shared_pack(const std::string& name);

  // Writes the image file `id` as added to `out`, sparse, whole or not at all.
  void restore(std::string_view id, const std::filesystem::path& out, unsigned jobs);
  // The image file `id` in memory, with its manifest line as added.
  struct loaded_file {
    snapshot_spec spec;
    std::shared_ptr<const mapped_file> file;
  };
  [[nodiscard]] loaded_file load(std::string_view id, unsigned jobs);

 private:
  // Calls write(file_offset, bytes) for every stored page and extra range of `index`, from several threads.
  template <class Write>
  void rebuild(const snapshot_index& index, unsigned jobs, Write&& write);

  std::filesystem::path archive_;
  file_lock reading_;
  catalog catalog_;
  std::map<std::string, std::shared_ptr<const pack_reader>, std::less<>> packs_;
};

enum class archive_read_mode {
  automatic,  // lazy, unless PTWALK_ARCHIVE_EAGER=1 or userfaultfd is refused (a note on stderr)
  eager,      // rebuild the whole image first
  lazy,       // pages on first touch; throws std::runtime_error with the reason when userfaultfd is refused
};

// The image file `id` of the reader's archive, read in place; the reader
// (its lock and packs) lives as long as the file. A damaged stored page
// found lazily ends the process: "ptwalk: ARCHIVE: snapshot ID: page N ...",
// temporaries removed, exit 1.
struct opened_file {
  archive_reader::loaded_file loaded;
  bool lazy = false;
};
[[nodiscard]] opened_file open_archived_file(const std::shared_ptr<archive_reader>& reader, std::string_view id,
                                             archive_read_mode mode);

// Adds an archived snapshot's memory to `image`, as its original source would.
void add_archived_regions(memory_image& image, const archive_source& source, const std::filesystem::path& base_dir,
                          archive_read_mode mode = archive_read_mode::automatic);

}  // namespace ptwalk::archive
