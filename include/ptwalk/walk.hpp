// ptwalk/walk.hpp — walk_va_spaces, the sequential depth-first reference walk (SPEC §3).
//
// Every other backend is tested record for record against this one, so it is
// written to mirror the specification, not for speed: roots in primacy order,
// each in ascending VA order; every table reached at depth d is keyed by
// (physical address, d); the first visit owns the key and is descended, every
// later visit becomes an AnotherSpace record naming the owner. A space has
// one root per half (format.hpp): the lower-half root, then (AArch64, when
// given) the TTBR1 root for the upper half.
#pragma once

#include <algorithm>
#include <bit>
#include <span>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"
#include "ptwalk/table_ops.hpp"

namespace ptwalk {

// The table a root value names: a CR3 loses PCID/PWT/PCD, a TTBR its ASID and CnP.
template <class Format>
PTWALK_HD constexpr u64 root_table_address(u64 cr3_or_ttbr) {
  return Format::root_table_address(cr3_or_ttbr);
}

// Linear VA where half `half`'s root starts, and what one root spans.
template <class Format>
PTWALK_HD constexpr u64 half_start(unsigned half) {
  return u64{half} << Format::va_bits;
}
// The half a canonical VA lies in (always 0 for one-half formats).
template <class Format>
PTWALK_HD constexpr unsigned half_of(u64 canonical_va) {
  return static_cast<unsigned>(Format::linear(canonical_va) >> Format::va_bits);
}
template <class Format>
PTWALK_HD constexpr u64 root_span() {
  return u64{Format::entries(0)} << Format::entry_shift(0);
}

// Key of a table visit: tables are at least 16-byte aligned (a 16k-48 top
// table) and depth < 8, so the depth fits below the address.
PTWALK_HD constexpr u64 table_key(u64 table_pa, unsigned depth) { return table_pa | depth; }

// One visit of a root table in a snapshot's walk, in the reference's order
// (space by space, lower half then upper half): the first visit of a table
// is walked from `block_va`; a later one is the depth-0 alias `alias`.
// Halves the range misses are not visited. The reference and the batch
// backends all start from this list: one copy of depth 0.
template <class Format>
struct root_visit {
  u32 space;
  u64 table;     // root table address
  u64 block_va;  // linear VA the table's first entry maps
  bool walked;
  space_aware_mapping alias;  // when !walked
};

template <class Format>
[[nodiscard]] std::vector<root_visit<Format>> root_visits(std::span<const u64> roots,
                                                          std::span<const u64> upper_roots,
                                                          linear_va_range<Format> range) {
  if (!upper_roots.empty() && (Format::halves == 1 || upper_roots.size() != roots.size()))
    throw std::invalid_argument("walk_va_spaces: upper roots need a two-half format and one per root");
  const unsigned halves = upper_roots.empty() ? 1 : 2;
  std::vector<root_visit<Format>> out;
  out.reserve(halves * roots.size());
  // Each table's first visit, found by open addressing (slot: visit index +
  // 1, 0 when empty) and kept at most half full: a node map took 4.6 ms for
  // 40,000 roots, as long as reading their tables.
  const auto slot_bits =
      static_cast<unsigned>(std::bit_width(std::max<std::size_t>(2 * halves * roots.size(), 16) - 1));
  std::vector<u32> first(std::size_t{1} << slot_bits, 0);
  auto slot_of = [&](u64 table) {
    // Fibonacci hashing: the product's top bits depend on every address bit.
    std::size_t slot = static_cast<std::size_t>((table * 0x9e3779b97f4a7c15ull) >> (64 - slot_bits));
    while (first[slot] != 0 && out[first[slot] - 1].table != table) slot = (slot + 1) & (first.size() - 1);
    return slot;
  };
  auto first_va = [&](const root_visit<Format>& visit) { return std::max(range.first, visit.block_va); };
  for (u32 space = 0; space < roots.size(); ++space)
    for (unsigned half = 0; half < halves; ++half) {
      const u64 start = half_start<Format>(half);
      if (range.empty() || !range.overlaps(start, root_span<Format>())) continue;
      const u64 table = root_table_address<Format>(half == 0 ? roots[space] : upper_roots[space]);
      u32& slot = first[slot_of(table)];
      const bool fresh = slot == 0;
      root_visit<Format> visit{space, table, start, fresh, {}};
      if (fresh) {
        slot = static_cast<u32>(out.size() + 1);
      } else {
        const root_visit<Format>& owner = out[slot - 1];
        visit.alias = make_alias_record<Format>(0, owner.space, first_va(visit), first_va(owner));
      }
      out.push_back(visit);
    }
  return out;
}

namespace detail {

template <class Format, table_read_ops Ops>
class reference_walker {
 public:
  reference_walker(const Ops& ops, va_range range) : ops_(ops), range_(to_linear<Format>(range)) {}

  snapshot_walk run(std::span<const u64> roots, std::span<const u64> upper_roots) {
    snapshot_walk out;
    out.roots.reserve(roots.size());
    for (const u64 root : roots) out.roots.push_back(root_table_address<Format>(root));
    out.offsets.push_back(0);
    u32 space = 0;  // spaces whose records are done: out.offsets.size() - 1
    for (const auto& visit : root_visits<Format>(roots, upper_roots, range_)) {
      for (; space < visit.space; ++space) out.offsets.push_back(out.records.size());
      if (!visit.walked) {
        out.records.push_back(visit.alias);
        ++out.stats.aliases[0];
        continue;
      }
      ++out.stats.tables[0];
      walk_table(out, visit.space, ops_.from_phys(visit.table), 0, visit.block_va, Format::perm_path_start);
    }
    for (; space < roots.size(); ++space) out.offsets.push_back(out.records.size());
    if constexpr (requires { ops_.dangling_reads(); }) out.stats.dangling_reads = ops_.dangling_reads();
    return out;
  }

 private:
  struct owner_visit {
    u32 space;
    u64 va;  // linear
  };

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
  std::unordered_map<u64, owner_visit> owners_;  // tables below the roots (root_visits owns depth 0)
};

}  // namespace detail

// Walks every root of one snapshot (SPEC §3). `roots` are in primacy order
// and may be CR3 or TTBR0 values; `upper_roots` is empty or holds one TTBR1
// value per root (two-half formats only). Reads go through `ops`; if it
// counts dangling reads (`ops.dangling_reads()`), the count is reported.
template <class Format, table_read_ops Ops>
[[nodiscard]] snapshot_walk walk_va_spaces(const Ops& ops, std::span<const u64> roots,
                                           std::span<const u64> upper_roots, va_range range = {}) {
  return detail::reference_walker<Format, Ops>(ops, range).run(roots, upper_roots);
}
template <class Format, table_read_ops Ops>
[[nodiscard]] snapshot_walk walk_va_spaces(const Ops& ops, std::span<const u64> roots,
                                           va_range range = {}) {
  return walk_va_spaces<Format>(ops, roots, std::span<const u64>{}, range);
}

}  // namespace ptwalk
