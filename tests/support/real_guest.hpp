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
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>
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

// A manifest of the x86 variants' ELF cores (default, la57, pti), each at
// its vCPU 0's CR3; nullopt when the dumps are not there.
inline std::optional<std::string> real_x86_manifest() {
  const std::filesystem::path real = real_guest_dir();
  std::string manifest;
  for (const std::string variant : {"default", "la57", "pti"}) {
    const std::filesystem::path elf = real / variant / (variant + ".elf");
    if (!std::filesystem::exists(elf)) return std::nullopt;
    const auto registers = read_file(real / variant / "registers-cpu0.txt");
    std::smatch cr3;
    if (!std::regex_search(registers, cr3, std::regex("CR3=([0-9a-f]+)")))
      throw std::runtime_error("no CR3 in " + (real / variant / "registers-cpu0.txt").string());
    manifest += fmt::format(R"({{"id":"{}","format":"{}","memory":{{"elf":"{}"}},"roots":["0x{}"]}})"
                            "\n",
                            variant, variant == "la57" ? "x86_64-la57" : "x86_64", elf.string(), cr3[1].str());
  }
  return manifest;
}

}  // namespace ptwalk::testing
