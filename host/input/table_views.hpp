// host/table_views.hpp — the three host implementations of the table-ops interfaces.
//
// - image_table_view: read-only tables inside a memory_image; unbacked
//   reads return 0 and are counted as dangling.
// - page_table_buffer: a growable buffer of fresh tables at a chosen
//   physical base (compaction builds its tables here); tables never move.
//   Every table is one granule (Format::table_bytes of a full table: 4, 16
//   or 64 KiB), a smaller AArch64 top table included, so all stay aligned.
// - cow_table_view: a read-only image with a scratch buffer on top; the first
//   write to a table that lives in the image copies it to scratch, so the
//   table moves and its parents are relinked up to a new root.
// All addresses are guest-physical (`table_addr` = u64).
#pragma once

#include <cstring>
#include <optional>
#include <vector>

#include "input/memory_image.hpp"
#include "ptwalk/table_ops.hpp"

namespace ptwalk {

class image_table_view {
 public:
  using table_addr = u64;

  explicit image_table_view(const memory_image& image, u64 root = 0) : image_(&image), root_(root) {}

  [[nodiscard]] u64 entry_addr(u64 table, u64 index) const { return table + 8 * index; }
  [[nodiscard]] u64 read_entry(u64 addr) const {
    bool backed = false;
    const u64 entry = image_->read_u64(addr, backed);
    if (!backed) ++dangling_;
    return entry;
  }
  [[nodiscard]] u64 to_phys(u64 addr) const { return addr; }
  [[nodiscard]] u64 from_phys(u64 pa) const { return pa; }
  [[nodiscard]] u64 root_table() const { return root_; }
  [[nodiscard]] u64 dangling_reads() const { return dangling_; }

 private:
  const memory_image* image_;
  u64 root_;
  mutable u64 dangling_ = 0;
};

class page_table_buffer {
 public:
  using table_addr = u64;
  using movability = may_not_move_table;

  // Tables are allocated at base, base + table_bytes, …; the first one is the
  // root unless update_root says otherwise. `base` is table_bytes-aligned.
  explicit page_table_buffer(u64 base, u64 table_bytes = 4096) : base_(base), table_bytes_(table_bytes) {}

  [[nodiscard]] u64 entry_addr(u64 table, u64 index) const { return table + 8 * index; }
  [[nodiscard]] u64 read_entry(u64 addr) const {
    return contains(addr) ? words_[(addr - base_) / 8] : 0;
  }
  [[nodiscard]] u64 to_phys(u64 addr) const { return addr; }
  [[nodiscard]] u64 from_phys(u64 pa) const { return pa; }
  [[nodiscard]] u64 root_table() const { return root_; }

  u64 alloc_table() {
    const u64 table = base_ + words_.size() * 8;
    words_.resize(words_.size() + table_bytes_ / 8, 0);
    return table;
  }
  void write_entry(u64 addr, u64 entry) {
    if (!contains(addr)) throw std::logic_error("page_table_buffer: write outside the buffer");
    words_[(addr - base_) / 8] = entry;
  }
  void update_root(u64 table) { root_ = table; }

  [[nodiscard]] bool contains(u64 addr) const {
    return addr >= base_ && addr - base_ < words_.size() * 8;
  }
  [[nodiscard]] u64 base() const { return base_; }
  [[nodiscard]] u64 table_bytes() const { return table_bytes_; }
  [[nodiscard]] u64 table_count() const { return words_.size() * 8 / table_bytes_; }
  [[nodiscard]] std::span<const u64> words() const { return words_; }

 private:
  u64 base_;
  u64 table_bytes_;
  u64 root_ = 0;
  std::vector<u64> words_;
};

class cow_table_view {
 public:
  using table_addr = u64;
  using movability = may_move_table;

  // `scratch_base` must lie above every region of `base`; tables are
  // `table_bytes` (one granule) each, except a smaller root table.
  cow_table_view(const memory_image& base, u64 root, u64 scratch_base, u64 table_bytes = 4096)
      : base_(base, root), scratch_(scratch_base, table_bytes), root_(root) {}

  [[nodiscard]] u64 entry_addr(u64 table, u64 index) const { return table + 8 * index; }
  [[nodiscard]] u64 read_entry(u64 addr) const {
    return scratch_.contains(addr) ? scratch_.read_entry(addr) : base_.read_entry(addr);
  }
  [[nodiscard]] u64 to_phys(u64 addr) const { return addr; }
  [[nodiscard]] u64 from_phys(u64 pa) const { return pa; }
  [[nodiscard]] u64 root_table() const { return root_; }

  u64 alloc_table() { return scratch_.alloc_table(); }
  // A write into a base table first copies that table to scratch: the table
  // moves, and the caller's update_parent chain relinks it.
  std::optional<u64> write_entry(u64 addr, u64 entry) {
    if (scratch_.contains(addr)) {
      scratch_.write_entry(addr, entry);
      return std::nullopt;
    }
    // The granule holding the table is copied whole; a root table smaller
    // than a granule keeps its offset inside it.
    const u64 granule = scratch_.table_bytes();
    const u64 old_granule = addr & ~(granule - 1);
    const u64 new_granule = scratch_.alloc_table();
    for (u64 i = 0; i < granule / 8; ++i)
      scratch_.write_entry(new_granule + 8 * i, base_.read_entry(old_granule + 8 * i));
    scratch_.write_entry(new_granule + (addr - old_granule), entry);
    const bool root_granule = (root_ & ~(granule - 1)) == old_granule;
    return new_granule + (root_granule ? root_ - old_granule : 0);
  }
  void update_root(u64 table) { root_ = table; }

  [[nodiscard]] const page_table_buffer& scratch() const { return scratch_; }

 private:
  image_table_view base_;
  page_table_buffer scratch_;
  u64 root_;
};

static_assert(table_read_ops<image_table_view>);
static_assert(table_write_ops<page_table_buffer>);
static_assert(table_write_ops<cow_table_view>);

}  // namespace ptwalk
