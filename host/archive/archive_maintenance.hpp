// host/archive/archive_maintenance.hpp — `archive ls`, `check`, `rm` and `gc`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ptwalk/config.hpp"

namespace ptwalk::archive {

struct snapshot_listing {
  std::string id;
  u64 file_bytes = 0, pages = 0, zero_pages = 0;
  u64 shared_pages = 0;  // stored pages another snapshot uses too
  u64 own_pages = 0;     // stored pages only this snapshot uses
};
[[nodiscard]] std::vector<snapshot_listing> list_snapshots(const std::filesystem::path& archive);

struct check_report {
  u64 packs = 0, pages = 0, snapshots = 0;
  std::vector<std::string> problems;  // one line each: packs and files that are damaged
  std::vector<std::string> damaged;   // one line per damaged snapshot: "ID: what"
  [[nodiscard]] bool ok() const { return problems.empty() && damaged.empty(); }
};
// Re-hashes every stored page and every index; reads, never writes.
[[nodiscard]] check_report check_archive(const std::filesystem::path& archive, unsigned jobs);

// Removes snapshots from the catalog (their pages stay until gc); throws
// input_error, the archive unchanged, when an id is not archived.
void remove_snapshots(const std::filesystem::path& archive, const std::vector<std::string>& ids);

struct gc_report {
  u64 packs_dropped = 0, packs_rewritten = 0, pages_dropped = 0, files_deleted = 0;
  u64 bytes_before = 0, bytes_after = 0;
};
// Reclaims pages no snapshot uses: drops packs nobody uses, rewrites packs
// with at least a quarter unused (and the indexes that point into them),
// commits, then deletes every file the catalog does not name.
gc_report collect_garbage(const std::filesystem::path& archive, unsigned jobs);

}  // namespace ptwalk::archive
