// ptwalk/walk.hpp — walk_va_spaces, the sequential depth-first reference walk (SPEC §3).
//
// Every other backend is tested record for record against this one, so it is
// written to mirror the specification, not for speed: roots in primacy order,
// each in ascending VA order; every table reached at depth d is keyed by
// (physical address, d); the first visit owns the key and is descended, every
// later visit becomes an AnotherSpace record naming the owner.
#pragma once

#include <span>
#include <unordered_map>
#include <vector>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"
#include "ptwalk/table_ops.hpp"

namespace ptwalk {

// A root given as a CR3 value loses its low 12 bits (PCID or PWT/PCD) and
// anything above the physical address field.
template <class Format>
PTWALK_HD constexpr u64 root_table_address(u64 cr3) {
  return Format::table_address(cr3);
}

// Key of a table visit: tables are 4 KiB aligned, so the depth fits below the address.
PTWALK_HD constexpr u64 table_key(u64 table_pa, unsigned depth) { return table_pa | depth; }

namespace detail {

template <class Format, table_read_ops Ops>
class reference_walker {
 public:
  reference_walker(const Ops& ops, va_range range) : ops_(ops), range_(to_linear<Format>(range)) {}

  snapshot_walk run(std::span<const u64> roots) {
    snapshot_walk out;
    out.roots.reserve(roots.size());
    out.offsets.push_back(0);
    for (u32 space = 0; space < roots.size(); ++space) {
      const u64 root = root_table_address<Format>(roots[space]);
      out.roots.push_back(root);
      if (!range_.empty()) visit_root(out, space, root);
      out.offsets.push_back(out.records.size());
    }
    if constexpr (requires { ops_.dangling_reads(); }) out.stats.dangling_reads = ops_.dangling_reads();
    return out;
  }

 private:
  struct owner_visit {
    u32 space;
    u64 va;  // linear
  };

  void visit_root(snapshot_walk& out, u32 space, u64 root) {
    auto [it, first_visit] = owners_.try_emplace(table_key(root, 0), owner_visit{space, range_.first});
    if (!first_visit) {
      out.records.push_back(
          make_alias_record<Format>(0, it->second.space, range_.first, it->second.va));
      ++out.stats.aliases[0];
      return;
    }
    ++out.stats.tables[0];
    walk_table(out, space, ops_.from_phys(root), 0, 0, perm_path_start);
  }

  void walk_table(snapshot_walk& out, u32 space, typename Ops::table_addr table, unsigned depth,
                  u64 block_va, u8 path_perms) {
    const auto bounds = range_.entries_in_range(block_va, depth);
    for (unsigned index = bounds.lo; index <= bounds.hi && bounds.lo <= bounds.hi; ++index) {
      const u64 va = block_va + (u64{index} << Format::entry_shift(depth));
      const u64 entry = ops_.read_entry(ops_.entry_addr(table, index));
      ++out.stats.entries_read;
      switch (Format::classify(entry, depth)) {
        case entry_kind::not_present:
          break;
        case entry_kind::leaf:
          out.records.push_back(make_leaf_record<Format>(entry, depth, va, path_perms));
          out.stats.count_leaf(out.records.back().size_log2);
          break;
        case entry_kind::table:
          visit_child(out, space, entry, depth + 1, va, Format::accumulate_perms(path_perms, entry));
          break;
      }
    }
  }

  void visit_child(snapshot_walk& out, u32 space, u64 entry, unsigned depth, u64 va,
                   u8 path_perms) {
    const u64 child = Format::table_address(entry);
    auto [it, first_visit] = owners_.try_emplace(table_key(child, depth), owner_visit{space, va});
    if (!first_visit) {
      out.records.push_back(make_alias_record<Format>(depth, it->second.space, va, it->second.va));
      ++out.stats.aliases[depth];
      return;
    }
    ++out.stats.tables[depth];
    walk_table(out, space, ops_.from_phys(child), depth, va, path_perms);
  }

  const Ops& ops_;
  linear_va_range<Format> range_;
  std::unordered_map<u64, owner_visit> owners_;
};

}  // namespace detail

// Walks every root of one snapshot (SPEC §3). `roots` are in primacy order
// and may be CR3 values. Reads go through `ops`; if it counts dangling reads
// (`ops.dangling_reads()`), the count is reported in the stats.
template <class Format, table_read_ops Ops>
[[nodiscard]] snapshot_walk walk_va_spaces(const Ops& ops, std::span<const u64> roots,
                                           va_range range = {}) {
  return detail::reference_walker<Format, Ops>(ops, range).run(roots);
}

}  // namespace ptwalk
