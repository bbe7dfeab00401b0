// host/discovery/aarch64_discovery.cpp — TTBR0 tables among the AArch64 scan's hits (see the header).
#include "discovery/aarch64_discovery.hpp"

#include <unordered_set>

#include <fmt/format.h>

#include "ptwalk/walk.hpp"

namespace ptwalk {

namespace {

enum class path_end { leaf, user_leaf, empty, implausible };

// One table at `depth`: every non-zero entry is something an OS writes there.
// Returns the index of the first present entry, -1 if none, -2 if implausible.
template <class Format>
int check_table(const memory_image& image, const std::byte* table, unsigned depth) {
  int first = -1;
  for (unsigned j = 0; j < Format::entries(depth); ++j) {
    const u64 entry = load_entry(table, j);
    if (entry == 0) continue;
    const entry_kind kind = Format::classify(entry, depth);
    if (kind == entry_kind::not_present) {
      if (!Format::is_last_depth(depth) || Format::present(entry)) return -2;
      continue;
    }
    if (kind == entry_kind::table &&
        ((entry & aarch64_table_descriptor_zero_bits) != 0 ||
         image.bytes_at(Format::table_address(entry), Format::table_bytes(depth + 1)) == nullptr))
      return -2;
    if (first < 0) first = static_cast<int>(j);
  }
  return first;
}

// Where the first present entry leads from a table at `depth` reached with
// `path` permissions. Memoized per (table, depth, path): a hostile image
// whose every page points at the same tables costs one check per table,
// not one per path through it.
template <class Format>
class first_paths {
 public:
  explicit first_paths(const memory_image& image) : image_(image) {}

  path_end from_top_entry(u64 entry) {
    return from(Format::table_address(entry), 1, Format::accumulate_perms(Format::perm_path_start, entry));
  }

 private:
  path_end from(u64 table_pa, unsigned depth, u8 path) {
    static_assert(Format::perm_path_start < 32 && Format::levels <= 4);
    const u64 key = table_pa | (u64{depth} << 5) | path;  // tables below the top are 4 KiB-aligned
    if (const auto it = memo_.find(key); it != memo_.end()) return it->second;
    return memo_[key] = follow(table_pa, depth, path);
  }

  path_end follow(u64 table_pa, unsigned depth, u8 path) {
    if (depth == Format::levels) return path_end::implausible;  // a table descriptor at the last level
    const std::byte* table = image_.bytes_at(table_pa, Format::table_bytes(depth));
    if (table == nullptr) return path_end::implausible;
    const int first = check_table<Format>(image_, table, depth);
    if (first == -2) return path_end::implausible;
    if (first == -1) return path_end::empty;  // emptied by munmap, not yet freed
    const u64 entry = load_entry(table, static_cast<unsigned>(first));
    if (Format::classify(entry, depth) == entry_kind::leaf)
      return (Format::leaf_perms(path, entry) & perm_user) != 0 ? path_end::user_leaf : path_end::leaf;
    return from(Format::table_address(entry), depth + 1, Format::accumulate_perms(path, entry));
  }

  const memory_image& image_;
  std::unordered_map<u64, path_end> memo_;
};

}  // namespace

template <class Format>
aarch64_root_selection select_aarch64_roots(const memory_image& image, std::span<const root_scan_hit> hits,
                                            std::optional<u64> ttbr1_table) {
  std::unordered_set<u64> referenced;
  const auto add_references = [&](const std::byte* table) {
    for (unsigned i = 0; i < Format::entries(0); ++i)
      if (const u64 entry = load_entry(table, i); Format::classify(entry, 0) == entry_kind::table)
        referenced.insert(Format::table_address(entry));
  };
  for (const auto& hit : hits) add_references(image.bytes_at(hit.pa, Format::table_bytes(0)));
  if (ttbr1_table)
    if (const std::byte* kernel = image.bytes_at(*ttbr1_table, Format::table_bytes(0))) add_references(kernel);

  aarch64_root_selection out;
  first_paths<Format> paths(image);
  for (const auto& hit : hits) {
    if (hit.pa == ttbr1_table) continue;
    if (referenced.count(hit.pa) != 0) {
      ++out.referenced;
      continue;
    }
    const std::byte* table = image.bytes_at(hit.pa, Format::table_bytes(0));
    unsigned entries = 0, leaves = 0, user_leaves = 0;
    bool plausible = true;
    for (unsigned i = 0; i < Format::entries(0) && plausible; ++i) {
      const u64 entry = load_entry(table, i);
      if (entry == 0) continue;
      ++entries;
      switch (paths.from_top_entry(entry)) {
        case path_end::user_leaf: ++user_leaves; [[fallthrough]];
        case path_end::leaf: ++leaves; break;
        case path_end::empty: break;
        case path_end::implausible: plausible = false; break;
      }
    }
    if (!plausible || leaves == 0) {
      ++out.implausible;
      continue;
    }
    const bool kernel_only = user_leaves == 0;
    out.kernel_only += kernel_only;
    out.roots.push_back({hit.pa, kernel_only,
                         fmt::format("{} table entries; {} of their first paths end in user leaves, {} in "
                                     "kernel leaves; no other table points here",
                                     entries, user_leaves, leaves - user_leaves)});
  }
  return out;
}

template aarch64_root_selection select_aarch64_roots<aarch64_4k_48>(const memory_image&,
                                                                    std::span<const root_scan_hit>,
                                                                    std::optional<u64>);
template aarch64_root_selection select_aarch64_roots<aarch64_4k_39>(const memory_image&,
                                                                    std::span<const root_scan_hit>,
                                                                    std::optional<u64>);

}  // namespace ptwalk
