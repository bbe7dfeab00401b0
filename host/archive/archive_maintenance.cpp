// host/archive/archive_maintenance.cpp — listing, checking, removing snapshots and reclaiming pages.
#include "archive/archive_maintenance.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "archive/archive_add.hpp"
#include "archive/archive_read.hpp"
#include "common/parallel_for.hpp"

namespace ptwalk::archive {

namespace {

// Which snapshots use each stored page: per pack name, per page, a count.
using page_users = std::map<std::string, std::vector<u32>, std::less<>>;

page_users count_users(archive_reader& reader, const std::vector<snapshot_index>& indexes) {
  page_users users;
  for (const auto& p : reader.contents().packs) users[p.name].assign(p.pages, 0);
  for (const auto& index : indexes) {
    std::set<std::pair<u32, u64>> seen;  // a page used twice by one snapshot counts once
    for (const auto& run : index.runs) {
      auto& counts = users.at(index.packs[run.pack]);
      for (u64 i = 0; i < run.count; ++i)
        if (run.first_page + i < counts.size() && seen.insert({run.pack, run.first_page + i}).second)
          ++counts[run.first_page + i];
    }
  }
  return users;
}

std::vector<snapshot_index> read_indexes(archive_reader& reader) {
  std::vector<snapshot_index> out;
  for (const auto& s : reader.contents().snapshots) {
    out.push_back(reader.read_index(s));
    for (const auto& name : out.back().packs)
      if (std::none_of(reader.contents().packs.begin(), reader.contents().packs.end(),
                       [&](const auto& p) { return p.name == name; }))
        throw input_error(fmt::format("{}: snapshot {} uses pack {} the catalog does not list",
                                      reader.path().string(), s.id, name));
  }
  return out;
}

}  // namespace

std::vector<snapshot_listing> list_snapshots(const std::filesystem::path& archive) {
  archive_reader reader(archive);
  const auto indexes = read_indexes(reader);
  const page_users users = count_users(reader, indexes);
  std::vector<snapshot_listing> out;
  for (std::size_t s = 0; s < indexes.size(); ++s) {
    const auto& e = reader.contents().snapshots[s];
    snapshot_listing row{e.id, e.file_bytes, e.pages, e.zero_pages, 0, 0};
    std::set<std::pair<u32, u64>> seen;
    for (const auto& run : indexes[s].runs)
      for (u64 i = 0; i < run.count; ++i)
        if (seen.insert({run.pack, run.first_page + i}).second)
          ++(users.at(indexes[s].packs[run.pack])[run.first_page + i] > 1 ? row.shared_pages : row.own_pages);
    out.push_back(row);
  }
  return out;
}

check_report check_archive(const std::filesystem::path& archive, unsigned jobs) {
  archive_reader reader(archive);
  check_report report;
  std::map<std::string, std::vector<std::uint8_t>, std::less<>> bad_pages;  // per listed pack, 1: damaged
  for (const auto& entry : reader.contents().packs) {
    auto& bad = bad_pages[entry.name];
    bad.assign(entry.pages, 1);
    ++report.packs;
    try {
      const pack_reader& pack = reader.pack(entry.name);
      if (pack.table_name() != entry.name || pack.pages() != entry.pages) {
        report.problems.push_back(fmt::format("{}: damaged pack table", pack.path().string()));
        continue;
      }
      std::mutex problems;
      parallel_for(pack.frames().size(), jobs, [&](std::size_t f) {
        const pack_frame& frame = pack.frames()[f];
        thread_local std::vector<std::byte> plain;
        plain.resize(u64{frame.pages} * page_size);
        try {
          pack.decompress(static_cast<u32>(f), plain);
        } catch (const input_error& e) {
          const std::lock_guard lock(problems);
          report.problems.push_back(e.what());
          return;
        }
        u64 mismatched = 0;
        for (u64 p = 0; p < frame.pages; ++p) {
          const bool intact = sha256(std::span(plain).subspan(p * page_size, page_size)) == pack.ids()[frame.first_page + p];
          mismatched += !intact;
          bad[frame.first_page + p] = !intact;  // frames own disjoint pages (bytes, not bits: no shared words)
        }
        if (mismatched > 0) {
          const std::lock_guard lock(problems);
          report.problems.push_back(fmt::format("{}: frame {}: {} pages do not match their hash",
                                                pack.path().string(), f, mismatched));
        }
      });
      report.pages += pack.pages();
    } catch (const input_error& e) {
      report.problems.push_back(e.what());
    }
  }
  for (const auto& entry : reader.contents().snapshots) {
    ++report.snapshots;
    try {
      const snapshot_index index = reader.read_index(entry);
      u64 damaged = 0;
      for (const auto& run : index.runs) {
        const auto it = bad_pages.find(index.packs[run.pack]);
        if (it == bad_pages.end()) throw input_error(fmt::format("uses pack {} the catalog does not list", index.packs[run.pack]));
        for (u64 i = 0; i < run.count; ++i)
          damaged += run.first_page + i >= it->second.size() || it->second[run.first_page + i];
      }
      if (damaged > 0) report.damaged.push_back(fmt::format("{}: {} damaged pages", entry.id, damaged));
    } catch (const input_error& e) {
      report.damaged.push_back(fmt::format("{}: {}", entry.id, e.what()));
    }
  }
  return report;
}

void remove_snapshots(const std::filesystem::path& archive, const std::vector<std::string>& ids) {
  const file_lock writing = lock_for_writing(archive);
  catalog next = read_catalog(archive);
  for (const auto& id : ids)
    if (next.find(id) == nullptr) throw input_error(fmt::format("{}: no snapshot {} in the archive", archive.string(), id));
  std::erase_if(next.snapshots, [&](const auto& s) { return std::find(ids.begin(), ids.end(), s.id) != ids.end(); });
  commit_catalog(archive, next);
}

namespace {

// Copies the used pages of `pack` into `writer`; returns old page → new page (~0: dropped).
std::vector<u64> repack(const pack_reader& pack, const std::vector<u32>& users, pack_writer& writer, unsigned jobs) {
  std::vector<u64> moved(pack.pages(), ~u64{0});
  std::vector<std::byte> kept;
  std::vector<digest> kept_ids;
  std::vector<std::byte> plain;
  const auto flush = [&] {
    std::vector<const std::byte*> pages;
    for (std::size_t i = 0; i < kept_ids.size(); ++i) pages.push_back(kept.data() + i * page_size);
    (void)writer.append(pages, kept_ids, jobs);
    kept.clear();
    kept_ids.clear();
  };
  for (u32 f = 0; f < pack.frames().size(); ++f) {
    const pack_frame& frame = pack.frames()[f];
    plain.resize(u64{frame.pages} * page_size);
    pack.decompress(f, plain);
    for (u64 p = 0; p < frame.pages; ++p) {
      const u64 page = frame.first_page + p;
      if (users[page] == 0) continue;
      moved[page] = writer.pages() + kept_ids.size();
      kept.insert(kept.end(), plain.begin() + static_cast<std::ptrdiff_t>(p * page_size),
                  plain.begin() + static_cast<std::ptrdiff_t>((p + 1) * page_size));
      kept_ids.push_back(pack.ids()[page]);
    }
    if (kept.size() >= (std::size_t{64} << 20)) flush();
  }
  flush();
  return moved;
}

// Deletes every file under packs/ and indexes/ (and stray temporaries) the catalog does not name.
u64 delete_unnamed_files(const std::filesystem::path& archive, const catalog& contents) {
  std::set<std::filesystem::path> named;
  for (const auto& p : contents.packs) named.insert(pack_path(archive, p.name));
  for (const auto& s : contents.snapshots) named.insert(index_path(archive, s.index));
  u64 deleted = 0;
  for (const char* dir : {"packs", "indexes"})
    for (const auto& entry : std::filesystem::directory_iterator(archive / dir))
      if (!named.contains(entry.path())) deleted += std::filesystem::remove(entry.path());
  for (const auto& entry : std::filesystem::directory_iterator(archive))
    if (entry.path().filename().string().starts_with(".catalog.json.tmp-")) deleted += std::filesystem::remove(entry.path());
  return deleted;
}

// Commits `next` with the used, unmoved packs, the pack `writer` holds the moved pages in,
// and new indexes for the snapshots that pointed into moved packs.
void commit_without_unused(const std::filesystem::path& archive, catalog& next,
                           const std::vector<snapshot_index>& indexes, const page_users& users,
                           const std::map<std::string, std::vector<u64>, std::less<>>& moved, pack_writer& writer) {
  std::vector<pack_entry> packs;
  std::string new_pack;
  if (writer.pages() > 0) {
    new_pack = writer.finish();
    packs.push_back({new_pack, writer.pages(), writer.bytes()});
  }
  for (const auto& p : next.packs) {
    const auto& counts = users.at(p.name);
    if (!moved.contains(p.name) && std::any_of(counts.begin(), counts.end(), [](u32 c) { return c > 0; }))
      packs.push_back(p);
  }
  crash_point("gc-packed");
  std::vector<std::string> pack_names;
  for (const auto& p : packs) pack_names.push_back(p.name);
  for (std::size_t s = 0; s < indexes.size(); ++s) {
    const auto& index = indexes[s];
    if (std::none_of(index.packs.begin(), index.packs.end(), [&](const auto& n) { return moved.contains(n); }))
      continue;
    snapshot_index rewritten = index;
    rewritten.packs.clear();
    rewritten.runs.clear();
    for (const auto& run : index.runs) {
      const auto& name = index.packs[run.pack];
      const auto it = moved.find(name);
      const u32 target = static_cast<u32>(std::find(pack_names.begin(), pack_names.end(),
                                                    it == moved.end() ? name : new_pack) - pack_names.begin());
      for (u64 i = 0; i < run.count; ++i)
        append_page(rewritten.runs, run.file_offset + i * page_size, target,
                    it == moved.end() ? run.first_page + i : it->second[run.first_page + i]);
    }
    auto& entry = next.snapshots[s];
    entry.index = write_index(archive, rewritten, pack_names, entry.index_bytes);
  }
  next.packs = std::move(packs);
  crash_point("gc-indexes-written");
  commit_catalog(archive, next);
}

}  // namespace

gc_report collect_garbage(const std::filesystem::path& archive, unsigned jobs) {
  const file_lock writing = lock_for_writing(archive);
  gc_report report;
  catalog next;
  {
    archive_reader reader(archive);
    next = reader.contents();
    report.bytes_before = next.stored_bytes();
    const auto indexes = read_indexes(reader);
    const page_users users = count_users(reader, indexes);

    std::map<std::string, std::vector<u64>, std::less<>> moved;  // rewritten pack → old page → new page
    pack_writer writer(archive / "packs", next.level);
    for (const auto& p : next.packs) {
      const auto& counts = users.at(p.name);
      const u64 used = static_cast<u64>(std::count_if(counts.begin(), counts.end(), [](u32 c) { return c > 0; }));
      if (used == 0) {
        ++report.packs_dropped;
        report.pages_dropped += p.pages;
      } else if (4 * (p.pages - used) >= p.pages) {
        ++report.packs_rewritten;
        report.pages_dropped += p.pages - used;
        moved[p.name] = repack(reader.pack(p.name), counts, writer, jobs);
      }
    }
    if (report.packs_dropped + report.packs_rewritten > 0)
      commit_without_unused(archive, next, indexes, users, moved, writer);
  }
  {
    const file_lock no_readers = lock_out_readers(archive);
    report.files_deleted = delete_unnamed_files(archive, next);
  }
  report.bytes_after = next.stored_bytes();
  return report;
}

}  // namespace ptwalk::archive
