// host/walk_output.cpp — fast JSON Lines formatting of walk records, and the summary.
#include "walk/walk_output.hpp"

#include <fmt/compile.h>
#include <fmt/format.h>

namespace ptwalk {

namespace {

constexpr std::string_view json_bool(bool value) { return value ? "true" : "false"; }

void append_record(fmt::memory_buffer& out, u64 space, const space_aware_mapping& r,
                   std::span<const u64> roots) {
  auto it = std::back_inserter(out);
  if (r.is_leaf()) {
    fmt::format_to(it,
                   FMT_COMPILE("{{\"space\":\"{:#x}\",\"type\":\"leaf\",\"va\":\"{:#x}\",\"pa\":\"{:#x}\","
                               "\"size\":{},\"w\":{},\"u\":{},\"x\":{},\"cow\":{},\"flags\":\"{:#x}\"}}\n"),
                   space, r.va, r.pa, r.size(), json_bool(r.perms & perm_writable),
                   json_bool(r.perms & perm_user), json_bool(r.perms & perm_executable),
                   json_bool(r.perms & perm_cow), r.flags);
  } else {
    const space_reference_mapping ref = r.as_reference(roots);
    fmt::format_to(it,
                   FMT_COMPILE("{{\"space\":\"{:#x}\",\"type\":\"alias\",\"depth\":{},\"owner\":\"{:#x}\","
                               "\"our_va\":\"{:#x}\",\"their_va\":\"{:#x}\"}}\n"),
                   space, ref.depth, ref.space, ref.our_va, ref.their_va);
  }
}

}  // namespace

void write_walk_jsonl(std::ostream& out, std::span<const snapshot_walk> walks) {
  // Chunks of about 1 MiB: few write calls, bounded memory however big the walk.
  constexpr std::size_t chunk = std::size_t{1} << 20;
  fmt::memory_buffer buffer;
  const auto flush = [&] {
    out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    buffer.clear();
  };
  for (const auto& walk : walks)
    for (std::size_t space = 0; space < walk.space_count(); ++space)
      for (const auto& record : walk.records_of(space)) {
        append_record(buffer, walk.roots[space], record, walk.roots);
        if (buffer.size() >= chunk) flush();
      }
  flush();
}

std::string format_walk_summary(std::span<const snapshot_walk> walks, unsigned levels,
                                std::string_view backend, double seconds) {
  walk_stats total;
  std::size_t spaces = 0, records = 0;
  for (const auto& walk : walks) {
    total += walk.stats;
    spaces += walk.space_count();
    records += walk.records.size();
  }
  const std::span<const u64> tables(total.tables, levels), aliases(total.aliases, levels);
  // AArch64 granules and blocks are listed only when there are any.
  std::string other_sizes;
  for (const auto& [count, name] : {std::pair{total.leaves_16k, "16 KiB"}, {total.leaves_64k, "64 KiB"},
                                    {total.leaves_32m, "32 MiB"}, {total.leaves_512m, "512 MiB"}})
    if (count != 0) other_sizes += fmt::format(", {} x {}", count, name);
  return fmt::format(
      "walked {} snapshots, {} spaces: {} records in {:.3f} s ({:.2f} M records/s, backend {})\n"
      "  leaves: {} x 4 KiB, {} x 2 MiB, {} x 1 GiB{}\n"
      "  distinct tables per depth 0..{}: {}\n"
      "  aliases per depth 0..{}: {}\n"
      "  dangling reads: {} of {} entries read\n",
      walks.size(), spaces, records, seconds, seconds > 0 ? records / seconds / 1e6 : 0.0, backend,
      total.leaves_4k, total.leaves_2m, total.leaves_1g, other_sizes, levels - 1, fmt::join(tables, " "),
      levels - 1, fmt::join(aliases, " "), total.dangling_reads, total.entries_read);
}

}  // namespace ptwalk
