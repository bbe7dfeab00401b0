// host/cluster/merge.hpp — `ptwalk merge`: shards' parts back into the single-process output.
//
// Walk and roots parts (files) merge into one file: each part's bytes
// after its shard record, in shard order. Import parts merge into one
// manifest: their lines in shard order, each dump named relative to it. Compact parts (directories)
// merge into one directory: every image (hard-linked when the file system
// allows, else copied), manifest.jsonl as the parts' manifests in shard
// order, and the shards' reports summed. Shards are contiguous ranges of
// the manifest and images keep the whole manifest's names, so both are the
// bytes one process writes. The set must be whole: one part per shard
// 0..N-1, all of the same manifest (by SHA-256), command and options;
// otherwise nothing is written and the error names the missing shards.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/shard_part.hpp"
#include "compact/compact_job.hpp"

namespace ptwalk {

struct merge_result {
  std::string command;  // "walk", "roots", "import" or "compact"
  std::size_t shards = 0;
  std::size_t snapshots = 0;
  std::string manifest;
  std::optional<compact_report> report;  // compact: the shards' reports summed
};

// The parts of one `command` job in shard order, checked as merge_parts
// checks them; throws input_error naming what is missing or mismatched.
struct checked_part {
  std::filesystem::path path;
  shard_part part;
};
[[nodiscard]] std::vector<checked_part> check_parts(std::span<const std::string> parts, std::string_view command);

// `replace`: an existing non-empty output directory may be replaced (compact parts).
[[nodiscard]] merge_result merge_parts(const std::filesystem::path& out, std::span<const std::string> parts,
                                       bool replace = false);

}  // namespace ptwalk
