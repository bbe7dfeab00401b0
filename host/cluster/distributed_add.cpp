// host/cluster/distributed_add.cpp — the phases of an MPI `archive add`, each closed by an all-ranks vote.
#include "cluster/distributed_add.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <optional>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "archive/pack.hpp"
#include "input/manifest.hpp"

namespace ptwalk {

namespace {

using archive::digest;
using archive::page_size;
using nlohmann::json;

// Runs one rank's part of a phase; every rank learns whether all succeeded,
// so no rank enters the next collective step alone.
template <class Step>
void phase(const mpi_world& world, const std::filesystem::path& archive, Step&& step) {
  std::exception_ptr error;
  try {
    step();
  } catch (...) {
    error = std::current_exception();
  }
  world.succeed_together(error, fmt::format("archive add: rank {} of {}: another rank failed; {} was left as it was",
                                            world.rank(), world.size(), archive.string()));
}

int owner_of(const digest& id, int ranks) { return static_cast<int>(archive::digest_hasher{}(id) % ranks); }

template <class T>
void append_value(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}
template <class T>
T read_value(const std::string& in, std::size_t at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof value);
  return value;
}

// One snapshot of this rank's shard, laid out and hashed.
struct local_snapshot {
  archive::image_file_layout layout;
  std::vector<const std::byte*> pages;
  std::vector<archive::page_identity> identities;
  archive::snapshot_entry entry;
};

// A page this rank sends to its owner: its place in the message, and the
// snapshot (of this rank's) that holds it first.
struct sent_page {
  int owner = 0;
  std::size_t slot = 0;
  std::size_t first_snapshot = 0;
  std::optional<archive::page_location> where;  // filled from the owner's answer
};

// What rank 0 knows of the archive before the add: its level and packs.
json describe_catalog(const archive::catalog& contents) {
  json names = json::array();
  for (const auto& p : contents.packs) names.push_back(p.name);
  return {{"level", contents.level}, {"packs", names}};
}

// The owner's side: stores each distinct page of `received` once (senders in
// rank order, so the lowest rank's copy counts as first) and answers each
// sender, per page, its page number and whether that sender is the first.
std::vector<std::string> store_owned_pages(const std::vector<std::string>& received, archive::pack_writer& writer,
                                           unsigned jobs) {
  constexpr std::size_t record = sizeof(digest) + page_size;
  std::unordered_map<digest, u64, archive::digest_hasher> numbers;
  std::vector<const std::byte*> pages;
  std::vector<digest> ids;
  std::vector<std::string> answers(received.size());
  for (std::size_t from = 0; from < received.size(); ++from) {
    for (std::size_t at = 0; at < received[from].size(); at += record) {
      const auto id = read_value<digest>(received[from], at);
      const auto [it, first] = numbers.emplace(id, ids.size());
      if (first) {
        ids.push_back(id);
        pages.push_back(reinterpret_cast<const std::byte*>(received[from].data() + at + sizeof(digest)));
      }
      append_value(answers[from], it->second);
      append_value(answers[from], static_cast<std::uint8_t>(first));
    }
  }
  (void)writer.append(pages, ids, jobs);
  return answers;
}

}  // namespace

archive::add_report add_snapshots_distributed(const mpi_world& world, const std::filesystem::path& archive,
                                              const std::vector<snapshot_spec>& specs, const shard_plan& plan,
                                              const std::filesystem::path& base_dir,
                                              const archive::add_options& options) {
  const auto start = std::chrono::steady_clock::now();
  const std::span<const snapshot_spec> mine(specs.data() + plan.first, plan.end - plan.first);
  std::optional<archive::file_lock> writing;  // rank 0's, for the whole add
  archive::catalog next;
  std::string known;

  // 1. Bad inputs fail here, on their rank, before anything is written.
  std::vector<local_snapshot> local(mine.size());
  phase(world, archive, [&] {
    for (std::size_t s = 0; s < mine.size(); ++s)
      local[s].layout = archive::lay_out_image_file(mine[s], base_dir, options.open_image);
    if (world.rank() != 0) return;
    writing.emplace(archive::lock_for_writing(archive));
    next = archive::open_catalog_for_writing(archive, options.level);
    for (const auto& spec : specs)
      if (next.find(spec.id) != nullptr)
        throw input_error(fmt::format("{}: snapshot {} is already in the archive", archive.string(), spec.id));
    known = describe_catalog(next).dump();
  });
  world.broadcast(known);
  const int ranks = world.size();
  const u32 first_new_pack = static_cast<u32>(json::parse(known).at("packs").size());

  // 2. Hash, and address each new page to its owner once per rank.
  std::vector<std::string> outgoing(ranks);
  std::unordered_map<digest, sent_page, archive::digest_hasher> sent;
  archive::page_store store;
  phase(world, archive, [&] {
    const json described = json::parse(known);
    next.level = described.at("level").get<int>();
    if (world.rank() != 0)
      for (const auto& name : described.at("packs")) next.packs.push_back({name.get<std::string>(), 0, 0});
    store = archive::load_page_store(archive, next);
    for (std::size_t s = 0; s < local.size(); ++s) {
      auto& snap = local[s];
      const std::byte* base = snap.layout.file->bytes().data();
      for (const u64 offset : snap.layout.page_offsets) snap.pages.push_back(base + offset);
      snap.identities = archive::identify_pages(snap.pages, options.jobs, options.hash_backend);
      for (std::size_t i = 0; i < snap.pages.size(); ++i) {
        const auto& page = snap.identities[i];
        if (page.zero || store.find(page.id) || sent.contains(page.id)) continue;
        const int owner = owner_of(page.id, ranks);
        sent.emplace(page.id, sent_page{owner, outgoing[owner].size() / (sizeof(digest) + page_size), s, {}});
        append_value(outgoing[owner], page.id);
        outgoing[owner].append(reinterpret_cast<const char*>(snap.pages[i]), page_size);
      }
    }
  });

  // 3. Owners store their pages; everyone learns where theirs went.
  const auto received = world.exchange(outgoing);
  outgoing.clear();
  std::optional<archive::pack_writer> writer;
  std::vector<std::string> answers;
  std::string my_pack = "-";
  phase(world, archive, [&] {
    writer.emplace(archive / "packs", next.level);
    answers = store_owned_pages(received, *writer, options.jobs);
    if (writer->pages() > 0) my_pack = writer->finish();
    my_pack = json{{"name", my_pack}, {"pages", writer->pages()}, {"bytes", writer->bytes()}}.dump() + "\n";
  });
  const auto answered = world.exchange(answers);
  world.gather_to_root(my_pack);
  world.broadcast(my_pack);

  // 4. Each rank writes its snapshots' indexes; rank 0 gathers their entries.
  std::vector<std::string> pack_names;
  for (const auto& p : next.packs) pack_names.push_back(p.name);
  std::vector<archive::pack_entry> new_packs;
  std::string entries;
  phase(world, archive, [&] {
    std::size_t line_start = 0;
    for (int owner = 0; owner < ranks; ++owner) {
      const auto line_end = my_pack.find('\n', line_start);
      const json pack = json::parse(my_pack.substr(line_start, line_end - line_start));
      line_start = line_end + 1;
      pack_names.push_back(pack.at("name").get<std::string>());  // "-": that owner stored nothing
      if (pack_names.back() != "-")
        new_packs.push_back({pack_names.back(), pack.at("pages").get<u64>(), pack.at("bytes").get<u64>()});
    }
    for (auto& [id, page] : sent) {
      constexpr std::size_t answer = sizeof(u64) + sizeof(std::uint8_t);
      const std::size_t at = page.slot * answer;
      page.where = archive::page_location{first_new_pack + static_cast<u32>(page.owner),
                                          read_value<u64>(answered[page.owner], at)};
      if (read_value<std::uint8_t>(answered[page.owner], at + sizeof(u64)) != 0)
        ++local[page.first_snapshot].entry.new_pages;
    }
    for (std::size_t s = 0; s < local.size(); ++s) {
      auto& snap = local[s];
      std::vector<std::optional<archive::page_location>> where(snap.pages.size());
      u64 zero = 0;
      for (std::size_t i = 0; i < snap.pages.size(); ++i) {
        const auto& page = snap.identities[i];
        if (page.zero) ++zero;
        else where[i] = store.find(page.id) ? store.find(page.id) : sent.at(page.id).where;
      }
      auto index = archive::index_image(mine[s], snap.layout, where);
      auto& entry = snap.entry;
      entry.id = mine[s].id;
      entry.file_bytes = index.file_size;
      entry.pages = snap.pages.size();
      entry.zero_pages = zero;
      entry.index = archive::write_index(archive, index, pack_names, entry.index_bytes);
      entries += json{{"id", entry.id}, {"index", entry.index}, {"file_bytes", entry.file_bytes},
                      {"pages", entry.pages}, {"zero_pages", entry.zero_pages}, {"new_pages", entry.new_pages},
                      {"index_bytes", entry.index_bytes}}.dump() + "\n";
    }
  });

  // 5. Rank 0 commits once, in manifest order (shards are contiguous, gathered by rank).
  world.gather_to_root(entries);
  // Ranks may hash differently (a GPU on some nodes only): the report names each choice once.
  const archive::hash_backend_used my_backend = archive::hash_backend_for(options.jobs, options.hash_backend);
  std::string backends = my_backend.describe() + "\n";
  world.gather_to_root(backends);
  archive::add_report report;
  phase(world, archive, [&] {
    if (world.rank() != 0) return;
    for (const auto& p : new_packs) next.packs.push_back(p), report.written_bytes += p.bytes;
    std::size_t line_start = 0;
    while (line_start < entries.size()) {
      const auto line_end = entries.find('\n', line_start);
      const json e = json::parse(entries.substr(line_start, line_end - line_start));
      line_start = line_end + 1;
      next.snapshots.push_back({e.at("id").get<std::string>(), e.at("index").get<std::string>(),
                                e.at("file_bytes").get<u64>(), e.at("pages").get<u64>(), e.at("zero_pages").get<u64>(),
                                e.at("new_pages").get<u64>(), e.at("index_bytes").get<u64>()});
      const auto& s = next.snapshots.back();
      report.input_bytes += s.file_bytes;
      report.pages += s.pages;
      report.zero_pages += s.zero_pages;
      report.newly_stored += s.new_pages;
      report.written_bytes += s.index_bytes;
    }
    archive::commit_catalog(archive, next);
  });
  report.snapshots = specs.size();
  report.already_stored = report.pages - report.zero_pages - report.newly_stored;
  report.archive_bytes = next.stored_bytes();
  for (const auto& s : next.snapshots) report.archive_nonzero_pages += s.pages - s.zero_pages;
  for (const auto& p : next.packs) report.archive_stored_pages += p.pages;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.hash_backend = my_backend;
  std::vector<std::string> distinct;
  for (std::size_t at = 0, end; (end = backends.find('\n', at)) != std::string::npos; at = end + 1)
    if (std::find(distinct.begin(), distinct.end(), backends.substr(at, end - at)) == distinct.end())
      distinct.push_back(backends.substr(at, end - at));
  if (distinct.size() > 1) report.hash_backend = {fmt::format("{}", fmt::join(distinct, ", ")), 0};
  return report;
}

}  // namespace ptwalk
