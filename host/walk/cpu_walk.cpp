// host/cpu_walk.cpp — the `cpu` backend: flat owner tables, direct image reads, all cores.
//
// Three steps, each parallel:
//   upper levels — owners of the whole batch first, level by level with an
//     atomic-min owner table per depth (the GPU walk's method, tables of
//     one level in parallel); then, slices of spaces in parallel (so one
//     big snapshot uses every core), the reference's depth-first walk
//     emits every record above the last level, each visit checked against
//     its table's owner; an owned last-level table (a PT: leaves only,
//     about 3/4 of the tables in Linux-like fleets) is not read but left as
//     a task, with a placeholder where its leaves belong;
//   leaf tables  — all tasks of all snapshots expand in parallel, each into
//     its thread's buffer;
//   splice       — placeholders are replaced by their leaves, in parallel.
// Owners are packed (space, block VA) ranks as in the GPU walk
// (kernels/walk_steps.hpp), so "is this visit the owner" is one compare, and
// the output is the same at any thread count because the owner of a table
// is the minimum over all its visits, whatever order they arrive in.
#include "walk/cpu_walk.hpp"


#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <unordered_map>

#include "kernels/walk_steps.hpp"
#include "common/parallel_for.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {
namespace {

// An owned last-level table whose leaves the parallel step produces.
struct leaf_table_task {
  u64 pa;
  u64 va;  // linear block start
  u8 perms;
};
struct leaf_table_output {
  const space_aware_mapping* leaves;
  u64 count;
  u64 entries_read, dangling_reads;
};

// A placeholder stands where a task's leaves go; a real record never has
// size_log2 0. Its pa is the task's index in the snapshot.
constexpr space_aware_mapping placeholder(u64 task) {
  space_aware_mapping r{};
  r.pa = task;
  return r;
}
constexpr bool is_placeholder(const space_aware_mapping& r) { return r.is_leaf() && r.size_log2 == 0; }

// The records of one snapshot's upper levels and the tasks it left.
struct upper_walk {
  std::vector<space_aware_mapping> items;  // records and placeholders, per space in VA order
  std::vector<u64> space_first;            // index of each space's first item; one more at the end
  std::vector<leaf_table_task> tasks;
  walk_stats stats;
};

// Reads the in-range entries [lo, hi] of one table straight from the image
// and hands each present one to `on_entry(value, index)`. Unbacked entries
// read as 0 and are counted (SPEC §1).
template <class Format, class OnEntry>
void read_entries(const memory_image& image, u64 pa, unsigned depth, unsigned lo, unsigned hi, walk_stats& stats,
                  OnEntry&& on_entry) {
  if (lo > hi) return;
  stats.entries_read += hi - lo + 1;
  const u64 table_bytes = Format::table_bytes(depth);
  if (const std::byte* whole = image.bytes_at(pa, table_bytes)) {
    // Page tables are mostly empty: test eight present bits at once (one
    // 64-byte line) and visit only the set ones. Lines are prefetched a few
    // ahead, since a walk jumps between tables too often for the hardware
    // stream prefetcher to get going inside one.
    constexpr unsigned prefetch_lines = 6;
    for (unsigned group = lo / 8; group < std::min(lo / 8 + prefetch_lines, hi / 8 + 1); ++group)
      __builtin_prefetch(whole + 64 * u64{group});
    for (unsigned group = lo / 8; group <= hi / 8; ++group) {
      if (group + prefetch_lines <= hi / 8) __builtin_prefetch(whole + 64 * u64{group + prefetch_lines});
      u64 line[8] = {};
      // An AArch64 top table can be smaller than one line.
      std::memcpy(line, whole + 64 * u64{group}, std::min<u64>(64, table_bytes));
      unsigned present = 0;
      for (unsigned k = 0; k < 8; ++k) present |= static_cast<unsigned>(line[k] & Format::bit_present) << k;
      if (group == lo / 8) present &= 0xffu << (lo % 8);
      if (group == hi / 8) present &= 0xffu >> (7 - hi % 8);
      for (; present != 0; present &= present - 1) {
        const unsigned k = static_cast<unsigned>(__builtin_ctz(present));
        on_entry(line[k], 8 * group + k);
      }
    }
    return;
  }
  // A table no single region backs: entry by entry.
  for (unsigned i = lo; i <= hi; ++i) {
    u64 value = 0;
    if (const std::byte* p = image.bytes_at(pa + 8 * u64{i}, 8)) {
      std::memcpy(&value, p, 8);
      if (Format::present(value)) on_entry(value, i);
    } else {
      ++stats.dangling_reads;
    }
  }
}

using snapshot_list = std::span<const loaded_snapshot* const>;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Spaces per upper-level task: enough slices of a big snapshot to balance
// the cores, few enough that joining them costs nothing.
constexpr u32 slice_spaces = 16;

// Owners of every table below the roots, for a whole batch at once, level
// by level as in the GPU walk (kernels/walk_steps.hpp): the owned tables of
// depth d are read in parallel, their child visits inserted into depth
// d+1's owner table by atomic min of (space, VA) rank, and the visits that
// hold the minimum are the owned tables of depth d+1. Last-level tables are
// claimed but not read. The owners are exactly the reference's: a table's
// first visit in depth-first order is its smallest (space, VA) visit.
template <class Format>
class batch_owners {
  using rank = kernels::visit_rank<Format>;
  using key_of = kernels::table_key_of;

 public:
  batch_owners(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads)
      : root_visits_(snapshots.size()), space_visits_(snapshots.size()) {
    std::vector<owned_table> frontier;
    for (u32 b = 0; b < snapshots.size(); ++b) {
      root_visits_[b] = root_visits<Format>(snapshots[b]->roots(), snapshots[b]->upper_roots(), range);
      auto& first = space_visits_[b];
      first.assign(snapshots[b]->roots().size() + 1, root_visits_[b].size());
      for (std::size_t v = root_visits_[b].size(); v-- > 0;) first[root_visits_[b][v].space] = v;
      for (std::size_t s = first.size() - 1; s-- > 0;) first[s] = std::min(first[s], first[s + 1]);
      for (const auto& visit : root_visits_[b])
        if (visit.walked) frontier.push_back({b, visit.space, visit.table, visit.block_va});
    }
    for (unsigned depth = 0; depth + 1 < Format::levels && !frontier.empty(); ++depth)
      frontier = claim_children(snapshots, range, threads, depth, frontier);
  }

  // Snapshot b's root visits of `space`, in the reference's order (lower half, upper half).
  [[nodiscard]] std::span<const root_visit<Format>> root_visits_of(u32 b, u32 space) const {
    const auto& first = space_visits_[b];
    return std::span(root_visits_[b]).subspan(first[space], first[space + 1] - first[space]);
  }
  // The owner rank of the table at `pa`, depth >= 1, visited in snapshot b.
  [[nodiscard]] u64 owner(u32 b, u64 pa, unsigned depth) const {
    const owner_table& t = tables_[depth - 1];
    return kernels::owner_table_ref{const_cast<u64*>(t.keys.data()), const_cast<u64*>(t.ranks.data()), t.mask}
        .rank_of(key_of::pack(b, pa));
  }

 private:
  struct owned_table {
    u32 snapshot, space;
    u64 pa, va;
  };
  struct visit {
    u64 key, rank;
  };
  struct owner_table {
    std::vector<u64> keys, ranks;
    u64 mask = 0;
  };

  std::vector<owned_table> claim_children(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads,
                                          unsigned depth, const std::vector<owned_table>& frontier) {
    std::vector<std::vector<visit>> visits(threads);
    parallel_for_chunks(frontier.size(), 16, threads, [&](unsigned worker, std::size_t i) {
      const owned_table& t = frontier[i];
      const auto bounds = range.entries_in_range(t.va, depth);
      walk_stats ignored;  // counted by the emitting pass
      read_entries<Format>(snapshots[t.snapshot]->image, t.pa, depth, bounds.lo, bounds.hi, ignored,
                           [&](u64 value, unsigned index) {
                             if (Format::classify(value, depth) != entry_kind::table) return;
                             const u64 va = t.va + (u64{index} << Format::entry_shift(depth));
                             visits[worker].push_back(
                                 {key_of::pack(t.snapshot, Format::table_address(value)), rank::pack(t.space, va)});
                           });
    });
    u64 count = 0;
    for (const auto& v : visits) count += v.size();
    owner_table& table = tables_.emplace_back();
    const u64 capacity = std::bit_ceil(std::max<u64>(2 * count, 64));
    table.keys.assign(capacity, key_of::empty);
    table.ranks.assign(capacity, ~u64{0});
    table.mask = capacity - 1;
    const kernels::owner_table_ref ref{table.keys.data(), table.ranks.data(), table.mask};
    parallel_for(threads, threads, [&](std::size_t w) {
      for (const visit& v : visits[w]) (void)ref.insert_min(v.key, v.rank);
    });
    std::vector<owned_table> next;
    if (Format::is_last_depth(depth + 1)) return next;  // leaf tables are expanded later
    for (const auto& worker : visits)
      for (const visit& v : worker)
        if (ref.rank_of(v.key) == v.rank)
          next.push_back({key_of::snapshot(v.key), rank::space(v.rank), key_of::table_pa(v.key), rank::va(v.rank)});
    return next;
  }

  std::vector<std::vector<root_visit<Format>>> root_visits_;  // per snapshot
  std::vector<std::vector<std::size_t>> space_visits_;  // per snapshot: each space's first visit; one more at the end
  std::vector<owner_table> tables_;  // depth 1 .. levels-1
};

// The reference's depth-first order over some spaces of one snapshot, for
// every level but the last, with owners already known (batch_owners): each
// visit is the owner's or an alias, and an owned leaf table becomes a task.
template <class Format>
class upper_walker {
  using rank = kernels::visit_rank<Format>;

 public:
  upper_walker(const memory_image& image, u32 snapshot, const batch_owners<Format>& owners,
               linear_va_range<Format> range, upper_walk& out)
      : image_(image), snapshot_(snapshot), owners_(owners), range_(range), out_(out) {}

  void space(u32 space) {
    out_.space_first.push_back(out_.items.size());
    for (const auto& visit : owners_.root_visits_of(snapshot_, space)) {
      if (!visit.walked) {  // a root table visited before: one depth-0 alias (SPEC §3)
        out_.items.push_back(visit.alias);
        continue;
      }
      ++out_.stats.tables[0];
      table(space, visit.table, 0, visit.block_va, Format::perm_path_start);
    }
  }

 private:
  void table(u32 space, u64 pa, unsigned depth, u64 block_va, u8 perms) {
    const auto bounds = range_.entries_in_range(block_va, depth);
    read_entries<Format>(image_, pa, depth, bounds.lo, bounds.hi, out_.stats, [&](u64 value, unsigned index) {
      const u64 va = block_va + (u64{index} << Format::entry_shift(depth));
      // A valid entry can still be invalid for its level (an AArch64 block
      // where the granule has none): not_present.
      switch (Format::classify(value, depth)) {
        case entry_kind::table:
          child(space, Format::table_address(value), depth + 1, va, Format::accumulate_perms(perms, value));
          break;
        case entry_kind::leaf:
          out_.items.push_back(make_leaf_record<Format>(value, depth, va, perms));
          break;
        case entry_kind::not_present:
          break;
      }
    });
  }

  void child(u32 space, u64 pa, unsigned depth, u64 va, u8 perms) {
    const u64 visit = rank::pack(space, va);
    const u64 owner = owners_.owner(snapshot_, pa, depth);
    if (owner != visit) {
      out_.items.push_back(make_alias_record<Format>(depth, rank::space(owner), va, rank::va(owner)));
      return;
    }
    ++out_.stats.tables[depth];
    if (!Format::is_last_depth(depth)) return table(space, pa, depth, va, perms);
    out_.items.push_back(placeholder(out_.tasks.size()));
    out_.tasks.push_back({pa, va, perms});
  }

  const memory_image& image_;
  u32 snapshot_;
  const batch_owners<Format>& owners_;
  linear_va_range<Format> range_;
  upper_walk& out_;
};

// Spaces of one snapshot whose upper levels one task emits.
struct space_slice {
  u32 snapshot, first, last;
};

// Appends `part` (the next spaces of the same snapshot) to `whole`: items,
// space starts and tasks shift by what `whole` holds; placeholders name
// their task by index, so they shift too.
void append_slice(upper_walk& whole, upper_walk&& part) {
  const u64 items = whole.items.size(), tasks = whole.tasks.size();
  for (auto& item : part.items)
    if (is_placeholder(item)) item.pa += tasks;
  whole.items.insert(whole.items.end(), part.items.begin(), part.items.end());
  for (const u64 first : part.space_first) whole.space_first.push_back(first + items);
  whole.tasks.insert(whole.tasks.end(), part.tasks.begin(), part.tasks.end());
  whole.stats += part.stats;
}


// One thread's leaves, in fixed blocks that never move (a growing vector
// would copy every leaf again on each reallocation), on its own cache line
// (headers of different threads side by side would bounce it on every write).
class alignas(64) leaf_buffer {
 public:
  static constexpr std::size_t block_records = std::size_t{1} << 16;  // 2 MiB

  // Room for one table's leaves (at most 8192, a 64 KiB granule's table);
  // commit() says how many were written.
  space_aware_mapping* room(std::size_t entries) {
    if (blocks_.empty() || used_ + entries > block_records) {
      blocks_.push_back(std::make_unique_for_overwrite<space_aware_mapping[]>(block_records));
      used_ = 0;
    }
    return blocks_.back().get() + used_;
  }
  void commit(std::size_t count) { used_ += count; }

 private:
  std::vector<std::unique_ptr<space_aware_mapping[]>> blocks_;
  std::size_t used_ = 0;
};

template <class Format>
std::vector<snapshot_walk> walk_format(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads,
                                       walk_profile* profile) {
  const std::size_t n = snapshots.size();
  for (const auto* s : snapshots)
    if (s->roots().size() >= kernels::visit_rank<Format>::max_spaces)
      throw input_error(s->id() + ": too many spaces for the cpu walk");

  // Upper levels: owners for the whole batch, level by level; then the
  // records in the reference's order, slices of spaces in parallel (one
  // big snapshot spreads over every core), joined per snapshot.
  const auto upper_clock = std::chrono::steady_clock::now();
  std::vector<snapshot_walk> out(n);
  std::vector<space_slice> slices;
  for (u32 b = 0; b < n; ++b) {
    const u32 spaces = static_cast<u32>(snapshots[b]->roots().size());
    for (const u64 root : snapshots[b]->roots()) out[b].roots.push_back(root_table_address<Format>(root));
    for (u32 first = 0; first < spaces; first += slice_spaces) slices.push_back({b, first, std::min(spaces, first + slice_spaces)});
  }
  const batch_owners<Format> owners(snapshots, range, threads);
  std::vector<upper_walk> parts(slices.size());
  parallel_for(slices.size(), threads, [&](std::size_t k) {
    const space_slice& slice = slices[k];
    // Built in a local and moved out once: neighbouring slices' counters
    // share cache lines with this one's.
    upper_walk local;
    upper_walker<Format> walker(snapshots[slice.snapshot]->image, slice.snapshot, owners, range, local);
    for (u32 space = slice.first; space < slice.last; ++space) walker.space(space);
    parts[k] = std::move(local);
  });
  std::vector<std::size_t> first_slice(n + 1, slices.size());
  for (std::size_t k = slices.size(); k-- > 0;) first_slice[slices[k].snapshot] = k;
  for (std::size_t b = n; b-- > 0;) first_slice[b] = std::min(first_slice[b], first_slice[b + 1]);
  std::vector<upper_walk> upper(n);
  parallel_for(n, threads, [&](std::size_t b) {
    upper_walk local;
    for (std::size_t k = first_slice[b]; k < first_slice[b + 1]; ++k) append_slice(local, std::move(parts[k]));
    local.space_first.push_back(local.items.size());
    upper[b] = std::move(local);
  });
  if (profile != nullptr) {
    walk_phase& phase = profile->phase("upper");
    phase.seconds += seconds_since(upper_clock);
    for (const auto& u : upper)  // the owner pass and the emitting pass each read the tables; records written
      phase.host_bytes += 2 * 8 * u.stats.entries_read + sizeof(space_aware_mapping) * u.items.size();
  }

  // Leaf tables of every snapshot, in parallel, into per-thread buffers.
  const auto leaf_clock = std::chrono::steady_clock::now();
  std::vector<u64> task_base(n + 1, 0);
  for (std::size_t b = 0; b < n; ++b) task_base[b + 1] = task_base[b] + upper[b].tasks.size();
  std::vector<leaf_table_output> leaves(task_base[n]);
  std::vector<leaf_buffer> buffers(threads);
  constexpr unsigned leaf_depth = Format::levels - 1;
  // Chunks of 64 tables: few enough hand-outs, small enough to balance.
  std::vector<std::size_t> snapshot_of_worker(threads, 0);
  parallel_for_chunks(task_base[n], 64, threads, [&](unsigned worker, u64 t) {
    std::size_t& b = snapshot_of_worker[worker];
    while (t >= task_base[b + 1]) ++b;  // each worker's tasks come in increasing order
    const leaf_table_task& task = upper[b].tasks[t - task_base[b]];
    leaf_buffer& buffer = buffers[worker];
    walk_stats stats;
    space_aware_mapping* out = buffer.room(Format::entries(leaf_depth));
    std::size_t count = 0;
    const auto bounds = range.entries_in_range(task.va, leaf_depth);
    read_entries<Format>(snapshots[b]->image, task.pa, leaf_depth, bounds.lo, bounds.hi, stats,
                         [&](u64 value, unsigned index) {
                           if (Format::classify(value, leaf_depth) != entry_kind::leaf) return;  // AArch64 01
                           out[count++] = make_leaf_record<Format>(
                               value, leaf_depth, task.va + (u64{index} << Format::entry_shift(leaf_depth)),
                               task.perms);
                         });
    buffer.commit(count);
    leaves[t] = {out, count, stats.entries_read, stats.dangling_reads};
  });

  if (profile != nullptr) {
    walk_phase& phase = profile->phase("leaves");
    phase.seconds += seconds_since(leaf_clock);
    for (const auto& l : leaves) phase.host_bytes += 8 * l.entries_read + sizeof(space_aware_mapping) * l.count;
  }

  // Splice: each item's final position, then the copies, in parallel.
  const auto splice_clock = std::chrono::steady_clock::now();
  parallel_for(n, threads, [&](std::size_t b) {
    const upper_walk& u = upper[b];
    snapshot_walk& walk = out[b];
    walk_stats stats = u.stats;  // local for the same reason as above
    u64 size = 0;
    for (const auto& item : u.items) size += is_placeholder(item) ? leaves[task_base[b] + item.pa].count : 1;
    // reserve + append: a resize would first zero every record.
    walk.records.reserve(size);
    walk.offsets.reserve(u.space_first.size());
    std::size_t space = 0;
    for (std::size_t i = 0; i < u.items.size(); ++i) {
      for (; space < u.space_first.size() && u.space_first[space] == i; ++space)
        walk.offsets.push_back(walk.records.size());
      const auto& item = u.items[i];
      if (!is_placeholder(item)) {
        walk.records.push_back(item);
        continue;
      }
      const leaf_table_output& l = leaves[task_base[b] + item.pa];
      walk.records.insert(walk.records.end(), l.leaves, l.leaves + l.count);
      stats.entries_read += l.entries_read;
      stats.dangling_reads += l.dangling_reads;
    }
    for (; space < u.space_first.size(); ++space) walk.offsets.push_back(walk.records.size());
    for (const auto& r : walk.records) {
      if (r.is_leaf()) stats.count_leaf(r.size_log2);
      else ++stats.aliases[r.depth];
    }
    walk.stats = stats;
  });
  if (profile != nullptr) {
    walk_phase& phase = profile->phase("splice");
    phase.seconds += seconds_since(splice_clock);
    for (const auto& w : out) {
      // items and leaves read, records written, records read again for the counts
      phase.host_bytes += 3 * sizeof(space_aware_mapping) * w.records.size();
      profile->tables += std::accumulate(std::begin(w.stats.tables), std::end(w.stats.tables), u64{0});
      profile->records += w.records.size();
    }
    profile->batches += 1;
  }
  return out;
}

}  // namespace

std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots, const cpu_walk_options& options) {
  const unsigned threads = resolve_jobs(options.threads > 0 ? static_cast<unsigned>(options.threads) : 0);
  // Formats are compile-time parameters: each format's snapshots are one group.
  std::vector<snapshot_walk> out(snapshots.size());
  for (const paging_format format : all_formats) {
    std::vector<std::size_t> indices;
    std::vector<const loaded_snapshot*> group;
    for (std::size_t i = 0; i < snapshots.size(); ++i)
      if (snapshots[i].format() == format) {
        indices.push_back(i);
        group.push_back(&snapshots[i]);
      }
    if (group.empty()) continue;
    visit_format(format, [&]<class F>() {
      auto walks = walk_format<F>(group, to_linear<F>(options.range), threads, options.profile);
      for (std::size_t k = 0; k < indices.size(); ++k) out[indices[k]] = std::move(walks[k]);
    });
  }
  return out;
}

}  // namespace ptwalk
