// tests/support/shell.hpp — runs a shell command line (mpirun, sbatch) and captures what it prints.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <fmt/format.h>

namespace ptwalk::testing {

struct shell_result {
  int status = -1;
  std::string out;  // stdout and stderr
};

// Runs `command` with bash, capturing both streams.
inline shell_result shell(const std::string& command) {
  shell_result r;
  FILE* pipe = ::popen(fmt::format("bash -c '{} 2>&1'", command).c_str(), "r");
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) r.out.append(buffer, n);
  const int raw = ::pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

}  // namespace ptwalk::testing
