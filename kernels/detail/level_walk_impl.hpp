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
// visits become aliases. Every frontier is sorted by (global space, VA), so
// each level's leaves and aliases come out as sorted runs, merged once per
// batch (no packed sort key: any number of spaces, any VA width); the
// per-snapshot statistics are binary searches over the runs. Batches are
// sized from the device's memory so a fleet larger than the device streams
// through, and a batch that runs out of device memory is split.
// A resident walk (resident_image.hpp) runs the same steps with the images
// already in device memory: each chunk's tables are resolved to their
// resident pages and the expansion reads its entries from there, with no
// copy (resident_steps.hpp); the frontier never leaves the device, and the
// per-snapshot table counts are summed there at the end of each level.
#pragma once

#include <thrust/binary_search.h>
#include <thrust/copy.h>
#include <thrust/count.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/merge.h>
#include <thrust/reduce.h>
#include <thrust/transform_reduce.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/iterator/transform_output_iterator.h>
#include <thrust/iterator/zip_iterator.h>

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
#include "kernels/resident_steps.hpp"
#include "kernels/walk_steps.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk::kernels::detail {

// Copies frontier tables [first, first+count) of depth `depth` into
// `staging` (Format::entries(depth) words each) and counts, per table, the
// in-range entries read and how many of them no single region backs (those
// read as 0, SPEC §1).
template <class Format>
void gather_tables(std::span<const walk_input> batch, const u32* snapshot, const u64* pa,
                   const u64* va, u64 first, u64 count, unsigned depth,
                   linear_va_range<Format> range, u64* staging, u32* entries_read,
                   u32* dangling) {
  const unsigned entries = Format::entries(depth);
  const u64 bytes = Format::table_bytes(depth);
#pragma omp parallel for schedule(static)
  for (u64 i = 0; i < count; ++i) {
    const u64 t = first + i;
    const table_source& source = batch[snapshot[t]].tables;
    const auto bounds = range.entries_in_range(va[t], depth);
    u64* words = staging + i * entries;
    u32 unbacked = 0;
    if (const std::byte* whole = source.bytes_at(source.context, pa[t], bytes)) {
      std::memcpy(words, whole, bytes);
    } else {
      for (unsigned e = 0; e < entries; ++e) {
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

// Entry counts of one (level, kind) run of records in the batch's record
// buffer; runs are sorted by (global space, VA) and merged at the end.
struct record_run {
  u64 begin, end;
  bool leaves;     // leaf records, else AnotherSpace records
  unsigned depth;  // of the leaf entries, or of the shared tables
};

// One batch of snapshots of one format. With `resident` the tables come from
// images in device memory; `resident_index` then names each batch
// snapshot's place in the resident image.
template <class Format, class System>
class batch_walk {
  template <class T>
  using vector = typename System::template vector<T>;
  using record_and_space = thrust::tuple<space_aware_mapping, u32>;
  static constexpr u64 record_bytes = sizeof(space_aware_mapping) + sizeof(u32);
  static constexpr u64 visit_bytes = 2 * sizeof(u64) + sizeof(u8);
  static constexpr u64 frontier_bytes = 2 * sizeof(u32) + 2 * sizeof(u64) + sizeof(u8);

 public:
  batch_walk(System& system, std::span<const walk_input> batch, const level_walk_options& options,
             const resident_image_ref* resident = nullptr, std::span<const std::size_t> resident_index = {})
      : sys_(system),
        batch_(batch),
        range_(to_linear<Format>(options.range)),
        chunk_(std::max<std::size_t>(options.chunk_tables, 1)),
        out_(batch.size()),
        resident_(resident),
        resident_index_(resident_index) {}

  std::vector<snapshot_walk> run() {
    seed_roots();
    for (unsigned depth = 0; depth < Format::levels && frontier_ != 0; ++depth) walk_level(depth);
    collect_records();
    for (const auto& [phase, name] : {std::pair{device_phase::upload, "upload"}, {device_phase::kernel, "kernel"},
                                     {device_phase::download, "download"}, {device_phase::gather, "device gather"}})
      if (phase != device_phase::gather || resident_ != nullptr)
        profile_.phase(name, true).seconds += sys_.take_seconds(phase);
    profile_.records = record_count_;
    profile_.batches = 1;
    return std::move(out_);
  }
  [[nodiscard]] const walk_profile& profile() const { return profile_; }

 private:
  walk_phase& phase(const char* name) {
    const bool on_device = std::string_view(name) != "gather" && std::string_view(name) != "host";
    return profile_.phase(name, on_device);
  }

  // Depth 0 on the host: the root visits of every space in the reference's
  // order (root_visits), the first visit of a root table walked from its
  // half's start, a later one a depth-0 alias (SPEC §3).
  void seed_roots() {
    const stopwatch clock;
    std::vector<u32> space_base{0};
    std::vector<space_aware_mapping> records;
    std::vector<u32> spaces;
    for (u32 b = 0; b < batch_.size(); ++b) {
      auto& walk = out_[b];
      for (const u64 root : batch_[b].roots) walk.roots.push_back(root_table_address<Format>(root));
      for (const auto& visit : root_visits<Format>(batch_[b].roots, batch_[b].upper_roots, range_)) {
        if (visit.walked) {
          h_snapshot_.push_back(b);
          h_pa_.push_back(visit.table);
          h_va_.push_back(visit.block_va);
          h_space_.push_back(visit.space);
        } else {
          records.push_back(visit.alias);
          spaces.push_back(space_base.back() + visit.space);
        }
      }
      space_base.push_back(space_base.back() + static_cast<u32>(walk.roots.size()));
    }
    total_spaces_ = space_base.back();
    frontier_ = h_pa_.size();
    phase("host").seconds += clock.seconds();
    sys_.timed(device_phase::upload, [&] {
      to_device(d_space_base_, space_base);
      to_device(d_snapshot_, h_snapshot_);
      to_device(d_space_, h_space_);
      to_device(d_va_, h_va_);
      to_device(d_perms_, std::vector<u8>(frontier_, Format::perm_path_start));
      record_count_ = records.size();
      to_device(d_records_, records);
      to_device(d_record_space_, spaces);
      if (resident_ != nullptr) {  // the gather reads the frontier's addresses on the device from here on
        to_device(d_pa_, h_pa_);
        to_device(d_resident_index_, std::vector<u32>(resident_index_.begin(), resident_index_.end()));
      }
    });
    runs_.push_back({0, record_count_, false, 0});
    const u64 bytes = space_base.size() * 4 + frontier_ * frontier_bytes + record_count_ * record_bytes +
                      (resident_ != nullptr ? resident_index_.size() * 4 : 0);
    phase("upload").pcie_bytes += bytes;
    phase("upload").device_bytes += bytes;
  }

  template <class T>
  void to_device(vector<T>& d, const std::vector<T>& h) {
    grow(d, h.size());
    if (!h.empty()) sys_.upload(h.data(), raw(d), h.size());
  }
  template <class T>
  void to_host(std::vector<T>& h, vector<T>& d, u64 count) {
    h.resize(count);
    if (count != 0) sys_.timed(device_phase::download, [&] { sys_.download(raw(d), h.data(), count); });
    phase("download").pcie_bytes += count * sizeof(T);
    phase("download").device_bytes += count * sizeof(T);
    phase("download").host_bytes += count * sizeof(T);
  }

  // Tables per gather/upload step at `depth`: chunk_ counts 4 KiB tables,
  // so the staging buffers keep their size for any granule.
  [[nodiscard]] u64 chunk_tables(unsigned depth) const {
    return std::max<u64>(1, chunk_ * 4096 / Format::table_bytes(depth));
  }

  // One level: every frontier table expanded, chunk by chunk, then the
  // owners of the child tables resolved into the next frontier.
  void walk_level(unsigned depth) {
    visit_count_ = 0;
    const u64 leaves_begin = record_count_;
    if (resident_ != nullptr) expand_level_resident(depth);
    else expand_level_streaming(depth);
    runs_.push_back({leaves_begin, record_count_, true, depth});
    profile_.tables += frontier_;
    if (Format::is_last_depth(depth)) {
      frontier_ = 0;
      return;
    }
    sys_.timed(device_phase::kernel, [&] { resolve_owners(depth + 1); });
    if (resident_ != nullptr) return;  // the next gather reads the frontier on the device
    to_host(h_snapshot_, d_snapshot_, frontier_);
    to_host(h_pa_, d_pa_, frontier_);
    to_host(h_va_, d_va_, frontier_);
  }

  // The host gathers chunk k+1's tables from the images while chunk k is
  // uploaded and expanded; the table counts are summed on the host.
  void expand_level_streaming(unsigned depth) {
    const u64 chunk = chunk_tables(depth);
    const u64 words = std::min<u64>(chunk, frontier_) * Format::entries(depth);
    size_step(words);  // the gather's threads
    std::vector<u32> entries_read(frontier_), dangling(frontier_);
    grow(d_entries_, words);
    auto gather = [&](u64 first, unsigned buffer) {
      u64* staging = sys_.staging(buffer, words);  // waits for its last upload
      const stopwatch clock;
      gather_tables<Format>(batch_, h_snapshot_.data(), h_pa_.data(), h_va_.data(), first,
                            std::min<u64>(chunk, frontier_ - first), depth, range_, staging,
                            entries_read.data(), dangling.data());
      return clock.seconds();
    };
    // Gather chunk k+1 on a host thread while chunk k is uploaded and
    // expanded; staging() waits on the event of the buffer's last upload
    // before handing it out again. A level of one chunk (most levels) has
    // nothing to overlap with.
    std::future<double> pending;
    phase("gather").seconds += gather(0, 0);
    for (u64 first = 0, k = 0; first < frontier_; first += chunk, ++k) {
      const u64 count = std::min<u64>(chunk, frontier_ - first);
      if (k != 0) phase("gather").seconds += pending.get();
      sys_.timed(device_phase::upload, [&] {
        sys_.upload_staging(unsigned(k % 2), raw(d_entries_), count * Format::entries(depth));
      });
      if (first + count < frontier_)
        pending = std::async(std::launch::async, gather, first + count, unsigned((k + 1) % 2));
      sys_.timed(device_phase::kernel,
                 [&] { expand_chunk(depth, first, count, staged_entries{raw(d_entries_)}, 0); });
    }
    const stopwatch clock;
    for (u64 t = 0; t < frontier_; ++t) {
      walk_stats& stats = out_[h_snapshot_[t]].stats;
      ++stats.tables[depth];
      stats.entries_read += entries_read[t];
      stats.dangling_reads += dangling[t];
    }
    phase("host").seconds += clock.seconds();
    phase("host").host_bytes += frontier_ * 12;
    const u64 table_bytes = frontier_ * Format::table_bytes(depth);
    phase("gather").host_bytes += 2 * table_bytes + frontier_ * (4 + 8 + 8 + 8);  // image → staging, counts
    phase("upload").pcie_bytes += table_bytes;
    phase("upload").device_bytes += table_bytes;
  }

  // The device resolves each chunk's tables to their resident page slots,
  // and the expansion reads the entries from the resident pages through
  // them: the tables are never copied. The table counts are summed per
  // snapshot on the device.
  void expand_level_resident(unsigned depth) {
    const u64 chunk = chunk_tables(depth);
    const u64 pages = pages_per_table<Format>(depth);
    grow(d_page_words_, std::min<u64>(chunk, frontier_) * pages);
    grow(d_entries_read_, frontier_);
    grow(d_dangling_, frontier_);
    const auto index_bits = static_cast<unsigned>(std::countr_zero(Format::entries(depth)));
    for (u64 first = 0; first < frontier_; first += chunk) {
      const u64 count = std::min<u64>(chunk, frontier_ - first);
      sys_.timed(device_phase::gather, [&] { resolve_resident(depth, first, count); });
      const resident_entries entries{resident_->d_words, raw(d_page_words_), pages, index_bits};
      // Each entry read also reads where its table's page starts.
      sys_.timed(device_phase::kernel, [&] { expand_chunk(depth, first, count, entries, pages * 8); });
    }
    sys_.timed(device_phase::kernel, [&] { sum_table_counts(depth); });
  }

  // Per table of the chunk: where its pages lie in the resident words, and its counts.
  void resolve_resident(unsigned depth, u64 first, u64 count) {
    const u64 pages = pages_per_table<Format>(depth);
    size_step(count);
    thrust::for_each(sys_.policy(), thrust::counting_iterator<u64>(0), thrust::counting_iterator<u64>(count),
                     resolve_resident_table<Format>{*resident_, raw(d_resident_index_), raw(d_snapshot_) + first,
                                                    raw(d_pa_) + first, raw(d_va_) + first, range_, depth,
                                                    raw(d_page_words_), raw(d_entries_read_) + first,
                                                    raw(d_dangling_) + first});
    // Per table: its frontier entry, a binary search of the page frames per
    // page and of the regions, its slots and counts written. No table word
    // moves here: the expansion reads them in place.
    const u64 search = 8 * u64{resident_->search_steps};
    phase("device gather").device_bytes += count * (frontier_bytes + 4 + pages * (search + 8) + 2 * search + 8);
  }

  // Adds this level's tables, entries read and dangling reads to each
  // snapshot's statistics: one reduction by snapshot over the frontier
  // (sorted by global space, so by snapshot), a few numbers downloaded.
  void sum_table_counts(unsigned depth) {
    size_step(frontier_);
    vector<u32> d_keys(frontier_);
    vector<u64> d_tables(frontier_), d_read(frontier_), d_dangling(frontier_);
    const auto values = thrust::make_transform_iterator(thrust::counting_iterator<u64>(0),
                                                        table_counts{raw(d_entries_read_), raw(d_dangling_)});
    const auto end = thrust::reduce_by_key(
        sys_.policy(), d_snapshot_.begin(), d_snapshot_.begin() + frontier_, values, d_keys.begin(),
        thrust::make_zip_iterator(d_tables.begin(), d_read.begin(), d_dangling.begin()),
        thrust::equal_to<u32>{}, add_table_counts{});
    const u64 runs = static_cast<u64>(end.first - d_keys.begin());
    phase("kernel").device_bytes += frontier_ * (4 + 8) + runs * 28;
    std::vector<u32> keys;
    std::vector<u64> tables, read, dangling;
    to_host(keys, d_keys, runs);
    to_host(tables, d_tables, runs);
    to_host(read, d_read, runs);
    to_host(dangling, d_dangling, runs);
    for (u64 r = 0; r < runs; ++r) {
      walk_stats& stats = out_[keys[r]].stats;
      stats.tables[depth] += tables[r];
      stats.entries_read += read[r];
      stats.dangling_reads += dangling[r];
    }
  }

  void size_step(u64 items) { detail::size_step(sys_, items); }

  // Every in-range entry of `count` frontier tables, read through `source`
  // (staged_entries or resident_entries): leaves appended to the records,
  // child visits to this level's visits. `source_table_bytes`: what the
  // source reads per table per pass besides the entries.
  template <class Entries>
  void expand_chunk(unsigned depth, u64 first, u64 count, Entries source, u64 source_table_bytes) {
    const u64 entries = count * Format::entries(depth);
    size_step(entries);
    const frontier_ref<Format, Entries> frontier{source,
                                                 raw(d_snapshot_) + first,
                                                 raw(d_space_) + first,
                                                 raw(d_va_) + first,
                                                 raw(d_perms_) + first,
                                                 raw(d_space_base_),
                                                 range_,
                                                 depth,
                                                 static_cast<unsigned>(std::countr_zero(Format::entries(depth)))};
    // One pass: every entry read and classified once, leaves and child
    // visits each written in item order (so each level's leaves stay a run
    // sorted by space and VA). The counts are known only after the pass, so
    // both outputs have room for every entry of the chunk.
    grow(d_records_, record_count_ + entries);
    grow(d_record_space_, record_count_ + entries);
    if (!Format::is_last_depth(depth)) {
      grow(d_visit_key_, visit_count_ + entries);
      grow(d_visit_rank_, visit_count_ + entries);
      grow(d_visit_perms_, visit_count_ + entries);
    }
    const auto tagged =
        thrust::make_transform_iterator(thrust::counting_iterator<u64>(0), classify_item<Format, Entries>{frontier});
    const auto leaves_out = thrust::make_transform_output_iterator(
        thrust::make_zip_iterator(d_records_.begin() + record_count_, d_record_space_.begin() + record_count_),
        untagged<emit_leaf<Format, Entries>>{{frontier}});
    // The last level has no visits (visit_count_ stays 0): its selector
    // never picks one, so the visit buffers need no room there.
    const auto visits_out = thrust::make_transform_output_iterator(
        thrust::make_zip_iterator(d_visit_key_.begin() + visit_count_, d_visit_rank_.begin() + visit_count_,
                                  d_visit_perms_.begin() + visit_count_),
        untagged<emit_visit<Format, Entries>>{{frontier}});
    const auto [leaves, visits] = sys_.select_two(tagged, entries, leaves_out, visits_out,
                                                  has_class<item_class::leaf>{}, has_class<item_class::table>{});
    record_count_ += leaves;
    visit_count_ += visits;
    phase("kernel").device_bytes += entries * 8 + count * (frontier_bytes + source_table_bytes) +
                                    leaves * record_bytes + visits * visit_bytes;
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
    // later step is deterministic too, and sorted by (global space, VA).
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
    // fill, insert (visit + its slot's key and rank), two selections (rank
    // and owner rank each), the owners' frontier entries.
    phase("kernel").device_bytes +=
        capacity * 16 + visits * (visit_bytes + 4 + 16) + 2 * visits * 20 + owners * frontier_bytes;
    const u64 aliases_begin = record_count_;
    if (aliases != 0)
      append_records(aliases, first, last,
                     emit_alias<Format>{raw(d_owner_ranks_), raw(d_visit_key_), raw(d_visit_rank_),
                                        raw(d_visit_slot_), raw(d_space_base_), depth},
                     visit_owns{raw(d_owner_ranks_), raw(d_visit_rank_), raw(d_visit_slot_), false});
    runs_.push_back({aliases_begin, record_count_, false, depth});
  }

  // Appends the records `emit` makes of the `count` items in [first, last)
  // that `select` keeps, with their global spaces.
  template <class Iterator, class Emit, class Select>
  void append_records(u64 count, Iterator first, Iterator last, Emit emit, Select select) {
    grow(d_records_, record_count_ + count);
    grow(d_record_space_, record_count_ + count);
    thrust::copy_if(sys_.policy(), first, last,
                    thrust::make_transform_output_iterator(
                        thrust::make_zip_iterator(d_records_.begin() + record_count_,
                                                  d_record_space_.begin() + record_count_),
                        emit),
                    select);
    record_count_ += count;
    phase("kernel").device_bytes += count * record_bytes;
  }

  // Per run, how many of its records each snapshot has: one binary search
  // per snapshot boundary on the device, since runs are sorted by global
  // space; the walk's leaf and alias counts follow without reading records.
  void count_records_per_snapshot() {
    const u64 n = batch_.size();
    vector<u64> d_cuts(n + 1);
    std::vector<u64> cuts;
    for (const record_run& run : runs_) {
      if (run.begin == run.end) continue;
      sys_.timed(device_phase::kernel, [&] {
        thrust::lower_bound(sys_.policy(), d_record_space_.begin() + run.begin,
                            d_record_space_.begin() + run.end, d_space_base_.begin(),
                            d_space_base_.begin() + n + 1, d_cuts.begin());
      });
      to_host(cuts, d_cuts, n + 1);
      for (u64 b = 0; b < n; ++b) {
        const u64 count = cuts[b + 1] - cuts[b];
        walk_stats& stats = out_[b].stats;
        if (!run.leaves) stats.aliases[run.depth] += count;
        else if (u64* leaves = stats.leaves_of_size(Format::entry_shift(run.depth))) *leaves += count;
      }
    }
  }

  // Merges the sorted runs pairwise until one is left: the batch's records
  // in (global space, VA) order, in d_records_ / d_record_space_.
  void merge_runs() {
    std::vector<record_run> runs;
    for (const record_run& r : runs_)
      if (r.begin != r.end) runs.push_back(r);
    if (runs.size() <= 1) return;
    vector<space_aware_mapping> d_records(record_count_);
    vector<u32> d_space(record_count_);
    auto zip = [](auto& records, auto& spaces, u64 at) {
      return thrust::make_zip_iterator(records.begin() + at, spaces.begin() + at);
    };
    while (runs.size() > 1) {
      std::vector<record_run> merged;
      for (std::size_t i = 0; i < runs.size(); i += 2) {
        const record_run& a = runs[i];
        if (i + 1 == runs.size()) {
          thrust::copy(sys_.policy(), zip(d_records_, d_record_space_, a.begin),
                       zip(d_records_, d_record_space_, a.end), zip(d_records, d_space, a.begin));
          merged.push_back(a);
          continue;
        }
        const record_run& b = runs[i + 1];
        thrust::merge(sys_.policy(), zip(d_records_, d_record_space_, a.begin),
                      zip(d_records_, d_record_space_, a.end), zip(d_records_, d_record_space_, b.begin),
                      zip(d_records_, d_record_space_, b.end), zip(d_records, d_space, a.begin),
                      record_before<Format>{});
        merged.push_back({a.begin, b.end, false, 0});
      }
      d_records_.swap(d_records);
      d_record_space_.swap(d_space);
      runs = std::move(merged);
      phase("kernel").device_bytes += 2 * record_count_ * record_bytes;
    }
  }

  // Statistics, the merge, every space's first record, then each snapshot's
  // records come back in the order of SPEC §3.
  void collect_records() {
    const u64 n = record_count_;
    if (n > u64{0xffff'ffff})
      throw std::length_error(std::string(System::name) + ": too many records in one batch");
    std::vector<u64> bounds(total_spaces_ + 1, n);
    if (n != 0) {
      size_step(n);
      count_records_per_snapshot();
      vector<u64> d_bounds(total_spaces_);
      sys_.timed(device_phase::kernel, [&] {
        merge_runs();
        thrust::lower_bound(sys_.policy(), d_record_space_.begin(), d_record_space_.begin() + n,
                            thrust::counting_iterator<u32>(0), thrust::counting_iterator<u32>(total_spaces_),
                            d_bounds.begin());
      });
      phase("kernel").device_bytes += total_spaces_ * 8;
      std::vector<u64> h_bounds;
      to_host(h_bounds, d_bounds, total_spaces_);
      std::copy(h_bounds.begin(), h_bounds.end(), bounds.begin());
    }
    const stopwatch clock;
    u64 space = 0;
    std::vector<u64> snapshot_end;  // in the merged records
    for (auto& walk : out_) {
      const u64 begin = bounds[space];
      for (std::size_t s = 0; s < walk.roots.size(); ++s) walk.offsets.push_back(bounds[space + s] - begin);
      space += walk.roots.size();
      walk.offsets.push_back(bounds[space] - begin);
      walk.records.reserve(bounds[space] - begin);  // filled by appending: no zeroing first
      snapshot_end.push_back(bounds[space]);
    }
    phase("host").seconds += clock.seconds();
    // Each chunk as it arrives, cut at snapshot boundaries and appended.
    sys_.timed(device_phase::download, [&] {
      sys_.download_chunks(raw(d_records_), n, [&](const space_aware_mapping* chunk, u64 first, u64 count) {
        auto b = static_cast<std::size_t>(std::upper_bound(snapshot_end.begin(), snapshot_end.end(), first) -
                                          snapshot_end.begin());
        for (u64 at = first; at < first + count; ++b) {
          const u64 until = std::min(first + count, snapshot_end[b]);
          out_[b].records.insert(out_[b].records.end(), chunk + (at - first), chunk + (until - first));
          at = until;
        }
      });
    });
    // Over PCIe into pinned staging (a host write), then read from there
    // and written into place.
    phase("download").pcie_bytes += n * sizeof(space_aware_mapping);
    phase("download").device_bytes += n * sizeof(space_aware_mapping);
    phase("download").host_bytes += 3 * n * sizeof(space_aware_mapping);
  }

  System& sys_;
  std::span<const walk_input> batch_;
  linear_va_range<Format> range_;
  u64 chunk_;
  std::vector<snapshot_walk> out_;
  walk_profile profile_;
  u64 total_spaces_ = 0;

  // Resident walks only: the images, per frontier chunk where its tables'
  // pages lie in the resident words, and per table the counts summed at the end of the level.
  const resident_image_ref* resident_;
  std::span<const std::size_t> resident_index_;
  vector<u32> d_resident_index_;
  vector<u64> d_page_words_;
  vector<u32> d_entries_read_, d_dangling_;

  // The frontier: on the device for the kernels, (snapshot, pa, va) on the
  // host for the gather.
  u64 frontier_ = 0;
  std::vector<u32> h_snapshot_, h_space_;
  std::vector<u64> h_pa_, h_va_;
  vector<u32> d_space_base_, d_snapshot_, d_space_;
  vector<u64> d_pa_, d_va_;
  vector<u8> d_perms_;
  vector<u64> d_entries_;  // streaming only: the chunk's tables as uploaded

  u64 record_count_ = 0;
  std::vector<record_run> runs_;
  vector<space_aware_mapping> d_records_;
  vector<u32> d_record_space_;

  u64 visit_count_ = 0;
  vector<u64> d_visit_key_, d_visit_rank_;
  vector<u8> d_visit_perms_;
  vector<u32> d_visit_slot_;
  vector<u64> d_owner_keys_, d_owner_ranks_;
};

// Splits `indices` (snapshots of one format) into batches within the key
// packing limits, `max_batch_spaces` and the device's memory, walks each,
// and halves a batch that runs out of device memory. Batches are sized from
// the memory budget and the peak use per space of the batches before.
template <class Format, class System>
class batch_driver {
 public:
  batch_driver(System& system, std::span<const walk_input> snapshots, const level_walk_options& options,
               std::vector<snapshot_walk>& out, const resident_image_ref* resident)
      : sys_(system), snapshots_(snapshots), options_(options), out_(out), resident_(resident) {}

  void run(const std::vector<std::size_t>& indices) {
    std::vector<std::size_t> batch;
    u64 spaces = 0;
    for (const std::size_t i : indices) {
      const u64 n = snapshots_[i].roots.size();
      if (n >= visit_rank<Format>::max_spaces)
        throw std::length_error(std::string(System::name) + ": snapshot " + std::to_string(i) +
                                " has more spaces than the walk can index");
      if (!batch.empty() && (spaces + n > space_limit() || batch.size() == table_key_of::max_snapshots)) {
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
  // Spaces the next batch may hold: global space indices are u32, and the
  // memory the last batches needed per space must fit the budget.
  [[nodiscard]] u64 space_limit() const {
    u64 limit = std::min<u64>(options_.max_batch_spaces != 0 ? options_.max_batch_spaces : ~u64{0},
                              u64{0xffff'fffe});
    if (bytes_per_space_ != 0) {
      const memory_budget& memory = sys_.memory();
      limit = std::min(limit, std::max<u64>(1, (memory.limit - std::min(memory.limit, memory.in_use)) /
                                                   bytes_per_space_));
    }
    return limit;
  }

  void walk_splitting(std::span<const std::size_t> batch, bool retried = false) {
    try {
      walk(batch);
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      if (!sys_.out_of_memory(error)) throw;
      sys_.release_cache();
      if (batch.size() > 1) {
        walk_splitting(batch.first(batch.size() / 2));
        walk_splitting(batch.subspan(batch.size() / 2));
      } else if (!retried) {
        walk_splitting(batch, true);  // once more with the cache released
      } else {
        throw std::runtime_error(std::string(System::name) + ": snapshot " + std::to_string(batch[0]) + " (" +
                                 std::to_string(snapshots_[batch[0]].roots.size()) +
                                 " spaces) does not fit in device memory on its own (" + describe(error) +
                                 "); walk it with --backend cpu");
      }
    }
  }

  static std::string describe(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown error";
    }
  }

  void walk(std::span<const std::size_t> batch) {
    std::vector<walk_input> inputs;
    u64 spaces = 0;
    for (const std::size_t i : batch) {
      inputs.push_back(snapshots_[i]);
      spaces += snapshots_[i].roots.size();
    }
    sys_.reset_peak();
    const u64 before = sys_.memory().in_use;
    std::vector<snapshot_walk> walks;
    walk_profile profile;
    {
      batch_walk<Format, System> walker(sys_, inputs, options_, resident_, batch);
      try {
        walks = walker.run();
      } catch (...) {
        if (sys_.out_of_memory(std::current_exception())) throw;
        try {
          throw;
        } catch (const std::exception& e) {
          throw std::runtime_error(std::string(System::name) + ": batch of snapshots " +
                                   std::to_string(batch.front()) + ".." + std::to_string(batch.back()) + ": " +
                                   e.what());
        }
      }
      profile = walker.profile();
    }
    const u64 used = sys_.memory().peak - std::min(before, sys_.memory().peak);
    bytes_per_space_ = std::max(bytes_per_space_, used / std::max<u64>(spaces, 1) + 1);
    for (std::size_t k = 0; k < batch.size(); ++k) out_[batch[k]] = std::move(walks[k]);
    if (options_.profile != nullptr) *options_.profile += profile;
  }

  System& sys_;
  std::span<const walk_input> snapshots_;
  const level_walk_options& options_;
  std::vector<snapshot_walk>& out_;
  const resident_image_ref* resident_;  // the images in device memory, or nullptr: streaming
  u64 bytes_per_space_ = 0;  // peak device memory per space of the batches so far
};

// Entry point for one device system: snapshots are grouped by format (the
// format is a compile-time parameter of every step) and walked in batches;
// with `resident`, from those images in device memory (snapshot i of
// `snapshots` is snapshot i of the resident image).
template <class System>
std::vector<snapshot_walk> level_walk(System& system, std::span<const walk_input> snapshots,
                                      const level_walk_options& options,
                                      const resident_image_ref* resident = nullptr) {
  std::vector<snapshot_walk> out(snapshots.size());
  for (const paging_format format : all_formats) {
    std::vector<std::size_t> indices;
    for (std::size_t i = 0; i < snapshots.size(); ++i)
      if (snapshots[i].format == format) indices.push_back(i);
    if (indices.empty()) continue;
    visit_format(format, [&]<class F>() {
      batch_driver<F, System>(system, snapshots, options, out, resident).run(indices);
    });
  }
  return out;
}

}  // namespace ptwalk::kernels::detail
