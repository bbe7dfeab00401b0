// host/cpu_walk.cpp — the `cpu` backend: flat owner tables, direct image reads, all cores.
//
// Three steps, each parallel:
//   upper levels — owners of the whole batch first, level by level with an
//     atomic-min owner table per depth (the GPU walk's method, tables of
//     one level in parallel), each upper table read once and its present
//     entries kept; then, slices of spaces in parallel (so one big
//     snapshot uses every core), the reference's depth-first walk over
//     those kept entries emits every record above the last level, each
//     visit checked against its table's owner; an owned last-level table
//     (a PT: leaves only, about 3/4 of the tables in Linux-like fleets) is
//     not read but left as a task, with a placeholder where its leaves
//     belong;
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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
  bulk_vector<space_aware_mapping> items;  // records and placeholders, per space in VA order
  bulk_vector<u64> space_first;            // each space's first item; joined per snapshot, one more at the end
  bulk_vector<leaf_table_task> tasks;
  walk_stats stats;
};

// Bit k set where entry k of a 64-byte line of entries is present.
template <class Format>
unsigned present_bits(const std::byte* line) {
#if defined(__SSE2__)
  // Each entry's present bit moved to its sign, then eight signs at once.
  constexpr int to_sign = 63 - std::countr_zero(Format::bit_present);
  unsigned bits = 0;
  for (unsigned half = 0; half < 4; ++half) {
    const __m128i two = _mm_slli_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(line) + half), to_sign);
    bits |= static_cast<unsigned>(_mm_movemask_pd(_mm_castsi128_pd(two))) << (2 * half);
  }
  return bits;
#else
  unsigned bits = 0;
  for (unsigned k = 0; k < 8; ++k) {
    u64 entry;
    std::memcpy(&entry, line + 8 * k, 8);
    bits |= static_cast<unsigned>((entry & Format::bit_present) != 0) << k;
  }
  return bits;
#endif
}

// Of `bits` (bit i for entry Width chunk + i of a chunk of Width entries:
// a line's 8 or a present word's 64), those whose entries lie in [lo, hi].
template <unsigned Width>
u64 bits_in_range(u64 bits, unsigned chunk, unsigned lo, unsigned hi) {
  constexpr u64 all = ~u64{0} >> (64 - Width);
  if (chunk == lo / Width) bits &= all << (lo % Width);
  if (chunk == hi / Width) bits &= all >> (Width - 1 - hi % Width);
  return bits;
}

// Reads the in-range entries [lo, hi] of one table straight from the image
// and hands each present one to `on_entry(value, index)`. Unbacked entries
// read as 0 and are counted (SPEC §1). `next_table` (the whole next table
// this thread reads, or null) is prefetched a line per line read: each
// table lies on its own page, where the hardware prefetcher stops, and
// spreading the next page's misses over this page's reads kept more in
// flight than asking for the whole page at once (leaf pass 15 -> 11 ms on
// 10,000 spaces, 2 cores) or for its first lines only.
template <class Format, class OnEntry>
void read_entries(const memory_image& image, u64 pa, unsigned depth, unsigned lo, unsigned hi, walk_stats& stats,
                  const std::byte* next_table, OnEntry&& on_entry) {
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
      if (next_table != nullptr && 64 * u64{group} < std::min<u64>(table_bytes, 4096))
        __builtin_prefetch(next_table + 64 * u64{group});
      u64 line[8] = {};
      // An AArch64 top table can be smaller than one line.
      std::memcpy(line, whole + 64 * u64{group}, std::min<u64>(64, table_bytes));
      auto present = static_cast<unsigned>(
          bits_in_range<8>(present_bits<Format>(reinterpret_cast<const std::byte*>(line)), group, lo, hi));
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

// A table to read: where it lies and which of its entries are in range.
struct table_to_read {
  const memory_image* image;
  u64 pa;
  unsigned lo, hi;
};

// Tables read in lockstep: each line of every table of a group before the
// next line of any. Every table lies on its own page, where the hardware
// stream prefetcher stops; several pages streamed side by side keep more
// lines in flight than one after another (shuffled 4 KiB pages of a 2 GB
// fleet image, 2 cores: 10 GB/s one at a time, 17 GB/s eight at a time; a
// walk of 40,000 spaces 253 -> 218 ms from four to eight, sixteen slower).
constexpr unsigned lockstep_tables = 8;

// Reads tables [0, count) of one depth on `threads` threads. For each table
// (each worker in increasing order) calls visit(worker, i, read), where
// read(stats, on_entry) hands each present in-range entry to
// on_entry(value, index) in index order and counts what it read, as
// read_entries does. A worker takes a run of consecutive tables at a time
// and reads whole 4 KiB tables `lockstep_tables` at a time into present
// bits, one word per 64 entries, while it prefetches the next group of its run, then
// takes their entries from cache; anything else (tables no single region
// backs, AArch64's larger granules and small top tables) goes through
// read_entries.
template <class Format, class TableOf, class Visit>
void read_tables(std::size_t count, unsigned depth, unsigned threads, TableOf&& table_of, Visit&& visit) {
  constexpr unsigned group = lockstep_tables;
  constexpr unsigned max_lines = 64, max_words = max_lines / 8;
  const u64 table_bytes = Format::table_bytes(depth);
  const bool lockstep = table_bytes % 64 == 0 && table_bytes / 64 <= max_lines;
  const unsigned lines = lockstep ? static_cast<unsigned>(table_bytes / 64) : 0;
  // Each run starts cold and its last prefetches are wasted: runs long
  // enough for that to be rare (depth-1 reads of 10,000 spaces 8.1 -> 7.1
  // ms from 16 to 256 tables), short enough that the last ones balance.
  const std::size_t run = std::clamp<std::size_t>((count / (16 * std::size_t{threads}) + group - 1) / group * group,
                                                  4 * group, 256);
  auto whole_of = [&](const table_to_read& t) {
    return t.image != nullptr && t.lo <= t.hi ? t.image->bytes_at(t.pa, table_bytes) : nullptr;
  };
  parallel_for_chunks((count + run - 1) / run, 1, threads, [&](unsigned worker, std::size_t r) {
    const std::size_t end = std::min(count, (r + 1) * run);
    table_to_read tables[group] = {}, next_tables[group] = {};
    const std::byte *whole[group] = {}, *next[group] = {};
    auto take_group = [&](std::size_t first) {
      for (unsigned k = 0; k < group; ++k) {
        next_tables[k] = first + k < end ? table_of(first + k) : table_to_read{};
        next[k] = whole_of(next_tables[k]);
      }
    };
    take_group(r * run);
    for (std::size_t first = r * run; first < end; first += group) {
      std::copy(std::begin(next_tables), std::end(next_tables), tables);
      std::copy(std::begin(next), std::end(next), whole);
      take_group(first + group);
      const unsigned size = static_cast<unsigned>(std::min<std::size_t>(group, end - first));
      bool all_whole = lockstep;
      for (unsigned k = 0; k < size; ++k) all_whole &= whole[k] != nullptr;
      if (!all_whole) {
        for (unsigned k = 0; k < size; ++k) {
          const table_to_read& t = tables[k];
          const std::byte* after = k + 1 < size ? whole[k + 1] : next[0];
          visit(worker, first + k, [&](walk_stats& stats, auto&& on_entry) {
            read_entries<Format>(*t.image, t.pa, depth, t.lo, t.hi, stats, after, on_entry);
          });
        }
        continue;
      }
      // One present bit per entry for each table: entry i is bit i % 64 of
      // word i / 64, so a table's set entries are found a word at a time.
      u64 present[group][max_words] = {};
      for (unsigned line = 0; line < lines; ++line) {
        for (unsigned k = 0; k < group; ++k)
          if (next[k] != nullptr) __builtin_prefetch(next[k] + 64 * u64{line});
        for (unsigned k = 0; k < size; ++k)
          present[k][line / 8] |= u64{present_bits<Format>(whole[k] + 64 * u64{line})} << (8 * (line % 8));
      }
      for (unsigned k = 0; k < size; ++k) {
        const table_to_read& t = tables[k];
        visit(worker, first + k, [&](walk_stats& stats, auto&& on_entry) {
          stats.entries_read += t.hi - t.lo + 1;
          for (unsigned word = t.lo / 64; word <= t.hi / 64; ++word) {
            for (u64 bits = bits_in_range<64>(present[k][word], word, t.lo, t.hi); bits != 0; bits &= bits - 1) {
              const unsigned index = 64 * word + static_cast<unsigned>(std::countr_zero(bits));
              u64 value;
              std::memcpy(&value, whole[k] + 8 * u64{index}, 8);
              on_entry(value, index);
            }
          }
        });
      }
    }
  });
}

using snapshot_list = std::span<const loaded_snapshot* const>;

// Calls fn(first, last) for equal slices of [0, count), in parallel.
template <class Fn>
void for_slices(u64 count, unsigned threads, Fn&& fn) {
  const u64 slices = 8 * u64{threads}, size = (count + slices - 1) / slices;
  parallel_for(slices, threads, [&](std::size_t k) { fn(std::min(count, k * size), std::min(count, (k + 1) * size)); });
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Spaces per upper-level task: enough slices of a big snapshot to balance
// the cores, few enough that joining them costs nothing.
constexpr u32 slice_spaces = 16;
// Items per splice task by default: the same balance for one snapshot or many.
constexpr u64 default_splice_items = u64{1} << 14;

// The present entries of one upper table, as the owner pass read them,
// so the emitting pass does not read the table again. An entry that points
// to a table also keeps what the owner pass learnt of that table: its
// owner's rank and, where this visit is the owner and the table is not a
// leaf table, where the owner pass kept the table's own entries. The
// emitting pass then follows its spaces without a lookup in the owner
// tables, each a miss at a random place (two thirds of its time when it
// looked them up, 40,000 spaces).
struct present_entry {
  u64 value;
  u64 owner;   // table entries: the child's owner rank
  u32 index;   // in its table
  u32 next;    // owned upper child: its index among the next depth's read tables
};
struct read_table {
  std::span<const present_entry> present;
  u64 entries_read, dangling_reads;
};

// What one thread makes of the tables it reads (kept entries, visits,
// leaves), in fixed blocks that never move: a growing vector would copy
// everything again on each reallocation, and readers keep spans into it.
// On its own cache line: headers of different threads side by side would
// bounce it on every write.
template <class T>
class alignas(64) block_list {
 public:
  static constexpr std::size_t block_elements = (std::size_t{2} << 20) / sizeof(T);
  static_assert(block_elements >= 8192, "a block holds a whole table's worth (64 KiB granule)");

  // Room for up to `count` elements in a row (one table's worth at most);
  // commit() says how many were written.
  T* room(std::size_t count) {
    if (blocks_.empty() || used_.back() + count > block_elements) {
      blocks_.emplace_back(block_elements);  // not zero-filled
      used_.push_back(0);
    }
    return blocks_.back().data() + used_.back();
  }
  void commit(std::size_t count) { used_.back() += count; }

  [[nodiscard]] u64 size() const { return std::accumulate(used_.begin(), used_.end(), u64{0}); }
  // Calls fn(span) for each block's elements, in the order they were written.
  template <class Fn>
  void for_each_block(Fn&& fn) {
    for (std::size_t b = 0; b < blocks_.size(); ++b) fn(std::span<T>(blocks_[b].data(), used_[b]));
  }

 private:
  std::vector<bulk_vector<T>> blocks_;
  std::vector<std::size_t> used_;  // per block
};

// Owners of every table below the roots, for a whole batch at once, level
// by level as in the GPU walk (kernels/walk_steps.hpp): the owned tables of
// depth d are read in parallel, their child visits inserted into depth
// d+1's owner table by atomic min of (space, VA) rank, and the visits that
// hold the minimum are the owned tables of depth d+1. Each upper table's
// present entries are kept (upper tables are mostly empty, so this is
// small) for the emitting pass. Last-level tables are claimed but not
// read. The owners are exactly the reference's: a table's first visit in
// depth-first order is its smallest (space, VA) visit.
template <class Format>
class batch_owners {
  using rank = kernels::visit_rank<Format>;
  using key_of = kernels::table_key_of;

 public:
  batch_owners(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads)
      : root_visits_(snapshots.size()), space_visits_(snapshots.size()), root_read_(snapshots.size()) {
    std::vector<owned_table> frontier;
    for (u32 b = 0; b < snapshots.size(); ++b) {
      root_visits_[b] = root_visits<Format>(snapshots[b]->roots(), snapshots[b]->upper_roots(), range);
      auto& first = space_visits_[b];
      first.assign(snapshots[b]->roots().size() + 1, root_visits_[b].size());
      for (std::size_t v = root_visits_[b].size(); v-- > 0;) first[root_visits_[b][v].space] = v;
      for (std::size_t s = first.size() - 1; s-- > 0;) first[s] = std::min(first[s], first[s + 1]);
      root_read_[b].assign(root_visits_[b].size(), 0);
      for (std::size_t v = 0; v < root_visits_[b].size(); ++v) {
        const auto& visit = root_visits_[b][v];
        if (!visit.walked) continue;
        root_read_[b][v] = frontier.size();
        frontier.push_back({b, visit.space, visit.table, visit.block_va});
      }
    }
    for (unsigned depth = 0; depth + 1 < Format::levels && !frontier.empty(); ++depth)
      frontier = claim_children(snapshots, range, threads, depth, frontier);
  }

  // Snapshot b's root visits of `space`, in the reference's order (lower half, upper half).
  [[nodiscard]] std::span<const root_visit<Format>> root_visits_of(u32 b, u32 space) const {
    const auto& first = space_visits_[b];
    return std::span(root_visits_[b]).subspan(first[space], first[space + 1] - first[space]);
  }
  // What the owner pass read of the root table of snapshot b's
  // `visit`-th root visit (a walked one).
  [[nodiscard]] read_table root_table(u32 b, std::size_t visit) const { return read_[0][root_read_[b][visit]]; }
  // ... and of an owned upper table below the roots, by present_entry::next.
  [[nodiscard]] read_table table(unsigned depth, u32 next) const { return read_[depth][next]; }
  // Present entries kept for the emitting pass, all levels.
  [[nodiscard]] u64 kept_entries() const { return kept_count_; }
  // Where snapshot b's root visits of `space` start among all its root visits.
  [[nodiscard]] std::size_t first_root_visit(u32 b, u32 space) const { return space_visits_[b][space]; }

 private:
  struct owned_table {
    u32 snapshot, space;
    u64 pa, va;
  };
  struct visit {
    u64 key, rank;
    present_entry* entry;  // the entry that makes this visit
    u64 slot;              // in the owner table, once inserted
  };

  // Owner-table lookups are misses at random places in a table far larger
  // than the cache; loops over many asks this many visits ahead.
  static constexpr std::size_t lookahead = 16;

  std::vector<owned_table> claim_children(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads,
                                          unsigned depth, const std::vector<owned_table>& frontier) {
    std::vector<block_list<visit>> visits(threads);
    // Each worker's kept entries stay where they are: the tables' spans point into them.
    std::vector<block_list<present_entry>>& present = kept_.emplace_back(threads);
    std::vector<read_table>& level = read_.emplace_back(frontier.size());
    auto table_of = [&](std::size_t i) {
      const owned_table& t = frontier[i];
      const auto bounds = range.entries_in_range(t.va, depth);
      return table_to_read{&snapshots[t.snapshot]->image, t.pa, bounds.lo, bounds.hi};
    };
    read_tables<Format>(frontier.size(), depth, threads, table_of, [&](unsigned worker, std::size_t i, auto&& read) {
      const owned_table& t = frontier[i];
      walk_stats stats;
      present_entry* const kept = present[worker].room(Format::entries(depth));
      visit* const children = visits[worker].room(Format::entries(depth));
      u32 entries = 0, tables = 0;
      read(stats, [&](u64 value, unsigned index) {
        present_entry& entry = kept[entries++];
        entry = {value, 0, index, 0};
        if (Format::classify(value, depth) != entry_kind::table) return;
        const u64 va = t.va + (u64{index} << Format::entry_shift(depth));
        children[tables++] = {key_of::pack(t.snapshot, Format::table_address(value)), rank::pack(t.space, va),
                              &entry, 0};
      });
      present[worker].commit(entries);
      visits[worker].commit(tables);
      level[i] = {std::span<const present_entry>(kept, entries), stats.entries_read, stats.dangling_reads};
    });
    u64 count = 0;
    for (const auto& v : visits) count += v.size();
    const u64 capacity = std::bit_ceil(std::max<u64>(2 * count, 64));
    if (capacity > u64{1} << 32)
      throw std::length_error("cpu walk: too many table visits at one level for 32-bit table indices");
    bulk_vector<u64> keys(capacity), ranks(capacity);
    for_slices(capacity, threads, [&](u64 first, u64 last) {  // in parallel: tens of MB on a big fleet
      std::fill(keys.begin() + first, keys.begin() + last, key_of::empty);
      std::fill(ranks.begin() + first, ranks.begin() + last, ~u64{0});
    });
    const kernels::owner_table_ref table{keys.data(), ranks.data(), capacity - 1};
    parallel_for(threads, threads, [&](std::size_t w) {
      visits[w].for_each_block([&](std::span<visit> mine) {
        for (std::size_t k = 0; k < mine.size(); ++k) {
          if (k + lookahead < mine.size()) {
            const u64 ahead = kernels::hash_u64(mine[k + lookahead].key) & table.mask;
            __builtin_prefetch(keys.data() + ahead, 1);
            __builtin_prefetch(ranks.data() + ahead, 1);
          }
          mine[k].slot = table.insert_min(mine[k].key, mine[k].rank);
        }
      });
    });
    // Every visit learns its table's owner; the owner visits of upper
    // tables are the next frontier: each worker picks its own, then they
    // are listed worker by worker.
    const bool leaf_tables = Format::is_last_depth(depth + 1);  // expanded later, not read here
    std::vector<std::vector<const visit*>> owner_visits(threads);  // per worker
    parallel_for(threads, threads, [&](std::size_t w) {
      visits[w].for_each_block([&](std::span<visit> mine) {
        for (std::size_t k = 0; k < mine.size(); ++k) {
          if (k + lookahead < mine.size()) __builtin_prefetch(ranks.data() + mine[k + lookahead].slot);
          const u64 owner = ranks[mine[k].slot];
          mine[k].entry->owner = owner;
          if (owner == mine[k].rank && !leaf_tables) owner_visits[w].push_back(&mine[k]);
        }
      });
    });
    std::vector<u64> base(threads + 1, 0);
    for (unsigned w = 0; w < threads; ++w) base[w + 1] = base[w] + owner_visits[w].size();
    std::vector<owned_table> next(base[threads]);
    parallel_for(threads, threads, [&](std::size_t w) {
      for (u64 j = 0; j < owner_visits[w].size(); ++j) {
        const visit& v = *owner_visits[w][j];
        v.entry->next = static_cast<u32>(base[w] + j);
        next[base[w] + j] = {key_of::snapshot(v.key), rank::space(v.rank), key_of::table_pa(v.key), rank::va(v.rank)};
      }
    });
    for (const auto& entries : present) kept_count_ += entries.size();
    return next;
  }

  std::vector<std::vector<root_visit<Format>>> root_visits_;  // per snapshot
  std::vector<std::vector<std::size_t>> space_visits_;  // per snapshot: each space's first visit; one more at the end
  std::vector<std::vector<std::size_t>> root_read_;  // per snapshot, per walked root visit: its index in read_[0]
  std::vector<std::vector<read_table>> read_;        // per upper depth, per owned table as the frontier listed it
  std::vector<std::vector<block_list<present_entry>>> kept_;  // per upper depth, per worker: what read_ points into
  u64 kept_count_ = 0;
};

// The reference's depth-first order over some spaces of one snapshot, for
// every level but the last, with owners already known (batch_owners): each
// visit is the owner's or an alias, and an owned leaf table becomes a task.
template <class Format>
class upper_walker {
  using rank = kernels::visit_rank<Format>;

 public:
  upper_walker(u32 snapshot, const batch_owners<Format>& owners, upper_walk& out)
      : snapshot_(snapshot), owners_(owners), out_(out) {}

  void space(u32 space) {
    out_.space_first.push_back(out_.items.size());
    const auto visits = owners_.root_visits_of(snapshot_, space);
    const std::size_t first = owners_.first_root_visit(snapshot_, space);
    for (std::size_t v = 0; v < visits.size(); ++v) {
      const auto& visit = visits[v];
      if (!visit.walked) {  // a root table visited before: one depth-0 alias (SPEC §3)
        out_.items.push_back(visit.alias);
        continue;
      }
      ++out_.stats.tables[0];
      table(space, owners_.root_table(snapshot_, first + v), 0, visit.block_va, Format::perm_path_start);
    }
  }

 private:
  // The entries the owner pass kept, in index order: the table is not read again.
  void table(u32 space, const read_table& read, unsigned depth, u64 block_va, u8 perms) {
    out_.stats.entries_read += read.entries_read;
    out_.stats.dangling_reads += read.dangling_reads;
    for (const present_entry& entry : read.present) {
      const u64 value = entry.value;
      const u64 va = block_va + (u64{entry.index} << Format::entry_shift(depth));
      // A valid entry can still be invalid for its level (an AArch64 block
      // where the granule has none): not_present.
      switch (Format::classify(value, depth)) {
        case entry_kind::table:
          child(space, Format::table_address(value), entry, depth + 1, va, Format::accumulate_perms(perms, value));
          break;
        case entry_kind::leaf:
          out_.items.push_back(make_leaf_record<Format>(value, depth, va, perms));
          break;
        case entry_kind::not_present:
          break;
      }
    }
  }

  void child(u32 space, u64 pa, const present_entry& entry, unsigned depth, u64 va, u8 perms) {
    const u64 visit = rank::pack(space, va);
    const u64 owner = entry.owner;
    if (owner != visit) {
      out_.items.push_back(make_alias_record<Format>(depth, rank::space(owner), va, rank::va(owner)));
      return;
    }
    ++out_.stats.tables[depth];
    if (!Format::is_last_depth(depth)) return table(space, owners_.table(depth, entry.next), depth, va, perms);
    out_.items.push_back(placeholder(out_.tasks.size()));
    out_.tasks.push_back({pa, va, perms});
  }

  u32 snapshot_;
  const batch_owners<Format>& owners_;
  upper_walk& out_;
};

// Spaces of one snapshot whose upper levels one task emits.
struct space_slice {
  u32 snapshot, first, last;
};

// Joins the slices' walks into one per snapshot, slices in parallel (one
// big snapshot's join on one thread was a fifth of the emitting pass, 40,000
// spaces): each slice's items, space starts and tasks go where the slices
// before it in its snapshot end; placeholders name their task by index, so
// they shift too.
std::vector<upper_walk> join_slices(std::size_t snapshots, std::span<const space_slice> slices,
                                    std::span<const upper_walk> parts, unsigned threads) {
  struct place {
    u64 item = 0, task = 0;
    u32 space = 0;
  };
  std::vector<place> at(slices.size()), end(snapshots);
  std::vector<upper_walk> whole(snapshots);
  for (std::size_t k = 0; k < slices.size(); ++k) {
    place& e = end[slices[k].snapshot];
    at[k] = e;
    e = {e.item + parts[k].items.size(), e.task + parts[k].tasks.size(), slices[k].last};
    whole[slices[k].snapshot].stats += parts[k].stats;
  }
  for (std::size_t b = 0; b < snapshots; ++b) {
    whole[b].items.resize(end[b].item);
    whole[b].tasks.resize(end[b].task);
    whole[b].space_first.resize(end[b].space + 1);  // the slices fill all but the last
    whole[b].space_first.back() = end[b].item;
  }
  parallel_for(slices.size(), threads, [&](std::size_t k) {
    upper_walk& to = whole[slices[k].snapshot];
    const upper_walk& part = parts[k];
    space_aware_mapping* item = to.items.data() + at[k].item;
    for (space_aware_mapping record : part.items) {
      if (is_placeholder(record)) record.pa += at[k].task;
      *item++ = record;
    }
    for (u32 s = 0; s < part.space_first.size(); ++s)
      to.space_first[slices[k].first + s] = part.space_first[s] + at[k].item;
    std::copy(part.tasks.begin(), part.tasks.end(), to.tasks.begin() + at[k].task);
  });
  return whole;
}


// Copies records to where they end, bypassing the cache where the CPU can:
// the splice writes every record of the walk once, far more than the cache
// holds, and an ordinary store first reads each line it writes (40,000
// spaces, 87 MB of records: splice 10 -> 6 ms, 2-core Intel VM). Callers
// order the stores with finish_streaming() before anyone reads them.
// `to` is 16-byte aligned (records are 32 bytes, vectors of them 16-aligned).
inline space_aware_mapping* stream_records(const space_aware_mapping* from, u64 count, space_aware_mapping* to) {
#if defined(__SSE2__)
  static_assert(sizeof(space_aware_mapping) % sizeof(__m128i) == 0);
  constexpr u64 words = sizeof(space_aware_mapping) / sizeof(__m128i);
  auto* dst = reinterpret_cast<__m128i*>(to);
  const auto* src = reinterpret_cast<const __m128i*>(from);
  for (u64 i = 0; i < words * count; ++i) _mm_stream_si128(dst + i, _mm_loadu_si128(src + i));
  return to + count;
#else
  return std::copy(from, from + count, to);
#endif
}
inline void finish_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <class Format>
std::vector<snapshot_walk> walk_format(snapshot_list snapshots, linear_va_range<Format> range, unsigned threads,
                                       u64 splice_items, walk_profile* profile) {
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
  const double owners_s = seconds_since(upper_clock);
  std::vector<upper_walk> parts(slices.size());
  parallel_for(slices.size(), threads, [&](std::size_t k) {
    const space_slice& slice = slices[k];
    // Built in a local and moved out once: neighbouring slices' counters
    // share cache lines with this one's.
    upper_walk local;
    upper_walker<Format> walker(slice.snapshot, owners, local);
    for (u32 space = slice.first; space < slice.last; ++space) walker.space(space);
    parts[k] = std::move(local);
  });
  const std::vector<upper_walk> upper = join_slices(n, slices, parts, threads);
  if (profile != nullptr) {
    // The owner pass reads the upper tables and keeps their present
    // entries; the emitting pass reads those and writes records.
    u64 read = 0, written = 0;
    for (const auto& u : upper) {
      read += 8 * u.stats.entries_read;
      written += sizeof(space_aware_mapping) * u.items.size();
    }
    const u64 kept = sizeof(present_entry) * owners.kept_entries();
    profile->phase("owners").seconds += owners_s;
    profile->phase("owners").host_bytes += read + kept;
    profile->phase("upper").seconds += seconds_since(upper_clock) - owners_s;
    profile->phase("upper").host_bytes += kept + written;
  }

  // Leaf tables of every snapshot, in parallel, into per-thread buffers.
  const auto leaf_clock = std::chrono::steady_clock::now();
  std::vector<u64> task_base(n + 1, 0);
  for (std::size_t b = 0; b < n; ++b) task_base[b + 1] = task_base[b] + upper[b].tasks.size();
  std::vector<leaf_table_output> leaves(task_base[n]);
  std::vector<block_list<space_aware_mapping>> buffers(threads);
  constexpr unsigned leaf_depth = Format::levels - 1;
  auto snapshot_of_task = [&](u64 t) {
    return static_cast<std::size_t>(std::upper_bound(task_base.begin(), task_base.end(), t) - task_base.begin() - 1);
  };
  auto table_of = [&](u64 t) {
    const std::size_t b = snapshot_of_task(t);
    const leaf_table_task& task = upper[b].tasks[t - task_base[b]];
    const auto bounds = range.entries_in_range(task.va, leaf_depth);
    return table_to_read{&snapshots[b]->image, task.pa, bounds.lo, bounds.hi};
  };
  read_tables<Format>(task_base[n], leaf_depth, threads, table_of, [&](unsigned worker, u64 t, auto&& read) {
    const std::size_t b = snapshot_of_task(t);
    const leaf_table_task& task = upper[b].tasks[t - task_base[b]];
    block_list<space_aware_mapping>& buffer = buffers[worker];
    walk_stats stats;
    space_aware_mapping* out = buffer.room(Format::entries(leaf_depth));
    std::size_t count = 0;
    read(stats, [&](u64 value, unsigned index) {
      if (Format::classify(value, leaf_depth) != entry_kind::leaf) return;  // AArch64 01
      write_leaf_record<Format>(out[count++], value, leaf_depth,
                                task.va + (u64{index} << Format::entry_shift(leaf_depth)), task.perms);
    });
    buffer.commit(count);
    leaves[t] = {out, count, stats.entries_read, stats.dangling_reads};
  });

  if (profile != nullptr) {
    walk_phase& phase = profile->phase("leaves");
    phase.seconds += seconds_since(leaf_clock);
    for (const auto& l : leaves) phase.host_bytes += 8 * l.entries_read + sizeof(space_aware_mapping) * l.count;
  }

  // Splice, in chunks of items so one big snapshot spreads over every
  // core: each chunk's record count, then its place in the snapshot's
  // records, then the copies.
  const auto splice_clock = std::chrono::steady_clock::now();
  struct splice_chunk {
    u32 snapshot;
    u64 first, last;  // items
    u64 size = 0;     // records
    u64 at = 0;       // where they start in the snapshot's records
    walk_stats stats;
  };
  std::vector<splice_chunk> chunks;
  for (u32 b = 0; b < n; ++b)
    for (u64 first = 0; first < upper[b].items.size(); first += splice_items)
      chunks.push_back({b, first, std::min<u64>(upper[b].items.size(), first + splice_items), 0, 0, {}});
  auto leaves_of = [&](u32 b, const space_aware_mapping& placeholder) -> const leaf_table_output& {
    return leaves[task_base[b] + placeholder.pa];
  };
  parallel_for(chunks.size(), threads, [&](std::size_t k) {
    splice_chunk& c = chunks[k];
    u64 size = 0;
    for (u64 i = c.first; i < c.last; ++i) {
      const auto& item = upper[c.snapshot].items[i];
      size += is_placeholder(item) ? leaves_of(c.snapshot, item).count : 1;
    }
    c.size = size;
  });
  std::vector<u64> records(n, 0);
  for (auto& c : chunks) {  // chunks come in snapshot and item order
    c.at = records[c.snapshot];
    records[c.snapshot] += c.size;
  }
  for (u32 b = 0; b < n; ++b) {
    out[b].records.resize(records[b]);  // a bulk_vector: not zero-filled
    out[b].offsets.resize(upper[b].space_first.size());
  }
  parallel_for(chunks.size(), threads, [&](std::size_t k) {
    splice_chunk& c = chunks[k];
    const upper_walk& u = upper[c.snapshot];
    snapshot_walk& walk = out[c.snapshot];
    walk_stats stats;  // local: neighbouring chunks' counters share cache lines
    space_aware_mapping* to = walk.records.data() + c.at;
    // The spaces that start in this chunk (the last chunk also takes the
    // empty spaces after its last item).
    const bool last_chunk = k + 1 == chunks.size() || chunks[k + 1].snapshot != c.snapshot;
    auto space = std::lower_bound(u.space_first.begin(), u.space_first.end(), c.first);
    for (u64 i = c.first; i < c.last; ++i) {
      for (; space != u.space_first.end() && *space == i; ++space)
        walk.offsets[space - u.space_first.begin()] = to - walk.records.data();
      const auto& item = u.items[i];
      if (!is_placeholder(item)) {
        to = stream_records(&item, 1, to);
        if (item.is_leaf()) stats.count_leaf(item.size_log2);
        else ++stats.aliases[item.depth];
        continue;
      }
      // Every leaf of a last-level table has that level's size.
      const leaf_table_output& l = leaves_of(c.snapshot, item);
      to = stream_records(l.leaves, l.count, to);
      if (u64* counter = stats.leaves_of_size(Format::entry_shift(leaf_depth))) *counter += l.count;
      stats.entries_read += l.entries_read;
      stats.dangling_reads += l.dangling_reads;
    }
    if (last_chunk)
      for (; space != u.space_first.end(); ++space) walk.offsets[space - u.space_first.begin()] = walk.records.size();
    finish_streaming();
    c.stats = stats;
  });
  for (u32 b = 0; b < n; ++b) out[b].stats = upper[b].stats;
  for (const auto& c : chunks) out[c.snapshot].stats += c.stats;
  if (profile != nullptr) {
    walk_phase& phase = profile->phase("splice");
    phase.seconds += seconds_since(splice_clock);
    for (const auto& w : out) {
      // items and leaves read, records written
      phase.host_bytes += 2 * sizeof(space_aware_mapping) * w.records.size();
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
      auto walks = walk_format<F>(group, to_linear<F>(options.range), threads,
                                  options.splice_items > 0 ? options.splice_items : default_splice_items,
                                  options.profile);
      for (std::size_t k = 0; k < indices.size(); ++k) out[indices[k]] = std::move(walks[k]);
    });
  }
  return out;
}

}  // namespace ptwalk
