// host/cluster/merge.cpp — check a set of shard parts and lay them end to end.
#include "cluster/merge.hpp"

#include <algorithm>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cluster/shard_part.hpp"
#include "common/atomic_file.hpp"
#include "input/manifest.hpp"
#include "input/memory_image.hpp"

namespace ptwalk {

namespace {

namespace fs = std::filesystem;

struct located_part {
  shard_part part;
  fs::path path;
  nlohmann::json report;  // compact parts: the shard's report
};

constexpr std::string_view part_manifest = "manifest.jsonl";

located_part read_part(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path record_file = path / shard_record_file;
    std::ifstream in(record_file);
    if (!in) throw input_error(fmt::format("{}: not a shard part (no {}): a compact shard writes one", path.string(),
                                           shard_record_file));
    const auto record = nlohmann::json::parse(in, nullptr, false);
    if (record.is_discarded()) throw input_error(fmt::format("{}: not valid JSON", record_file.string()));
    return {shard_part::from_json(record.value("shard", nlohmann::json()), record_file.string()), path,
            record.value("report", nlohmann::json())};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw input_error(fmt::format("{}: cannot read", path.string()));
  std::string first_line;
  std::getline(in, first_line);
  return {shard_part::from_json(nlohmann::json::parse(first_line, nullptr, false), path.string()), path, {}};
}

std::string list(const std::vector<std::size_t>& indexes) { return fmt::format("{}", fmt::join(indexes, ", ")); }

// One part per shard 0..N-1, all cut from the same manifest with the same options.
std::vector<located_part> check_set(std::vector<located_part> parts) {
  const shard_part first = parts.front().part;  // parts are moved from below
  const fs::path first_path = parts.front().path;
  const std::size_t count = first.plan.shard.count;
  std::map<std::size_t, located_part> by_index;
  for (auto& p : parts) {
    const auto& part = p.part;
    const auto mismatch = [&](std::string_view what) {
      return input_error(fmt::format("merge: {} and {} are not parts of one job: {} differ", first_path.string(),
                                     p.path.string(), what));
    };
    if (part.command != first.command) throw mismatch(fmt::format("commands ({} vs {})", first.command, part.command));
    if (part.plan.manifest_sha256 != first.plan.manifest_sha256 || part.plan.snapshots != first.plan.snapshots)
      throw mismatch(fmt::format("manifests ({} vs {})", first.plan.manifest, part.plan.manifest));
    if (part.plan.shard.count != count)
      throw mismatch(fmt::format("shard counts ({} vs {})", count, part.plan.shard.count));
    if (part.options != first.options)
      throw mismatch(fmt::format("options ({} vs {})", first.options.dump(), part.options.dump()));
    const std::size_t index = part.plan.shard.index;
    if (by_index.contains(index))
      throw input_error(fmt::format("merge: shard {}/{} given twice: {} and {}", index, count,
                                    by_index.at(index).path.string(), p.path.string()));
    by_index.emplace(index, std::move(p));
  }
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < count; ++i)
    if (!by_index.contains(i)) missing.push_back(i);
  if (!missing.empty())
    throw input_error(fmt::format("merge: incomplete set: shard{} {} of {} missing (parts of {}); rerun {} and merge again",
                                  missing.size() == 1 ? "" : "s", list(missing), count, first.plan.manifest,
                                  missing.size() == 1 ? "it" : "them"));
  std::vector<located_part> ordered;
  for (auto& [index, p] : by_index) {
    const std::size_t expected_first = ordered.empty() ? 0 : ordered.back().part.plan.end;
    if (p.part.plan.first != expected_first)
      throw input_error(fmt::format("merge: {}: shard {} starts at snapshot {}, not {}", p.path.string(), index,
                                    p.part.plan.first, expected_first));
    ordered.push_back(std::move(p));
  }
  if (ordered.back().part.plan.end != first.plan.snapshots)
    throw input_error(fmt::format("merge: the shards end at snapshot {} of {}", ordered.back().part.plan.end,
                                  first.plan.snapshots));
  return ordered;
}

// Walk and roots parts: each part's bytes after its shard record, in shard order.
void merge_lines(const fs::path& out, const std::vector<located_part>& parts) {
  atomic_output_file file(out);
  for (const auto& p : parts) {
    std::ifstream in(p.path, std::ios::binary);
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');  // the shard record
    if (in.peek() != std::ifstream::traits_type::eof()) file.stream() << in.rdbuf();
    if (in.bad()) throw input_error(fmt::format("{}: read failed", p.path.string()));
  }
  file.commit();
}

// Import parts: their manifest lines in shard order, each dump (named by
// its absolute path in the part) named relative to the merged manifest as
// `ptwalk import --out OUT` names it.
void merge_import(const fs::path& out, const std::vector<located_part>& parts) {
  atomic_output_file file(out);
  const fs::path manifest_dir = fs::absolute(out).parent_path();
  for (const auto& p : parts) {
    std::ifstream in(p.path, std::ios::binary);
    std::string line;
    std::getline(in, line);  // the shard record
    std::size_t line_number = 1, lines = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (line.empty()) continue;
      snapshot_spec spec = parse_manifest_line(line, p.path, line_number);
      rename_memory_files(spec.memory,
                          [&](const std::string& name) { return manifest_relative_path(name, manifest_dir); });
      file.stream() << format_manifest_line(spec) << '\n';
      ++lines;
    }
    if (in.bad()) throw input_error(fmt::format("{}: read failed", p.path.string()));
    if (lines != p.part.plan.end - p.part.plan.first)
      throw input_error(fmt::format("{}: {} manifest lines for the shard's {} dumps", p.path.string(), lines,
                                    p.part.plan.end - p.part.plan.first));
  }
  file.commit();
}

// A hard link where the file system allows (no bytes move), else a copy.
void link_or_copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (!ec) return;
  fs::copy_file(from, to, ec);
  if (ec) throw input_error(fmt::format("{}: cannot copy to {}: {}", from.string(), to.string(), ec.message()));
}

std::size_t line_count(const std::string& text) { return static_cast<std::size_t>(std::ranges::count(text, '\n')); }

compact_report merge_compact(const fs::path& out, const std::vector<located_part>& parts, bool replace) {
  check_output_dir(out, replace);
  atomic_output_dir staging(out);
  std::ofstream manifest(staging.path() / part_manifest, std::ios::binary);
  std::optional<compact_report> report;
  for (const auto& p : parts) {
    std::ifstream in(p.path / part_manifest, std::ios::binary);
    const std::string lines{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!in.is_open() || line_count(lines) != p.part.plan.end - p.part.plan.first)
      throw input_error(fmt::format("{}: {} does not list the shard's {} snapshots", p.path.string(), part_manifest,
                                    p.part.plan.end - p.part.plan.first));
    manifest << lines;
    for (const auto& entry : fs::directory_iterator(p.path)) {
      const auto name = entry.path().filename();
      if (name == part_manifest || name == shard_record_file) continue;
      if (fs::exists(staging.path() / name))
        throw input_error(fmt::format("merge: {}: {} is in another part too", p.path.string(), name.string()));
      link_or_copy(entry.path(), staging.path() / name);
    }
    const auto shard_report = compact_report::from_json(p.report, (p.path / shard_record_file).string());
    if (report) report->add_shard(shard_report);
    else report = shard_report;
  }
  manifest.close();
  if (!manifest) throw input_error(fmt::format("{}: write failed", (out / part_manifest).string()));
  staging.commit();
  report->out_dir = out.string();
  return *report;
}

std::vector<located_part> read_set(std::span<const std::string> part_paths) {
  if (part_paths.empty()) throw input_error("merge: no parts given");
  std::vector<located_part> parts;
  for (const auto& path : part_paths) parts.push_back(read_part(path));
  return check_set(std::move(parts));
}

}  // namespace

std::vector<checked_part> check_parts(std::span<const std::string> part_paths, std::string_view command) {
  std::vector<checked_part> out;
  for (auto& p : read_set(part_paths)) {
    if (p.part.command != command)
      throw input_error(fmt::format("{}: a part of `{}`, not of `{}`", p.path.string(), p.part.command, command));
    out.push_back({p.path, std::move(p.part)});
  }
  return out;
}

merge_result merge_parts(const fs::path& out, std::span<const std::string> part_paths, bool replace) {
  const auto parts = read_set(part_paths);
  const shard_part& first = parts.front().part;
  merge_result result{first.command, first.plan.shard.count, first.plan.snapshots, first.plan.manifest, {}};
  if (first.command == "walk" || first.command == "roots") merge_lines(out, parts);
  else if (first.command == "import") merge_import(out, parts);
  else if (first.command == "compact") result.report = merge_compact(out, parts, replace);
  else if (first.command == "archive add")
    throw input_error("merge: shard archives are merged by `ptwalk archive merge OUT PART...`");
  else throw input_error(fmt::format("merge: {}: parts of `{}` cannot be merged", parts.front().path.string(),
                                     first.command));
  return result;
}

}  // namespace ptwalk
