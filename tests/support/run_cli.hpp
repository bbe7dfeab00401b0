// tests/support/run_cli.hpp — run the real ptwalk binary with its output captured.
//
// CLI tests check what a user sees: the exit status, stdout, and the
// one-line error on stderr. The binary's path comes from the build
// (PTWALK_BINARY), or from the environment variable of that name when the
// tests run from a carried copy of the build (bench/gpu-check.sh on a GPU
// machine); its output is captured in the test's temp_dir.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "support/temp_dir.hpp"

namespace ptwalk::testing {

struct run_result {
  int status = -1;
  std::string out, err;
};

// Runs `ptwalk ARGS` (each argument single-quoted) in the current directory.
inline run_result run_ptwalk(const temp_dir& dir, const std::vector<std::string>& args) {
  const char* carried = std::getenv("PTWALK_BINARY");
  std::string command = carried && *carried ? carried : PTWALK_BINARY;
  for (const auto& a : args) command += " '" + a + "'";
  const auto out = dir / "stdout.txt", err = dir / "stderr.txt";
  command += fmt::format(" >'{}' 2>'{}'", out.string(), err.string());
  const int raw = std::system(command.c_str());
  run_result r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace ptwalk::testing
