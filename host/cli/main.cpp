// host/cli/main.cpp — entry point of the ptwalk command line.
#include <algorithm>
#include <cstdio>
#include <exception>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "cluster/mpi_world.hpp"
#include "command.hpp"
#include "common/malloc_policy.hpp"
#include "common/signal_cleanup.hpp"
#include "input/memory_image.hpp"

namespace ptwalk::cli {

std::vector<registered_command>& command_registry() {
  static std::vector<registered_command> commands;
  return commands;
}

// Version, the walk backends this binary has, and whether a GPU is visible.
std::string version_text() {
  std::string backends;
  for (const auto b : {ptwalk::walk_backend::reference, ptwalk::walk_backend::cpu, ptwalk::walk_backend::cuda})
    if (ptwalk::backend_compiled(b)) backends += fmt::format("{}{}", backends.empty() ? "" : ", ", ptwalk::backend_name(b));
  return fmt::format("ptwalk {}\nbackends: {} (auto: {})\nGPU: {}", PTWALK_VERSION, backends,
                     ptwalk::backend_name(ptwalk::resolve_backend(ptwalk::walk_backend::automatic)),
                     ptwalk::gpu_description());
}

}  // namespace ptwalk::cli

int main(int argc, char** argv) {
  // Each batch reuses the memory the last one freed (no page faults per batch).
  ptwalk::keep_freed_memory_for_reuse();
  // Temporary outputs go, and a truncated input gets its message, however the run ends.
  ptwalk::install_signal_cleanup();
  CLI::App app{"ptwalk: walk the page tables of many address spaces in guest memory images,\n"
               "find the tables they share, and rebuild compact snapshots that keep the sharing."};
  app.name("ptwalk");
  // Computed only when asked: probing for a GPU starts the CUDA runtime.
  app.set_version_flag("--version", [] { return ptwalk::cli::version_text(); });
  app.require_subcommand(1);
  auto& commands = ptwalk::cli::command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.order < b.order; });
  for (const auto& command : commands) command.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ptwalk::reported_failure& e) {
    return e.status;
  } catch (...) {
    const auto report = ptwalk::describe_failure(std::current_exception());
    fmt::print(stderr, "{}", report.line);
    return report.status;
  }
  return 0;
}
