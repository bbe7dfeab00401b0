// host/cluster/distributed_add.hpp — `archive add` by the ranks of one MPI launch, each page stored once.
//
// Every rank lays out and hashes the snapshots of its shard. Content hashes
// are owned by rank (hash modulo ranks): each rank sends every new page it
// holds (hash and bytes, once per rank) to the page's owner with one
// MPI_Alltoallv, the owner stores each distinct page once in its own pack
// and answers where it went, each rank writes its snapshots' indexes, and
// rank 0 commits the catalog once every rank has voted success. A failure
// on any rank leaves the catalog, and so the archive, as it was.
// The result holds the same pages and snapshot entries as a single-process
// add of the whole manifest; only the packs' layout and names differ.
#pragma once

#include <filesystem>
#include <vector>

#include "archive/archive_add.hpp"
#include "cluster/mpi_world.hpp"
#include "cluster/shard.hpp"

namespace ptwalk {

// `specs` is the whole manifest, `plan` this rank's shard of it. The report
// (whole fleet) is complete on rank 0 only.
archive::add_report add_snapshots_distributed(const mpi_world& world, const std::filesystem::path& archive,
                                              const std::vector<snapshot_spec>& specs, const shard_plan& plan,
                                              const std::filesystem::path& base_dir,
                                              const archive::add_options& options);

}  // namespace ptwalk
