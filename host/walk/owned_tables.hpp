// host/owned_tables.hpp — every non-zero entry of the tables one space owns, in VA order.
//
// A walk (SPEC §3) decides which tables a space owns and which it shares,
// but reports only present leaves and links. Rebuilding a space, and
// checking a rebuild, also need what a walk leaves out: the flag bits of the
// link entries and the not-present entries whose bits are not zero
// (OS-private: swap entries, PROT_NONE). for_each_owned_entry re-reads the
// tables the walk says a space owns, descends where the walk descended and
// stops where it emitted AnotherSpace, and hands each non-zero entry to a
// visitor with the entries above it. It checks the walk's records against
// the image on the way, so a walk from another backend that disagrees with
// the image is caught here rather than rebuilt wrongly.
#pragma once

#include <array>
#include <cstring>
#include <span>
#include <stdexcept>
#include <type_traits>

#include <fmt/format.h>

#include "input/memory_image.hpp"
#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"

namespace ptwalk {

enum class owned_entry_kind { leaf, link, os_private };

struct owned_entry {
  owned_entry_kind kind;
  unsigned depth;                     // depth of the table holding the entry
  u64 va;                             // canonical start of what the entry covers
  u64 entry;                          // the raw entry
  std::span<const u64> path;          // the entries at depths 0..depth-1 that lead here
  const space_aware_mapping* record;  // the leaf or alias record; null for os_private
};

// The walk given does not describe the image (wrong image, or a backend bug).
class walk_mismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class Format, class Visitor>
class owned_entry_walker {
 public:
  owned_entry_walker(const memory_image& image, std::span<const space_aware_mapping> records,
                     Visitor& visit)
      : image_(image), records_(records), visit_(visit) {}

  void run(u64 root) {
    walk_table(root, 0, 0);
    if (next_ != records_.size()) mismatch(records_[next_].va, "record not found in the tables");
  }

 private:
  void walk_table(u64 table_pa, unsigned depth, u64 block_va) {
    std::array<u64, Format::entries_per_table> entries = read_table(table_pa);
    for (unsigned index = 0; index < Format::entries_per_table; ++index) {
      const u64 entry = entries[index];
      if (entry == 0) continue;
      const u64 va = block_va + (u64{index} << Format::entry_shift(depth));
      const u64 canonical_va = Format::canonical(va);
      const std::span<const u64> path(path_.data(), depth);
      switch (Format::classify(entry, depth)) {
        case entry_kind::not_present:
          visit_(owned_entry{owned_entry_kind::os_private, depth, canonical_va, entry, path, nullptr});
          break;
        case entry_kind::leaf: {
          const space_aware_mapping* r = take(canonical_va);
          if (r == nullptr || !r->is_leaf() || r->depth != depth ||
              r->pa != Format::leaf_address(entry, depth))
            mismatch(canonical_va, "leaf entry without its leaf record");
          visit_(owned_entry{owned_entry_kind::leaf, depth, canonical_va, entry, path, r});
          break;
        }
        case entry_kind::table: {
          const space_aware_mapping* r = peek(canonical_va);
          if (r != nullptr && !r->is_leaf() && r->depth == depth + 1) {
            ++next_;
            visit_(owned_entry{owned_entry_kind::link, depth, canonical_va, entry, path, r});
          } else {
            path_[depth] = entry;
            walk_table(Format::table_address(entry), depth + 1, va);
          }
          break;
        }
      }
    }
  }

  // A table read whole when one region backs it; entry by entry (unbacked
  // ones read as 0, as in the walk) when it is cut off.
  std::array<u64, Format::entries_per_table> read_table(u64 table_pa) const {
    std::array<u64, Format::entries_per_table> entries{};
    if (const std::byte* bytes = image_.bytes_at(table_pa, Format::table_bytes(0))) {
      std::memcpy(entries.data(), bytes, Format::table_bytes(0));
      return entries;
    }
    for (unsigned i = 0; i < Format::entries_per_table; ++i) {
      bool backed = false;
      entries[i] = image_.read_u64(table_pa + 8 * u64{i}, backed);
    }
    return entries;
  }

  const space_aware_mapping* peek(u64 canonical_va) const {
    return next_ < records_.size() && records_[next_].va == canonical_va ? &records_[next_] : nullptr;
  }
  const space_aware_mapping* take(u64 canonical_va) {
    const space_aware_mapping* r = peek(canonical_va);
    if (r != nullptr) ++next_;
    return r;
  }
  [[noreturn]] static void mismatch(u64 va, const char* what) {
    throw walk_mismatch(fmt::format("walk does not match the image at va {:#x}: {}", va, what));
  }

  const memory_image& image_;
  std::span<const space_aware_mapping> records_;
  Visitor& visit_;
  std::size_t next_ = 0;
  std::array<u64, max_levels> path_{};
};

}  // namespace detail

// Visits the entries of the tables under `root` that the space with these
// records (one space of a full-range walk) owns. A space whose root is
// itself shared (a depth-0 AnotherSpace) owns nothing and visits nothing.
template <class Format, class Visitor>
void for_each_owned_entry(const memory_image& image, u64 root,
                          std::span<const space_aware_mapping> records, Visitor&& visit) {
  if (!records.empty() && !records.front().is_leaf() && records.front().depth == 0) {
    if (records.size() != 1) throw walk_mismatch("walk has records below a shared root");
    return;
  }
  detail::owned_entry_walker<Format, std::remove_reference_t<Visitor>>(image, records, visit).run(root);
}

}  // namespace ptwalk
