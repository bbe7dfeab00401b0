// host/cluster/mpi_world.cpp — MPI_Init/Finalize, an all-ranks-succeeded vote, and an ordered gather.
#include "cluster/mpi_world.hpp"

#include <algorithm>
#include <cstdint>

#include "input/memory_image.hpp"

#if PTWALK_WITH_MPI
#include <mpi.h>
#endif

namespace ptwalk {

#if PTWALK_WITH_MPI

bool mpi_built() { return true; }

mpi_world::mpi_world() {
  MPI_Init(nullptr, nullptr);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

mpi_world::~mpi_world() { MPI_Finalize(); }

bool mpi_world::all_succeeded(bool mine) const {
  int ok = mine ? 1 : 0, all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all != 0;
}

void mpi_world::gather_to_root(std::string& bytes) const {
  // MPI counts are ints: long outputs go in pieces.
  constexpr std::size_t piece = std::size_t{1} << 30;
  if (rank_ != 0) {
    std::uint64_t length = bytes.size();
    MPI_Send(&length, 1, MPI_UINT64_T, 0, 0, MPI_COMM_WORLD);
    for (std::size_t at = 0; at < bytes.size(); at += piece)
      MPI_Send(bytes.data() + at, static_cast<int>(std::min(piece, bytes.size() - at)), MPI_BYTE, 0, 1,
               MPI_COMM_WORLD);
    return;
  }
  for (int from = 1; from < size_; ++from) {
    std::uint64_t length = 0;
    MPI_Recv(&length, 1, MPI_UINT64_T, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    const std::size_t start = bytes.size();
    bytes.resize(start + length);
    for (std::size_t at = 0; at < length; at += piece)
      MPI_Recv(bytes.data() + start + at, static_cast<int>(std::min<std::size_t>(piece, length - at)), MPI_BYTE,
               from, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
}

#else

bool mpi_built() { return false; }

mpi_world::mpi_world() {
  throw input_error(
      "launched by an MPI launcher with several ranks, but this ptwalk was built without MPI "
      "(-DPTWALK_MPI=ON); run the ranks as shards with --shard I/N and `ptwalk merge` their parts");
}

mpi_world::~mpi_world() = default;
bool mpi_world::all_succeeded(bool mine) const { return mine; }
void mpi_world::gather_to_root(std::string&) const {}

#endif

}  // namespace ptwalk
