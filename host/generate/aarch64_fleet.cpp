// host/generate/aarch64_fleet.cpp — AArch64 snapshots for generated fleets.
//
// Linux-like (share_kernel): every process has its own TTBR0 table and all
// share one TTBR1 table (swapper_pg_dir) holding the kernel's read-only text
// and read-write data. Hyperlight-like (share_kernel off): TTBR0 only. A
// process has a read-only executable text, a heap mapped in contiguous-bit
// runs (16/128/32 entries for 4/16/64 KiB granules) and a stack; `large`
// adds a level-2 block per process and one in the kernel where the block is
// at most 32 MiB; `cow` turns every other writable user page into
// Hyperlight's CoW page (AP[2], software 0b0001, nG).
//
// The expectation is counted from the leaves placed, not read back from the
// tables: the table at depth k above a leaf is named by (root, the leaf's
// linear VA >> entry_shift(k - 1)), so distinct names are distinct tables.
#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "generate/built_snapshot.hpp"
#include "input/manifest.hpp"
#include "input/table_views.hpp"
#include "ptwalk/map.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {
namespace {

constexpr u64 bit(unsigned n) { return u64{1} << n; }
// Linux's descriptor bits.
constexpr u64 af = bit(10), ng = bit(11), ap_el0 = bit(6), ap_ro = bit(7), contiguous = bit(52), pxn = bit(53),
              uxn = bit(54), software_cow = bit(55);
constexpr u64 user_text = ap_el0 | ap_ro | af | ng | pxn;
constexpr u64 user_data = ap_el0 | af | ng | pxn | uxn;
constexpr u64 user_cow = user_data | ap_ro | software_cow;
constexpr u64 kernel_text = ap_ro | af | uxn;
constexpr u64 kernel_data = af | uxn | pxn;

template <class F>
class aarch64_builder {
  static constexpr u64 granule = u64{1} << F::page_shift;
  static constexpr unsigned last = F::levels - 1;
  static constexpr unsigned block_depth = F::levels - 2;  // level 2
  static constexpr u64 block = F::entry_span(block_depth);
  static constexpr bool blocks_allowed = block <= (u64{32} << 20);
  static constexpr u64 run = F::page_shift == 12 ? 16 : F::page_shift == 14 ? 128 : 32;  // contiguous entries
  static constexpr u64 upper = ~((u64{1} << F::va_bits) - 1);

 public:
  aarch64_builder(const fleet_shape& shape, u32 index, paging_format format)
      : shape_(shape), index_(index), format_(format) {
    const u64 wanted = u64{shape.spaces_per_snapshot} * shape.user_pages_per_space + shape.kernel_pages;
    frames_ = shape.data_frames != 0 ? shape.data_frames : std::clamp<u64>(wanted, 64, 4096);
    pool_base_ = run * granule;  // aligned for contiguous runs
    const u64 pool_end = pool_base_ + frames_ * granule;
    block_base_ = large() ? (pool_end + block - 1) & ~(block - 1) : pool_end;
    const u64 blocks = large() ? shape.spaces_per_snapshot + 1 : 0;
    table_base_ = block_base_ + blocks * block;
    tables_.emplace(table_base_, granule);
  }

  built_snapshot build() {
    std::vector<u64> roots, upper_roots;
    u64 kernel_root = 0;
    if (shape_.share_kernel_half) {
      kernel_root = new_root();
      build_kernel(kernel_root);
    }
    for (u32 space = 0; space < shape_.spaces_per_snapshot; ++space) {
      roots.push_back(new_root());
      build_process(roots.back(), space);
      if (shape_.share_kernel_half) {
        upper_roots.push_back(kernel_root | (u64{space + 1} << 48));  // the process's ASID
        if (space > 0) ++expected_.stats.aliases[0];
      }
    }
    return assemble(std::move(roots), std::move(upper_roots));
  }

 private:
  bool large() const { return shape_.large_pages && blocks_allowed; }

  u64 new_root() {
    const u64 root = tables_->alloc_table();
    ++expected_.stats.tables[0];
    expected_.stats.entries_read += F::entries(0);
    return root;
  }

  void build_kernel(u64 root) {
    const u64 text_va = upper | (u64{1} << (F::va_bits - 2));
    for (u64 i = 0; i < shape_.kernel_pages; ++i)
      place(root, text_va + i * granule, frame_pa(i), last, i % 4 == 0 ? kernel_data : kernel_text);
    if (large()) place(root, upper | block, block_base_, block_depth, kernel_data | 0x1);
  }

  void build_process(u64 root, u32 space) {
    const u64 pages = shape_.user_pages_per_space;
    const u64 text = pages / 4, stack = pages / 4, heap = pages - text - stack;
    const u64 first_frame = u64{space} * pages + shape_.kernel_pages;
    for (u64 i = 0; i < text; ++i) place(root, 0x40'0000 + i * granule, frame_pa(first_frame + i), last, user_text);
    // The heap in aligned contiguous-bit runs over consecutive frames where the pool allows.
    const u64 heap_va = 0x1000'0000;
    const bool runs = frames_ >= run;
    for (u64 i = 0; i < heap; ++i) {
      const bool in_run = runs && i / run < heap / run;
      const u64 pa = in_run ? run_pa(space, i / run) + (i % run) * granule : frame_pa(first_frame + text + i);
      place(root, heap_va + i * granule, pa, last, writable(in_run ? user_data | contiguous : user_data, i));
    }
    const u64 stack_top = (u64{1} << F::va_bits) - 16 * granule;
    for (u64 i = 0; i < stack; ++i)
      place(root, stack_top - (i + 1) * granule, frame_pa(first_frame + text + heap + i), last, writable(user_data, i));
    if (large()) place(root, 0x4000'0000 + block, block_base_ + (space + 1) * block, block_depth, user_data | 0x1);
  }

  // Every other writable page becomes CoW under the `cow` feature.
  u64 writable(u64 flags, u64 i) const {
    return shape_.cow && i % 2 == 1 ? (flags & ~contiguous) | user_cow : flags;
  }

  u64 frame_pa(u64 n) const { return pool_base_ + (n % frames_) * granule; }
  u64 run_pa(u32 space, u64 r) const {
    const u64 runs_in_pool = frames_ / run;
    return pool_base_ + ((space * 7 + r) % runs_in_pool) * run * granule;
  }

  void place(u64 root, u64 va, u64 pa, unsigned depth, u64 flags) {
    tables_->update_root(root);
    const map_status status = map<F>(*tables_, {va, pa, F::entry_shift(depth), flags, {}});
    if (status != map_status::ok)
      throw std::logic_error(fmt::format("aarch64 fleet: cannot map {:#x} (status {})", va, static_cast<int>(status)));
    expected_.stats.count_leaf(F::entry_shift(depth));
    const u64 linear = F::linear(va);
    for (unsigned k = 1; k <= depth; ++k)
      if (tables_seen_.emplace(root, k, linear >> F::entry_shift(k - 1)).second) {
        ++expected_.stats.tables[k];
        expected_.stats.entries_read += F::entries(k);
      }
  }

  built_snapshot assemble(std::vector<u64> roots, std::vector<u64> upper_roots) {
    const u64 table_end = table_base_ + tables_->table_count() * granule;
    expected_.table_pages = tables_->table_count();
    expected_.image_bytes = table_end;
    built_snapshot out;
    out.expected = expected_;
    snapshot_spec& spec = out.snapshot.spec;
    spec.id = fmt::format("snap-{:04}", index_);
    spec.format = format_;
    spec.memory = raw_source{spec.id + ".img", 0};
    spec.roots = std::move(roots);
    spec.upper_roots = std::move(upper_roots);
    for (u32 s = 0; s < shape_.spaces_per_snapshot; ++s) spec.labels.push_back(fmt::format("pid:{}", 1000 + s));
    const walk_stats& e = expected_.stats;
    spec.meta = {{"generator", "ptwalk gen"},
                 {"shape", format_fleet_shape(shape_)},
                 {"expected",
                  {{"tables", std::vector<u64>(e.tables, e.tables + F::levels)},
                   {"aliases", std::vector<u64>(e.aliases, e.aliases + F::levels)},
                   {"leaves", e.leaves()},
                   {"entries_read", e.entries_read}}}};
    const std::span<std::byte> bytes = out.snapshot.image.add_zeroed_region(0, expected_.image_bytes, spec.id);
    // Data frames and blocks: each 8-byte word tagged with its address, so moved bytes are caught.
    const auto tag = [&](u64 begin, u64 end) {
      for (u64 at = begin; at < end; at += 8) {
        const u64 value = (u64{index_} << 48) ^ at ^ 0x7074'776b'0000'0000ull;
        std::memcpy(bytes.data() + at, &value, 8);
      }
      out.extents.emplace_back(begin, end);
    };
    tag(pool_base_, pool_base_ + frames_ * granule);
    if (large()) tag(block_base_, table_base_);
    std::memcpy(bytes.data() + table_base_, tables_->words().data(), tables_->words().size() * 8);
    out.extents.emplace_back(table_base_, table_end);
    return out;
  }

  const fleet_shape& shape_;
  u32 index_;
  paging_format format_;
  u64 frames_ = 0, pool_base_ = 0, block_base_ = 0, table_base_ = 0;
  std::optional<page_table_buffer> tables_;
  snapshot_expectation expected_;
  std::set<std::tuple<u64, unsigned, u64>> tables_seen_;  // (root, depth, parent entry's block)
};

}  // namespace

built_snapshot build_aarch64_snapshot(const fleet_shape& shape, u32 index, paging_format format) {
  return visit_format(format, [&]<class F>() -> built_snapshot {
    if constexpr (F::halves == 2) return aarch64_builder<F>(shape, index, format).build();
    else throw std::logic_error("build_aarch64_snapshot: not an aarch64 format");
  });
}

}  // namespace ptwalk
