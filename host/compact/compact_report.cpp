// host/compact/compact_report.cpp — the compact job's report: JSON both ways, text, and the sum of shards' reports.
#include "compact/compact_job.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "input/manifest.hpp"

namespace ptwalk {
namespace {

// " (33.3%)": part of whole, or nothing when whole is 0.
std::string percent_text(u64 part, u64 whole) {
  return whole == 0 ? std::string()
                    : fmt::format(" ({:.1f}%)", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

}  // namespace

nlohmann::json compact_report::to_json() const {
  nlohmann::ordered_json j;
  j["out_dir"] = out_dir;
  j["committed"] = committed;
  j["backend"] = backend;
  j["jobs"] = jobs;
  j["batch_size"] = batch_size;
  j["policy"] = policy.to_json();
  j["snapshots"] = snapshots;
  j["spaces"] = compaction.spaces;
  auto per_depth = [&](const u64* values) {
    return std::vector<u64>(values, values + levels);
  };
  j["tables_per_depth"] = per_depth(walk.tables);
  j["shared_table_links_per_depth"] = per_depth(walk.aliases);
  j["leaves"] = {{"4k", walk.leaves_4k}, {"2m", walk.leaves_2m}, {"1g", walk.leaves_1g}};
  j["compaction"] = {{"leaves_kept", compaction.leaves_kept},
                     {"leaves_dropped_unbacked", compaction.leaves_dropped_unbacked},
                     {"leaves_kept_unbacked", compaction.leaves_kept_unbacked},
                     {"leaves_made_cow", compaction.leaves_made_cow},
                     {"links", compaction.links},
                     {"links_to_empty_tables", compaction.links_to_empty_tables},
                     {"os_private_entries", compaction.os_private_entries},
                     {"frames_copied", compaction.frames_copied},
                     {"frames_nested", compaction.frames_nested},
                     {"frames_in_place", compaction.frames_in_place},
                     {"data_bytes", compaction.data_bytes},
                     {"padding_bytes", compaction.padding_bytes},
                     {"tables", compaction.tables}};
  j["bytes_in"] = compaction.bytes_in;
  j["bytes_out"] = compaction.bytes_out;
  j["disk"] = {{"in", disk_in.to_json()}, {"out", disk_out.to_json()}};
  j["seconds"] = {{"load", seconds.load},     {"walk", seconds.walk},     {"first_batch", seconds.first_batch},
                  {"relink", seconds.relink}, {"write", seconds.write},   {"verify", seconds.verify},
                  {"stall", seconds.stall},   {"commit", seconds.commit}, {"total", seconds.total}};
  if (verified) {
    nlohmann::json differences = nlohmann::json::array();
    for (const auto& d : verify.differences)
      differences.push_back({{"snapshot", d.snapshot}, {"space", hex(d.space)}, {"va", hex(d.va)}, {"what", d.what}});
    j["verify"] = {{"ok", verify.ok()},
                   {"differences", verify.counts.difference_count},
                   {"first_differences", std::move(differences)},
                   {"leaves_checked", verify.counts.leaves_checked},
                   {"bytes_compared", verify.counts.bytes_compared},
                   {"links_checked", verify.counts.links_checked},
                   {"links_to_empty_tables", verify.counts.links_to_empty_tables}};
  } else {
    j["verify"] = nullptr;
  }
  return j;
}

std::string compact_report::format() const {
  auto mib = [](u64 bytes) { return static_cast<double>(bytes) / (1 << 20); };
  std::string text;
  text += fmt::format("compacted {} snapshots ({} spaces); walker {}, {} jobs\n", snapshots,
                      compaction.spaces, backend, jobs);
  for (unsigned d = 0; d < levels; ++d)
    text += fmt::format("  depth {}: {} distinct tables, {} links to a table another space (or VA) owns\n", d,
                        walk.tables[d], walk.aliases[d]);
  text += fmt::format("  frames: {} copied, {} inside a larger copied frame, {} left at their address\n",
                      compaction.frames_copied, compaction.frames_nested, compaction.frames_in_place);
  text += fmt::format("  leaves: {} kept, {} unbacked dropped, {} unbacked kept, {} made CoW; "
                      "{} OS-private entries kept\n",
                      compaction.leaves_kept, compaction.leaves_dropped_unbacked, compaction.leaves_kept_unbacked,
                      compaction.leaves_made_cow, compaction.os_private_entries);
  if (compaction.links_to_empty_tables != 0)
    text += fmt::format("  links: {} to tables that map nothing now, dropped with them\n",
                        compaction.links_to_empty_tables);
  text += fmt::format("  size: {:.1f} MiB in, {:.1f} MiB out{} of guest memory the images back\n",
                      mib(compaction.bytes_in), mib(compaction.bytes_out), percent_text(compaction.bytes_out,
                                                                                        compaction.bytes_in));
  if (committed)
    text += fmt::format("  on disk: {:.1f} MiB in, {:.1f} MiB out{} allocated (files {:.1f} MiB in, {:.1f} MiB out; "
                        "holes are not allocated)\n",
                        mib(disk_in.allocated_bytes), mib(disk_out.allocated_bytes),
                        percent_text(disk_out.allocated_bytes, disk_in.allocated_bytes), mib(disk_in.file_bytes),
                        mib(disk_out.file_bytes));
  text += fmt::format("  time: total {:.3f} s; load {:.3f} s, walk {:.3f} s (first batch ready at {:.3f} s); "
                      "relink {:.3f} s, write {:.3f} s, verify {:.3f} s, stalled {:.3f} s (summed over jobs)\n",
                      seconds.total, seconds.load, seconds.walk, seconds.first_batch, seconds.relink,
                      seconds.write, seconds.verify, seconds.stall);
  if (verified) text += verify.ok() ? "  verify: OK\n" : format_verification(verify);
  text += committed ? fmt::format("  output: {}/manifest.jsonl\n", out_dir) : "  output: none written\n";
  return text;
}

namespace {

// Reads back what to_json wrote; throws input_error naming `where` when a field is missing.
class report_reader {
 public:
  report_reader(const nlohmann::json& j, std::string_view where) : j_(j), where_(where) {}
  [[nodiscard]] const nlohmann::json& at(std::initializer_list<const char*> path) const {
    const nlohmann::json* node = &j_;
    for (const char* key : path) {
      if (!node->is_object() || !node->contains(key))
        throw input_error(fmt::format("{}: the report has no \"{}\"", where_, key));
      node = &(*node)[key];
    }
    return *node;
  }
  [[nodiscard]] u64 count(std::initializer_list<const char*> path) const { return at(path).get<u64>(); }
  [[nodiscard]] double seconds(const char* key) const { return at({"seconds", key}).get<double>(); }
  void per_depth(const char* key, u64* values, unsigned& levels) const {
    const auto list = at({key}).get<std::vector<u64>>();
    levels = std::max(levels, static_cast<unsigned>(std::min<std::size_t>(list.size(), max_levels)));
    std::copy_n(list.begin(), std::min<std::size_t>(list.size(), max_levels), values);
  }

 private:
  const nlohmann::json& j_;
  std::string_view where_;
};

}  // namespace

compact_report compact_report::from_json(const nlohmann::json& j, std::string_view where) {
  try {
    const report_reader r(j, where);
    compact_report out;
    out.out_dir = r.at({"out_dir"}).get<std::string>();
    out.committed = r.at({"committed"}).get<bool>();
    out.backend = r.at({"backend"}).get<std::string>();
    out.jobs = r.at({"jobs"}).get<unsigned>();
    out.batch_size = r.at({"batch_size"}).get<std::size_t>();
    out.policy = compaction_policy::from_meta({{"compaction", r.at({"policy"})}});
    out.snapshots = r.count({"snapshots"});
    out.compaction.spaces = r.count({"spaces"});
    out.levels = 0;
    r.per_depth("tables_per_depth", out.walk.tables, out.levels);
    r.per_depth("shared_table_links_per_depth", out.walk.aliases, out.levels);
    out.walk.leaves_4k = r.count({"leaves", "4k"});
    out.walk.leaves_2m = r.count({"leaves", "2m"});
    out.walk.leaves_1g = r.count({"leaves", "1g"});
    auto& c = out.compaction;
    for (auto [key, field] : std::initializer_list<std::pair<const char*, u64*>>{
             {"leaves_kept", &c.leaves_kept}, {"leaves_dropped_unbacked", &c.leaves_dropped_unbacked},
             {"leaves_kept_unbacked", &c.leaves_kept_unbacked}, {"leaves_made_cow", &c.leaves_made_cow},
             {"links", &c.links}, {"links_to_empty_tables", &c.links_to_empty_tables},
             {"os_private_entries", &c.os_private_entries}, {"frames_copied", &c.frames_copied},
             {"frames_nested", &c.frames_nested}, {"frames_in_place", &c.frames_in_place},
             {"data_bytes", &c.data_bytes}, {"padding_bytes", &c.padding_bytes}, {"tables", &c.tables}})
      *field = r.count({"compaction", key});
    c.bytes_in = r.count({"bytes_in"});
    c.bytes_out = r.count({"bytes_out"});
    for (auto [key, usage] : std::initializer_list<std::pair<const char*, disk_usage*>>{
             {"in", &out.disk_in}, {"out", &out.disk_out}}) {
      usage->files = r.count({"disk", key, "files"});
      usage->file_bytes = r.count({"disk", key, "file_bytes"});
      usage->allocated_bytes = r.count({"disk", key, "allocated_bytes"});
    }
    auto& s = out.seconds;
    for (auto [key, field] : std::initializer_list<std::pair<const char*, double*>>{
             {"load", &s.load}, {"walk", &s.walk}, {"first_batch", &s.first_batch}, {"relink", &s.relink},
             {"write", &s.write}, {"verify", &s.verify}, {"stall", &s.stall}, {"commit", &s.commit},
             {"total", &s.total}})
      *field = r.seconds(key);
    out.verified = !r.at({"verify"}).is_null();
    if (out.verified) {
      out.verify.levels = out.levels;
      out.verify.counts.difference_count = r.count({"verify", "differences"});
      out.verify.counts.leaves_checked = r.count({"verify", "leaves_checked"});
      out.verify.counts.bytes_compared = r.count({"verify", "bytes_compared"});
      out.verify.counts.links_checked = r.count({"verify", "links_checked"});
      out.verify.counts.links_to_empty_tables = r.count({"verify", "links_to_empty_tables"});
      for (const auto& d : r.at({"verify", "first_differences"}))
        out.verify.differences.push_back({d.at("snapshot").get<std::string>(),
                                          parse_hex(d.at("space").get<std::string>()).value_or(0),
                                          parse_hex(d.at("va").get<std::string>()).value_or(0),
                                          d.at("what").get<std::string>()});
    }
    return out;
  } catch (const nlohmann::json::exception& e) {
    throw input_error(fmt::format("{}: bad report: {}", where, e.what()));
  }
}

void compact_report::add_shard(const compact_report& shard) {
  committed = committed && shard.committed;
  snapshots += shard.snapshots;
  levels = std::max(levels, shard.levels);
  walk += shard.walk;
  compaction += shard.compaction;
  // Shards read and write disjoint snapshots' files, so their disk figures add up.
  for (auto [sum, part] : {std::pair{&disk_in, &shard.disk_in}, std::pair{&disk_out, &shard.disk_out}}) {
    sum->files += part->files;
    sum->file_bytes += part->file_bytes;
    sum->allocated_bytes += part->allocated_bytes;
  }
  verify.counts += shard.verify.counts;
  verify.levels = levels;
  for (const auto& d : shard.verify.differences)
    if (verify.differences.size() < 10) verify.differences.push_back(d);
  // Thread-seconds add up across shards; the job took as long as its slowest shard.
  const double total = std::max(seconds.total, shard.seconds.total);
  const double first_batch = std::max(seconds.first_batch, shard.seconds.first_batch);
  seconds.load += shard.seconds.load;
  seconds.walk += shard.seconds.walk;
  seconds.relink += shard.seconds.relink;
  seconds.write += shard.seconds.write;
  seconds.verify += shard.seconds.verify;
  seconds.stall += shard.seconds.stall;
  seconds.commit += shard.seconds.commit;
  seconds.total = total;
  seconds.first_batch = first_batch;
}

}  // namespace ptwalk
