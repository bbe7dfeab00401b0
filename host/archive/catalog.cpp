// host/archive/catalog.cpp — catalog.json: read, validate, commit; the archive's locks.
#include "archive/catalog.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "input/memory_image.hpp"

namespace ptwalk::archive {

namespace {

using nlohmann::json;

std::filesystem::path catalog_path(const std::filesystem::path& archive) { return archive / "catalog.json"; }

bool is_digest_name(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

catalog parse_catalog(const std::filesystem::path& file, std::string_view text) {
  const auto bad = [&](std::string_view problem) {
    return input_error(fmt::format("{}: {}", file.string(), problem));
  };
  catalog out;
  try {
    const json doc = json::parse(text);
    if (doc.value("format", "") != "ptwalk-archive") throw bad("not a ptwalk archive catalog");
    if (doc.at("version").get<int>() != layout_version)
      throw bad(fmt::format("archive layout version {} (this ptwalk reads version {})", doc.at("version").dump(),
                            layout_version));
    if (doc.at("page_size").get<u64>() != 4096 || doc.at("hash").get<std::string>() != "sha256")
      throw bad("unsupported page size or hash");
    out.level = doc.at("level").get<int>();
    for (const auto& p : doc.at("packs")) {
      out.packs.push_back({p.at("name").get<std::string>(), p.at("pages").get<u64>(), p.at("bytes").get<u64>()});
      if (!is_digest_name(out.packs.back().name)) throw bad("bad pack name");
    }
    std::set<std::string, std::less<>> ids;
    for (const auto& s : doc.at("snapshots")) {
      out.snapshots.push_back({s.at("id").get<std::string>(), s.at("index").get<std::string>(),
                               s.at("file_bytes").get<u64>(), s.at("pages").get<u64>(), s.at("zero_pages").get<u64>(),
                               s.at("new_pages").get<u64>(), s.at("index_bytes").get<u64>()});
      if (!is_digest_name(out.snapshots.back().index)) throw bad("bad index name");
      if (!ids.insert(out.snapshots.back().id).second) throw bad("duplicate snapshot id");
    }
  } catch (const json::exception& e) {
    throw bad(fmt::format("malformed catalog: {}", e.what()));
  }
  return out;
}

}  // namespace

const snapshot_entry* catalog::find(std::string_view id) const {
  const auto it = std::find_if(snapshots.begin(), snapshots.end(), [&](const auto& s) { return s.id == id; });
  return it == snapshots.end() ? nullptr : &*it;
}

u64 catalog::stored_bytes() const {
  u64 total = 0;
  for (const auto& p : packs) total += p.bytes;
  for (const auto& s : snapshots) total += s.index_bytes;
  return total;
}

std::filesystem::path index_path(const std::filesystem::path& archive, const std::string& name) {
  return archive / "indexes" / (name + ".idx");
}

catalog read_catalog(const std::filesystem::path& archive) {
  const auto file = catalog_path(archive);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw input_error(fmt::format("{}: not a ptwalk archive (no catalog.json)", archive.string()));
  const auto bytes = read_whole_file(file);
  return parse_catalog(file, {reinterpret_cast<const char*>(bytes.data()), bytes.size()});
}

catalog open_catalog_for_writing(const std::filesystem::path& archive, int level) {
  std::error_code ec;
  if (std::filesystem::exists(catalog_path(archive), ec)) return read_catalog(archive);
  if (std::filesystem::exists(archive, ec)) {
    if (!std::filesystem::is_directory(archive, ec))
      throw input_error(fmt::format("{}: exists and is not a directory", archive.string()));
    // shard.json: a shard archive's record, written first (cluster/archive_merge.hpp).
    static const std::set<std::string> ours = {"lock", "readers.lock", "packs", "indexes", "shard.json"};
    for (const auto& entry : std::filesystem::directory_iterator(archive))
      if (!ours.contains(entry.path().filename().string()))
        throw input_error(fmt::format("{}: not a ptwalk archive (no catalog.json) and not empty", archive.string()));
  }
  std::filesystem::create_directories(archive / "packs", ec);
  std::filesystem::create_directories(archive / "indexes", ec);
  if (ec) throw input_error(fmt::format("{}: cannot create archive: {}", archive.string(), ec.message()));
  catalog fresh;
  fresh.level = level;
  return fresh;
}

void commit_catalog(const std::filesystem::path& archive, const catalog& next) {
  nlohmann::ordered_json doc;
  doc["format"] = "ptwalk-archive";
  doc["version"] = layout_version;
  doc["page_size"] = 4096;
  doc["hash"] = "sha256";
  doc["compression"] = "zstd";
  doc["level"] = next.level;
  doc["packs"] = nlohmann::ordered_json::array();
  for (const auto& p : next.packs) doc["packs"].push_back({{"name", p.name}, {"pages", p.pages}, {"bytes", p.bytes}});
  doc["snapshots"] = nlohmann::ordered_json::array();
  for (const auto& s : next.snapshots)
    doc["snapshots"].push_back({{"id", s.id}, {"index", s.index}, {"file_bytes", s.file_bytes}, {"pages", s.pages},
                                {"zero_pages", s.zero_pages}, {"new_pages", s.new_pages},
                                {"index_bytes", s.index_bytes}});
  const std::string text = doc.dump(1) + "\n";
  crash_point("before-commit");
  write_file_durably(catalog_path(archive), std::as_bytes(std::span(text.data(), text.size())));
  crash_point("after-commit");
}

file_lock lock_for_writing(const std::filesystem::path& archive) {
  std::error_code ec;
  std::filesystem::create_directories(archive, ec);  // a first add makes the archive
  if (ec) throw input_error(fmt::format("{}: cannot create archive: {}", archive.string(), ec.message()));
  return file_lock(archive / "lock", file_lock::mode::exclusive);
}
file_lock lock_for_reading(const std::filesystem::path& archive) {
  std::error_code ec;  // never leave a lock file in a directory that is not an archive
  if (!std::filesystem::is_regular_file(catalog_path(archive), ec))
    throw input_error(fmt::format("{}: not a ptwalk archive (no catalog.json)", archive.string()));
  return file_lock(archive / "readers.lock", file_lock::mode::shared);
}
file_lock lock_out_readers(const std::filesystem::path& archive) {
  return file_lock(archive / "readers.lock", file_lock::mode::exclusive);
}

}  // namespace ptwalk::archive
