// host/cpu_walk.cpp — the `cpu` backend: flat owner tables, direct image reads, all cores.
//
// One depth-first walker template serves three passes: claiming owners
// while emitting records (the per-snapshot mode, the reference's order),
// claiming owners of the upper levels only (phase 1 of two-phase), and
// emitting against a finished owner table (phase 2). Owners are packed
// (space, block VA) ranks, as in the GPU walk (kernels/walk_steps.hpp), so
// "is this visit the owner" is one integer compare.
#include "cpu_walk.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/walk_steps.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {
namespace {

// Table key (pa | depth, ptwalk/walk.hpp) → owner rank. Written by one thread;
// read concurrently once complete. Kept at most half full.
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
  // The owner rank of a key that phase 1 claimed.
  [[nodiscard]] u64 find(u64 key) const {
    for (u64 i = kernels::hash_u64(key) & mask_;; i = (i + 1) & mask_)
      if (slots_[i].key == key) return slots_[i].rank;
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

enum class pass {
  claim_owners,  // phase 1: upper levels only, no output
  claim_emit,    // per-snapshot mode: owners claimed in walk order, records out
  emit_owned,    // phase 2: owners already known
};

template <class Format, pass Pass>
class depth_first {
  static constexpr bool emits = Pass != pass::claim_owners;
  using rank = kernels::visit_rank<Format>;

 public:
  depth_first(const memory_image& image, linear_va_range<Format> range, flat_owner_map& owners,
              std::vector<space_aware_mapping>& out, walk_stats& stats)
      : image_(image), range_(range), owners_(owners), out_(out), stats_(stats) {}

  // Depth 0: the root owns its key, or the whole space is one alias (SPEC §3).
  // Returns whether `space` owns its root.
  bool root(u32 space, u64 root_pa) {
    const u64 owner = owner_of(table_key(root_pa, 0), rank::pack(space, 0));
    if (rank::space(owner) == space) return true;
    if constexpr (emits) {
      out_.push_back(make_alias_record<Format>(0, rank::space(owner), range_.first, range_.first));
      ++stats_.aliases[0];
    }
    return false;
  }
  void whole_root(u32 space, u64 root_pa) {
    const auto bounds = range_.entries_in_range(0, 0);
    if (emits) ++stats_.tables[0];
    entries(space, root_pa, 0, 0, perm_path_start, bounds.lo, bounds.hi);
  }

  // Entries [lo, hi] (in range) of the depth-`depth` table at `pa`.
  void entries(u32 space, u64 pa, unsigned depth, u64 block_va, u8 perms, unsigned lo, unsigned hi) {
    if (lo > hi) return;
    const std::byte* whole = image_.bytes_at(pa, Format::table_bytes);
    if constexpr (emits) stats_.entries_read += hi - lo + 1;
    for (unsigned i = lo; i <= hi; ++i) {
      u64 entry = 0;
      if (whole != nullptr) {
        std::memcpy(&entry, whole + 8 * u64{i}, 8);
      } else if (const std::byte* p = image_.bytes_at(pa + 8 * u64{i}, 8)) {
        std::memcpy(&entry, p, 8);
      } else {
        if constexpr (emits) ++stats_.dangling_reads;
        continue;
      }
      if (!Format::present(entry)) continue;
      const u64 va = block_va + (u64{i} << Format::entry_shift(depth));
      if (Format::classify(entry, depth) == entry_kind::table) {
        child(space, Format::table_address(entry), depth + 1, va,
              Format::accumulate_perms(perms, entry));
      } else if constexpr (emits) {
        out_.push_back(make_leaf_record<Format>(entry, depth, va, perms));
        stats_.count_leaf(out_.back().size_log2);
      }
    }
  }

 private:
  u64 owner_of(u64 key, u64 visit) {
    if constexpr (Pass == pass::emit_owned) return owners_.find(key);
    else return owners_.claim(key, visit);
  }

  void child(u32 space, u64 pa, unsigned depth, u64 va, u8 perms) {
    const u64 visit = rank::pack(space, va);
    const u64 owner = owner_of(table_key(pa, depth), visit);
    if (owner == visit) {
      // Phase 1 needs owners only: the last level holds no table pointers.
      if (Pass == pass::claim_owners && Format::is_last_depth(depth)) return;
      if (emits) ++stats_.tables[depth];
      const auto bounds = range_.entries_in_range(va, depth);
      entries(space, pa, depth, va, perms, bounds.lo, bounds.hi);
    } else if constexpr (emits) {
      out_.push_back(make_alias_record<Format>(depth, rank::space(owner), va, rank::va(owner)));
      ++stats_.aliases[depth];
    }
  }

  const memory_image& image_;
  linear_va_range<Format> range_;
  flat_owner_map& owners_;
  std::vector<space_aware_mapping>& out_;
  walk_stats& stats_;
};

template <class Format>
void check_space_count(const loaded_snapshot& snapshot) {
  if (snapshot.roots().size() >= kernels::visit_rank<Format>::max_spaces)
    throw input_error(snapshot.id() + ": too many spaces for the cpu walk");
}

template <class Format>
snapshot_walk walk_one_snapshot(const loaded_snapshot& snapshot, linear_va_range<Format> range) {
  check_space_count<Format>(snapshot);
  snapshot_walk walk;
  flat_owner_map owners;
  depth_first<Format, pass::claim_emit> dfs(snapshot.image, range, owners, walk.records, walk.stats);
  walk.offsets.push_back(0);
  for (u32 space = 0; space < snapshot.roots().size(); ++space) {
    const u64 root = root_table_address<Format>(snapshot.roots()[space]);
    walk.roots.push_back(root);
    if (!range.empty() && dfs.root(space, root)) dfs.whole_root(space, root);
    walk.offsets.push_back(walk.records.size());
  }
  return walk;
}

// Phase 2 work item: root entries [lo, hi] of one space, or its depth-0 alias.
struct root_piece {
  u32 snapshot;
  u32 space;
  unsigned lo, hi;
  bool alias;        // the space's root is another space's: one record
  bool first_piece;  // counts the root table
};
struct piece_output {
  int thread;
  u64 offset, count;
  walk_stats stats;
};

// Root entries per phase-2 piece: small enough that the space owning a
// shared kernel half is split over many threads, large enough that the
// pieces of an ordinary space cost little to schedule.
constexpr unsigned piece_entries = 32;

using snapshot_list = std::span<const loaded_snapshot* const>;

template <class Format>
std::vector<snapshot_walk> walk_two_phase(snapshot_list snapshots,
                                          linear_va_range<Format> range, int threads) {
  const std::size_t n = snapshots.size();
  std::vector<flat_owner_map> owners(n);
  std::vector<snapshot_walk> out(n);
  // Phase 1: owners of every key, in the reference's order, per snapshot.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::size_t b = 0; b < n; ++b) {
    std::vector<space_aware_mapping> none;
    walk_stats ignored;
    depth_first<Format, pass::claim_owners> dfs(snapshots[b]->image, range, owners[b], none, ignored);
    for (u32 space = 0; space < snapshots[b]->roots().size(); ++space) {
      const u64 root = root_table_address<Format>(snapshots[b]->roots()[space]);
      out[b].roots.push_back(root);
      if (!range.empty() && dfs.root(space, root)) dfs.whole_root(space, root);
    }
  }
  std::vector<root_piece> pieces;
  const auto bounds = range.entries_in_range(0, 0);
  for (u32 b = 0; b < n && !range.empty(); ++b)
    for (u32 space = 0; space < out[b].roots.size(); ++space) {
      const u64 owner = owners[b].find(table_key(out[b].roots[space], 0));
      if (kernels::visit_rank<Format>::space(owner) != space) {
        pieces.push_back({b, space, 0, 0, true, false});
        continue;
      }
      for (unsigned lo = bounds.lo; lo <= bounds.hi; lo = (lo / piece_entries + 1) * piece_entries)
        pieces.push_back({b, space, lo, std::min(bounds.hi, (lo / piece_entries + 1) * piece_entries - 1),
                          false, lo == bounds.lo});
    }
  // Phase 2: pieces in parallel, each into its thread's buffer.
  std::vector<std::vector<space_aware_mapping>> buffers(threads);
  std::vector<piece_output> results(pieces.size());
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
    auto& buffer = buffers[thread];
#pragma omp for schedule(dynamic, 1)
    for (std::size_t p = 0; p < pieces.size(); ++p) {
      const root_piece& piece = pieces[p];
      piece_output& result = results[p];
      result.thread = thread;
      result.offset = buffer.size();
      depth_first<Format, pass::emit_owned> dfs(snapshots[piece.snapshot]->image, range,
                                                owners[piece.snapshot], buffer, result.stats);
      const u64 root = out[piece.snapshot].roots[piece.space];
      if (piece.alias) {
        dfs.root(piece.space, root);
      } else {
        if (piece.first_piece) ++result.stats.tables[0];
        dfs.entries(piece.space, root, 0, 0, perm_path_start, piece.lo, piece.hi);
      }
      result.count = buffer.size() - result.offset;
    }
  }
  // Assembly: pieces are in (snapshot, space, VA) order already.
  std::vector<u64> target(pieces.size());
  for (std::size_t p = 0, b = 0; b < n; ++b) {
    snapshot_walk& walk = out[b];
    walk.offsets.assign(walk.roots.size() + 1, 0);
    u64 total = 0;
    for (; p < pieces.size() && pieces[p].snapshot == b; ++p) {
      target[p] = total;
      total += results[p].count;
      walk.offsets[pieces[p].space + 1] = total;
      walk.stats += results[p].stats;
    }
    for (std::size_t s = 1; s < walk.offsets.size(); ++s)
      walk.offsets[s] = std::max(walk.offsets[s], walk.offsets[s - 1]);
    walk.records.resize(total);
  }
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads)
  for (std::size_t p = 0; p < pieces.size(); ++p)
    std::memcpy(static_cast<void*>(out[pieces[p].snapshot].records.data() + target[p]),
                buffers[results[p].thread].data() + results[p].offset,
                results[p].count * sizeof(space_aware_mapping));
  return out;
}

template <class Format>
std::vector<snapshot_walk> walk_format(snapshot_list snapshots, linear_va_range<Format> range,
                                       cpu_walk_mode mode, int threads) {
  for (const auto* s : snapshots) check_space_count<Format>(*s);
  if (mode == cpu_walk_mode::two_phase) return walk_two_phase<Format>(snapshots, range, threads);
  std::vector<snapshot_walk> out(snapshots.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::size_t b = 0; b < snapshots.size(); ++b) out[b] = walk_one_snapshot<Format>(*snapshots[b], range);
  return out;
}

}  // namespace

std::vector<snapshot_walk> cpu_walk(std::span<const loaded_snapshot> snapshots, const cpu_walk_options& options) {
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  cpu_walk_mode mode = options.mode;
  // Measured (README "Backends and benchmarks"): with a few snapshots per
  // thread, whole snapshots balance well and skip phase 1's second pass over
  // the upper levels; with fewer, only two-phase uses every core.
  if (mode == cpu_walk_mode::automatic)
    mode = snapshots.size() >= 4 * static_cast<std::size_t>(threads) ? cpu_walk_mode::per_snapshot
                                                                    : cpu_walk_mode::two_phase;
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
    visit_format(format, [&]<class F>() {
      auto walks = walk_format<F>(group, to_linear<F>(options.range), mode, threads);
      for (std::size_t k = 0; k < indices.size(); ++k) out[indices[k]] = std::move(walks[k]);
    });
  }
  return out;
}

}  // namespace ptwalk
