// host/cluster/archive_merge.hpp — fleet archives by shard, without MPI: per-shard archives and their merge.
//
// `archive add A M --shard I/N` (or a Slurm array task) adds shard I's
// snapshots to a new archive A and records the shard in A/shard.json (the
// record `ptwalk merge` reads, cluster/shard_part.hpp). `archive merge OUT
// PART...` checks that the parts are one whole set, then adds their
// snapshots to OUT in manifest order, each image restored from its part:
// the same `archive add` steps over the same pages in the same order as one
// process, so each distinct page is stored once and OUT's catalog, packs and
// indexes are those a single-process add of the manifest writes.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "archive/archive_add.hpp"
#include "cluster/shard.hpp"

namespace ptwalk {

// Adds the shard's snapshots of `specs` (the whole manifest) to the new archive `archive`.
archive::add_report add_shard_archive(const std::filesystem::path& archive, const std::vector<snapshot_spec>& specs,
                                      const shard_plan& plan, const std::filesystem::path& base_dir,
                                      const archive::add_options& options);

// Adds every snapshot of the shard archives `parts` to `out`; throws
// input_error, `out` unchanged, when the set is incomplete or mismatched.
archive::add_report merge_archives(const std::filesystem::path& out, std::span<const std::string> parts,
                                   unsigned jobs);

}  // namespace ptwalk
