// tests/fuzz/fuzz_image.hpp — a snapshot as the bytes the walker fuzz target reads.
//
// Byte 0 bit 0: 5-level paging; byte 1: the root count (1–16); the roots
// (u64, little-endian); then regions to the end: gpa (u64), size (u32, at
// most 1 MiB) and that many bytes. Regions that overlap or wrap make the
// input one the target skips. The seed generator encodes the tests' random
// forests this way; the fuzzer mutates entries, roots and addresses alike.
#pragma once

#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "input/snapshot.hpp"

namespace ptwalk::fuzz {

inline constexpr std::size_t max_roots = 16;
inline constexpr u32 max_region = u32{1} << 20;

inline std::vector<std::byte> encode_snapshot(const loaded_snapshot& s) {
  std::vector<std::byte> out;
  const auto put = [&](const auto& value) {
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    out.insert(out.end(), p, p + sizeof value);
  };
  out.push_back(std::byte{s.format() == paging_format::x86_64_la57 ? u8{1} : u8{0}});
  const std::size_t roots = std::min(s.roots().size(), max_roots);
  out.push_back(static_cast<std::byte>(roots));
  for (std::size_t i = 0; i < roots; ++i) put(s.roots()[i]);
  for (const image_region& r : s.image.regions()) {
    put(r.gpa);
    put(static_cast<u32>(std::min<u64>(r.size, max_region)));
    out.insert(out.end(), r.data, r.data + std::min<u64>(r.size, max_region));
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
  loaded_snapshot s;
  s.spec.id = "fuzz";
  s.spec.format = (flags & 1) != 0 ? paging_format::x86_64_la57 : paging_format::x86_64;
  s.spec.roots.resize(roots);
  for (u64& root : s.spec.roots)
    if (!take(root)) return std::nullopt;
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
