// host/compactor.cpp — frame placement, the relinker, and writing the compacted image.
#include "compact/compactor.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

#include "input/image_ranges.hpp"
#include "ptwalk/map.hpp"
#include "walk/owned_tables.hpp"

namespace ptwalk {

nlohmann::json compaction_policy::to_json() const {
  return {{"keep_pa", keep_pa}, {"keep_unbacked", keeps_unbacked()}, {"cow_writable", cow_writable}};
}

compaction_policy compaction_policy::from_meta(const nlohmann::json& meta) {
  compaction_policy policy;
  if (!meta.is_object() || !meta.contains("compaction")) return policy;
  const nlohmann::json& recorded = meta["compaction"];
  auto flag = [&](const char* key) {
    if (!recorded.is_object()) throw input_error("meta.compaction is not an object");
    if (!recorded.contains(key)) return false;
    if (!recorded[key].is_boolean()) throw input_error(fmt::format("meta.compaction.{} is not a boolean", key));
    return recorded[key].get<bool>();
  };
  policy.keep_pa = flag("keep_pa");
  policy.keep_unbacked = flag("keep_unbacked");
  policy.cow_writable = flag("cow_writable");
  return policy;
}

compaction_stats& compaction_stats::operator+=(const compaction_stats& o) {
  spaces += o.spaces;
  leaves_kept += o.leaves_kept;
  leaves_dropped_unbacked += o.leaves_dropped_unbacked;
  leaves_kept_unbacked += o.leaves_kept_unbacked;
  leaves_made_cow += o.leaves_made_cow;
  links += o.links;
  links_to_empty_tables += o.links_to_empty_tables;
  os_private_entries += o.os_private_entries;
  frames_copied += o.frames_copied;
  frames_nested += o.frames_nested;
  frames_in_place += o.frames_in_place;
  data_bytes += o.data_bytes;
  padding_bytes += o.padding_bytes;
  tables += o.tables;
  bytes_in += o.bytes_in;
  bytes_out += o.bytes_out;
  return *this;
}

namespace {

constexpr u64 page_4k = 4096;

constexpr u64 align_up(u64 value, u64 alignment) { return (value + alignment - 1) & ~(alignment - 1); }

struct interval {
  u64 first = 0;
  u64 end = 0;  // exclusive
};

// Sorts and merges overlapping or touching intervals.
std::vector<interval> merged(std::vector<interval> intervals) {
  std::sort(intervals.begin(), intervals.end(),
            [](const interval& a, const interval& b) { return a.first < b.first; });
  std::vector<interval> out;
  for (const interval& i : intervals) {
    if (!out.empty() && i.first <= out.back().end) out.back().end = std::max(out.back().end, i.end);
    else out.push_back(i);
  }
  return out;
}

// The first `alignment`-aligned address at or above `from` where `size`
// bytes meet none of the `reserved` ranges (sorted, disjoint); all ones when
// no such address is left below 2^64.
u64 first_free_gap(std::span<const interval> reserved, u64 from, u64 size, u64 alignment) {
  constexpr u64 none = ~u64{0};
  from = align_up(from, alignment);
  for (const interval& r : reserved) {
    if (from > none - size || r.end > none - alignment) return none;
    if (r.end <= from) continue;
    if (r.first >= from + size) break;
    from = align_up(r.end, alignment);
  }
  return from > none - size ? none : from;
}

// Where --keep-pa puts the rebuilt tables: above every region and kept
// frame (memory the guest may think its own stays free) when that fits
// below `limit`, the format's physical address limit; else in the lowest
// gap no region or kept frame covers; else in the lowest gap without kept
// frames (the output holds nothing else). `limit` when nothing fits.
u64 keep_pa_table_base(const memory_image& image, const std::vector<interval>& in_place, u64 size, u64 limit,
                       u64 alignment) {
  const auto fits = [&](u64 base) { return base <= limit && size <= limit - base; };
  u64 top = in_place.empty() ? 0 : in_place.back().end;
  if (!image.regions().empty()) top = std::max(top, image.regions().back().end());
  if (top <= limit - alignment && fits(align_up(top, alignment))) return align_up(top, alignment);
  std::vector<interval> with_regions = in_place;
  for (const image_region& r : image.regions()) with_regions.push_back({r.gpa, r.end()});
  const std::vector<interval> occupied = merged(std::move(with_regions));
  for (const std::vector<interval>* reserved : {&occupied, &in_place})
    if (const u64 base = first_free_gap(*reserved, 0, size, alignment); fits(base)) return base;
  return limit;
}

// Places power-of-two blocks, each aligned to its size, upwards from 0
// around reserved ranges (frames that stay at their own address). Space
// skipped for alignment becomes a hole that later, smaller blocks fill
// first; placing large blocks first keeps the holes few and small.
class dense_allocator {
 public:
  explicit dense_allocator(std::span<const interval> reserved) : reserved_(reserved) {}

  u64 place(u64 size) {
    if (auto start = from_holes(size)) return *start;
    for (;;) {
      const u64 start = align_up(cursor_, size);
      while (next_reserved_ < reserved_.size() && reserved_[next_reserved_].end <= cursor_) ++next_reserved_;
      if (next_reserved_ < reserved_.size() && reserved_[next_reserved_].first < start + size) {
        // The cursor never lies inside a reserved range, so this range starts at or above it.
        add_hole(cursor_, reserved_[next_reserved_].first);
        cursor_ = reserved_[next_reserved_].end;
        continue;
      }
      add_hole(cursor_, start);
      cursor_ = start + size;
      return start;
    }
  }

  // The first `alignment`-aligned address at or above `from` where `size`
  // bytes meet no reserved range.
  [[nodiscard]] u64 first_free(u64 from, u64 size, u64 alignment) const {
    return first_free_gap(reserved_, from, size, alignment);
  }

  [[nodiscard]] u64 end() const { return cursor_; }
  [[nodiscard]] const std::vector<interval>& holes() const { return holes_; }

 private:
  std::optional<u64> from_holes(u64 size) {
    for (std::size_t i = 0; i < holes_.size(); ++i) {
      const interval hole = holes_[i];
      const u64 start = align_up(hole.first, size);
      if (start + size > hole.end) continue;
      holes_.erase(holes_.begin() + static_cast<std::ptrdiff_t>(i));
      if (start + size < hole.end) holes_.insert(holes_.begin() + static_cast<std::ptrdiff_t>(i), {start + size, hole.end});
      if (hole.first < start) holes_.insert(holes_.begin() + static_cast<std::ptrdiff_t>(i), {hole.first, start});
      return start;
    }
    return std::nullopt;
  }
  void add_hole(u64 first, u64 end) {
    if (first < end) holes_.push_back({first, end});
  }

  std::span<const interval> reserved_;
  std::size_t next_reserved_ = 0;
  std::vector<interval> holes_;  // ascending
  u64 cursor_ = 0;
};

enum class frame_state : u8 { copied, nested, in_place, dropped };

struct frame {
  u64 pa = 0;
  u8 size_log2 = 12;
  bool backed = false;  // the input image backs every byte of it
  frame_state state = frame_state::dropped;
  u64 new_pa = 0;

  [[nodiscard]] u64 size() const { return u64{1} << size_log2; }
  [[nodiscard]] bool same_frame(u64 other_pa, u8 other_log2) const {
    return pa == other_pa && size_log2 == other_log2;
  }
};

// Where every frame some leaf maps goes: the data region, its original
// address, or nowhere. Also yields the output's data pieces and the address
// the page tables (of `table_bytes` each, one granule) start at.
class frame_plan {
 public:
  // `granule_bytes`: one rebuilt table; `address_limit`: the format's
  // physical address limit (2^52 on x86-64, 2^48 on AArch64).
  frame_plan(const memory_image& image, const snapshot_walk& walk, const compaction_policy& policy,
             u64 granule_bytes, u64 address_limit, compaction_stats& stats)
      : image_(image) {
    collect(walk);
    classify(policy);
    nest_small_in_large();
    const std::vector<interval> in_place = in_place_ranges();
    for (u64 count : walk.stats.tables) table_bytes_ += count * granule_bytes;
    if (policy.keep_pa) {
      table_base_ = keep_pa_table_base(image, in_place, table_bytes_, address_limit, granule_bytes);
    } else {
      dense_allocator allocator(in_place);
      place_copies(allocator);
      table_base_ = allocator.first_free(allocator.end(), table_bytes_, granule_bytes);
      for (const interval& hole : allocator.holes()) {
        pieces_.push_back({hole.first, hole.end - hole.first, nullptr});
        stats.padding_bytes += hole.end - hole.first;
      }
    }
    add_pieces(in_place, stats);
    std::sort(pieces_.begin(), pieces_.end(),
              [](const output_piece& a, const output_piece& b) { return a.gpa < b.gpa; });
    for (const frame& f : frames_) {
      stats.frames_copied += f.state == frame_state::copied;
      stats.frames_nested += f.state == frame_state::nested;
      stats.frames_in_place += f.state == frame_state::in_place;
    }
  }

  [[nodiscard]] const frame& find(u64 pa, u8 size_log2) const {
    const frame* f = lookup(pa, size_log2);
    if (f == nullptr) throw std::logic_error(fmt::format("frame {:#x} missing from the plan", pa));
    return *f;
  }
  [[nodiscard]] u64 table_base() const { return table_base_; }
  // The most bytes the rebuilt tables take (one per table the walk found).
  [[nodiscard]] u64 table_bytes() const { return table_bytes_; }
  [[nodiscard]] std::vector<output_piece> take_pieces() { return std::move(pieces_); }

 private:
  void collect(const snapshot_walk& walk) {
    for (const space_aware_mapping& r : walk.records)
      if (r.is_leaf()) frames_.push_back({r.pa, r.size_log2});
    std::sort(frames_.begin(), frames_.end(), [](const frame& a, const frame& b) {
      return a.pa != b.pa ? a.pa < b.pa : a.size_log2 < b.size_log2;
    });
    frames_.erase(std::unique(frames_.begin(), frames_.end(),
                              [](const frame& a, const frame& b) { return a.same_frame(b.pa, b.size_log2); }),
                  frames_.end());
    for (const frame& f : frames_) sizes_.push_back(f.size_log2);
    std::sort(sizes_.begin(), sizes_.end());
    sizes_.erase(std::unique(sizes_.begin(), sizes_.end()), sizes_.end());
  }

  void classify(const compaction_policy& policy) {
    for (frame& f : frames_) {
      f.backed = fully_backed(image_, f.pa, f.size());
      if (policy.keep_pa || (!f.backed && policy.keep_unbacked)) f.state = frame_state::in_place;
      else f.state = f.backed ? frame_state::copied : frame_state::dropped;
      if (f.state == frame_state::in_place) f.new_pa = f.pa;
    }
  }

  // A small frame inside a larger frame that is copied anyway reuses that
  // copy, and one inside a larger frame kept in place (an unbacked or partly
  // backed one under --keep-unbacked) stays in place with it, where the
  // output keeps its bytes: two mappings of the same memory stay one memory.
  void nest_small_in_large() {
    for (auto size = sizes_.rbegin(); size != sizes_.rend(); ++size)
      for (frame& f : frames_) {
        if (f.size_log2 != *size || f.state != frame_state::copied) continue;
        if (const frame* outer = kept_outer(f)) {
          f.state = outer->state == frame_state::in_place ? frame_state::in_place : frame_state::nested;
          if (f.state == frame_state::in_place) f.new_pa = f.pa;
        }
      }
  }

  // The smallest larger frame around `f` whose bytes the output keeps
  // (copied, nested or in place), if any.
  [[nodiscard]] const frame* kept_outer(const frame& f) const {
    for (const u8 outer_log2 : sizes_) {
      if (outer_log2 <= f.size_log2) continue;
      const frame* outer = lookup(f.pa & ~((u64{1} << outer_log2) - 1), outer_log2);
      if (outer != nullptr && outer->state != frame_state::dropped) return outer;
    }
    return nullptr;
  }

  [[nodiscard]] std::vector<interval> in_place_ranges() const {
    std::vector<interval> ranges;
    for (const frame& f : frames_)
      if (f.state == frame_state::in_place) ranges.push_back({f.pa, f.pa + f.size()});
    return merged(std::move(ranges));
  }

  void place_copies(dense_allocator& allocator) {
    for (auto size = sizes_.rbegin(); size != sizes_.rend(); ++size) {
      const u8 size_log2 = *size;
      for (frame& f : frames_)
        if (f.size_log2 == size_log2 && f.state == frame_state::copied) {
          f.new_pa = allocator.place(f.size());
          for_each_piece(image_, f.pa, f.size(), [&](u64 offset, backed_piece p) {
            pieces_.push_back({f.new_pa + offset, p.len, p.bytes});
          });
        }
      // Nested frames of this size follow their outer frame, placed in an earlier round.
      for (frame& f : frames_)
        if (f.size_log2 == size_log2 && f.state == frame_state::nested) {
          const frame* outer = kept_outer(f);
          f.new_pa = outer->new_pa + (f.pa - outer->pa);
        }
    }
  }

  // Frames left at their address keep whatever parts of them the input backs.
  void add_pieces(const std::vector<interval>& in_place, compaction_stats& stats) {
    for (const interval& range : in_place)
      for_each_piece(image_, range.first, range.end - range.first, [&](u64 offset, backed_piece p) {
        if (p.bytes != nullptr) pieces_.push_back({range.first + offset, p.len, p.bytes});
      });
    for (const output_piece& p : pieces_)
      if (p.bytes != nullptr) stats.data_bytes += p.size;
  }

  [[nodiscard]] const frame* lookup(u64 pa, u8 size_log2) const {
    auto it = std::lower_bound(frames_.begin(), frames_.end(), std::pair{pa, size_log2},
                               [](const frame& f, std::pair<u64, u8> key) {
                                 return f.pa != key.first ? f.pa < key.first : f.size_log2 < key.second;
                               });
    return it != frames_.end() && it->same_frame(pa, size_log2) ? &*it : nullptr;
  }

  const memory_image& image_;
  std::vector<frame> frames_;  // by (pa, size)
  std::vector<u8> sizes_;      // the leaf sizes present, ascending
  std::vector<output_piece> pieces_;
  u64 table_base_ = 0;
  u64 table_bytes_ = 0;
};

// Rebuilds every space's tables through the table-write interface, in
// primacy order, each in VA order (so an owner's tables exist, or are known
// to be empty, before any later link to them is made).
template <class Format, table_write_ops Ops>
class relinker {
  // The rebuilt tables are fresh and written in place; the addresses kept of
  // new roots and shared tables rely on that.
  static_assert(!may_move_v<Ops>, "the relinker keeps addresses of the tables it builds");

 public:
  relinker(Ops& ops, const memory_image& image, const frame_plan& plan,
           const compaction_policy& policy, compaction_stats& stats)
      : ops_(ops), image_(image), plan_(plan), policy_(policy), stats_(stats) {}

  // `upper_roots`: the TTBR1 tables of the spaces (empty: lower halves only).
  // Returns the new root tables per half, primacy order.
  std::array<std::vector<u64>, 2> run(const snapshot_walk& walk, std::span<const u64> upper_roots) {
    original_roots_[0] = walk.roots;
    original_roots_[1].assign(upper_roots.begin(), upper_roots.end());
    const unsigned halves = upper_roots.empty() ? 1 : 2;
    for (std::size_t space = 0; space < walk.space_count(); ++space)
      for (unsigned half = 0; half < halves; ++half)
        rebuild_half(space, half, records_of_half<Format>(walk.records_of(space), half));
    std::array<std::vector<u64>, 2> new_roots;
    for (unsigned half = 0; half < 2; ++half)
      for (const table_addr root : roots_[half]) new_roots[half].push_back(ops_.to_phys(root));
    return new_roots;
  }

 private:
  using table_addr = typename Ops::table_addr;

  void rebuild_half(std::size_t space, unsigned half, std::span<const space_aware_mapping> records) {
    if (root_is_shared(records)) {
      // A root seen before: the same rebuilt root, so the sharing stays total.
      const space_aware_mapping& r = records.front();
      const unsigned owner_half = half_of<Format>(r.pa);
      if (r.owner > space || (r.owner == space && owner_half >= half))
        throw walk_mismatch("a shared root names a later owner");
      roots_[half].push_back(roots_[owner_half][r.owner]);
      return;
    }
    roots_[half].push_back(ops_.alloc_table());
    ops_.update_root(roots_[half].back());
    for_each_owned_entry<Format>(image_, original_roots_[half][space], half, records,
                                 [&](const owned_entry& e) { place(e); });
  }

  // New tables on the way down get the bits of the original entries above.
  static intermediate_flags flags_of(std::span<const u64> path) {
    intermediate_flags flags;
    std::copy(path.begin(), path.end(), flags.at_depth);
    return flags;
  }

  void place(const owned_entry& e) {
    const intermediate_flags tables = flags_of(e.path);
    switch (e.kind) {
      case owned_entry_kind::leaf:
        place_leaf(*e.record, tables);
        break;
      case owned_entry_kind::link: {
        const space_aware_mapping& r = *e.record;
        const std::optional<table_addr> shared = shared_table(r.owner, r.depth, r.pa);
        if (!shared) {  // the table maps nothing now and was not rebuilt: no link to it either
          ++stats_.links_to_empty_tables;
          break;
        }
        check(space_aware_map<Format>(ops_, r.depth, r.va, *shared, e.entry, tables), e.va);
        ++stats_.links;
        break;
      }
      case owned_entry_kind::os_private:
        check(write_entry_at<Format>(ops_, e.va, e.depth, e.entry, tables), e.va);
        ++stats_.os_private_entries;
        break;
    }
  }

  void place_leaf(const space_aware_mapping& r, const intermediate_flags& tables) {
    const frame& f = plan_.find(r.pa, r.size_log2);
    if (f.state == frame_state::dropped) {
      ++stats_.leaves_dropped_unbacked;
      return;
    }
    u64 flags = r.flags;
    if (policy_.cow_writable && Format::writable_by_own_bits(flags)) {
      flags = Format::as_cow_leaf(flags);
      ++stats_.leaves_made_cow;
    }
    check(map<Format>(ops_, {r.va, f.new_pa, r.size_log2, flags, tables}), r.va);
    ++stats_.leaves_kept;
    if (!f.backed) ++stats_.leaves_kept_unbacked;
  }

  // The owner's rebuilt depth-`depth` table at `their_va`, if it was
  // rebuilt. The owner's whole path there is its own (a walk descends only
  // through owned tables) and was rebuilt first, so a missing table had
  // nothing to keep: it was empty, or emptied by dropped leaves (SPEC §4:
  // "minus tables that became empty").
  std::optional<table_addr> shared_table(u32 owner, unsigned depth, u64 their_va) const {
    table_addr table = roots_[half_of<Format>(their_va)][owner];
    const u64 linear = Format::linear(their_va);
    for (unsigned d = 0; d < depth; ++d) {
      const u64 entry = ops_.read_entry(ops_.entry_addr(table, Format::table_index(linear, d)));
      if (Format::classify(entry, d) != entry_kind::table) return std::nullopt;
      table = ops_.from_phys(Format::table_address(entry));
    }
    return table;
  }

  static void check(map_status status, u64 va) {
    if (status != map_status::ok)
      throw std::logic_error(fmt::format("relink: cannot rebuild the entry for va {:#x} (status {})", va,
                                         static_cast<int>(status)));
  }

  Ops& ops_;
  const memory_image& image_;
  const frame_plan& plan_;
  const compaction_policy& policy_;
  compaction_stats& stats_;
  std::array<std::vector<u64>, 2> original_roots_;   // per half
  std::array<std::vector<table_addr>, 2> roots_;     // rebuilt roots so far per half, primacy order
};

nlohmann::json output_meta(const nlohmann::json& input_meta, const compaction_policy& policy,
                           const compaction_stats& stats) {
  nlohmann::json meta = input_meta.is_object() || input_meta.is_null() ? input_meta
                                                                       : nlohmann::json{{"input_meta", input_meta}};
  nlohmann::json recorded = policy.to_json();
  recorded["unbacked_leaves_dropped"] = stats.leaves_dropped_unbacked;
  recorded["leaves_made_cow"] = stats.leaves_made_cow;
  meta["compaction"] = std::move(recorded);
  return meta;
}

bool all_zero(const std::byte* bytes, u64 size) {
  u64 any = 0;
  for (u64 i = 0; i + 8 <= size; i += 8) {
    u64 word;
    std::memcpy(&word, bytes + i, 8);
    any |= word;
  }
  for (u64 i = size & ~u64{7}; i < size; ++i) any |= static_cast<u64>(bytes[i]);
  return any == 0;
}

bool write_all(int fd, const std::byte* bytes, u64 size, u64 offset) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, bytes, std::min<u64>(size, u64{1} << 30), static_cast<off_t>(offset));
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;  // no progress without an error: the device is full
      return false;
    }
    bytes += n;
    size -= static_cast<u64>(n);
    offset += static_cast<u64>(n);
  }
  return true;
}

// The output's backed pieces (data and tables) in address order.
std::vector<output_piece> all_pieces(const compacted_snapshot& s) {
  std::vector<output_piece> pieces = s.data;
  if (s.tables.table_count() > 0)
    pieces.push_back({s.tables.base(), s.tables.table_count() * s.tables.table_bytes(),
                      reinterpret_cast<const std::byte*>(s.tables.words().data())});
  std::sort(pieces.begin(), pieces.end(), [](const output_piece& a, const output_piece& b) { return a.gpa < b.gpa; });
  return pieces;
}

// Tables no entry can address would be a broken image: say so instead.
void check_tables_fit(const loaded_snapshot& input, const frame_plan& plan, u64 address_limit) {
  if (plan.table_base() <= address_limit && plan.table_bytes() <= address_limit - plan.table_base()) return;
  throw input_error(fmt::format("snapshot {}: no room for its {:#x} bytes of rebuilt page tables below the physical "
                                "address limit {:#x} (frames kept in place fill every gap large enough)",
                                input.id(), plan.table_bytes(), address_limit));
}

}  // namespace

std::vector<output_run> compacted_snapshot::runs() const {
  std::vector<output_run> out;
  for (const output_piece& p : all_pieces(*this)) {
    if (!out.empty() && out.back().gpa + out.back().size == p.gpa) out.back().size += p.size;
    else out.push_back({p.gpa, p.size});
  }
  return out;
}

compacted_snapshot compact_snapshot(const loaded_snapshot& input, const snapshot_walk& walk,
                                    const compaction_policy& policy) {
  if (walk.roots.size() != input.roots().size() || walk.offsets.size() != walk.roots.size() + 1)
    throw walk_mismatch(fmt::format("{}: walk has {} spaces, snapshot has {} roots", input.id(),
                                    walk.roots.size(), input.roots().size()));
  compacted_snapshot out;
  visit_format(input.format(), [&]<class Format>() {
    // Every rebuilt table is one granule, a smaller top table included.
    const u64 granule_bytes = Format::table_bytes(Format::levels - 1);
    const u64 address_limit = (Format::address_mask | (granule_bytes - 1)) + 1;
    frame_plan plan(input.image, walk, policy, granule_bytes, address_limit, out.stats);
    check_tables_fit(input, plan, address_limit);
    out.tables = page_table_buffer(plan.table_base(), granule_bytes);
    std::vector<u64> upper_tables;
    for (const u64 ttbr1 : input.upper_roots()) upper_tables.push_back(root_table_address<Format>(ttbr1));
    const auto new_roots = relinker<Format, page_table_buffer>(out.tables, input.image, plan, policy, out.stats)
                               .run(walk, upper_tables);
    out.data = plan.take_pieces();
    // The non-address bits of the input roots (CR3 PCID; TTBR ASID and CnP) stay.
    const auto kept_bits = [](u64 root) { return root & ~Format::root_table_address(~u64{0}); };
    for (std::size_t i = 0; i < new_roots[0].size(); ++i)
      out.spec.roots.push_back(new_roots[0][i] | kept_bits(input.roots()[i]));
    for (std::size_t i = 0; i < new_roots[1].size(); ++i)
      out.spec.upper_roots.push_back(new_roots[1][i] | kept_bits(input.upper_roots()[i]));
  });

  out.spec.id = input.id();
  out.spec.format = input.format();
  out.spec.labels = input.spec.labels;
  out.stats.spaces = out.spec.roots.size();
  out.stats.tables = out.tables.table_count();
  out.stats.bytes_in = input.image.backed_bytes();
  for (const output_run& run : out.runs()) out.stats.bytes_out += run.size;
  out.spec.meta = output_meta(input.spec.meta, policy, out.stats);
  return out;
}

memory_image materialize(const compacted_snapshot& snapshot) {
  memory_image image;
  const std::vector<output_piece> pieces = all_pieces(snapshot);
  std::size_t next = 0;
  for (const output_run& run : snapshot.runs()) {
    std::vector<std::byte> bytes(run.size);
    for (; next < pieces.size() && pieces[next].gpa < run.gpa + run.size; ++next)
      if (pieces[next].bytes != nullptr)
        std::memcpy(bytes.data() + (pieces[next].gpa - run.gpa), pieces[next].bytes, pieces[next].size);
    image.add_owned_region(run.gpa, std::move(bytes), "compacted " + snapshot.spec.id);
  }
  return image;
}

memory_source write_compacted_image(const compacted_snapshot& snapshot, const std::filesystem::path& file,
                                    std::string_view shown_as) {
  const std::string shown = shown_as.empty() ? file.string() : std::string(shown_as);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw input_error(fmt::format("{}: cannot create: {}", shown, std::strerror(errno)));
  bool ok = true;
  u64 offset = 0;  // in the file
  for (const output_piece& p : all_pieces(snapshot)) {
    // Runs of non-zero blocks are written; zero blocks (and zero pieces) stay holes.
    for (u64 at = 0; ok && p.bytes != nullptr && at < p.size;) {
      const u64 block = std::min(page_4k, p.size - at);
      if (all_zero(p.bytes + at, block)) {
        at += block;
        continue;
      }
      u64 end = at + block;
      while (end < p.size && !all_zero(p.bytes + end, std::min(page_4k, p.size - end)))
        end += std::min(page_4k, p.size - end);
      ok = write_all(fd, p.bytes + at, end - at, offset + at);
      at = end;
    }
    offset += p.size;
  }
  ok = ok && ::ftruncate(fd, static_cast<off_t>(offset)) == 0;
  int error = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (!ok) throw input_error(fmt::format("{}: write failed: {}", shown, std::strerror(error)));

  const std::string name = file.filename().string();
  const std::vector<output_run> runs = snapshot.runs();
  if (runs.size() <= 1) return raw_source{name, runs.empty() ? 0 : runs.front().gpa};
  region_source regions;
  u64 file_offset = 0;
  for (const output_run& run : runs) {
    regions.regions.push_back({name, run.gpa, run.size, file_offset});
    file_offset += run.size;
  }
  return regions;
}

}  // namespace ptwalk
