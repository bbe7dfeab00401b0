// tests/fuzz/manifest_fuzz.cpp — libFuzzer target: one manifest line.
//
// Parsing must end in a spec or an input_error; a spec must print as a line
// that parses back to the same line (the writer and the parser agree).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "input/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ptwalk;
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  snapshot_spec spec;
  try {
    spec = parse_manifest_line(line, "fuzz.jsonl", 1);
  } catch (const input_error&) {
    return 0;
  }
  const std::string printed = format_manifest_line(spec);
  if (format_manifest_line(parse_manifest_line(printed, "printed.jsonl", 1)) != printed) __builtin_trap();
  return 0;
}
