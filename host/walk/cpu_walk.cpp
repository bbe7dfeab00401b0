// host/cpu_walk.cpp — the `cpu` backend: flat owner tables, direct image reads, all cores.
//
// Three steps, each parallel:
//   upper levels — per snapshot (snapshots in parallel), the reference's
//     depth-first walk claims owners in its order and emits every record
//     above the last level; an owned last-level table (a PT: leaves only,
//     about 3/4 of the tables in Linux-like fleets) is not read but left as
//     a task, with a placeholder where its leaves belong;
//   leaf tables  — all tasks of all snapshots expand in parallel, each into
//     its thread's buffer;
//   splice       — placeholders are replaced by their leaves, in parallel.
// Owners are packed (space, block VA) ranks as in the GPU walk
// (kernels/walk_steps.hpp), so "is this visit the owner" is one compare, and
// the output is the same at any thread count because ownership is decided
// in one sequential pass per snapshot.
#include "walk/cpu_walk.hpp"


#include <algorithm>
#include <cstring>
#include <memory>

#include "kernels/walk_steps.hpp"
#include "common/parallel_for.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {
namespace {

// Table key (pa | depth, ptwalk/walk.hpp) → owner rank, for one snapshot's
// walk; open addressing, kept at most half full.
class flat_owner_map {
 public:
  static constexpr u64 empty = ~u64{0};  // no pa | depth has every bit set

  // The owner rank of `key`, claiming it for `rank` if it has none yet.
  u64 claim(u64 key, u64 rank) {
    if (2 * (count_ + 1) > slots_.size()) rehash(std::max<std::size_t>(1024, 2 * slots_.size()));
    for (u64 i = kernels::hash_u64(key) & mask_;; i = (i + 1) & mask_) {
      slot& s = slots_[i];
      if (s.key == key) return s.rank;
      if (s.key == empty) {
        s = {key, rank};
        ++count_;
        return rank;
      }
    }
  }

 private:
  struct slot {
    u64 key = empty;
    u64 rank = 0;
  };
  void rehash(std::size_t capacity) {
    std::vector<slot> old = std::exchange(slots_, std::vector<slot>(capacity));
    mask_ = capacity - 1;
    for (const slot& s : old)
      for (u64 i = kernels::hash_u64(s.key) & mask_; s.key != empty; i = (i + 1) & mask_)
        if (slots_[i].key == empty) {
          slots_[i] = s;
          break;
        }
  }

  std::vector<slot> slots_;
  u64 mask_ = 0;
  std::size_t count_ = 0;
};

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
void read_entries(const memory_image& image, u64 pa, unsigned lo, unsigned hi, walk_stats& stats,
                  OnEntry&& on_entry) {
  if (lo > hi) return;
  stats.entries_read += hi - lo + 1;
  if (const std::byte* whole = image.bytes_at(pa, Format::table_bytes(0))) {
    // Page tables are mostly empty: test eight present bits at once (one
    // 64-byte line) and visit only the set ones. Lines are prefetched a few
    // ahead, since a walk jumps between tables too often for the hardware
    // stream prefetcher to get going inside one.
    constexpr unsigned prefetch_lines = 6;
    for (unsigned group = lo / 8; group < std::min(lo / 8 + prefetch_lines, hi / 8 + 1); ++group)
      __builtin_prefetch(whole + 64 * u64{group});
    for (unsigned group = lo / 8; group <= hi / 8; ++group) {
      if (group + prefetch_lines <= hi / 8) __builtin_prefetch(whole + 64 * u64{group + prefetch_lines});
      u64 line[8];
      std::memcpy(line, whole + 64 * u64{group}, 64);
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

// The reference's depth-first order over one snapshot, for every level but
// the last.
template <class Format>
class upper_walker {
  using rank = kernels::visit_rank<Format>;

 public:
  upper_walker(const memory_image& image, linear_va_range<Format> range, upper_walk& out)
      : image_(image), range_(range), out_(out) {}

  void space(u32 space, u64 root) {
    out_.space_first.push_back(out_.items.size());
    if (range_.empty()) return;
    const u64 owner = owners_.claim(table_key(root, 0), rank::pack(space, 0));
    if (rank::space(owner) != space) {  // a root listed again: one depth-0 alias (SPEC §3)
      out_.items.push_back(make_alias_record<Format>(0, rank::space(owner), range_.first, range_.first));
      return;
    }
    ++out_.stats.tables[0];
    table(space, root, 0, 0, Format::perm_path_start);
  }

 private:
  void table(u32 space, u64 pa, unsigned depth, u64 block_va, u8 perms) {
    const auto bounds = range_.entries_in_range(block_va, depth);
    read_entries<Format>(image_, pa, bounds.lo, bounds.hi, out_.stats, [&](u64 value, unsigned index) {
      const u64 va = block_va + (u64{index} << Format::entry_shift(depth));
      if (Format::classify(value, depth) == entry_kind::table)
        child(space, Format::table_address(value), depth + 1, va, Format::accumulate_perms(perms, value));
      else
        out_.items.push_back(make_leaf_record<Format>(value, depth, va, perms));
    });
  }

  void child(u32 space, u64 pa, unsigned depth, u64 va, u8 perms) {
    const u64 visit = rank::pack(space, va);
    const u64 owner = owners_.claim(table_key(pa, depth), visit);
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
  linear_va_range<Format> range_;
  upper_walk& out_;
  flat_owner_map owners_;
};

using snapshot_list = std::span<const loaded_snapshot* const>;

// One thread's leaves, in fixed blocks that never move (a growing vector
// would copy every leaf again on each reallocation), on its own cache line
// (headers of different threads side by side would bounce it on every write).
class alignas(64) leaf_buffer {
 public:
  static constexpr std::size_t block_records = std::size_t{1} << 16;  // 2 MiB

  // Room for one table's leaves; commit() says how many were written.
  space_aware_mapping* room() {
    if (blocks_.empty() || used_ + 512 > block_records) {
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
std::vector<snapshot_walk> walk_format(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads) {
  const std::size_t n = snapshots.size();
  for (const auto* s : snapshots)
    if (s->roots().size() >= kernels::visit_rank<Format>::max_spaces)
      throw input_error(s->id() + ": too many spaces for the cpu walk");

  // Upper levels, one snapshot per thread at a time.
  std::vector<upper_walk> upper(n);
  std::vector<snapshot_walk> out(n);
  parallel_for(n, threads, [&](std::size_t b) {
    // Built in a local and moved out once: neighbouring snapshots' counters
    // share cache lines with this one's.
    upper_walk local;
    upper_walker<Format> walker(snapshots[b]->image, range, local);
    for (u32 space = 0; space < snapshots[b]->roots().size(); ++space) {
      out[b].roots.push_back(root_table_address<Format>(snapshots[b]->roots()[space]));
      walker.space(space, out[b].roots.back());
    }
    local.space_first.push_back(local.items.size());
    upper[b] = std::move(local);
  });

  // Leaf tables of every snapshot, in parallel, into per-thread buffers.
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
    space_aware_mapping* out = buffer.room();
    std::size_t count = 0;
    const auto bounds = range.entries_in_range(task.va, leaf_depth);
    read_entries<Format>(snapshots[b]->image, task.pa, bounds.lo, bounds.hi, stats,
                         [&](u64 value, unsigned index) {
                           out[count++] = make_leaf_record<Format>(
                               value, leaf_depth, task.va + (u64{index} << Format::entry_shift(leaf_depth)),
                               task.perms);
                         });
    buffer.commit(count);
    leaves[t] = {out, count, stats.entries_read, stats.dangling_reads};
  });

  // Splice: each item's final position, then the copies, in parallel.
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
  return out;
}

}  // namespace

std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots, const cpu_walk_options& options) {
  const unsigned threads = resolve_jobs(options.threads > 0 ? static_cast<unsigned>(options.threads) : 0);
  // Formats are compile-time parameters: each format's snapshots are one group.
  std::vector<snapshot_walk> out(snapshots.size());
  for (const paging_format format : {paging_format::x86_64, paging_format::x86_64_la57}) {
    std::vector<std::size_t> indices;
    std::vector<const loaded_snapshot*> group;
    for (std::size_t i = 0; i < snapshots.size(); ++i)
      if (snapshots[i].format() == format) {
        indices.push_back(i);
        group.push_back(&snapshots[i]);
      }
    if (group.empty()) continue;
    visit_x86_format(format, [&]<class F>() {
      auto walks = walk_format<F>(group, to_linear<F>(options.range), threads);
      for (std::size_t k = 0; k < indices.size(); ++k) out[indices[k]] = std::move(walks[k]);
    });
  }
  return out;
}

}  // namespace ptwalk
