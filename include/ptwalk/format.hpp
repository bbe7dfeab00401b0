// ptwalk/format.hpp — paging formats as compile-time traits (SPEC §2).
//
// A format says how many levels a walk has, what one entry at each depth
// covers, and how to decode and encode entries. Everything is constexpr and
// PTWALK_HD so the same decoding runs in the reference walker, the CPU
// backends and the CUDA kernels. Depth 0 is the root table.
#pragma once

#include <optional>
#include <string_view>

#include "ptwalk/config.hpp"

namespace ptwalk {

// Effective permission and marker bits of a leaf, as reported in records.
enum perm_bits : u8 {
  perm_writable = 1u << 0,
  perm_user = 1u << 1,
  perm_executable = 1u << 2,
  perm_cow = 1u << 3,
};
// The identity of the AND/AND/NOT-OR accumulation along a path.
inline constexpr u8 perm_path_start = perm_writable | perm_user | perm_executable;

enum class entry_kind : u8 { not_present, leaf, table };

// x86-64 long-mode paging with Levels = 4 (48-bit VA) or 5 (LA57, 57-bit VA).
template <unsigned Levels>
struct x86_64_paging {
  static_assert(Levels == 4 || Levels == 5);

  static constexpr unsigned levels = Levels;
  static constexpr unsigned va_bits = 12 + 9 * Levels;
  static constexpr unsigned entries_per_table = 512;
  static constexpr u64 table_bytes = 4096;
  static constexpr u64 max_va_linear = (u64{1} << va_bits) - 1;

  static constexpr u64 bit_present = u64{1} << 0;
  static constexpr u64 bit_writable = u64{1} << 1;
  static constexpr u64 bit_user = u64{1} << 2;
  static constexpr u64 bit_page_size = u64{1} << 7;
  static constexpr u64 bit_no_execute = u64{1} << 63;
  static constexpr u64 address_mask = 0x000f'ffff'ffff'f000ull;  // bits 51:12
  static constexpr u64 cow_field_mask = u64{7} << 9;             // available bits 11:9
  static constexpr u64 cow_field_value = u64{1} << 9;            // 0b001: Hyperlight's CoW marker

  // log2 of the bytes one entry at `depth` covers: 39/30/21/12 for 4 levels.
  PTWALK_HD static constexpr unsigned entry_shift(unsigned depth) {
    return 12 + 9 * (Levels - 1 - depth);
  }
  PTWALK_HD static constexpr u64 entry_span(unsigned depth) { return u64{1} << entry_shift(depth); }
  PTWALK_HD static constexpr unsigned table_index(u64 va, unsigned depth) {
    return static_cast<unsigned>((va >> entry_shift(depth)) & 511u);
  }
  // PS makes a leaf only in the PDPT (1 GiB) and PD (2 MiB); every PT entry is a leaf.
  PTWALK_HD static constexpr bool can_be_large_leaf(unsigned depth) {
    return depth + 3 == Levels || depth + 2 == Levels;
  }
  PTWALK_HD static constexpr bool is_last_depth(unsigned depth) { return depth + 1 == Levels; }

  PTWALK_HD static constexpr bool present(u64 entry) { return (entry & bit_present) != 0; }
  PTWALK_HD static constexpr entry_kind classify(u64 entry, unsigned depth) {
    if (!present(entry)) return entry_kind::not_present;
    if (is_last_depth(depth)) return entry_kind::leaf;
    if (can_be_large_leaf(depth) && (entry & bit_page_size) != 0) return entry_kind::leaf;
    return entry_kind::table;
  }
  // Address bits of a leaf at `depth`: 51:12, 51:21 or 51:30.
  PTWALK_HD static constexpr u64 leaf_address_mask(unsigned depth) {
    return address_mask & ~(entry_span(depth) - 1);
  }
  PTWALK_HD static constexpr u64 table_address(u64 entry) { return entry & address_mask; }
  PTWALK_HD static constexpr u64 leaf_address(u64 entry, unsigned depth) {
    return entry & leaf_address_mask(depth);
  }
  PTWALK_HD static constexpr u64 leaf_flags(u64 entry, unsigned depth) {
    return entry & ~leaf_address_mask(depth);
  }
  PTWALK_HD static constexpr bool is_cow(u64 leaf_entry) {
    return (leaf_entry & cow_field_mask) == cow_field_value;
  }
  // One step of the effective-permission accumulation along a path.
  PTWALK_HD static constexpr u8 accumulate_perms(u8 path, u64 entry) {
    u8 step = 0;
    if (entry & bit_writable) step |= perm_writable;
    if (entry & bit_user) step |= perm_user;
    if (!(entry & bit_no_execute)) step |= perm_executable;
    return static_cast<u8>(path & step);
  }
  // Permissions and markers of a leaf reached with `path` accumulated above it.
  PTWALK_HD static constexpr u8 leaf_perms(u8 path, u64 leaf_entry) {
    u8 perms = accumulate_perms(path, leaf_entry);
    if (is_cow(leaf_entry)) perms |= perm_cow;
    return perms;
  }

  // Encoders: `flags` are the non-address bits to keep verbatim (for a table
  // entry the caller keeps PS clear where it would mean a leaf); a leaf gets
  // PS where its depth needs it.
  PTWALK_HD static constexpr u64 make_table_entry(u64 table_pa, u64 flags) {
    return (flags & ~address_mask) | (table_pa & address_mask) | bit_present;
  }
  PTWALK_HD static constexpr u64 make_leaf_entry(u64 pa, unsigned depth, u64 flags) {
    u64 entry = (flags & ~leaf_address_mask(depth)) | (pa & leaf_address_mask(depth)) | bit_present;
    if (can_be_large_leaf(depth)) entry |= bit_page_size;
    return entry;
  }
  // Depth at which a leaf of 2^page_shift bytes lives, if this format has one.
  PTWALK_HD static constexpr int leaf_depth_for_shift(unsigned page_shift) {
    for (unsigned d = 0; d < Levels; ++d)
      if (entry_shift(d) == page_shift && (is_last_depth(d) || can_be_large_leaf(d)))
        return static_cast<int>(d);
    return -1;
  }

  // Canonical form: sign-extend from bit va_bits-1. Linear form: the low va_bits.
  // Both orders agree, so records sorted by canonical VA are in VA order.
  PTWALK_HD static constexpr u64 canonical(u64 va) {
    const unsigned unused = 64 - va_bits;
    return static_cast<u64>(static_cast<std::int64_t>(va << unused) >> unused);
  }
  PTWALK_HD static constexpr u64 linear(u64 va) { return va & max_va_linear; }
  PTWALK_HD static constexpr bool is_canonical(u64 va) { return canonical(va) == va; }
};

using x86_64_4level = x86_64_paging<4>;
using x86_64_5level = x86_64_paging<5>;

// The largest number of levels any format has; sizes per-depth statistics.
inline constexpr unsigned max_levels = 5;

// Runtime name of a format, as in manifests.
enum class paging_format : u8 { x86_64, x86_64_la57 };

[[nodiscard]] constexpr std::string_view format_name(paging_format f) {
  return f == paging_format::x86_64 ? "x86_64" : "x86_64-la57";
}
[[nodiscard]] constexpr std::optional<paging_format> parse_format(std::string_view name) {
  if (name == "x86_64") return paging_format::x86_64;
  if (name == "x86_64-la57") return paging_format::x86_64_la57;
  return std::nullopt;
}
[[nodiscard]] constexpr unsigned format_levels(paging_format f) {
  return f == paging_format::x86_64 ? 4 : 5;
}

// Calls fn.template operator()<Format>() with the trait type for `f`.
template <class Fn>
decltype(auto) visit_format(paging_format f, Fn&& fn) {
  if (f == paging_format::x86_64_la57) return fn.template operator()<x86_64_5level>();
  return fn.template operator()<x86_64_4level>();
}

}  // namespace ptwalk
