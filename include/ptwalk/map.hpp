// ptwalk/map.hpp — the write side and single-address lookups over any table ops.
//
// `map` installs one leaf, allocating intermediate tables on demand;
// `space_aware_map` installs the link an AnotherSpace record describes (our
// entry one level above the shared table points at it); `virt_to_phys`
// translates one address. The write algorithms thread an update_parent chain
// down the levels, so a table that moves on write (copy-on-write ops) is
// relinked into its parent, and so on up to the root.
#pragma once

#include <optional>
#include <type_traits>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"
#include "ptwalk/table_ops.hpp"

namespace ptwalk {

// Non-address bits for table entries created on the way down, per depth of
// the entry. The default is the most permissive (present, writable, user),
// leaving the leaf to decide the effective permissions.
struct intermediate_flags {
  u64 at_depth[max_levels] = {0x7, 0x7, 0x7, 0x7, 0x7};
};

struct map_request {
  u64 va = 0;              // canonical or linear; aligned to the page size
  u64 pa = 0;
  unsigned page_shift = 12;  // 12, 21 or 30
  u64 leaf_flags = 0x3;    // non-address bits of the leaf entry (present is forced)
  intermediate_flags tables;
};

enum class [[nodiscard]] map_status {
  ok,
  bad_page_size,   // the format has no leaf of that size
  misaligned,      // va or pa not aligned to the page size
  blocked_by_leaf, // a large leaf sits where a table is needed
  blocked_by_table,  // a table sits where the new entry would go; replacing it would orphan it
};

namespace detail {

template <class Ops>
using root_update_parent =
    std::conditional_t<may_move_v<Ops>, update_parent_root, update_parent_none>;

// Descends from `table` at Depth to `target_depth`, creating missing tables,
// and writes `final_entry` there. `UpdateParent` relinks `table` if it moves.
template <class Format, unsigned Depth, table_write_ops Ops, class UpdateParent>
map_status write_at_depth(Ops& ops, const UpdateParent& parent, typename Ops::table_addr table,
                          u64 va, unsigned target_depth, u64 final_entry,
                          const intermediate_flags& flags) {
  const unsigned index = Format::table_index(va, Depth);
  if (Depth == target_depth) {
    if (Format::classify(ops.read_entry(ops.entry_addr(table, index)), Depth) == entry_kind::table)
      return map_status::blocked_by_table;
    write_entry_updating(ops, parent, table, index, final_entry);
    return map_status::ok;
  }
  if constexpr (Depth + 1 < Format::levels) {
    const u64 entry = ops.read_entry(ops.entry_addr(table, index));
    typename Ops::table_addr child{};
    switch (Format::classify(entry, Depth)) {
      case entry_kind::leaf:
        return map_status::blocked_by_leaf;
      case entry_kind::table:
        child = ops.from_phys(Format::table_address(entry));
        break;
      case entry_kind::not_present:
        child = ops.alloc_table();
        table = write_entry_updating(
            ops, parent, table, index,
            Format::make_table_entry(ops.to_phys(child), flags.at_depth[Depth]));
        break;
    }
    using child_parent = update_parent_table<Format, UpdateParent, typename Ops::table_addr>;
    return write_at_depth<Format, Depth + 1>(ops, child_parent{parent, table, index}, child, va,
                                             target_depth, final_entry, flags);
  } else {
    return map_status::bad_page_size;
  }
}

}  // namespace detail

// Maps one page of 2^page_shift bytes.
template <class Format, table_write_ops Ops>
map_status map(Ops& ops, const map_request& request) {
  const int depth = Format::leaf_depth_for_shift(request.page_shift);
  if (depth < 0) return map_status::bad_page_size;
  const u64 align = (u64{1} << request.page_shift) - 1;
  if ((request.va & align) != 0 || (request.pa & align) != 0) return map_status::misaligned;
  const u64 leaf = Format::make_leaf_entry(request.pa, static_cast<unsigned>(depth),
                                           request.leaf_flags);
  return detail::write_at_depth<Format, 0>(ops, detail::root_update_parent<Ops>{},
                                           ops.root_table(), Format::linear(request.va),
                                           static_cast<unsigned>(depth), leaf, request.tables);
}

// Installs an AnotherSpace link: our entry at depth `shared_depth - 1` for the
// block at `our_va` points at `shared_table` (the owner's table), with
// `link_flags` as its non-address bits. A depth-0 link has no entry to write:
// the caller reuses the owner's root instead.
template <class Format, table_write_ops Ops>
map_status space_aware_map(Ops& ops, unsigned shared_depth, u64 our_va,
                           typename Ops::table_addr shared_table, u64 link_flags,
                           const intermediate_flags& tables = {}) {
  if (shared_depth == 0 || shared_depth >= Format::levels) return map_status::bad_page_size;
  const u64 span_mask = (u64{Format::entries(shared_depth)} << Format::entry_shift(shared_depth)) - 1;
  if ((Format::linear(our_va) & span_mask) != 0) return map_status::misaligned;
  const u64 link = Format::make_table_entry(ops.to_phys(shared_table), link_flags);
  return detail::write_at_depth<Format, 0>(ops, detail::root_update_parent<Ops>{},
                                           ops.root_table(), Format::linear(our_va),
                                           shared_depth - 1, link, tables);
}

// Writes `entry` verbatim as the depth-`depth` entry for `va`, creating the
// tables above it. For entries map cannot express: a not-present entry with
// OS-private bits (a swap entry, PROT_NONE) that a rebuild must keep.
template <class Format, table_write_ops Ops>
map_status write_entry_at(Ops& ops, u64 va, unsigned depth, u64 entry,
                          const intermediate_flags& tables = {}) {
  if (depth >= Format::levels) return map_status::bad_page_size;
  if ((Format::linear(va) & (Format::entry_span(depth) - 1)) != 0) return map_status::misaligned;
  return detail::write_at_depth<Format, 0>(ops, detail::root_update_parent<Ops>{},
                                           ops.root_table(), Format::linear(va), depth, entry,
                                           tables);
}

// Translates `va` through the tables under ops.root_table(); the mapping
// returned is the whole leaf (page base, size, effective permissions).
template <class Format, table_read_ops Ops>
[[nodiscard]] std::optional<mapping> virt_to_phys(const Ops& ops, u64 va) {
  const u64 linear = Format::linear(va);
  auto table = ops.root_table();
  u8 path = Format::perm_path_start;
  for (unsigned depth = 0; depth < Format::levels; ++depth) {
    const unsigned index = Format::table_index(linear, depth);
    const u64 entry = ops.read_entry(ops.entry_addr(table, index));
    switch (Format::classify(entry, depth)) {
      case entry_kind::not_present:
        return std::nullopt;
      case entry_kind::leaf: {
        const u64 base = linear & ~(Format::entry_span(depth) - 1);
        return make_leaf_record<Format>(entry, depth, base, path).as_mapping();
      }
      case entry_kind::table:
        path = Format::accumulate_perms(path, entry);
        table = ops.from_phys(Format::table_address(entry));
        break;
    }
  }
  return std::nullopt;
}

}  // namespace ptwalk
