// host/archive/archive_add.hpp — `archive add`: store snapshots, each distinct page once.
//
// The steps are separate functions so that a distributed add (several
// writers, one commit) can reuse them: lay out the image file on the
// guest-physical page grid, identify its pages (page_hash.hpp), decide
// which pages are new against everything already stored (page_store,
// plan_pages), compress the new ones into a pack (pack_writer), and commit
// indexes and packs with one catalog switch (commit_catalog).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive/catalog.hpp"
#include "archive/page_hash.hpp"
#include "archive/snapshot_index.hpp"
#include "input/snapshot.hpp"

namespace ptwalk::archive {

// An image file cut into whole guest-physical pages and the bytes between them.
struct image_file_layout {
  std::shared_ptr<const mapped_file> file;
  std::vector<u64> page_offsets;   // file offsets of whole guest pages, ascending
  std::vector<byte_range> extras;  // file bytes no page covers (headers, notes, partial pages)
};
// Opens the image file `file` of `spec`: by default maps it; `archive merge`
// hands out the images it restores from its parts instead.
using image_opener =
    std::function<std::shared_ptr<const mapped_file>(const snapshot_spec& spec, const std::filesystem::path& file)>;
// Raw images, ELF cores and single-file region lists; throws input_error for other sources.
[[nodiscard]] image_file_layout lay_out_image_file(const snapshot_spec& spec, const std::filesystem::path& base_dir,
                                                   const image_opener& open = {});

struct page_location {
  u32 pack = 0;  // position in the writer's list of packs (the catalog's, then new ones)
  u64 page = 0;
};

// Every stored page by content, across all packs.
class page_store {
 public:
  [[nodiscard]] std::optional<page_location> find(const digest& id) const;
  void insert(const digest& id, page_location where) { locations_.emplace(id, where); }
  [[nodiscard]] std::size_t size() const { return locations_.size(); }

 private:
  std::unordered_map<digest, page_location, digest_hasher> locations_;
};
// Reads the tables of the catalog's packs (pack i of the catalog is location pack i).
[[nodiscard]] page_store load_page_store(const std::filesystem::path& archive, const catalog& contents);

// Where each page of one image goes: nullopt for zero pages; new pages get
// the next numbers of `new_pack` and are recorded in the store, so a page
// repeated inside the batch is stored once.
struct page_plan {
  std::vector<std::optional<page_location>> where;  // one per page
  std::vector<std::size_t> new_pages;               // indices of the pages to store, in order
  u64 zero = 0, already_stored = 0;
};
[[nodiscard]] page_plan plan_pages(std::span<const page_identity> pages, page_store& store, u32 new_pack,
                                   u64 next_page);

// The index of an image laid out as `layout` whose page i is stored at
// where[i] (nullopt: a zero page), with pack numbers of the writer's list.
[[nodiscard]] snapshot_index index_image(const snapshot_spec& spec, const image_file_layout& layout,
                                         std::span<const std::optional<page_location>> where);

// Writes `index`, whose runs number packs in `pack_names`, durably under its
// name: the index then lists only the packs it uses. Returns the name and sets `bytes`.
std::string write_index(const std::filesystem::path& archive, snapshot_index& index,
                        const std::vector<std::string>& pack_names, u64& bytes);

struct add_options {
  int level = 3;      // zstd level for a new archive
  unsigned jobs = 0;  // threads; 0: every core
  scan_backend hash_backend = scan_backend::automatic;  // who hashes the pages (identify_pages)
  image_opener open_image;  // empty: map the files
};

struct add_report {
  u64 snapshots = 0;
  u64 input_bytes = 0;  // image file bytes read
  u64 pages = 0, zero_pages = 0, already_stored = 0, newly_stored = 0;
  u64 written_bytes = 0;  // new packs and indexes
  u64 archive_bytes = 0;  // whole archive after the add
  u64 archive_nonzero_pages = 0;  // non-zero pages of every snapshot the archive holds
  u64 archive_stored_pages = 0;   // distinct pages it stores
  double seconds = 0;
  // Who hashed the pages; under MPI every rank's distinct choice, joined by ", ".
  hash_backend_used hash_backend;

  // The report for `archive add --report`: these fields by name, hash_backend
  // as its name (hash_threads beside it, 0 for a GPU).
  [[nodiscard]] nlohmann::ordered_json to_json() const;
};

// Adds every snapshot (paths relative to `base_dir`); nothing is visible
// until the final commit. Throws input_error (the archive unchanged) when a
// snapshot id is already archived or an input is bad.
add_report add_snapshots(const std::filesystem::path& archive, const std::vector<snapshot_spec>& specs,
                         const std::filesystem::path& base_dir, const add_options& options);

}  // namespace ptwalk::archive
