// host/manifest.cpp — hex helpers, the strict manifest parser, the loader and the line writer.
#include "input/manifest.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include <fmt/format.h>

#include "archive/archive_read.hpp"
#include "input/elf_core.hpp"
#include "input/json_path.hpp"
#include "input/kdump_compressed.hpp"
#include "ptwalk/walk.hpp"

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

using nlohmann::json;

// Field access with errors naming the line and the key's path ("memory.regions[1].gpa").
class line_reader {
 public:
  line_reader(const std::filesystem::path& manifest, std::size_t line)
      : manifest_(manifest), line_(line) {}

  [[noreturn]] void fail(std::string_view problem) const {
    throw input_error(fmt::format("{}:{}: {}", manifest_.string(), line_, problem));
  }

  // Parses the line as one JSON object, rejecting a key that appears twice
  // in one object (nlohmann would silently keep the last), nesting deeper
  // than max_json_depth (printing and copying a value recurse), and naming
  // the key path of any other JSON error (a number that overflows a double).
  json parse_object(std::string_view text) const {
    json_path_tracker path;
    std::string duplicate;
    const json::parser_callback_t track = [&](int, json::parse_event_t event, json& parsed) {
      if (!path.on_event(event, parsed))
        fail(fmt::format("JSON nested deeper than {} levels at \"{}\"", max_json_depth, path.text(8)));
      if (event == json::parse_event_t::key && duplicate.empty() && !path.first_time(parsed.get<std::string>()))
        duplicate = parsed.get<std::string>();
      return true;
    };
    json value;
    try {
      value = json::parse(text, track);
    } catch (const json::parse_error& e) {
      // what() is "[json.exception.parse_error.N] parse error at …: reason"; keep the reason.
      const std::string_view what = e.what();
      const auto reason = what.find(": ");
      fail(fmt::format("malformed JSON at column {}: {}", e.byte,
                       reason == std::string_view::npos ? what : what.substr(reason + 2)));
    } catch (const json::exception& e) {
      // what() is "[json.exception.out_of_range.406] number overflow …"; keep the reason.
      const std::string_view what = e.what();
      const auto reason = what.find("] ");
      fail(fmt::format("\"{}\": {}", path.text(), reason == std::string_view::npos ? what : what.substr(reason + 2)));
    }
    if (!duplicate.empty()) fail(fmt::format("duplicate key \"{}\"", duplicate));
    if (!value.is_object()) fail("expected a JSON object");
    return value;
  }

  void only_keys(const json& object, std::string_view where,
                 std::initializer_list<std::string_view> allowed) const {
    for (const auto& [key, value] : object.items())
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        fail(fmt::format("unknown key \"{}\"", join(where, key)));
  }
  const json& require(const json& object, std::string_view where, const char* key) const {
    const auto it = object.find(key);
    if (it == object.end()) fail(fmt::format("missing key \"{}\"", join(where, key)));
    return *it;
  }
  std::string string(const json& value, std::string_view path) const {
    if (!value.is_string()) fail(fmt::format("\"{}\" must be a string", path));
    return value.get<std::string>();
  }
  std::string nonempty_string(const json& value, std::string_view path) const {
    std::string text = string(value, path);
    if (text.empty()) fail(fmt::format("\"{}\" must not be empty", path));
    return text;
  }
  u64 hex_value(const json& value, std::string_view path) const {
    if (!value.is_string()) fail(fmt::format("\"{}\" must be a hex string such as \"0x1000\"", path));
    const auto parsed = parse_hex(value.get_ref<const std::string&>());
    if (!parsed) fail(fmt::format("\"{}\": bad hex \"{}\"", path, value.get_ref<const std::string&>()));
    return *parsed;
  }
  // An optional hex field; 0 when absent.
  u64 optional_hex(const json& object, std::string_view where, const char* key) const {
    const auto it = object.find(key);
    return it == object.end() ? 0 : hex_value(*it, join(where, key));
  }

  static std::string join(std::string_view where, std::string_view key) {
    return where.empty() ? std::string(key) : fmt::format("{}.{}", where, key);
  }

 private:
  const std::filesystem::path& manifest_;
  std::size_t line_;
};

memory_source parse_memory(const line_reader& in, const json& memory) {
  const auto count = memory.is_object() ? memory.count("raw") + memory.count("elf") + memory.count("kdump") +
                                              memory.count("regions") + memory.count("archive")
                                        : 0;
  if (count != 1)
    in.fail("\"memory\" must be an object with exactly one of \"raw\", \"elf\", \"kdump\", \"regions\", \"archive\"");
  if (memory.contains("raw")) {
    in.only_keys(memory, "memory", {"raw", "base"});
    return raw_source{in.nonempty_string(memory["raw"], "memory.raw"),
                      in.optional_hex(memory, "memory", "base")};
  }
  if (memory.contains("elf")) {
    in.only_keys(memory, "memory", {"elf"});
    return elf_source{in.nonempty_string(memory["elf"], "memory.elf")};
  }
  if (memory.contains("kdump")) {
    in.only_keys(memory, "memory", {"kdump"});
    return kdump_source{in.nonempty_string(memory["kdump"], "memory.kdump")};
  }
  if (memory.contains("archive")) {
    in.only_keys(memory, "memory", {"archive", "snapshot"});
    return archive_source{in.nonempty_string(memory["archive"], "memory.archive"),
                          in.nonempty_string(in.require(memory, "memory", "snapshot"), "memory.snapshot")};
  }
  in.only_keys(memory, "memory", {"regions"});
  const json& list = memory["regions"];
  if (!list.is_array()) in.fail("\"memory.regions\" must be an array");
  region_source out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string where = fmt::format("memory.regions[{}]", i);
    const json& r = list[i];
    if (!r.is_object()) in.fail(fmt::format("\"{}\" must be an object", where));
    in.only_keys(r, where, {"path", "gpa", "size", "offset"});
    out.regions.push_back({in.nonempty_string(in.require(r, where, "path"), where + ".path"),
                           in.hex_value(in.require(r, where, "gpa"), where + ".gpa"),
                           in.hex_value(in.require(r, where, "size"), where + ".size"),
                           in.optional_hex(r, where, "offset")});
  }
  return out;
}

// "ttbr1": one TTBR1 value for every root, or a list with one per root.
std::vector<u64> parse_ttbr1(const line_reader& in, const json& ttbr1, paging_format format, std::size_t roots) {
  if (!is_aarch64(format))
    in.fail(fmt::format("\"ttbr1\" is for aarch64 formats, not \"{}\"", format_name(format)));
  if (!ttbr1.is_array()) return std::vector<u64>(roots, in.hex_value(ttbr1, "ttbr1"));
  if (ttbr1.size() != roots)
    in.fail(fmt::format("\"ttbr1\" has {} entries for {} roots", ttbr1.size(), roots));
  std::vector<u64> out;
  for (std::size_t i = 0; i < ttbr1.size(); ++i) out.push_back(in.hex_value(ttbr1[i], fmt::format("ttbr1[{}]", i)));
  return out;
}

}  // namespace

snapshot_spec parse_manifest_line(std::string_view line, const std::filesystem::path& manifest,
                                  std::size_t line_number) {
  const line_reader in(manifest, line_number);
  const json object = in.parse_object(line);
  in.only_keys(object, "", {"id", "format", "memory", "roots", "ttbr1", "labels", "meta"});

  snapshot_spec spec;
  spec.id = in.nonempty_string(in.require(object, "", "id"), "id");
  const std::string format = in.string(in.require(object, "", "format"), "format");
  const auto parsed_format = parse_format(format);
  if (!parsed_format)
    in.fail(fmt::format("unknown format \"{}\" (expected one of {})", format, format_names()));
  spec.format = *parsed_format;
  spec.memory = parse_memory(in, in.require(object, "", "memory"));

  const json& roots = in.require(object, "", "roots");
  if (!roots.is_array() || roots.empty()) in.fail("\"roots\" must be a non-empty array of hex strings");
  for (std::size_t i = 0; i < roots.size(); ++i)
    spec.roots.push_back(in.hex_value(roots[i], fmt::format("roots[{}]", i)));
  if (const auto ttbr1 = object.find("ttbr1"); ttbr1 != object.end())
    spec.upper_roots = parse_ttbr1(in, *ttbr1, spec.format, roots.size());

  if (const auto labels = object.find("labels"); labels != object.end()) {
    if (!labels->is_array()) in.fail("\"labels\" must be an array of strings");
    if (labels->size() != roots.size())
      in.fail(fmt::format("\"labels\" has {} entries for {} roots", labels->size(), roots.size()));
    for (std::size_t i = 0; i < labels->size(); ++i)
      spec.labels.push_back(in.string((*labels)[i], fmt::format("labels[{}]", i)));
  }
  if (const auto meta = object.find("meta"); meta != object.end()) {
    if (!meta->is_object()) in.fail("\"meta\" must be an object");
    spec.meta = *meta;
  }
  return spec;
}

namespace {

// Calls fn(line, line_number) for every line of a small text file that is not
// blank once `comment` and what follows it are cut off. The file is mapped
// like every input, so a missing or unreadable file gets the same messages.
template <class Fn>
void for_each_line(const std::filesystem::path& path, char comment, Fn&& fn) {
  const mapped_file file(path);
  std::string_view text(reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size());
  for (std::size_t line_number = 1; !text.empty(); ++line_number) {
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (comment != '\0') line = line.substr(0, line.find(comment));
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) continue;
    fn(line.substr(first, line.find_last_not_of(" \t\r") + 1 - first), line_number);
  }
}

}  // namespace

std::vector<snapshot_spec> read_manifest(const std::filesystem::path& manifest) {
  std::vector<snapshot_spec> specs;
  std::map<std::string, std::size_t, std::less<>> first_line_of_id;
  for_each_line(manifest, '\0', [&](std::string_view line, std::size_t line_number) {
    snapshot_spec spec = parse_manifest_line(line, manifest, line_number);
    const auto [it, fresh] = first_line_of_id.emplace(spec.id, line_number);
    if (!fresh)
      throw input_error(fmt::format("{}:{}: duplicate id \"{}\" (first on line {})", manifest.string(),
                                    line_number, spec.id, it->second));
    specs.push_back(std::move(spec));
  });
  if (specs.empty()) throw input_error(fmt::format("{}: no snapshots in the manifest", manifest.string()));
  return specs;
}

std::vector<u64> read_roots_file(const std::filesystem::path& path) {
  std::vector<u64> roots;
  for_each_line(path, '#', [&](std::string_view line, std::size_t line_number) {
    const auto root = parse_hex(line);
    if (!root) throw input_error(fmt::format("{}:{}: bad hex root \"{}\"", path.string(), line_number, line));
    roots.push_back(*root);
  });
  if (roots.empty()) throw input_error(fmt::format("{}: no roots in the file", path.string()));
  return roots;
}

namespace {

std::filesystem::path resolve(const std::filesystem::path& base_dir, const std::string& path) {
  const std::filesystem::path p(path);
  return p.is_absolute() ? p : base_dir / p;
}

// Adds the spec's memory to `image`; each file is mapped once however many regions use it.
void map_memory(memory_image& image, const memory_source& memory, const std::filesystem::path& base_dir) {
  if (const auto* raw = std::get_if<raw_source>(&memory)) {
    auto file = std::make_shared<const mapped_file>(resolve(base_dir, raw->path));
    const u64 size = file->bytes().size();
    image.add_file_region(std::move(file), 0, size, raw->base);
  } else if (const auto* elf = std::get_if<elf_source>(&memory)) {
    auto file = std::make_shared<const mapped_file>(resolve(base_dir, elf->path));
    // The one mistake worth a hint: QEMU's kdump-* formats written as "elf".
    if (has_kdump_signature(file->bytes()))
      throw input_error(fmt::format("{}: a compressed kdump file, not an ELF core: name it as {{\"kdump\": …}}",
                                    file->path().string()));
    add_elf_regions(image, elf_core(std::move(file)));
  } else if (const auto* kdump = std::get_if<kdump_source>(&memory)) {
    kdump_file(resolve(base_dir, kdump->path)).add_regions(image);
  } else if (const auto* archived = std::get_if<archive_source>(&memory)) {
    archive::add_archived_regions(image, *archived, base_dir);
  } else {
    std::map<std::filesystem::path, std::shared_ptr<const mapped_file>> files;
    for (const auto& r : std::get<region_source>(memory).regions) {
      auto& file = files[resolve(base_dir, r.path)];
      if (!file) file = std::make_shared<const mapped_file>(resolve(base_dir, r.path));
      image.add_file_region(file, r.offset, r.size, r.gpa);
    }
  }
}

}  // namespace

std::vector<std::filesystem::path> memory_files(const memory_source& memory, const std::filesystem::path& base_dir) {
  std::vector<std::filesystem::path> files;
  std::visit(
      [&](const auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, region_source>)
          for (const auto& r : s.regions) files.push_back(resolve(base_dir, r.path));
        else if constexpr (std::is_same_v<std::decay_t<decltype(s)>, archive_source>)
          files.push_back(resolve(base_dir, s.archive));
        else
          files.push_back(resolve(base_dir, s.path));
      },
      memory);
  return files;
}

namespace {

// The file a snapshot's own errors name when no manifest is involved.
std::string memory_file(const memory_source& memory, const std::filesystem::path& base_dir) {
  const auto files = memory_files(memory, base_dir);
  return files.empty() ? "(no regions)" : files.front().string();
}

}  // namespace

loaded_snapshot load_snapshot(snapshot_spec spec, const std::filesystem::path& base_dir,
                              std::string_view origin) {
  loaded_snapshot out{std::move(spec), {}};
  map_memory(out.image, out.spec.memory, base_dir);
  // A cut-off root keeps its whole entries and reads the rest as 0 (SPEC §1),
  // even its first; it must at least start in a region.
  const auto check_in_image = [&](u64 root, std::string_view what) {
    const u64 table = visit_format(out.spec.format, [&]<class F>() { return root_table_address<F>(root); });
    if (out.image.find(table, 1) == nullptr)
      throw input_error(fmt::format("{}: snapshot {}: {} {} is outside every region",
                                    origin.empty() ? memory_file(out.spec.memory, base_dir) : origin,
                                    out.spec.id, what, hex(root)));
  };
  for (const u64 root : out.spec.roots) check_in_image(root, "root");
  for (const u64 ttbr1 : out.spec.upper_roots) check_in_image(ttbr1, "ttbr1");
  return out;
}

std::vector<loaded_snapshot> load_manifest(const std::filesystem::path& manifest) {
  return load_specs(read_manifest(manifest), manifest);
}

std::vector<loaded_snapshot> load_specs(std::span<const snapshot_spec> specs, const std::filesystem::path& manifest) {
  std::vector<loaded_snapshot> out;
  out.reserve(specs.size());
  for (const auto& spec : specs) out.push_back(load_snapshot(spec, manifest.parent_path(), manifest.string()));
  return out;
}

namespace {

nlohmann::ordered_json memory_json(const memory_source& memory) {
  struct to_json {
    nlohmann::ordered_json operator()(const raw_source& s) const {
      return {{"raw", s.path}, {"base", hex(s.base)}};
    }
    nlohmann::ordered_json operator()(const elf_source& s) const { return {{"elf", s.path}}; }
    nlohmann::ordered_json operator()(const kdump_source& s) const { return {{"kdump", s.path}}; }
    nlohmann::ordered_json operator()(const archive_source& s) const {
      return {{"archive", s.archive}, {"snapshot", s.snapshot}};
    }
    nlohmann::ordered_json operator()(const region_source& s) const {
      nlohmann::ordered_json regions = nlohmann::ordered_json::array();
      for (const auto& r : s.regions)
        regions.push_back({{"path", r.path}, {"gpa", hex(r.gpa)}, {"size", hex(r.size)},
                           {"offset", hex(r.offset)}});
      return {{"regions", std::move(regions)}};
    }
  };
  return std::visit(to_json{}, memory);
}

// One value when every root shares it (Linux's swapper_pg_dir), else the list.
nlohmann::ordered_json ttbr1_json(const std::vector<u64>& upper_roots) {
  if (std::all_of(upper_roots.begin(), upper_roots.end(), [&](u64 v) { return v == upper_roots.front(); }))
    return hex(upper_roots.front());
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (u64 v : upper_roots) list.push_back(hex(v));
  return list;
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
  if (!spec.upper_roots.empty()) line["ttbr1"] = ttbr1_json(spec.upper_roots);
  if (!spec.labels.empty()) line["labels"] = spec.labels;
  if (!spec.meta.is_null()) line["meta"] = spec.meta;
  return line.dump();
}

std::string manifest_relative_path(const std::filesystem::path& file, const std::filesystem::path& manifest_dir) {
  return std::filesystem::absolute(file)
      .lexically_normal()
      .lexically_relative(std::filesystem::absolute(manifest_dir).lexically_normal())
      .string();
}

void rename_memory_files(memory_source& memory, const std::function<std::string(const std::string&)>& rename) {
  std::visit(
      [&](auto& source) {
        if constexpr (requires { source.regions; }) {
          for (auto& region : source.regions) region.path = rename(region.path);
        } else if constexpr (requires { source.archive; }) {
          source.archive = rename(source.archive);
        } else {
          source.path = rename(source.path);
        }
      },
      memory);
}

}  // namespace ptwalk
