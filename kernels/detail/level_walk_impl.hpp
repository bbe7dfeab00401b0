// kernels/detail/level_walk_impl.hpp — the level-synchronous batch walk over a Thrust device system.
//
// Included by exactly one translation unit per device system (CUDA by nvcc,
// OMP by g++); device_system.hpp says what a `System` supplies.
// The algorithm (SPEC §3 consequences): frontier at depth d = owned tables
// (snapshot, pa, space, block VA, perms). Their pages are gathered on the
// host in chunks — only table pages move, never whole images — and uploaded
// while the next chunk is gathered; every in-range entry becomes a leaf
// record, a child visit, or nothing; child keys get their owner by atomic
// min of (space, VA) in an owner table; owners form the next frontier, other
// visits become aliases. Records are radix-sorted once per batch by
// (global space, VA). Batches are bounded so a fleet larger than the device
// streams through, and a batch that runs out of device memory is split.
#pragma once

#include <thrust/binary_search.h>
#include <thrust/copy.h>
#include <thrust/count.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/gather.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/iterator/transform_output_iterator.h>
#include <thrust/iterator/zip_iterator.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <future>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "kernels/detail/device_system.hpp"
#include "kernels/level_walk.hpp"
#include "kernels/walk_steps.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk::kernels::detail {

// Copies frontier tables [first, first+count) into `staging` (512 words each)
// and counts, per table, the in-range entries read and how many of them no
// single region backs (those read as 0, SPEC §1).
template <class Format>
void gather_tables(std::span<const walk_input> batch, const u32* snapshot, const u64* pa,
                   const u64* va, u64 first, u64 count, unsigned depth,
                   linear_va_range<Format> range, u64* staging, u32* entries_read,
                   u32* dangling) {
  constexpr u64 bytes = Format::table_bytes(0);
#pragma omp parallel for schedule(static)
  for (u64 i = 0; i < count; ++i) {
    const u64 t = first + i;
    const table_source& source = batch[snapshot[t]].tables;
    const auto bounds = range.entries_in_range(va[t], depth);
    u64* words = staging + i * Format::entries_per_table;
    u32 unbacked = 0;
    if (const std::byte* whole = source.bytes_at(source.context, pa[t], bytes)) {
      std::memcpy(words, whole, bytes);
    } else {
      for (unsigned e = 0; e < Format::entries_per_table; ++e) {
        const std::byte* p = source.bytes_at(source.context, pa[t] + 8 * u64{e}, 8);
        words[e] = 0;
        if (p != nullptr) std::memcpy(&words[e], p, 8);
        else if (bounds.lo <= e && e <= bounds.hi) ++unbacked;
      }
    }
    entries_read[t] = bounds.lo <= bounds.hi ? bounds.hi - bounds.lo + 1 : 0;
    dangling[t] = unbacked;
  }
}

template <class V>
void grow(V& v, u64 size) {
  if (v.size() < size) v.resize(std::max<u64>(size, v.size() + v.size() / 2));
}

// One batch of snapshots of one format.
template <class Format, class System>
class batch_walk {
  template <class T>
  using vector = typename System::template vector<T>;

 public:
  batch_walk(System& system, std::span<const walk_input> batch, const level_walk_options& options)
      : sys_(system),
        batch_(batch),
        range_(to_linear<Format>(options.range)),
        chunk_(std::max<std::size_t>(options.chunk_tables, 1)),
        out_(batch.size()) {}

  std::vector<snapshot_walk> run() {
    seed_roots();
    for (unsigned depth = 0; depth < Format::levels && frontier_ != 0; ++depth) walk_level(depth);
    collect_records();
    profile_.upload_s = sys_.take_upload_seconds();
    profile_.records = record_count_;
    profile_.batches = 1;
    return std::move(out_);
  }
  [[nodiscard]] const walk_profile& profile() const { return profile_; }

 private:
  // Depth 0 on the host: roots are masked CR3 values; a root listed twice in
  // one snapshot is a depth-0 alias at the range start (SPEC §3).
  void seed_roots() {
    std::vector<u32> space_base{0};
    std::vector<space_aware_mapping> records;
    std::vector<u64> keys;
    for (u32 b = 0; b < batch_.size(); ++b) {
      auto& walk = out_[b];
      std::unordered_map<u64, u32> first_space;
      for (u32 space = 0; space < batch_[b].roots.size(); ++space) {
        const u64 root = root_table_address<Format>(batch_[b].roots[space]);
        walk.roots.push_back(root);
        if (range_.empty()) continue;
        const auto [it, fresh] = first_space.try_emplace(root, space);
        if (fresh) {
          h_snapshot_.push_back(b);
          h_pa_.push_back(root);
          h_va_.push_back(0);  // a root table spans the whole VA space
          h_space_.push_back(space);
        } else {
          records.push_back(make_alias_record<Format>(0, it->second, range_.first, range_.first));
          keys.push_back(record_order<Format>::key(space_base.back() + space, records.back().va));
        }
      }
      space_base.push_back(space_base.back() + static_cast<u32>(walk.roots.size()));
    }
    total_spaces_ = space_base.back();
    frontier_ = h_pa_.size();
    to_device(d_space_base_, space_base);
    to_device(d_snapshot_, h_snapshot_);
    to_device(d_space_, h_space_);
    to_device(d_va_, h_va_);
    to_device(d_perms_, std::vector<u8>(frontier_, Format::perm_path_start));
    record_count_ = records.size();
    to_device(d_records_, records);
    to_device(d_record_keys_, keys);
  }

  template <class T>
  void to_device(vector<T>& d, const std::vector<T>& h) {
    grow(d, h.size());
    if (!h.empty()) sys_.upload(h.data(), raw(d), h.size());
  }
  template <class T>
  void to_host(std::vector<T>& h, vector<T>& d, u64 count) {
    const stopwatch clock;
    h.resize(count);
    if (count != 0) sys_.download(raw(d), h.data(), count);
    profile_.download_s += clock.seconds();
  }

  void walk_level(unsigned depth) {
    size_step(std::min<u64>(chunk_, frontier_) * Format::entries_per_table);  // the gather's threads
    std::vector<u32> entries_read(frontier_), dangling(frontier_);
    const u64 words = std::min<u64>(chunk_, frontier_) * Format::entries_per_table;
    grow(d_entries_, words);
    auto gather = [&](u64 first, unsigned buffer) {
      const stopwatch clock;
      gather_tables<Format>(batch_, h_snapshot_.data(), h_pa_.data(), h_va_.data(), first,
                            std::min<u64>(chunk_, frontier_ - first), depth, range_,
                            sys_.staging(buffer, words), entries_read.data(), dangling.data());
      return clock.seconds();
    };
    // Gather chunk k+1 on a host thread while chunk k is uploaded and
    // expanded. Reusing a staging buffer is safe: expansion synchronizes
    // (its counts come back to the host) before the gather after next. A
    // level of one chunk (most levels) has nothing to overlap with.
    visit_count_ = 0;
    std::future<double> pending;
    profile_.gather_s += gather(0, 0);
    for (u64 first = 0, k = 0; first < frontier_; first += chunk_, ++k) {
      const u64 count = std::min<u64>(chunk_, frontier_ - first);
      if (k != 0) profile_.gather_s += pending.get();
      if (first + count < frontier_)
        pending = std::async(std::launch::async, gather, first + count, unsigned((k + 1) % 2));
      sys_.upload(sys_.staging(unsigned(k % 2), words), raw(d_entries_),
                  count * Format::entries_per_table);
      const stopwatch clock;
      expand_chunk(depth, first, count);
      profile_.kernel_s += clock.seconds();
    }
    for (u64 t = 0; t < frontier_; ++t) {
      walk_stats& stats = out_[h_snapshot_[t]].stats;
      ++stats.tables[depth];
      stats.entries_read += entries_read[t];
      stats.dangling_reads += dangling[t];
    }
    profile_.tables += frontier_;
    profile_.bytes_uploaded += frontier_ * Format::table_bytes(0);
    if (Format::is_last_depth(depth)) {
      frontier_ = 0;
      return;
    }
    const stopwatch clock;
    resolve_owners(depth + 1);
    profile_.kernel_s += clock.seconds();
    to_host(h_snapshot_, d_snapshot_, frontier_);
    to_host(h_pa_, d_pa_, frontier_);
    to_host(h_va_, d_va_, frontier_);
  }

  void size_step(u64 items) { detail::size_step(sys_, items); }

  void expand_chunk(unsigned depth, u64 first, u64 count) {
    size_step(count * Format::entries_per_table);
    const frontier_ref<Format> frontier{raw(d_entries_),     raw(d_snapshot_) + first,
                                        raw(d_space_) + first, raw(d_va_) + first,
                                        raw(d_perms_) + first, raw(d_space_base_),
                                        range_,                depth};
    const thrust::counting_iterator<u64> items(0), items_end(count * Format::entries_per_table);
    const entry_is<Format, entry_kind::leaf> is_leaf{frontier};
    const u64 leaves = thrust::count_if(sys_.policy(), items, items_end, is_leaf);
    if (leaves != 0) append_records(leaves, items, items_end, emit_leaf<Format>{frontier}, is_leaf);
    if (Format::is_last_depth(depth)) return;
    const entry_is<Format, entry_kind::table> is_table{frontier};
    const u64 visits = thrust::count_if(sys_.policy(), items, items_end, is_table);
    if (visits == 0) return;
    grow(d_visit_key_, visit_count_ + visits);
    grow(d_visit_rank_, visit_count_ + visits);
    grow(d_visit_perms_, visit_count_ + visits);
    thrust::copy_if(sys_.policy(), items, items_end,
                    thrust::make_transform_output_iterator(
                        thrust::make_zip_iterator(d_visit_key_.begin() + visit_count_,
                                                  d_visit_rank_.begin() + visit_count_,
                                                  d_visit_perms_.begin() + visit_count_),
                        emit_visit<Format>{frontier}),
                    is_table);
    visit_count_ += visits;
  }

  // Owners of the depth-`depth` keys visited in this level step; they become
  // the frontier, the other visits aliases.
  void resolve_owners(unsigned depth) {
    const u64 visits = visit_count_;
    frontier_ = 0;
    if (visits == 0) return;
    size_step(visits);
    const u64 capacity = std::bit_ceil(std::max<u64>(2 * visits, 1024));
    if (capacity > (u64{1} << 32))
      throw std::length_error(std::string(System::name) + ": too many child tables in one level");
    grow(d_owner_keys_, capacity);
    grow(d_owner_ranks_, capacity);
    grow(d_visit_slot_, visits);
    thrust::fill_n(sys_.policy(), d_owner_keys_.begin(), capacity, table_key_of::empty);
    thrust::fill_n(sys_.policy(), d_owner_ranks_.begin(), capacity, ~u64{0});
    const thrust::counting_iterator<u64> first(0), last(visits);
    thrust::for_each(sys_.policy(), first, last,
                     insert_visit{{raw(d_owner_keys_), raw(d_owner_ranks_), capacity - 1},
                                  raw(d_visit_key_), raw(d_visit_rank_), raw(d_visit_slot_)});
    const visit_owns owns{raw(d_owner_ranks_), raw(d_visit_rank_), raw(d_visit_slot_), true};
    const u64 owners = thrust::count_if(sys_.policy(), first, last, owns);
    grow(d_snapshot_, owners);
    grow(d_pa_, owners);
    grow(d_space_, owners);
    grow(d_va_, owners);
    grow(d_perms_, owners);
    // Stable selection keeps the frontier in generation order, so every
    // later step is deterministic too.
    thrust::copy_if(sys_.policy(), first, last,
                    thrust::make_transform_output_iterator(
                        thrust::make_zip_iterator(d_snapshot_.begin(), d_pa_.begin(),
                                                  d_space_.begin(), d_va_.begin(),
                                                  d_perms_.begin()),
                        emit_owned_table<Format>{raw(d_visit_key_), raw(d_visit_rank_),
                                                 raw(d_visit_perms_)}),
                    owns);
    frontier_ = owners;
    const u64 aliases = visits - owners;
    if (aliases == 0) return;
    append_records(aliases, first, last,
                   emit_alias<Format>{raw(d_owner_ranks_), raw(d_visit_key_), raw(d_visit_rank_),
                                      raw(d_visit_slot_), raw(d_space_base_), depth},
                   visit_owns{raw(d_owner_ranks_), raw(d_visit_rank_), raw(d_visit_slot_), false});
  }

  // Appends the records `emit` makes of the `count` items in [first, last)
  // that `select` keeps, with their sort keys.
  template <class Iterator, class Emit, class Select>
  void append_records(u64 count, Iterator first, Iterator last, Emit emit, Select select) {
    grow(d_records_, record_count_ + count);
    grow(d_record_keys_, record_count_ + count);
    thrust::copy_if(sys_.policy(), first, last,
                    thrust::make_transform_output_iterator(
                        thrust::make_zip_iterator(d_records_.begin() + record_count_,
                                                  d_record_keys_.begin() + record_count_),
                        emit),
                    select);
    record_count_ += count;
  }

  // One radix sort by (global space, VA), then each snapshot's records and
  // per-space offsets come back in the order of SPEC §3.
  void collect_records() {
    const u64 n = record_count_;
    if (n > u64{0xffff'ffff})
      throw std::length_error(std::string(System::name) + ": too many records in one batch");
    std::vector<u64> bounds(total_spaces_ + 1, n);
    vector<space_aware_mapping> d_sorted;
    if (n != 0) {
      size_step(n);
      const stopwatch clock;
      vector<u32> d_order(n);
      thrust::sequence(sys_.policy(), d_order.begin(), d_order.end());
      thrust::sort_by_key(sys_.policy(), d_record_keys_.begin(), d_record_keys_.begin() + n,
                          d_order.begin());
      d_sorted.resize(n);
      thrust::gather(sys_.policy(), d_order.begin(), d_order.end(), d_records_.begin(),
                     d_sorted.begin());
      vector<u64> d_bounds(total_spaces_);
      const auto space_keys =
          thrust::make_transform_iterator(thrust::counting_iterator<u64>(0), first_record_key<Format>{});
      thrust::lower_bound(sys_.policy(), d_record_keys_.begin(), d_record_keys_.begin() + n,
                          space_keys, space_keys + total_spaces_, d_bounds.begin());
      profile_.kernel_s += clock.seconds();
      std::vector<u64> h_bounds;
      to_host(h_bounds, d_bounds, total_spaces_);
      std::copy(h_bounds.begin(), h_bounds.end(), bounds.begin());
    }
    const stopwatch clock;
    u64 space = 0;
    for (auto& walk : out_) {
      const u64 begin = bounds[space];
      for (std::size_t s = 0; s < walk.roots.size(); ++s) walk.offsets.push_back(bounds[space + s] - begin);
      space += walk.roots.size();
      walk.offsets.push_back(bounds[space] - begin);
      walk.records.resize(bounds[space] - begin);
      if (!walk.records.empty())
        sys_.download(raw(d_sorted) + begin, walk.records.data(), walk.records.size());
      for (const auto& r : walk.records) {
        if (r.is_leaf()) walk.stats.count_leaf(r.size_log2);
        else ++walk.stats.aliases[r.depth];
      }
    }
    profile_.download_s += clock.seconds();
  }

  System& sys_;
  std::span<const walk_input> batch_;
  linear_va_range<Format> range_;
  u64 chunk_;
  std::vector<snapshot_walk> out_;
  walk_profile profile_;
  u64 total_spaces_ = 0;

  // The frontier: on the device for the kernels, (snapshot, pa, va) on the
  // host for the gather.
  u64 frontier_ = 0;
  std::vector<u32> h_snapshot_, h_space_;
  std::vector<u64> h_pa_, h_va_;
  vector<u32> d_space_base_, d_snapshot_, d_space_;
  vector<u64> d_pa_, d_va_;
  vector<u8> d_perms_;
  vector<u64> d_entries_;

  u64 record_count_ = 0;
  vector<space_aware_mapping> d_records_;
  vector<u64> d_record_keys_;

  u64 visit_count_ = 0;
  vector<u64> d_visit_key_, d_visit_rank_;
  vector<u8> d_visit_perms_;
  vector<u32> d_visit_slot_;
  vector<u64> d_owner_keys_, d_owner_ranks_;
};

// Splits `indices` (snapshots of one format) into batches within the key
// packing limits and `max_batch_spaces`, walks each, and halves a batch that
// runs out of device memory.
template <class Format, class System>
class batch_driver {
 public:
  batch_driver(System& system, std::span<const walk_input> snapshots, const level_walk_options& options,
               std::vector<snapshot_walk>& out)
      : sys_(system), snapshots_(snapshots), options_(options), out_(out) {}

  void run(const std::vector<std::size_t>& indices) {
    const u64 limit = std::min<u64>(options_.max_batch_spaces != 0 ? options_.max_batch_spaces : ~u64{0},
                                    record_order<Format>::max_spaces - 1);
    std::vector<std::size_t> batch;
    u64 spaces = 0;
    for (const std::size_t i : indices) {
      const u64 n = snapshots_[i].roots.size();
      if (n >= visit_rank<Format>::max_spaces)
        throw std::length_error(std::string(System::name) + ": snapshot " + std::to_string(i) +
                                " has more spaces than the walk can index");
      if (!batch.empty() && (spaces + n > limit || batch.size() == table_key_of::max_snapshots)) {
        walk_splitting(batch);
        batch.clear();
        spaces = 0;
      }
      batch.push_back(i);
      spaces += n;
    }
    if (!batch.empty()) walk_splitting(batch);
  }

 private:
  void walk_splitting(std::span<const std::size_t> batch) {
    try {
      walk(batch);
    } catch (const std::bad_alloc&) {
      if constexpr (requires { sys_.release_cache(); }) sys_.release_cache();
      if (batch.size() == 1)
        throw std::runtime_error(std::string(System::name) + ": snapshot " + std::to_string(batch[0]) +
                                 " does not fit in device memory on its own");
      walk_splitting(batch.first(batch.size() / 2));
      walk_splitting(batch.subspan(batch.size() / 2));
    }
  }

  void walk(std::span<const std::size_t> batch) {
    std::vector<walk_input> inputs;
    for (const std::size_t i : batch) inputs.push_back(snapshots_[i]);
    batch_walk<Format, System> walker(sys_, inputs, options_);
    std::vector<snapshot_walk> walks;
    try {
      walks = walker.run();
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(System::name) + ": batch of snapshots " + std::to_string(batch.front()) +
                               ".." + std::to_string(batch.back()) + ": " + e.what());
    }
    for (std::size_t k = 0; k < batch.size(); ++k) out_[batch[k]] = std::move(walks[k]);
    if (options_.profile != nullptr) *options_.profile += walker.profile();
  }

  System& sys_;
  std::span<const walk_input> snapshots_;
  const level_walk_options& options_;
  std::vector<snapshot_walk>& out_;
};

// Entry point for one device system: snapshots are grouped by format (the
// format is a compile-time parameter of every step) and walked in batches.
template <class System>
std::vector<snapshot_walk> level_walk(System& system, std::span<const walk_input> snapshots,
                                      const level_walk_options& options) {
  std::vector<snapshot_walk> out(snapshots.size());
  for (const paging_format format : {paging_format::x86_64, paging_format::x86_64_la57}) {
    std::vector<std::size_t> indices;
    for (std::size_t i = 0; i < snapshots.size(); ++i)
      if (snapshots[i].format == format) indices.push_back(i);
    if (indices.empty()) continue;
    visit_x86_format(format, [&]<class F>() {
      batch_driver<F, System>(system, snapshots, options, out).run(indices);
    });
  }
  return out;
}

}  // namespace ptwalk::kernels::detail
