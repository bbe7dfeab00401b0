// host/cli/command.hpp — how subcommands plug into the ptwalk CLI.
//
// Each command lives in its own file and registers itself with
// PTWALK_COMMAND(order, fn): fn(CLI::App&) adds the subcommand and its
// callback. `order` fixes the order in --help. Callbacks report bad input by
// throwing input_error; main prints it as one line and exits non-zero.
#pragma once

#include <CLI/CLI.hpp>

#include <vector>

namespace ptwalk::cli {

using command_setup = void (*)(CLI::App&);

struct registered_command {
  int order;
  command_setup setup;
};

std::vector<registered_command>& command_registry();

struct command_registrar {
  command_registrar(int order, command_setup setup) {
    command_registry().push_back({order, setup});
  }
};

}  // namespace ptwalk::cli

#define PTWALK_COMMAND_CAT2(a, b) a##b
#define PTWALK_COMMAND_CAT(a, b) PTWALK_COMMAND_CAT2(a, b)
#define PTWALK_COMMAND(order, fn) \
  static const ::ptwalk::cli::command_registrar PTWALK_COMMAND_CAT(ptwalk_command_, __LINE__){order, fn}
