// host/fleet_generator.cpp — builds synthetic fleets and counts what it built.
//
// One snapshot_builder per snapshot builds every table into one
// page_table_buffer through map / space_aware_map, and tallies each table it
// creates, each extra link to an existing table and each leaf as the walk
// will see them (see `tally`). The directory writer is below it; the shape's
// text form is in fleet_shape.cpp.
#include "generate/fleet_generator.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "generate/built_snapshot.hpp"
#include "input/manifest.hpp"
#include "ptwalk/map.hpp"
#include "input/table_views.hpp"

namespace ptwalk {
namespace {

constexpr u64 page_bytes = 4096;
constexpr u64 mib2 = u64{1} << 21;
constexpr u64 gib = u64{1} << 30;

constexpr u64 align_up(u64 value, u64 alignment) { return (value + alignment - 1) & ~(alignment - 1); }

// splitmix64: fully specified, so the images do not depend on the standard library's distributions.
class random_stream {
 public:
  explicit random_stream(u64 seed) : state_(seed) {}
  u64 next() {
    u64 z = (state_ += 0x9e37'79b9'7f4a'7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58'476d'1ce4'e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d0'49bb'1331'11ebull;
    return z ^ (z >> 31);
  }
  u64 below(u64 bound) { return static_cast<u64>((static_cast<unsigned __int128>(next()) * bound) >> 64); }
  bool one_in(u64 n) { return below(n) == 0; }

 private:
  u64 state_;
};

// An independent stream per (seed, snapshot, lane): lane 0 is the kernel, lane s+1 space s.
random_stream stream_for(u64 seed, u64 snapshot, u64 lane) {
  random_stream mixer(seed ^ (snapshot * 0x1000'0000'01b3ull) ^ (lane << 40) ^ lane);
  return random_stream(mixer.next());
}

// x86-64 bits a real kernel sets besides those the format trait names.
constexpr u64 bit_accessed = 1u << 5, bit_dirty = 1u << 6, bit_global = 1u << 8;
constexpr u64 bit_protnone = bit_global;  // Linux reuses G as _PAGE_PROTNONE in not-present PTEs

// Leaf and table flags, after Linux: tables are permissive, leaves decide.
template <class F>
struct x86_flags {
  static constexpr u64 p = F::bit_present, rw = F::bit_writable, us = F::bit_user, nx = F::bit_no_execute;
  static constexpr u64 user_table = p | rw | us | bit_accessed | bit_dirty;
  static constexpr u64 kernel_table = p | rw | bit_accessed | bit_dirty;
  static constexpr u64 user_code = p | us | bit_accessed;
  static constexpr u64 user_ro = p | us | bit_accessed | nx;
  static constexpr u64 user_rw = p | rw | us | bit_accessed | bit_dirty | nx;
  static constexpr u64 user_cow = p | us | bit_accessed | nx | F::cow_field_value;  // Hyperlight
  static constexpr u64 kernel_text = p | bit_accessed | bit_global;
  static constexpr u64 kernel_rw = p | rw | bit_accessed | bit_dirty | bit_global | nx;
};

// Where Linux puts the kernel's regions (Documentation/arch/x86/x86_64/mm.rst).
struct kernel_bases {
  u64 direct_map, vmalloc, vmemmap, text;
};
constexpr kernel_bases linux_4level{0xffff'8880'0000'0000ull, 0xffff'c900'0000'0000ull,
                                    0xffff'ea00'0000'0000ull, 0xffff'ffff'8100'0000ull};
constexpr kernel_bases linux_5level{0xff11'0000'0000'0000ull, 0xffa0'0000'0000'0000ull,
                                    0xffd4'0000'0000'0000ull, 0xffff'ffff'8100'0000ull};

constexpr unsigned self_map_index = 493;     // Windows' PML4 self-map slot (0x1ed)
constexpr unsigned cut_table_entries = 300;  // whole entries left in the cut-off table
constexpr u64 cut_table_bytes = cut_table_entries * 8 + 4;
constexpr u64 far_outside = 0x000f'fff0'0000'0000ull;  // physical addresses no image reaches
constexpr u64 big_frames = 4;                          // 2 MiB frames: two for kernel text, two for THPs

struct leaf_plan {
  u64 va, pa, flags;
  unsigned shift = 12;
};

// Counts what the walk of the whole VA range will report, as entries are
// written. A table first reached at depth d is walked once there; an extra
// link to it is one alias. In a space whose root maps itself, every table of
// the space is also reached through the self-map one, two, … levels deeper
// (always first there, as the space's tree is private or owned by the space
// that built it), and at the last depth each of its table entries reads as a
// 4 KiB leaf — so with `recursive` each count repeats at every deeper depth.
class tally {
 public:
  tally(walk_stats& stats, unsigned levels) : stats_(stats), last_(levels - 1) {}

  void table(unsigned depth, bool recursive, bool linked) {
    for (unsigned e = depth; e <= (recursive ? last_ : depth); ++e) ++stats_.tables[e];
    if (recursive && linked) ++stats_.leaves_4k;
  }
  void alias(unsigned depth, bool recursive) {
    for (unsigned e = depth; e <= (recursive ? last_ : depth); ++e) ++stats_.aliases[e];
    if (recursive) ++stats_.leaves_4k;
  }
  template <class F>
  void leaf(unsigned depth, bool recursive) {
    for (unsigned e = depth; e <= (recursive ? last_ : depth); ++e)
      stats_.count_leaf(e == last_ ? 12 : F::entry_shift(e));
  }
  void self_map() { ++stats_.leaves_4k; }  // the root read at the last depth

 private:
  walk_stats& stats_;
  unsigned last_;
};

template <class F>
class snapshot_builder {
  using flags = x86_flags<F>;
  static constexpr unsigned last = F::levels - 1;

 public:
  snapshot_builder(const fleet_shape& shape, u32 index)
      : shape_(shape),
        index_(index),
        pool_frames_(shape.data_frames != 0
                         ? shape.data_frames
                         : std::clamp<u64>(u64{shape.kernel_pages} +
                                               u64{shape.user_pages_per_space} * shape.spaces_per_snapshot,
                                           64, 4096)),
        big_base_(align_up(page_bytes + pool_frames_ * page_bytes, mib2)),
        table_base_(big_base_ + (shape.large_pages ? big_frames * mib2 : 0)),
        tables_(table_base_),
        tally_(expected_.stats, F::levels),
        group_tables_(std::max<u32>(shape.nanvix_groups, 1)) {}

  built_snapshot build() {
    plan_kernel();
    for (u32 s = 0; s < shape_.spaces_per_snapshot; ++s) build_space(s);
    if (shape_.hostile) build_hostile();
    add_duplicates();
    for (unsigned d = 0; d < max_levels; ++d) expected_.stats.entries_read += 512 * expected_.stats.tables[d];
    return assemble();
  }

 private:
  u64 pool_pa(u64 frame) const { return page_bytes + (frame % pool_frames_) * page_bytes; }
  u64 random_frame(random_stream& rng) const { return pool_pa(rng.below(pool_frames_)); }
  static u64 top_va(unsigned index) { return F::canonical(u64{index} << F::entry_shift(0)); }
  static intermediate_flags table_flags(u64 value) {
    intermediate_flags out;
    std::fill(std::begin(out.at_depth), std::end(out.at_depth), value);
    return out;
  }

  static void check(map_status status, u64 va) {
    if (status != map_status::ok)
      throw std::logic_error(
          fmt::format("fleet generator: cannot map {:#x} (status {})", va, static_cast<int>(status)));
  }
  // Tables that a map just created sit at the deepest depths above its entry.
  void count_created(u64 tables_before, unsigned entry_depth, bool recursive) {
    for (u64 i = 0, n = tables_.table_count() - tables_before; i < n; ++i)
      tally_.table(entry_depth - static_cast<unsigned>(i), recursive, true);
  }

  void map_leaf(u64 va, u64 pa, unsigned shift, u64 leaf_flags, u64 table_flag_bits, bool recursive) {
    const u64 before = tables_.table_count();
    check(map<F>(tables_, {va, pa, shift, leaf_flags, table_flags(table_flag_bits)}), va);
    const auto depth = static_cast<unsigned>(F::leaf_depth_for_shift(shift));
    count_created(before, depth, recursive);
    tally_.template leaf<F>(depth, recursive);
  }
  // Our depth `depth-1` entry for `va` points at `table`; `first` says
  // whether this is the first link to it (else the walk reports an alias).
  template <class Ops>
  void link(Ops& ops, unsigned depth, u64 va, u64 table, u64 link_flags, bool recursive, bool first) {
    const u64 before = tables_.table_count();
    check(space_aware_map<F>(ops, depth, va, table, link_flags, table_flags(link_flags)), va);
    count_created(before, depth - 1, recursive);
    if (first)
      tally_.table(depth, recursive, true);
    else
      tally_.alias(depth, recursive);
  }
  u64 new_root(bool recursive) {
    const u64 root = tables_.alloc_table();
    tables_.update_root(root);
    tally_.table(0, recursive, false);
    return root;
  }

  // The kernel half is the same in every space: 4 KiB leaves grouped by the
  // page table that holds them, plus the large leaves.
  void plan_kernel() {
    random_stream rng = stream_for(shape_.seed, index_, 0);
    const kernel_bases bases = F::levels == 5 ? linux_5level : linux_4level;
    const u64 k = shape_.kernel_pages;
    const u64 text = k / 4;
    const u64 direct = shape_.large_pages ? 0 : std::min(k / 2, pool_frames_);
    const u64 vmalloc = k / 8 + (k / 2 - direct);
    const u64 vmemmap = k - text - direct - vmalloc;
    kernel_leaves_.reserve(k);
    for (u64 i = 0; i < direct; ++i)  // the direct map: VA = base + PA
      kernel_leaves_.push_back({bases.direct_map + pool_pa(i), pool_pa(i), flags::kernel_rw});
    for (u64 i = 0, va = bases.vmalloc; i < vmalloc; va += page_bytes * (1 + rng.below(16))) {
      for (u64 run = 1 + rng.below(16); run > 0 && i < vmalloc; --run, ++i, va += page_bytes)
        kernel_leaves_.push_back({va, random_frame(rng), flags::kernel_rw});
    }
    for (u64 i = 0; i < vmemmap; ++i)
      kernel_leaves_.push_back({bases.vmemmap + i * page_bytes, random_frame(rng), flags::kernel_rw});
    const u64 text_4k = bases.text + (shape_.large_pages ? 2 * mib2 : 0);
    for (u64 i = 0; i < text; ++i)
      kernel_leaves_.push_back(
          {text_4k + i * page_bytes, pool_pa(i), i % 4 == 3 ? flags::kernel_rw : flags::kernel_text});
    if (shape_.large_pages) {
      kernel_large_.push_back({bases.direct_map, 0, flags::kernel_rw, 30});  // the first GiB of RAM
      for (u64 i = 0; i < 2; ++i)
        kernel_large_.push_back({bases.text + i * mib2, big_base_ + i * mib2, flags::kernel_text, 21});
    }
    for (std::size_t i = 0; i < kernel_leaves_.size(); ++i) {
      const u64 block = kernel_leaves_[i].va & ~(mib2 - 1);
      if (kernel_blocks_.empty() || kernel_blocks_.back().va != block)
        kernel_blocks_.push_back({block, i, i});
      kernel_blocks_.back().end = i + 1;
    }
    for (const auto& leaf : kernel_leaves_) kernel_top_.push_back(F::table_index(F::linear(leaf.va), 0));
    for (const auto& leaf : kernel_large_) kernel_top_.push_back(F::table_index(F::linear(leaf.va), 0));
    std::sort(kernel_top_.begin(), kernel_top_.end());
    kernel_top_.erase(std::unique(kernel_top_.begin(), kernel_top_.end()), kernel_top_.end());
  }

  // A fresh page table holding one block of kernel leaves.
  u64 build_kernel_table(std::size_t block) {
    const u64 table = tables_.alloc_table();
    for (std::size_t i = kernel_blocks_[block].begin; i < kernel_blocks_[block].end; ++i) {
      const leaf_plan& leaf = kernel_leaves_[i];
      tables_.write_entry(tables_.entry_addr(table, F::table_index(F::linear(leaf.va), last)),
                          F::make_leaf_entry(leaf.pa, last, leaf.flags));
      tally_.template leaf<F>(last, false);
    }
    return table;
  }

  void build_kernel_half(u32 space, bool recursive) {
    if (shape_.share_kernel_half && space > 0) {  // Linux: point at space 0's PDPTs
      for (const unsigned index : kernel_top_) {
        const u64 entry = tables_.read_entry(tables_.entry_addr(roots_.front(), index));
        link(tables_, 1, top_va(index), F::table_address(entry), entry & ~F::address_mask, recursive, false);
      }
      return;
    }
    std::vector<u64> own_tables;
    std::vector<u64>& page_tables =
        shape_.nanvix_groups > 0 ? group_tables_[space % shape_.nanvix_groups] : own_tables;
    const bool first = page_tables.empty();
    for (std::size_t b = 0; b < kernel_blocks_.size(); ++b) {
      if (first) page_tables.push_back(build_kernel_table(b));
      link(tables_, last, kernel_blocks_[b].va, page_tables[b], flags::kernel_table, recursive, first);
    }
    for (const auto& leaf : kernel_large_)
      map_leaf(leaf.va, leaf.pa, leaf.shift, leaf.flags, flags::kernel_table, recursive);
  }

  // A Linux process: PIE code, rodata, data and heap, a THP, mmapped
  // libraries below the mmap base, the stack near the top of the lower half.
  void build_user_half(u32 space, bool recursive) {
    random_stream rng = stream_for(shape_.seed, index_, u64{space} + 1);
    const u64 n = shape_.user_pages_per_space;
    const u64 code = n / 8, rodata = n / 32, data = n / 32, heap = n / 8, mmapped = n / 2;
    const u64 stack = n - code - rodata - data - heap - mmapped;
    const u64 binary_frame = shape_.kernel_pages;  // the binary's pages are shared through the page cache
    const auto writable = [&] { return shape_.cow && rng.one_in(2) ? flags::user_cow : flags::user_rw; };
    const auto map_user = [&](u64 va, u64 pa, u64 leaf_flags, unsigned shift = 12) {
      map_leaf(va, pa, shift, leaf_flags, flags::user_table, recursive);
    };
    u64 va = 0x5550'0000'0000ull + rng.below(u64{1} << 27) * page_bytes;
    for (u64 i = 0; i < code; ++i, va += page_bytes)
      map_user(va, pool_pa(binary_frame + i), flags::user_code);
    for (u64 i = 0; i < rodata; ++i, va += page_bytes)
      map_user(va, pool_pa(binary_frame + code + i), flags::user_ro);
    for (u64 i = 0; i < data; ++i, va += page_bytes) map_user(va, random_frame(rng), writable());
    va += rng.below(8192) * page_bytes;  // brk randomization
    for (u64 i = 0; i < heap; ++i, va += page_bytes * (rng.one_in(8) ? 2 : 1))
      map_user(va, random_frame(rng), writable());
    if (shape_.large_pages)
      map_user(align_up(va, mib2) + mib2, big_base_ + (2 + rng.below(2)) * mib2, writable(), 21);
    u64 cursor = 0x7f00'0000'0000ull + rng.below(u64{1} << 26) * page_bytes;
    for (u64 done = 0; done < mmapped;) {
      const u64 pages = std::min<u64>(16, mmapped - done);
      cursor -= (2 * pages + 512 + rng.below(16384)) * page_bytes;  // 2..64 MiB apart
      u64 lib = cursor;
      for (u64 i = 0; i < pages; ++i, lib += page_bytes * (rng.one_in(8) ? 2 : 1))
        map_user(lib, random_frame(rng), i < pages / 2 ? flags::user_code : writable());
      done += pages;
    }
    const u64 stack_top = 0x7ff0'0000'0000ull + rng.below(u64{1} << 24) * page_bytes;
    for (u64 i = 1; i <= stack; ++i) map_user(stack_top - i * page_bytes, random_frame(rng), writable());
  }

  void build_space(u32 space) {
    const bool recursive = shape_.self_reference;
    const u64 root = new_root(recursive);
    roots_.push_back(root);
    labels_.push_back(fmt::format("pid:{}", 1000 + space));
    build_kernel_half(space, recursive);
    build_user_half(space, recursive);
    if (recursive) {
      check(space_aware_map<F>(tables_, 1, top_va(self_map_index), root, flags::kernel_table | flags::nx),
            root);
      tally_.self_map();
    }
  }

  // Three roots the walk must survive; their counts are closed forms.
  void build_hostile() {
    walk_stats& s = expected_.stats;
    // 1. Every entry of a root points at the root: one key per depth, 511 aliases below.
    const u64 loop = new_root(false);
    for (unsigned i = 0; i < 512; ++i)
      tables_.write_entry(tables_.entry_addr(loop, i), F::make_table_entry(loop, flags::user_table));
    for (unsigned e = 1; e <= last; ++e) {
      ++s.tables[e];
      s.aliases[e] += 511;
    }
    s.leaves_4k += 512;
    roots_.push_back(loop);
    labels_.push_back("hostile:loop");

    // 2. Tables outside the image, an unbacked leaf, OS-private not-present
    //    entries, and a table that is both a PD and a PT.
    const u64 gadgets = new_root(false);
    link(tables_, 1, top_va(0), far_outside, flags::user_table, false, true);
    link(tables_, last, top_va(1), far_outside + page_bytes, flags::user_table, false, true);
    s.dangling_reads += 2 * 512;
    const u64 odd = tables_.alloc_table();
    const auto put = [&](u64 table, unsigned i, u64 entry) {
      tables_.write_entry(tables_.entry_addr(table, i), entry);
    };
    put(odd, 0, F::make_leaf_entry(far_outside + 2 * page_bytes, last, flags::user_rw));
    put(odd, 1, F::make_leaf_entry(pool_pa(0), last, flags::user_ro));
    put(odd, 2, F::make_leaf_entry(pool_pa(1), last, flags::user_rw | bit_protnone) & ~F::bit_present);
    // A swap entry: type 3 in bits 1.., offset 0x4242 in the address field.
    put(odd, 3, F::make_leaf_entry(u64{0x4242} << 12, last, 3u << 1) & ~F::bit_present);
    link(tables_, last, top_va(2), odd, flags::user_table, false, true);
    for (int i = 0; i < 2; ++i) tally_.template leaf<F>(last, false);
    expected_.unbacked_leaves += 1;
    const u64 pt = tables_.alloc_table(), both = tables_.alloc_table();
    for (unsigned i = 0; i < 3; ++i) put(pt, i, F::make_leaf_entry(pool_pa(2 + i), last, flags::user_rw));
    put(both, 0, F::make_table_entry(pt, flags::user_table));
    put(both, 1, F::make_table_entry(both, flags::user_table));
    link(tables_, last - 1, top_va(3), both, flags::user_table, false, true);
    s.tables[last] += 2;  // pt, and `both` again as a PT, whose two entries read as leaves
    s.leaves_4k += 3 + 2;
    roots_.push_back(gadgets);
    labels_.push_back("hostile:gadgets");

    // 3. The image's last page is cut off (its size is not a multiple of
    //    4 KiB): a PDPT there keeps its first entries, copies of one of space
    //    0's (aliases one level down); the rest read as dangling zeros. Its
    //    root, sharing space 0's top-level entries, is whole, as the manifest
    //    loader requires of root tables.
    const u64 cut_root = new_root(false);
    const u64 root0 = roots_.front();
    u64 source = 0;
    for (unsigned i = 1; i < 512; ++i) {
      const u64 entry = tables_.read_entry(tables_.entry_addr(root0, i));
      if (i == self_map_index || F::classify(entry, 0) != entry_kind::table) continue;
      link(tables_, 1, top_va(i), F::table_address(entry), entry & ~F::address_mask, false, false);
      if (source == 0) source = F::table_address(entry);
    }
    cut_base_ = std::max(table_base_ + tables_.table_count() * page_bytes, shape_.large_pages ? gib : 0);
    cut_.emplace(cut_base_);
    const u64 cut_table = cut_->alloc_table();
    for (unsigned i = 0; source != 0 && i < 512; ++i) {
      const u64 entry = tables_.read_entry(tables_.entry_addr(source, i));
      cut_->write_entry(cut_->entry_addr(cut_table, i), entry);
      if (i >= cut_table_entries) continue;
      const entry_kind kind = F::classify(entry, 1);
      if (kind == entry_kind::table) tally_.alias(2, false);
      if (kind == entry_kind::leaf) tally_.template leaf<F>(1, false);
    }
    link(tables_, 1, top_va(0), cut_table, flags::user_table, false, true);
    s.dangling_reads += 512 - cut_table_entries;
    roots_.push_back(cut_root);
    labels_.push_back("hostile:cut");
  }

  // Earlier roots again, as CR3 values with a PCID: one depth-0 alias each.
  void add_duplicates() {
    random_stream rng = stream_for(shape_.seed, index_, ~u64{0});
    for (u32 i = 0; i < shape_.duplicate_roots; ++i) {
      const u64 space = rng.below(shape_.spaces_per_snapshot);
      roots_.push_back(roots_[space] | (1 + rng.below(4095)));
      labels_.push_back(fmt::format("pid:{}:again", 1000 + space));
      ++expected_.stats.aliases[0];
    }
  }

  nlohmann::json expectation_json() const {
    const walk_stats& s = expected_.stats;
    return {{"tables", std::vector<u64>(s.tables, s.tables + F::levels)},
            {"aliases", std::vector<u64>(s.aliases, s.aliases + F::levels)},
            {"leaves_4k", s.leaves_4k},
            {"leaves_2m", s.leaves_2m},
            {"leaves_1g", s.leaves_1g},
            {"dangling_reads", s.dangling_reads},
            {"entries_read", s.entries_read},
            {"unbacked_leaves", expected_.unbacked_leaves}};
  }

  // Lays the image out in one zero-filled region: data frames (each filled
  // with its own pattern), the 2 MiB frames (tagged per 4 KiB page), the tables.
  built_snapshot assemble() {
    const u64 table_end = table_base_ + tables_.table_count() * page_bytes;
    expected_.table_pages = tables_.table_count() + (cut_ ? 1 : 0);
    expected_.image_bytes =
        cut_ ? cut_base_ + cut_table_bytes : std::max(table_end, shape_.large_pages ? gib : 0);
    built_snapshot out;
    out.expected = expected_;
    snapshot_spec& spec = out.snapshot.spec;
    spec.id = fmt::format("snap-{:04}", index_);
    spec.format = F::levels == 5 ? paging_format::x86_64_la57 : paging_format::x86_64;
    spec.memory = raw_source{spec.id + ".img", 0};
    spec.roots = std::move(roots_);
    spec.labels = std::move(labels_);
    spec.meta = {
        {"generator", "ptwalk gen"}, {"shape", format_fleet_shape(shape_)}, {"expected", expectation_json()}};
    const std::span<std::byte> bytes =
        out.snapshot.image.add_zeroed_region(0, expected_.image_bytes, spec.id);
    const u64 tag = (u64{0x7074'776b} << 32) | (u64{index_} << 24);  // "ptwk", snapshot
    for (u64 frame = 0; frame < pool_frames_; ++frame) {
      random_stream fill = stream_for(shape_.seed, index_, (u64{1} << 32) + frame);
      for (u64 w = 0; w < page_bytes / 8; ++w) store(bytes, pool_pa(frame) + 8 * w, fill.next());
    }
    if (shape_.large_pages)
      for (u64 p = 0; p < big_frames * mib2 / page_bytes; ++p)
        store(bytes, big_base_ + p * page_bytes, tag | 0x80'0000 | p);
    std::memcpy(bytes.data() + table_base_, tables_.words().data(), tables_.words().size() * 8);
    out.extents.emplace_back(page_bytes, table_end);
    if (cut_) {
      std::memcpy(bytes.data() + cut_base_, cut_->words().data(), cut_table_bytes);
      out.extents.emplace_back(cut_base_, cut_base_ + cut_table_bytes);
    }
    return out;
  }
  static void store(std::span<std::byte> bytes, u64 offset, u64 value) {
    std::memcpy(bytes.data() + offset, &value, 8);
  }

  struct kernel_block {
    u64 va;
    std::size_t begin, end;  // range of kernel_leaves_
  };

  const fleet_shape& shape_;
  u32 index_;
  u64 pool_frames_;
  u64 big_base_;
  u64 table_base_;
  page_table_buffer tables_;
  snapshot_expectation expected_;
  tally tally_;
  std::vector<leaf_plan> kernel_leaves_, kernel_large_;
  std::vector<kernel_block> kernel_blocks_;
  std::vector<unsigned> kernel_top_;            // top-level indices the kernel half uses
  std::vector<std::vector<u64>> group_tables_;  // Nanvix: each group's kernel page tables
  std::vector<u64> roots_;
  std::vector<std::string> labels_;
  u64 cut_base_ = 0;
  std::optional<page_table_buffer> cut_;
};

built_snapshot build_snapshot(const fleet_shape& shape, u32 index) {
  const paging_format format = snapshot_format(shape, index);
  if (is_aarch64(format)) return build_aarch64_snapshot(shape, index, format);
  return visit_x86_format(format, [&]<class F>() { return snapshot_builder<F>(shape, index).build(); });
}

// Builds every snapshot, in parallel; `consume(index, built)` runs on the
// building thread. The first failure is rethrown once all threads are done.
template <class Consume>
void build_all(const fleet_shape& shape, Consume&& consume) {
  validate_shape(shape);
  std::vector<std::exception_ptr> errors(shape.snapshots);
#pragma omp parallel for schedule(dynamic, 1)
  for (u32 i = 0; i < shape.snapshots; ++i) {
    try {
      consume(i, build_snapshot(shape, i));
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);
}

}  // namespace

generated_fleet generate_fleet(const fleet_shape& shape) {
  generated_fleet fleet;
  fleet.snapshots.resize(shape.snapshots);
  fleet.expected.resize(shape.snapshots);
  build_all(shape, [&](u32 i, built_snapshot built) {
    fleet.snapshots[i] = std::move(built.snapshot);
    fleet.expected[i] = built.expected;
  });
  return fleet;
}

namespace {

// Writes the non-zero extents of an image and sizes the file; the gaps stay holes.
void write_image(const std::filesystem::path& path, const built_snapshot& built) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw input_error(fmt::format("{}: cannot create: {}", path.string(), std::strerror(errno)));
  const std::byte* base = built.snapshot.image.regions().front().data;
  bool ok = true;
  for (const auto& [begin, end] : built.extents) {
    for (u64 at = begin; ok && at < end;) {
      const ssize_t n =
          ::pwrite(fd, base + at, std::min<u64>(end - at, u64{1} << 30), static_cast<off_t>(at));
      ok = n > 0;
      at += ok ? static_cast<u64>(n) : 0;
    }
  }
  ok = ok && ::ftruncate(fd, static_cast<off_t>(built.expected.image_bytes)) == 0;
  const int error = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) throw input_error(fmt::format("{}: write failed: {}", path.string(), std::strerror(error)));
}

// Throws unless `target` may become the fleet: absent, empty, or `replace`d.
// Returns whether it exists with content to move aside.
bool check_target(const std::filesystem::path& target, bool replace) {
  if (!std::filesystem::exists(target)) return false;
  if (!std::filesystem::is_directory(target))
    throw input_error(fmt::format("{}: exists and is not a directory", target.string()));
  if (std::filesystem::is_empty(target)) return false;
  if (!replace)
    throw input_error(
        fmt::format("{}: exists and is not empty (use --force to replace it)", target.string()));
  return true;
}

}  // namespace

fleet_summary write_fleet(const fleet_shape& shape, const std::filesystem::path& dir, bool replace) {
  validate_shape(shape);
  std::filesystem::path target = std::filesystem::absolute(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();
  (void)check_target(target, replace);  // fail before building; checked again at the rename
  atomic_output_dir staging(target);
  std::vector<std::string> lines(shape.snapshots);
  std::vector<fleet_summary> parts(shape.snapshots);
  build_all(shape, [&](u32 i, built_snapshot built) {
    write_image(staging.path() / std::get<raw_source>(built.snapshot.spec.memory).path, built);
    lines[i] = format_manifest_line(built.snapshot.spec);
    parts[i] = {1, built.snapshot.format() == paging_format::x86_64_la57 ? 1u : 0u,
                built.snapshot.roots().size(), built.expected.image_bytes, built.expected.table_pages};
  });
  {
    std::ofstream manifest(staging.path() / "manifest.jsonl", std::ios::binary);
    for (const auto& line : lines) manifest << line << '\n';
    manifest.flush();
    if (!manifest)
      throw input_error(fmt::format("{}: write failed", (staging.path() / "manifest.jsonl").string()));
  }
  (void)check_target(target, replace);  // the target may have changed while we built
  staging.commit();
  fleet_summary total;
  for (const auto& p : parts) {
    total.snapshots += p.snapshots;
    total.la57_snapshots += p.la57_snapshots;
    total.spaces += p.spaces;
    total.image_bytes += p.image_bytes;
    total.table_pages += p.table_pages;
  }
  return total;
}

}  // namespace ptwalk
