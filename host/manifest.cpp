// host/manifest.cpp — hex helpers and the manifest line writer.
#include "manifest.hpp"

#include <charconv>

#include <fmt/format.h>

namespace ptwalk {

std::string hex(u64 value) { return fmt::format("{:#x}", value); }

std::optional<u64> parse_hex(std::string_view text) {
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  if (text.empty() || text.size() > 16) return std::nullopt;
  u64 value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

namespace {

nlohmann::json memory_json(const memory_source& memory) {
  struct to_json {
    nlohmann::json operator()(const raw_source& s) const {
      return {{"raw", s.path}, {"base", hex(s.base)}};
    }
    nlohmann::json operator()(const elf_source& s) const { return {{"elf", s.path}}; }
    nlohmann::json operator()(const region_source& s) const {
      nlohmann::json regions = nlohmann::json::array();
      for (const auto& r : s.regions)
        regions.push_back({{"path", r.path}, {"gpa", hex(r.gpa)}, {"size", hex(r.size)},
                           {"offset", hex(r.offset)}});
      return {{"regions", std::move(regions)}};
    }
  };
  return std::visit(to_json{}, memory);
}

}  // namespace

std::string format_manifest_line(const snapshot_spec& spec) {
  // ordered_json keeps the keys in the order a reader expects.
  nlohmann::ordered_json line;
  line["id"] = spec.id;
  line["format"] = std::string(format_name(spec.format));
  line["memory"] = memory_json(spec.memory);
  auto& roots = line["roots"] = nlohmann::ordered_json::array();
  for (u64 root : spec.roots) roots.push_back(hex(root));
  if (!spec.labels.empty()) line["labels"] = spec.labels;
  if (!spec.meta.is_null()) line["meta"] = spec.meta;
  return line.dump();
}

}  // namespace ptwalk
