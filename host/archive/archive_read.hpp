// host/archive/archive_read.hpp — rebuilding archived image files: to disk (restore) or to memory (walk in place).
//
// A snapshot's image file is rebuilt from its index: every frame its pages
// need is decompressed once, on all cores, and each page is written at its
// file offsets; zero pages are never touched (holes on disk, untouched
// anonymous memory in a mapping), so they cost nothing.
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
  [[nodiscard]] const pack_reader& pack(const std::string& name);

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
  std::map<std::string, std::unique_ptr<pack_reader>, std::less<>> packs_;
};

// Adds an archived snapshot's memory to `image`, as its original source would.
void add_archived_regions(memory_image& image, const archive_source& source, const std::filesystem::path& base_dir);

}  // namespace ptwalk::archive
