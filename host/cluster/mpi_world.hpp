// host/cluster/mpi_world.hpp — the few MPI steps the ranks of one launch need.
//
// Built with Open MPI when CMake finds it (-DPTWALK_MPI=AUTO|ON|OFF); without
// it, mpi_built() is false and an mpi_world cannot be made, so a command
// launched by mpirun with several ranks says so instead of writing N copies.
// MPI is started only under an MPI launch of several ranks: plain runs and
// Slurm array tasks never touch it.
#pragma once

#include <exception>
#include <string>
#include <vector>

namespace ptwalk {

[[nodiscard]] bool mpi_built();

// The one line main prints for an error that ends a command, and the exit
// status: 1 for an input_error, 2 for anything else.
struct failure_report {
  std::string line;
  int status = 2;
};
[[nodiscard]] failure_report describe_failure(const std::exception_ptr& error);

// Thrown on a rank that has already printed its own error (main prints
// nothing more and exits with `status`).
struct reported_failure : std::exception {
  explicit reported_failure(int exit_status) : status(exit_status) {}
  [[nodiscard]] const char* what() const noexcept override { return "error already reported"; }
  int status;
};

// MPI_Init on construction, MPI_Finalize on destruction (MPI_COMM_WORLD).
class mpi_world {
 public:
  mpi_world();  // throws input_error when built without MPI
  ~mpi_world();
  mpi_world(const mpi_world&) = delete;
  mpi_world& operator=(const mpi_world&) = delete;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  // Whether every rank's `mine` is true (a collective: all ranks call it).
  [[nodiscard]] bool all_succeeded(bool mine) const;
  // After a step every rank ran (a collective): returns when all succeeded.
  // Otherwise every rank prints its line (its own error, or
  // `others_message`), and only once all have printed does each throw
  // reported_failure: mpirun ends the job at the first non-zero exit, which
  // could otherwise cut off a rank's message.
  void succeed_together(const std::exception_ptr& mine, const std::string& others_message) const;
  // Rank 0 gets every rank's bytes appended to its own, in rank order;
  // the others' are sent (in pieces under 1 GiB) and left as they were.
  void gather_to_root(std::string& bytes) const;
  // Every rank gets rank 0's `bytes`.
  void broadcast(std::string& bytes) const;
  // outgoing[r] goes to rank r; returns what each rank sent this one, by
  // rank (MPI_Alltoallv). Throws input_error when a rank's share passes 2 GiB.
  [[nodiscard]] std::vector<std::string> exchange(const std::vector<std::string>& outgoing) const;

 private:
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace ptwalk
