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
// the image is caught here rather than rebuilt wrongly. It works on one half
// of a space (format.hpp) at a time: records_of_half splits a space's records.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "input/memory_image.hpp"
#include "ptwalk/format.hpp"
#include "ptwalk/mapping.hpp"
#include "ptwalk/walk.hpp"

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

  void run(u64 root, unsigned half) {
    walk_table(root, 0, half_start<Format>(half));
    if (next_ != records_.size()) mismatch(records_[next_].va, "record not found in the tables");
  }

 private:
  void walk_table(u64 table_pa, unsigned depth, u64 block_va) {
    const std::vector<u64>& entries = read_table(table_pa, depth);
    for (unsigned index = 0; index < Format::entries(depth); ++index) {
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
  // ones read as 0, as in the walk) when it is cut off. One buffer per depth:
  // the recursion holds one table per depth at a time.
  const std::vector<u64>& read_table(u64 table_pa, unsigned depth) {
    std::vector<u64>& entries = tables_[depth];
    entries.assign(Format::entries(depth), 0);
    if (const std::byte* bytes = image_.bytes_at(table_pa, Format::table_bytes(depth))) {
      std::memcpy(entries.data(), bytes, Format::table_bytes(depth));
      return entries;
    }
    for (unsigned i = 0; i < Format::entries(depth); ++i) {
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
  std::array<std::vector<u64>, max_levels> tables_;
};

}  // namespace detail

// The records of one half of a space (lower half: 0), from all of its records.
template <class Format>
std::span<const space_aware_mapping> records_of_half(std::span<const space_aware_mapping> records,
                                                     unsigned half) {
  const auto upper = std::partition_point(records.begin(), records.end(), [](const space_aware_mapping& r) {
    return half_of<Format>(r.va) == 0;
  });
  return half == 0 ? std::span(records.begin(), upper) : std::span(upper, records.end());
}

// Whether a half's records say its root is another visit's root (a depth-0
// AnotherSpace, then nothing else).
inline bool root_is_shared(std::span<const space_aware_mapping> half_records) {
  if (half_records.empty() || half_records.front().is_leaf() || half_records.front().depth != 0) return false;
  if (half_records.size() != 1) throw walk_mismatch("walk has records below a shared root");
  return true;
}

// Visits the entries of the tables under `root` (the root table of half
// `half`) that the space with these records (that half's records of one
// space of a full-range walk) owns. A half whose root is itself shared owns
// nothing and visits nothing.
template <class Format, class Visitor>
void for_each_owned_entry(const memory_image& image, u64 root, unsigned half,
                          std::span<const space_aware_mapping> half_records, Visitor&& visit) {
  if (root_is_shared(half_records)) return;
  detail::owned_entry_walker<Format, std::remove_reference_t<Visitor>>(image, half_records, visit).run(root, half);
}

}  // namespace ptwalk
