// tests/fuzz/fuzz_image.hpp — a snapshot as the bytes the walker fuzz target reads.
//
// Byte 0: bits 0–2 the paging format (its index in all_formats: 0 x86_64,
// 1 x86_64-la57, 2–7 the AArch64 granules), bit 3 each root followed by its
// TTBR1 (AArch64 only); byte 1: the root count (1–16); the roots (u64,
// little-endian); then regions to the end: gpa (u64), size (u32, at most
// 1 MiB) and that many bytes. Regions that overlap or wrap, and unknown
// flags, make the input one the target skips. The seed generator encodes the
// tests' random forests and generated AArch64 fleets this way; the fuzzer
// mutates entries, roots and addresses alike.
#pragma once

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>
#include <span>
#include <vector>

#include "input/snapshot.hpp"

namespace ptwalk::fuzz {

inline constexpr std::size_t max_roots = 16;
inline constexpr u32 max_region = u32{1} << 20;
inline constexpr u8 format_mask = 0x7;
inline constexpr u8 upper_roots_flag = 0x8;
static_assert(std::size(all_formats) == format_mask + 1, "the format field indexes all_formats");

// `skip_zero_pages`: all-zero 4 KiB pages are left out (unbacked once
// decoded), so a 64 KiB-granule fleet, mostly empty tables, fits -max_len.
inline std::vector<std::byte> encode_snapshot(const loaded_snapshot& s, bool skip_zero_pages = false) {
  std::vector<std::byte> out;
  const auto put = [&](const auto& value) {
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    out.insert(out.end(), p, p + sizeof value);
  };
  const auto format_index = static_cast<u8>(std::find(std::begin(all_formats), std::end(all_formats), s.format()) -
                                            std::begin(all_formats));
  const bool upper = !s.upper_roots().empty();
  out.push_back(std::byte{static_cast<u8>(format_index | (upper ? upper_roots_flag : 0))});
  const std::size_t roots = std::min(s.roots().size(), max_roots);
  out.push_back(static_cast<std::byte>(roots));
  for (std::size_t i = 0; i < roots; ++i) {
    put(s.roots()[i]);
    if (upper) put(s.upper_roots()[i]);
  }
  const auto put_region = [&](u64 gpa, const std::byte* data, u64 size) {
    for (u64 at = 0; at < size; at += max_region) {  // long regions as adjacent pieces
      const u64 piece = std::min<u64>(size - at, max_region);
      put(gpa + at);
      put(static_cast<u32>(piece));
      out.insert(out.end(), data + at, data + at + piece);
    }
  };
  constexpr u64 page = 4096;
  const auto zero_page = [](const std::byte* p, u64 size) {
    return std::all_of(p, p + size, [](std::byte b) { return b == std::byte{0}; });
  };
  for (const image_region& r : s.image.regions()) {
    if (!skip_zero_pages) {
      put_region(r.gpa, r.data, r.size);
      continue;
    }
    for (u64 at = 0; at < r.size;) {  // runs of non-zero pages
      const auto length = [&](u64 from) { return std::min(page, r.size - from); };
      if (zero_page(r.data + at, length(at))) {
        at += length(at);
        continue;
      }
      u64 end = at;
      while (end < r.size && !zero_page(r.data + end, length(end))) end += length(end);
      put_region(r.gpa + at, r.data + at, end - at);
      at = end;
    }
  }
  return out;
}

// nullopt when the bytes do not describe a snapshot.
inline std::optional<loaded_snapshot> decode_snapshot(std::span<const std::byte> in) {
  std::size_t at = 0;
  const auto take = [&]<class T>(T& value) {
    if (in.size() - at < sizeof value) return false;
    std::memcpy(&value, in.data() + at, sizeof value);
    at += sizeof value;
    return true;
  };
  u8 flags = 0, roots = 0;
  if (!take(flags) || !take(roots) || roots == 0 || roots > max_roots) return std::nullopt;
  const bool upper = (flags & upper_roots_flag) != 0;
  if ((flags & ~(format_mask | upper_roots_flag)) != 0) return std::nullopt;
  loaded_snapshot s;
  s.spec.id = "fuzz";
  s.spec.format = all_formats[flags & format_mask];
  if (upper && !is_aarch64(s.spec.format)) return std::nullopt;
  s.spec.roots.resize(roots);
  if (upper) s.spec.upper_roots.resize(roots);
  for (std::size_t i = 0; i < roots; ++i)
    if (!take(s.spec.roots[i]) || (upper && !take(s.spec.upper_roots[i]))) return std::nullopt;
  try {
    for (u64 gpa = 0; at < in.size();) {
      u32 size = 0;
      if (!take(gpa) || !take(size) || size > max_region || in.size() - at < size) return std::nullopt;
      s.image.add_owned_region(gpa, {in.begin() + static_cast<std::ptrdiff_t>(at),
                                     in.begin() + static_cast<std::ptrdiff_t>(at + size)});
      at += size;
    }
  } catch (const input_error&) {
    return std::nullopt;  // overlapping or wrapping regions
  }
  return s;
}

}  // namespace ptwalk::fuzz
