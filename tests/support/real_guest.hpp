// tests/support/real_guest.hpp — where the real guest dumps of tests/real_guest/make-dumps.py are.
//
// The dumps are found in $PTWALK_REAL_GUEST_DIR, else
// $PTWALK_REAL_GUEST_CACHE/current, else ~/.cache/ptwalk-real-guest/current
// (make-dumps.py points `current` at what it generated). Each variant has
// its own folder: VARIANT.elf, VARIANT.kdump-* (variant.json lists them),
// registers-cpuN.txt, tlb-cpuN.txt, console.log, variant.json.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ptwalk::testing {

inline std::filesystem::path real_guest_dir() {
  if (const char* dir = std::getenv("PTWALK_REAL_GUEST_DIR")) return dir;
  if (const char* cache = std::getenv("PTWALK_REAL_GUEST_CACHE")) return std::filesystem::path(cache) / "current";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/root") / ".cache" / "ptwalk-real-guest" / "current";
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct variant_files {
  std::filesystem::path dir;
  std::string name;

  [[nodiscard]] std::filesystem::path elf() const { return dir / (name + ".elf"); }
  [[nodiscard]] std::filesystem::path file(std::string_view leaf) const { return dir / leaf; }
  [[nodiscard]] nlohmann::json description() const { return nlohmann::json::parse(read_file(file("variant.json"))); }
};

}  // namespace ptwalk::testing
