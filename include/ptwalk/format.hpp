// ptwalk/format.hpp — paging formats as compile-time traits (SPEC §2, §2.1).
//
// x86_64_paging<4|5> and aarch64_paging<granule, VA bits> have the same
// members, so every walker, encoder and test is written once over "Format".
// A format says how many levels a walk has, what one entry at each depth
// covers, and how to decode and encode entries. Everything is constexpr and
// PTWALK_HD so the same decoding runs in the reference walker, the CPU
// backends and the CUDA kernels. Depth 0 is the root table.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
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
inline constexpr u8 record_perm_mask = perm_writable | perm_user | perm_executable | perm_cow;

enum class entry_kind : u8 { not_present, leaf, table };

// Members every format has (generic code uses only these):
//   levels, va_bits, page_shift, linear_bits, halves, min_table_span_shift,
//   perm_path_start, bit_present, max_va_linear,
//   entries(depth), table_bytes(depth), entry_shift(depth), entry_span(depth),
//   table_index(linear_va, depth), can_be_large_leaf, is_last_depth, present,
//   classify, table_address, leaf_address, leaf_flags, leaf_address_mask,
//   is_cow, writable_by_own_bits, as_cow_leaf, accumulate_perms, leaf_perms, make_table_entry, make_leaf_entry,
//   leaf_depth_for_shift, canonical, linear, is_canonical,
//   root_table_address(cr3 or ttbr).
// A space's VAs are one linear range [0, 2^linear_bits): the lower half,
// then (AArch64) the upper half from 2^va_bits, so ascending linear VA is
// ascending canonical VA. Each half has one root table of entries(0)
// entries spanning 2^va_bits; `halves` says how many roots a space can have.
// The permission path is one u8 accumulated from perm_path_start by
// accumulate_perms over the table entries; leaf_perms turns it and the leaf
// into the record's perm_bits.

// Members every format derives the same way from its own entry_shift,
// entries, address_mask, levels and leaf rules (CRTP: one copy for all).
template <class Format>
struct paging_common {
  PTWALK_HD static constexpr u64 entry_span(unsigned depth) { return u64{1} << Format::entry_shift(depth); }
  PTWALK_HD static constexpr u64 table_bytes(unsigned depth) { return 8 * u64{Format::entries(depth)}; }
  // Address bits of a leaf at `depth`: the format's address bits above the leaf's span.
  PTWALK_HD static constexpr u64 leaf_address_mask(unsigned depth) {
    return Format::address_mask & ~(entry_span(depth) - 1);
  }
  PTWALK_HD static constexpr u64 table_address(u64 entry) { return entry & Format::address_mask; }
  PTWALK_HD static constexpr u64 leaf_address(u64 entry, unsigned depth) {
    return entry & leaf_address_mask(depth);
  }
  PTWALK_HD static constexpr u64 leaf_flags(u64 entry, unsigned depth) {
    return entry & ~leaf_address_mask(depth);
  }
  PTWALK_HD static constexpr bool present(u64 entry) { return (entry & Format::bit_present) != 0; }
  // Depth at which a leaf of 2^shift bytes lives, if this format has one.
  PTWALK_HD static constexpr int leaf_depth_for_shift(unsigned shift) {
    for (unsigned d = 0; d < Format::levels; ++d)
      if (Format::entry_shift(d) == shift && (Format::is_last_depth(d) || Format::can_be_large_leaf(d)))
        return static_cast<int>(d);
    return -1;
  }
};

// x86-64 long-mode paging with Levels = 4 (48-bit VA) or 5 (LA57, 57-bit VA).
template <unsigned Levels>
struct x86_64_paging : paging_common<x86_64_paging<Levels>> {
  using common = paging_common<x86_64_paging<Levels>>;
  using common::entry_span, common::table_bytes, common::leaf_address_mask, common::table_address,
      common::leaf_address, common::leaf_flags, common::present, common::leaf_depth_for_shift;

  static_assert(Levels == 4 || Levels == 5);

  static constexpr unsigned levels = Levels;
  static constexpr unsigned va_bits = 12 + 9 * Levels;
  static constexpr unsigned page_shift = 12;
  // One root covers the whole canonical space: linear = the low va_bits.
  static constexpr unsigned linear_bits = va_bits;
  static constexpr unsigned halves = 1;
  static constexpr unsigned min_table_span_shift = 21;  // a page table spans 2 MiB
  static constexpr unsigned entries_per_table = 512;
  static constexpr u64 max_va_linear = (u64{1} << linear_bits) - 1;
  // The path identity of the AND/AND/NOT-OR accumulation: the record bits themselves.
  static constexpr u8 perm_path_start = perm_writable | perm_user | perm_executable;

  static constexpr u64 bit_present = u64{1} << 0;
  static constexpr u64 bit_writable = u64{1} << 1;
  static constexpr u64 bit_user = u64{1} << 2;
  static constexpr u64 bit_page_size = u64{1} << 7;
  static constexpr u64 bit_no_execute = u64{1} << 63;
  static constexpr u64 address_mask = 0x000f'ffff'ffff'f000ull;  // bits 51:12
  static constexpr u64 cow_field_mask = u64{7} << 9;             // available bits 11:9
  static constexpr u64 cow_field_value = u64{1} << 9;            // 0b001: Hyperlight's CoW marker

  PTWALK_HD static constexpr unsigned entries(unsigned) { return entries_per_table; }
  // log2 of the bytes one entry at `depth` covers: 39/30/21/12 for 4 levels.
  PTWALK_HD static constexpr unsigned entry_shift(unsigned depth) {
    return 12 + 9 * (Levels - 1 - depth);
  }
  PTWALK_HD static constexpr unsigned table_index(u64 va, unsigned depth) {
    return static_cast<unsigned>((va >> entry_shift(depth)) & 511u);
  }
  // PS makes a leaf only in the PDPT (1 GiB) and PD (2 MiB); every PT entry is a leaf.
  PTWALK_HD static constexpr bool can_be_large_leaf(unsigned depth) {
    return depth + 3 == Levels || depth + 2 == Levels;
  }
  PTWALK_HD static constexpr bool is_last_depth(unsigned depth) { return depth + 1 == Levels; }

  PTWALK_HD static constexpr entry_kind classify(u64 entry, unsigned depth) {
    if (!present(entry)) return entry_kind::not_present;
    if (is_last_depth(depth)) return entry_kind::leaf;
    if (can_be_large_leaf(depth) && (entry & bit_page_size) != 0) return entry_kind::leaf;
    return entry_kind::table;
  }
  // A CR3 value loses its low 12 bits (PCID or PWT/PCD) and anything above
  // the physical address field.
  PTWALK_HD static constexpr u64 root_table_address(u64 cr3) { return table_address(cr3); }
  PTWALK_HD static constexpr bool is_cow(u64 leaf_entry) {
    return (leaf_entry & cow_field_mask) == cow_field_value;
  }
  // --cow-writable: a leaf writable by its own bits becomes read-only CoW (Hyperlight).
  PTWALK_HD static constexpr bool writable_by_own_bits(u64 leaf_entry) { return (leaf_entry & bit_writable) != 0; }
  PTWALK_HD static constexpr u64 as_cow_leaf(u64 leaf_entry) {
    return (leaf_entry & ~(bit_writable | cow_field_mask)) | cow_field_value;
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

// AArch64 stage-1 translation (EL1&0 regime, SPEC §2.1) with a 4, 16 or 64
// KiB granule and VaBits = 64 - TnSZ for both halves; 48-bit output
// addresses; table attributes honoured (TCR.HPDn = 0).
template <unsigned GranuleShift, unsigned VaBits>
struct aarch64_paging : paging_common<aarch64_paging<GranuleShift, VaBits>> {
  using common = paging_common<aarch64_paging<GranuleShift, VaBits>>;
  using common::entry_span, common::table_bytes, common::leaf_address_mask, common::table_address,
      common::leaf_address, common::leaf_flags, common::present, common::leaf_depth_for_shift;

  static_assert(GranuleShift == 12 || GranuleShift == 14 || GranuleShift == 16);

  static constexpr unsigned page_shift = GranuleShift;
  static constexpr unsigned va_bits = VaBits;
  static constexpr unsigned index_bits = GranuleShift - 3;  // VA bits a full table resolves
  static constexpr unsigned levels = (VaBits - GranuleShift + index_bits - 1) / index_bits;
  static_assert(levels >= 2 && levels <= 4 && VaBits <= 48);
  // The ARM level number of depth 0; the last depth is always level 3.
  static constexpr unsigned first_level = 4 - levels;
  // Lower half at linear [0, 2^va_bits), upper half at [2^va_bits, 2^(va_bits+1)).
  static constexpr unsigned linear_bits = VaBits + 1;
  static constexpr unsigned halves = 2;
  static constexpr unsigned min_table_span_shift = GranuleShift + index_bits;
  static constexpr u64 max_va_linear = (u64{1} << linear_bits) - 1;

  // Descriptor bits (Arm ARM D8.3).
  static constexpr u64 bit_present = u64{1} << 0;           // valid
  static constexpr u64 bit_table_or_page = u64{1} << 1;     // 11 = table/page, 01 = block
  static constexpr u64 type_mask = bit_present | bit_table_or_page;
  static constexpr u64 bit_ap_el0 = u64{1} << 6;            // AP[1]: EL0 may access
  static constexpr u64 bit_ap_read_only = u64{1} << 7;      // AP[2]
  static constexpr u64 bit_access_flag = u64{1} << 10;
  static constexpr u64 bit_not_global = u64{1} << 11;       // nG
  static constexpr u64 bit_dirty_modifier = u64{1} << 51;   // DBM: writable-clean
  static constexpr u64 bit_contiguous = u64{1} << 52;
  static constexpr u64 bit_pxn = u64{1} << 53;
  static constexpr u64 bit_uxn = u64{1} << 54;
  static constexpr u64 software_field_mask = u64{0xf} << 55;  // bits 58:55
  static constexpr u64 cow_software_value = u64{1} << 55;     // 0b0001: Hyperlight's CoW page
  static constexpr u64 bit_pxn_table = u64{1} << 59;
  static constexpr u64 bit_uxn_table = u64{1} << 60;
  static constexpr u64 bit_ap_table_no_el0 = u64{1} << 61;    // APTable[0]
  static constexpr u64 bit_ap_table_read_only = u64{1} << 62; // APTable[1]
  // Output address bits 47:granule of tables and pages; bits above 47 are ignored.
  static constexpr u64 address_mask = ((u64{1} << 48) - 1) & ~((u64{1} << GranuleShift) - 1);

  // The path accumulator: "still allowed" bits that table descriptors can
  // only clear. perm_writable = APTable[1] clear, perm_user = APTable[0]
  // clear, perm_executable = UXNTable clear, path_privileged_executable =
  // PXNTable clear (never in a record).
  static constexpr u8 path_privileged_executable = 1u << 4;
  static constexpr u8 perm_path_start =
      perm_writable | perm_user | perm_executable | path_privileged_executable;

  PTWALK_HD static constexpr unsigned entry_shift(unsigned depth) {
    return GranuleShift + index_bits * (levels - 1 - depth);
  }
  // The top table resolves what is left of the VA bits: it may hold fewer entries.
  PTWALK_HD static constexpr unsigned entries(unsigned depth) {
    return depth == 0 ? 1u << (VaBits - entry_shift(0)) : 1u << index_bits;
  }
  // The index mask drops the half bit at depth 0: both halves use the same index bits.
  PTWALK_HD static constexpr unsigned table_index(u64 va, unsigned depth) {
    return static_cast<unsigned>((va >> entry_shift(depth)) & (entries(depth) - 1));
  }
  // Blocks without FEAT_LPA2: 1 GiB (level 1) and 2 MiB (level 2) for 4 KiB,
  // 32 MiB for 16 KiB, 512 MiB for 64 KiB (both level 2).
  PTWALK_HD static constexpr bool can_be_large_leaf(unsigned depth) {
    const unsigned level = first_level + depth;
    return level == 2 || (GranuleShift == 12 && level == 1);
  }
  PTWALK_HD static constexpr bool is_last_depth(unsigned depth) { return depth + 1 == levels; }

  // x0 invalid; 11 table (page at level 3); 01 block where the granule allows
  // one, invalid elsewhere (reserved at level 3).
  PTWALK_HD static constexpr entry_kind classify(u64 entry, unsigned depth) {
    if (!present(entry)) return entry_kind::not_present;
    const bool type_11 = (entry & bit_table_or_page) != 0;
    if (is_last_depth(depth)) return type_11 ? entry_kind::leaf : entry_kind::not_present;
    if (type_11) return entry_kind::table;
    return can_be_large_leaf(depth) ? entry_kind::leaf : entry_kind::not_present;
  }
  // A TTBR value (SPEC §2.1): ASID (63:48) and CnP (bit 0) cleared, aligned
  // down to the top table's size (16 bytes for 16k-48: BADDR is bits 47:4).
  PTWALK_HD static constexpr u64 root_table_address(u64 ttbr) {
    return ttbr & ((u64{1} << 48) - 1) & ~(table_bytes(0) - 1);
  }

  // Not writable by its own bits: AP[2] set and DBM clear.
  PTWALK_HD static constexpr bool leaf_read_only(u64 leaf_entry) {
    return (leaf_entry & bit_ap_read_only) != 0 && (leaf_entry & bit_dirty_modifier) == 0;
  }
  PTWALK_HD static constexpr bool is_cow(u64 leaf_entry) {
    return (leaf_entry & software_field_mask) == cow_software_value && leaf_read_only(leaf_entry) &&
           (leaf_entry & bit_not_global) != 0;
  }
  // --cow-writable: AP[2] set, DBM clear, software value 0b0001 and nG, as Hyperlight does.
  PTWALK_HD static constexpr bool writable_by_own_bits(u64 leaf_entry) { return !leaf_read_only(leaf_entry); }
  PTWALK_HD static constexpr u64 as_cow_leaf(u64 leaf_entry) {
    return (leaf_entry & ~(bit_dirty_modifier | software_field_mask)) | bit_ap_read_only | bit_not_global |
           cow_software_value;
  }
  // A table descriptor clears what its APTable/UXNTable/PXNTable bits forbid below it.
  PTWALK_HD static constexpr u8 accumulate_perms(u8 path, u64 table_entry) {
    u8 forbidden = 0;
    if (table_entry & bit_ap_table_read_only) forbidden |= perm_writable;
    if (table_entry & bit_ap_table_no_el0) forbidden |= perm_user;
    if (table_entry & bit_uxn_table) forbidden |= perm_executable;
    if (table_entry & bit_pxn_table) forbidden |= path_privileged_executable;
    return static_cast<u8>(path & ~forbidden);
  }
  // SPEC §2.1: u = EL0 may access or execute; x = EL0 execute for a user
  // page, EL1 execute otherwise; w = AP[2] clear or DBM set, and no APTable[1].
  PTWALK_HD static constexpr u8 leaf_perms(u8 path, u64 leaf_entry) {
    const bool el0_exec = (path & perm_executable) != 0 && (leaf_entry & bit_uxn) == 0;
    const bool el1_exec = (path & path_privileged_executable) != 0 && (leaf_entry & bit_pxn) == 0;
    const bool user = ((path & perm_user) != 0 && (leaf_entry & bit_ap_el0) != 0) || el0_exec;
    const bool writable = (path & perm_writable) != 0 && !leaf_read_only(leaf_entry);
    u8 perms = 0;
    if (writable) perms |= perm_writable;
    if (user) perms |= perm_user;
    if (user ? el0_exec : el1_exec) perms |= perm_executable;
    if (is_cow(leaf_entry)) perms |= perm_cow;
    return perms;
  }

  // Encoders: `flags` are the non-address bits kept verbatim; the type bits
  // are forced (11 for tables and pages, 01 for blocks).
  PTWALK_HD static constexpr u64 make_table_entry(u64 table_pa, u64 flags) {
    return (flags & ~address_mask) | (table_pa & address_mask) | type_mask;
  }
  PTWALK_HD static constexpr u64 make_leaf_entry(u64 pa, unsigned depth, u64 flags) {
    const u64 type = is_last_depth(depth) ? type_mask : bit_present;
    return (flags & ~leaf_address_mask(depth) & ~type_mask) | (pa & leaf_address_mask(depth)) | type;
  }

  // Linear VA bit va_bits selects the half; canonical fills bits 63:va_bits
  // with it. linear() reads the half from bit 63 of a canonical VA.
  PTWALK_HD static constexpr u64 canonical(u64 linear_va) {
    const u64 low = linear_va & ((u64{1} << VaBits) - 1);
    return (linear_va >> VaBits) & 1 ? low | ~((u64{1} << VaBits) - 1) : low;
  }
  PTWALK_HD static constexpr u64 linear(u64 va) {
    return (va & ((u64{1} << VaBits) - 1)) | ((va >> 63) << VaBits);
  }
  PTWALK_HD static constexpr bool is_canonical(u64 va) { return canonical(linear(va)) == va; }
};

using aarch64_4k_48 = aarch64_paging<12, 48>;
using aarch64_4k_39 = aarch64_paging<12, 39>;
using aarch64_16k_47 = aarch64_paging<14, 47>;
using aarch64_16k_48 = aarch64_paging<14, 48>;
using aarch64_64k_42 = aarch64_paging<16, 42>;
using aarch64_64k_48 = aarch64_paging<16, 48>;

// The largest number of levels any format has; sizes per-depth statistics.
inline constexpr unsigned max_levels = 5;

// Runtime name of a format, as in manifests.
enum class paging_format : u8 {
  x86_64,
  x86_64_la57,
  aarch64_4k_48,
  aarch64_4k_39,
  aarch64_16k_47,
  aarch64_16k_48,
  aarch64_64k_42,
  aarch64_64k_48,
};
inline constexpr paging_format all_formats[] = {
    paging_format::x86_64,         paging_format::x86_64_la57,    paging_format::aarch64_4k_48,
    paging_format::aarch64_4k_39,  paging_format::aarch64_16k_47, paging_format::aarch64_16k_48,
    paging_format::aarch64_64k_42, paging_format::aarch64_64k_48,
};

[[nodiscard]] constexpr std::string_view format_name(paging_format f) {
  switch (f) {
    case paging_format::x86_64: return "x86_64";
    case paging_format::x86_64_la57: return "x86_64-la57";
    case paging_format::aarch64_4k_48: return "aarch64-4k-48";
    case paging_format::aarch64_4k_39: return "aarch64-4k-39";
    case paging_format::aarch64_16k_47: return "aarch64-16k-47";
    case paging_format::aarch64_16k_48: return "aarch64-16k-48";
    case paging_format::aarch64_64k_42: return "aarch64-64k-42";
    case paging_format::aarch64_64k_48: return "aarch64-64k-48";
  }
  return "?";
}
[[nodiscard]] constexpr std::optional<paging_format> parse_format(std::string_view name) {
  for (const paging_format f : all_formats)
    if (format_name(f) == name) return f;
  return std::nullopt;
}
// "x86_64", "x86_64-la57", … for error messages.
[[nodiscard]] inline std::string format_names() {
  std::string out;
  for (const paging_format f : all_formats) out += (out.empty() ? "\"" : ", \"") + std::string(format_name(f)) + "\"";
  return out;
}
[[nodiscard]] constexpr bool is_aarch64(paging_format f) {
  return f != paging_format::x86_64 && f != paging_format::x86_64_la57;
}

// Calls fn.template operator()<Format>() with the trait type for `f`.
template <class Fn>
constexpr decltype(auto) visit_format(paging_format f, Fn&& fn) {
  switch (f) {
    case paging_format::x86_64: break;
    case paging_format::x86_64_la57: return fn.template operator()<x86_64_5level>();
    case paging_format::aarch64_4k_48: return fn.template operator()<aarch64_4k_48>();
    case paging_format::aarch64_4k_39: return fn.template operator()<aarch64_4k_39>();
    case paging_format::aarch64_16k_47: return fn.template operator()<aarch64_16k_47>();
    case paging_format::aarch64_16k_48: return fn.template operator()<aarch64_16k_48>();
    case paging_format::aarch64_64k_42: return fn.template operator()<aarch64_64k_42>();
    case paging_format::aarch64_64k_48: return fn.template operator()<aarch64_64k_48>();
  }
  return fn.template operator()<x86_64_4level>();
}

// The same for steps that handle x86-64 only so far: only the x86 traits are
// instantiated, and an AArch64 format throws std::invalid_argument naming it.
template <class Fn>
decltype(auto) visit_x86_format(paging_format f, Fn&& fn) {
  if (is_aarch64(f))
    throw std::invalid_argument(std::string(format_name(f)) + " is not supported here yet (x86-64 only)");
  if (f == paging_format::x86_64_la57) return fn.template operator()<x86_64_5level>();
  return fn.template operator()<x86_64_4level>();
}

// A named functor rather than a template lambda: nvcc warns (#445) about
// the function-pointer conversion of a captureless template lambda.
struct levels_of_format {
  template <class F>
  constexpr unsigned operator()() const { return F::levels; }
};
[[nodiscard]] constexpr unsigned format_levels(paging_format f) { return visit_format(f, levels_of_format{}); }

}  // namespace ptwalk
