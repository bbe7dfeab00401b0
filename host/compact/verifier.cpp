// host/verifier.cpp — the space-by-space, VA-by-VA comparison behind `ptwalk verify`.
#include "compact/verifier.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "input/image_ranges.hpp"
#include "walk/owned_tables.hpp"
#include "common/parallel_for.hpp"
#include "input/table_views.hpp"

namespace ptwalk {

verification_counts& verification_counts::operator+=(const verification_counts& o) {
  snapshots += o.snapshots;
  spaces += o.spaces;
  leaves_checked += o.leaves_checked;
  leaves_dropped += o.leaves_dropped;
  frames_compared += o.frames_compared;
  bytes_compared += o.bytes_compared;
  links_checked += o.links_checked;
  links_to_empty_tables += o.links_to_empty_tables;
  os_private_entries += o.os_private_entries;
  for (unsigned d = 0; d < max_levels; ++d) {
    tables_before[d] += o.tables_before[d];
    tables_after[d] += o.tables_after[d];
    links_per_depth[d] += o.links_per_depth[d];
  }
  bytes_before += o.bytes_before;
  bytes_after += o.bytes_after;
  difference_count += o.difference_count;
  return *this;
}

namespace {

std::string perms_text(u8 perms) {
  std::string text;
  text += (perms & perm_writable) ? 'w' : '-';
  text += (perms & perm_user) ? 'u' : '-';
  text += (perms & perm_executable) ? 'x' : '-';
  if (perms & perm_cow) text += ",cow";
  return text;
}

struct os_private_entry {
  unsigned depth;
  u64 va;
  u64 entry;
  friend auto operator<=>(const os_private_entry&, const os_private_entry&) = default;
};

template <class Format>
class snapshot_verifier {
 public:
  snapshot_verifier(const loaded_snapshot& before, const loaded_snapshot& after, verification& out,
                    std::size_t max_differences)
      : before_(before), after_(after), out_(out), max_differences_(max_differences) {}

  void run() {
    policy_ = compaction_policy::from_meta(after_.spec.meta);
    walk_before_ = reference_walk(before_);
    walk_after_ = reference_walk(after_);
    verification_counts& c = out_.counts;
    c.snapshots = 1;
    c.spaces = walk_before_.space_count();
    c.bytes_before = before_.image.backed_bytes();
    c.bytes_after = after_.image.backed_bytes();
    for (unsigned d = 0; d < Format::levels; ++d) {
      c.tables_before[d] = walk_before_.stats.tables[d];
      c.tables_after[d] = walk_after_.stats.tables[d];
      c.links_per_depth[d] = walk_before_.stats.aliases[d];
      // Tables that became empty may go; none may appear, which would mean
      // something shared before is a copy now.
      if (c.tables_after[d] > c.tables_before[d])
        differ(0, 0, fmt::format("depth {} has {} tables after, {} before: sharing lost", d,
                                 c.tables_after[d], c.tables_before[d]));
    }
    for (std::size_t space = 0; space < walk_before_.space_count(); ++space) {
      space_ = space;
      check_leaves();
      check_links();
      check_os_private();
    }
  }

 private:
  using path_entries = std::array<u64, max_levels>;

  // Walks this space's records of one kind (leaves or links) before and
  // after side by side, in VA order: each is only before, only after, or
  // in both at the same VA.
  template <class OnlyBefore, class OnlyAfter, class Both>
  void merge_by_va(bool leaves, OnlyBefore&& only_before, OnlyAfter&& only_after, Both&& both) const {
    std::vector<space_aware_mapping> before, after;
    for (const auto& r : walk_before_.records_of(space_)) if (r.is_leaf() == leaves) before.push_back(r);
    for (const auto& r : walk_after_.records_of(space_)) if (r.is_leaf() == leaves) after.push_back(r);
    std::size_t i = 0, j = 0;
    while (i < before.size() || j < after.size()) {
      if (j == after.size() || (i < before.size() && before[i].va < after[j].va)) only_before(before[i++]);
      else if (i == before.size() || after[j].va < before[i].va) only_after(after[j++]);
      else both(before[i++], after[j++]);
    }
  }

  void check_leaves() {
    merge_by_va(
        true, [&](const space_aware_mapping& b) { missing_leaf(b); },
        [&](const space_aware_mapping& a) {
          differ(a.va, fmt::format("page mapped after, not before ({:#x} bytes at {:#x})", a.size(), a.pa));
        },
        [&](const space_aware_mapping& b, const space_aware_mapping& a) { check_leaf(b, a); });
  }

  void missing_leaf(const space_aware_mapping& b) {
    if (!policy_.keeps_unbacked() && !fully_backed(before_.image, b.pa, b.size())) {
      ++out_.counts.leaves_dropped;
      return;
    }
    differ(b.va, fmt::format("page missing after ({:#x} bytes at {:#x})", b.size(), b.pa));
  }

  void check_leaf(const space_aware_mapping& b, const space_aware_mapping& a) {
    ++out_.counts.leaves_checked;
    if (a.size_log2 != b.size_log2) {
      differ(b.va, fmt::format("page size {:#x} before, {:#x} after", b.size(), a.size()));
      return;
    }
    // --cow-writable: a leaf writable by its own bits becomes a read-only CoW leaf.
    const bool made_cow = policy_.cow_writable && Format::writable_by_own_bits(b.flags);
    const u64 expected_flags = made_cow ? Format::as_cow_leaf(b.flags) : b.flags;
    const u8 expected_perms = made_cow ? static_cast<u8>((b.perms & ~perm_writable) | perm_cow) : b.perms;
    if (a.perms != expected_perms)
      differ(b.va, fmt::format("permissions {} expected, {} after", perms_text(expected_perms), perms_text(a.perms)));
    if (a.flags != expected_flags)
      differ(b.va, fmt::format("leaf bits {:#x} expected, {:#x} after", expected_flags, a.flags));
    const bool backed = fully_backed(before_.image, b.pa, b.size());
    if ((policy_.keep_pa || !backed) && a.pa != b.pa)
      differ(b.va, fmt::format("frame moved from {:#x} to {:#x} although the policy keeps it", b.pa, a.pa));
    check_path(b.va, b.depth);
    check_bytes(b, a);
  }

  // Every entry above a leaf or a link keeps its non-address bits, so the
  // effective permissions of every VA under it (in every space sharing it)
  // are unchanged.
  void check_path(u64 va, unsigned depth) {
    const path_entries before = path_to(before_.image, root_of(before_, walk_before_, space_, half_of<Format>(va)), va, depth);
    const path_entries after = path_to(after_.image, root_of(after_, walk_after_, space_, half_of<Format>(va)), va, depth);
    for (unsigned d = 0; d < depth; ++d)
      if ((before[d] & ~Format::address_mask) != (after[d] & ~Format::address_mask))
        differ(va, fmt::format("depth-{} entry bits {:#x} before, {:#x} after", d,
                               before[d] & ~Format::address_mask, after[d] & ~Format::address_mask));
  }

  // The root table of one half of a space (the walk names the lower ones).
  static u64 root_of(const loaded_snapshot& snapshot, const snapshot_walk& walk, std::size_t space, unsigned half) {
    if (half == 0) return walk.roots[space];
    return snapshot.upper_roots().empty() ? 0 : root_table_address<Format>(snapshot.upper_roots()[space]);
  }

  static path_entries path_to(const memory_image& image, u64 root, u64 va, unsigned depth) {
    const image_table_view view(image);
    path_entries path{};
    u64 table = root;
    for (unsigned d = 0; d < depth; ++d) {
      path[d] = view.read_entry(view.entry_addr(table, Format::table_index(Format::linear(va), d)));
      table = Format::table_address(path[d]);
    }
    return path;
  }

  void check_bytes(const space_aware_mapping& b, const space_aware_mapping& a) {
    // A frame mapped at many VAs is compared once.
    if (!compared_.emplace(b.pa, a.pa, b.size_log2).second) return;
    ++out_.counts.frames_compared;
    const u64 size = b.size();
    for (u64 offset = 0; offset < size;) {
      const backed_piece x = backed_span(before_.image, b.pa + offset, size - offset);
      const backed_piece y = backed_span(after_.image, a.pa + offset, size - offset);
      const u64 n = std::min(x.len, y.len);
      if ((x.bytes == nullptr) != (y.bytes == nullptr)) {
        differ(b.va + offset, fmt::format("byte at offset {:#x} of the page is {} before, {} after", offset,
                                          x.bytes ? "backed" : "unbacked", y.bytes ? "backed" : "unbacked"));
        return;
      }
      if (x.bytes != nullptr && std::memcmp(x.bytes, y.bytes, n) != 0) {
        const auto at = std::mismatch(x.bytes, x.bytes + n, y.bytes).first - x.bytes;
        differ(b.va + offset + at, fmt::format("byte at offset {:#x} of the page is {:#x} before, {:#x} after",
                                               offset + at, static_cast<unsigned>(x.bytes[at]),
                                               static_cast<unsigned>(y.bytes[at])));
        return;
      }
      out_.counts.bytes_compared += x.bytes != nullptr ? n : 0;
      offset += n;
    }
  }

  // AnotherSpace records match one for one, except that a link to a table
  // that maps nothing after compaction goes with the table (SPEC §4: "minus
  // tables that became empty"); the owner's own check proves it held
  // nothing to keep.
  void check_links() {
    const auto describe = [&](const space_aware_mapping& r) {
      return fmt::format("depth-{} table of space {:#x} at {:#x}", r.depth, walk_before_.roots[r.owner], r.pa);
    };
    merge_by_va(
        false,
        [&](const space_aware_mapping& b) {
          if (owner_table_gone(b)) ++out_.counts.links_to_empty_tables;
          else differ(b.va, fmt::format("shared table link lost: was the {}", describe(b)));
        },
        [&](const space_aware_mapping& a) {
          differ(a.va, fmt::format("shared table link not there before: now the {}", describe(a)));
        },
        [&](const space_aware_mapping& b, const space_aware_mapping& a) {
          if (b != a) {
            differ(b.va, fmt::format("shared table link changed: the {} before, the {} after at {:#x}", describe(b),
                                     describe(a), a.va));
            return;
          }
          ++out_.counts.links_checked;
          check_path(b.va, b.depth);
        });
  }

  // Whether the owner of link `r` has no table at its VA and depth after.
  [[nodiscard]] bool owner_table_gone(const space_aware_mapping& r) const {
    const u64 root = root_of(after_, walk_after_, r.owner, half_of<Format>(r.pa));
    const path_entries path = path_to(after_.image, root, r.pa, r.depth);
    for (unsigned d = 0; d < r.depth; ++d)
      if (Format::classify(path[d], d) != entry_kind::table) return true;
    return false;
  }

  void check_os_private() {
    const auto before = os_private_entries(before_, walk_before_, space_);
    const auto after = os_private_entries(after_, walk_after_, space_);
    out_.counts.os_private_entries += before.size();
    if (before == after) return;
    std::vector<os_private_entry> lost, gained;
    std::set_difference(before.begin(), before.end(), after.begin(), after.end(), std::back_inserter(lost));
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(gained));
    for (const auto& e : lost)
      differ(e.va, fmt::format("not-present depth-{} entry {:#x} (OS-private bits) lost", e.depth, e.entry));
    for (const auto& e : gained)
      differ(e.va, fmt::format("not-present depth-{} entry {:#x} appeared", e.depth, e.entry));
  }

  static std::vector<os_private_entry> os_private_entries(const loaded_snapshot& snapshot, const snapshot_walk& walk,
                                                          std::size_t space) {
    std::vector<os_private_entry> entries;
    const unsigned halves = snapshot.upper_roots().empty() ? 1 : 2;
    for (unsigned half = 0; half < halves; ++half)
      for_each_owned_entry<Format>(snapshot.image, root_of(snapshot, walk, space, half), half,
                                   records_of_half<Format>(walk.records_of(space), half), [&](const owned_entry& e) {
                                     if (e.kind == owned_entry_kind::os_private)
                                       entries.push_back({e.depth, e.va, e.entry});
                                   });
    return entries;
  }

  void differ(u64 va, std::string what) { differ(walk_before_.roots[space_], va, std::move(what)); }
  void differ(u64 space_id, u64 va, std::string what) {
    ++out_.counts.difference_count;
    if (out_.differences.size() < max_differences_)
      out_.differences.push_back({before_.id(), space_id, va, std::move(what)});
  }

  const loaded_snapshot& before_;
  const loaded_snapshot& after_;
  verification& out_;
  std::size_t max_differences_;
  compaction_policy policy_;
  snapshot_walk walk_before_, walk_after_;
  std::size_t space_ = 0;
  std::set<std::tuple<u64, u64, u8>> compared_;
};

void snapshot_level_difference(verification& out, const std::string& id, std::string what,
                               std::size_t max_differences) {
  ++out.counts.difference_count;
  if (out.differences.size() < max_differences) out.differences.push_back({id, 0, 0, std::move(what)});
}

}  // namespace

verification verify_snapshot(const loaded_snapshot& original, const loaded_snapshot& compacted,
                             std::size_t max_differences) {
  verification out;
  out.levels = format_levels(original.format());
  if (original.format() != compacted.format()) {
    snapshot_level_difference(out, original.id(), fmt::format("format {} before, {} after",
                                                              format_name(original.format()),
                                                              format_name(compacted.format())),
                              max_differences);
    return out;
  }
  if (original.roots().size() != compacted.roots().size()) {
    snapshot_level_difference(out, original.id(), fmt::format("{} spaces before, {} after",
                                                              original.roots().size(), compacted.roots().size()),
                              max_differences);
    return out;
  }
  try {
    visit_format(original.format(), [&]<class Format>() {
      snapshot_verifier<Format>(original, compacted, out, max_differences).run();
    });
  } catch (const input_error& e) {
    throw input_error(fmt::format("{}: {}", compacted.id(), e.what()));
  }
  return out;
}

verification verify_fleet(std::span<const loaded_snapshot> original,
                          std::span<const loaded_snapshot> compacted, unsigned jobs,
                          std::size_t max_differences) {
  std::map<std::string, const loaded_snapshot*> by_id;
  for (const auto& s : compacted) by_id.emplace(s.id(), &s);
  std::vector<verification> results(original.size());
  std::vector<const loaded_snapshot*> partners(original.size());
  for (std::size_t i = 0; i < original.size(); ++i) {
    auto it = by_id.find(original[i].id());
    if (it != by_id.end()) {
      partners[i] = it->second;
      by_id.erase(it);
    }
  }
  parallel_for(original.size(), jobs, [&](std::size_t i) {
    if (partners[i] != nullptr) results[i] = verify_snapshot(original[i], *partners[i], max_differences);
    else snapshot_level_difference(results[i], original[i].id(), "no compacted snapshot with this id", max_differences);
  });
  verification out;
  for (const verification& r : results) {
    out.counts += r.counts;
    out.levels = std::max(out.levels, r.levels);
    for (const auto& d : r.differences)
      if (out.differences.size() < max_differences) out.differences.push_back(d);
  }
  for (const auto& [id, snapshot] : by_id)
    snapshot_level_difference(out, id, "compacted snapshot has no original with this id", max_differences);
  return out;
}

std::string format_verification(const verification& result) {
  const verification_counts& c = result.counts;
  std::string text;
  auto mib = [](u64 bytes) { return static_cast<double>(bytes) / (1 << 20); };
  text += fmt::format("snapshots {}, spaces {}\n", c.snapshots, c.spaces);
  text += fmt::format("size: {:.1f} MiB before, {:.1f} MiB after", mib(c.bytes_before), mib(c.bytes_after));
  if (c.bytes_before > 0)
    text += fmt::format(" ({:.1f}% of the original)", 100.0 * static_cast<double>(c.bytes_after) /
                                                          static_cast<double>(c.bytes_before));
  text += " of guest memory the images back\n";
  if (result.disk_before && result.disk_after)
    text += fmt::format("on disk: {:.1f} MiB before, {:.1f} MiB after allocated (files {:.1f} MiB before, "
                        "{:.1f} MiB after; holes are not allocated)\n",
                        mib(result.disk_before->allocated_bytes), mib(result.disk_after->allocated_bytes),
                        mib(result.disk_before->file_bytes), mib(result.disk_after->file_bytes));
  for (unsigned d = 0; d < result.levels; ++d)
    text += fmt::format("depth {}: {} tables before, {} after, {} shared-table links\n", d, c.tables_before[d],
                        c.tables_after[d], c.links_per_depth[d]);
  text += fmt::format("checked: {} pages ({} frames, {:.1f} MiB of bytes), {} links, {} OS-private entries; "
                      "{} unbacked pages dropped by policy{}\n",
                      c.leaves_checked, c.frames_compared, mib(c.bytes_compared), c.links_checked,
                      c.os_private_entries, c.leaves_dropped,
                      c.links_to_empty_tables == 0
                          ? std::string()
                          : fmt::format(", {} links gone with the empty tables they named", c.links_to_empty_tables));
  if (result.ok()) {
    text += "verify: OK, no differences\n";
    return text;
  }
  if (c.difference_count == result.differences.size())
    text += fmt::format("verify: FAILED, {} difference{}:\n", c.difference_count, c.difference_count == 1 ? "" : "s");
  else
    text += fmt::format("verify: FAILED, {} differences; the first {}:\n", c.difference_count, result.differences.size());
  for (const auto& d : result.differences)
    text += fmt::format("  {} space {:#x} va {:#x}: {}\n", d.snapshot, d.space, d.va, d.what);
  return text;
}

}  // namespace ptwalk
