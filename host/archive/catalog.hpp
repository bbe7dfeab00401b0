// host/archive/catalog.hpp — the archive directory and its catalog, the one file that says what it holds.
//
// ARCHIVE/catalog.json lists the packs and the snapshots (each with the
// name of its index file). Packs and index files are immutable and named
// by their SHA-256, so the catalog is the archive's whole state: every
// update writes its new files first and then replaces the catalog in one
// rename. A reader that read a catalog finds every file it names, and a
// writer killed before the rename leaves the archive as it was, plus
// unnamed files `gc` removes. Writers take ARCHIVE/lock (one at a time);
// readers hold ARCHIVE/readers.lock shared while they read, and gc takes
// it exclusively only to delete files no catalog names any more.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "archive/durable_file.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk::archive {

inline constexpr int layout_version = 1;

struct pack_entry {
  std::string name;  // SHA-256 of the pack's table, hex; file packs/NAME.pack
  u64 pages = 0;
  u64 bytes = 0;
};

struct snapshot_entry {
  std::string id;
  std::string index;    // SHA-256 of the index file, hex; file indexes/NAME.idx
  u64 file_bytes = 0;   // size of the image file as added
  u64 pages = 0;        // whole 4 KiB pages of the image
  u64 zero_pages = 0;   // of which zero (not stored)
  u64 new_pages = 0;    // pages this snapshot stored when added (the others were already held)
  u64 index_bytes = 0;  // size of its index file
};

struct catalog {
  int level = 3;  // zstd level of the packs
  std::vector<pack_entry> packs;
  std::vector<snapshot_entry> snapshots;

  [[nodiscard]] const snapshot_entry* find(std::string_view id) const;
  [[nodiscard]] u64 stored_bytes() const;  // packs and indexes
};

[[nodiscard]] std::filesystem::path index_path(const std::filesystem::path& archive, const std::string& name);

// Reads ARCHIVE/catalog.json; throws input_error naming it when the
// directory is not an archive or the catalog is malformed.
[[nodiscard]] catalog read_catalog(const std::filesystem::path& archive);
// For a writer: the catalog, or an empty one for a directory that is new,
// empty or holds only what a killed first add left (creates the folders).
[[nodiscard]] catalog open_catalog_for_writing(const std::filesystem::path& archive, int level);
// Replaces the catalog durably in one rename: the commit of every update.
void commit_catalog(const std::filesystem::path& archive, const catalog& next);

// The one-writer lock; blocks until the archive is free.
[[nodiscard]] file_lock lock_for_writing(const std::filesystem::path& archive);
// Held by readers while they read packs and indexes; blocks only while gc deletes.
[[nodiscard]] file_lock lock_for_reading(const std::filesystem::path& archive);
[[nodiscard]] file_lock lock_out_readers(const std::filesystem::path& archive);

}  // namespace ptwalk::archive
