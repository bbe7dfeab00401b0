// host/cluster/mpi_world.cpp — MPI_Init/Finalize, an all-ranks-succeeded vote, an ordered gather,
// a broadcast and an all-to-all exchange.
#include "cluster/mpi_world.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>

#include <fmt/format.h>

#include "input/memory_image.hpp"

#if PTWALK_WITH_MPI
#include <mpi.h>
#endif

namespace ptwalk {

failure_report describe_failure(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const input_error& e) {
    return {fmt::format("ptwalk: {}\n", e.what()), 1};
  } catch (const std::exception& e) {
    return {fmt::format("ptwalk: error: {}\n", e.what()), 2};
  } catch (...) {
    return {"ptwalk: error: unknown exception\n", 2};
  }
}

namespace {
void wait_for_every_rank() {
#if PTWALK_WITH_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
}
}  // namespace

void mpi_world::succeed_together(const std::exception_ptr& mine, const std::string& others_message) const {
  if (all_succeeded(mine == nullptr)) return;
  const failure_report report =
      describe_failure(mine ? mine : std::make_exception_ptr(input_error(others_message)));
  std::fputs(report.line.c_str(), stderr);
  std::fflush(stderr);
  wait_for_every_rank();  // every rank has said why before any exits
  throw reported_failure(report.status);
}

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

void mpi_world::broadcast(std::string& bytes) const {
  std::uint64_t length = bytes.size();
  MPI_Bcast(&length, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  bytes.resize(length);
  if (length > std::size_t{INT_MAX}) throw input_error("MPI broadcast: more than 2 GiB");
  MPI_Bcast(bytes.data(), static_cast<int>(length), MPI_BYTE, 0, MPI_COMM_WORLD);
}

std::vector<std::string> mpi_world::exchange(const std::vector<std::string>& outgoing) const {
  // MPI_Alltoallv counts and displacements are ints.
  std::vector<int> send_counts(size_), send_at(size_), receive_counts(size_), receive_at(size_);
  std::string sent;
  for (int r = 0; r < size_; ++r) {
    send_at[r] = static_cast<int>(sent.size());
    send_counts[r] = static_cast<int>(outgoing[r].size());
    sent += outgoing[r];
  }
  const bool fits = sent.size() <= std::size_t{INT_MAX};
  if (!all_succeeded(fits)) throw input_error("MPI exchange: a rank's share passes 2 GiB; use more ranks");
  MPI_Alltoall(send_counts.data(), 1, MPI_INT, receive_counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::uint64_t total = 0;
  for (int r = 0; r < size_; ++r) receive_at[r] = static_cast<int>(total), total += receive_counts[r];
  const bool received_fits = total <= std::uint64_t{INT_MAX};
  if (!all_succeeded(received_fits)) throw input_error("MPI exchange: a rank's share passes 2 GiB; use more ranks");
  std::string received(total, '\0');
  MPI_Alltoallv(sent.data(), send_counts.data(), send_at.data(), MPI_BYTE, received.data(), receive_counts.data(),
                receive_at.data(), MPI_BYTE, MPI_COMM_WORLD);
  std::vector<std::string> out(size_);
  for (int r = 0; r < size_; ++r) out[r] = received.substr(receive_at[r], receive_counts[r]);
  return out;
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
void mpi_world::broadcast(std::string&) const {}
std::vector<std::string> mpi_world::exchange(const std::vector<std::string>& outgoing) const { return outgoing; }

#endif

}  // namespace ptwalk
