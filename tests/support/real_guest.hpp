// tests/support/real_guest.hpp — where the real guest dumps of tests/real_guest/make-*dumps.py are.
//
// The x86 dumps are found in $PTWALK_REAL_GUEST_DIR, else
// $PTWALK_REAL_GUEST_CACHE/current, else ~/.cache/ptwalk-real-guest/current
// (make-dumps.py points `current` at what it generated); the arm64 ones
// (make-arm64-dumps.py) likewise under PTWALK_REAL_GUEST_ARM64_DIR,
// PTWALK_REAL_GUEST_ARM64_CACHE, ~/.cache/ptwalk-real-guest-arm64. Each
// variant has its own folder: VARIANT.elf, VARIANT.kdump-* (variant.json
// lists them), console.log, variant.json, and the generator's truth files.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ptwalk::testing {

inline std::filesystem::path generated_dir(const char* dir_variable, const char* cache_variable,
                                           std::string_view default_cache) {
  if (const char* dir = std::getenv(dir_variable)) return dir;
  if (const char* cache = std::getenv(cache_variable)) return std::filesystem::path(cache) / "current";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/root") / ".cache" / default_cache / "current";
}

inline std::filesystem::path real_guest_dir() {
  return generated_dir("PTWALK_REAL_GUEST_DIR", "PTWALK_REAL_GUEST_CACHE", "ptwalk-real-guest");
}

inline std::filesystem::path real_guest_arm64_dir() {
  return generated_dir("PTWALK_REAL_GUEST_ARM64_DIR", "PTWALK_REAL_GUEST_ARM64_CACHE", "ptwalk-real-guest-arm64");
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
