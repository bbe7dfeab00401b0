// host/cluster/archive_merge.cpp — a shard's own archive, and the merge that re-adds the shards' snapshots.
#include "cluster/archive_merge.hpp"

#include <map>
#include <memory>

#include <fmt/format.h>

#include "archive/archive_read.hpp"
#include "cluster/merge.hpp"
#include "cluster/shard_part.hpp"
#include "input/manifest.hpp"

namespace ptwalk {

namespace fs = std::filesystem;

archive::add_report add_shard_archive(const fs::path& archive, const std::vector<snapshot_spec>& specs,
                                      const shard_plan& plan, const fs::path& base_dir,
                                      const archive::add_options& options) {
  std::error_code ec;
  if (fs::exists(archive / "catalog.json", ec))
    throw input_error(fmt::format("{}: already an archive; a shard is added to a new one, for `archive merge` "
                                  "(remove it to rerun the shard)",
                                  archive.string()));
  // The record goes in first, so a shard archive that has a catalog has it too.
  fs::create_directories(archive, ec);
  if (ec) throw input_error(fmt::format("{}: cannot create archive: {}", archive.string(), ec.message()));
  const std::string record = nlohmann::ordered_json{{"shard", shard_part{"archive add", plan, {}}.to_json()}}.dump() + "\n";
  archive::write_file_durably(archive / shard_record_file, std::as_bytes(std::span(record.data(), record.size())));
  const std::vector<snapshot_spec> mine(specs.begin() + static_cast<std::ptrdiff_t>(plan.first),
                                        specs.begin() + static_cast<std::ptrdiff_t>(plan.end));
  return archive::add_snapshots(archive, mine, base_dir, options);
}

archive::add_report merge_archives(const fs::path& out, std::span<const std::string> part_paths, unsigned jobs) {
  const auto parts = check_parts(part_paths, "archive add");
  std::vector<std::unique_ptr<archive::archive_reader>> readers;
  std::vector<snapshot_spec> specs;
  std::map<std::string, archive::archive_reader*> holder;  // snapshot id -> its part
  for (const auto& part : parts) {
    auto& reader = *readers.emplace_back(std::make_unique<archive::archive_reader>(part.path));
    const auto& snapshots = reader.contents().snapshots;
    if (snapshots.size() != part.part.plan.end - part.part.plan.first)
      throw input_error(fmt::format("{}: holds {} snapshots, not its shard's {}", part.path.string(),
                                    snapshots.size(), part.part.plan.end - part.part.plan.first));
    for (const auto& entry : snapshots) {
      specs.push_back(parse_manifest_line(reader.read_index(entry).spec_line, part.path, 1));
      holder[entry.id] = &reader;
    }
  }
  archive::add_options options;
  options.level = readers.front()->contents().level;
  options.jobs = jobs;
  // Each image as added, restored from its part: the layout steps see the original file's bytes.
  options.open_image = [&](const snapshot_spec& spec, const fs::path&) { return holder.at(spec.id)->load(spec.id, jobs).file; };
  return archive::add_snapshots(out, specs, {}, options);
}

}  // namespace ptwalk
