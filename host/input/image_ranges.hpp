// host/image_ranges.hpp — which parts of a physical range an image backs.
//
// memory_image::find answers for one region; a frame of a compacted or
// ELF-core image may span several adjacent regions, or be backed only in
// part. backed_span walks a range piece by piece (backed or hole), which is
// all that compaction (is this frame backed? which bytes to copy?) and
// verification (same bytes, same holes?) need.
#pragma once

#include <algorithm>

#include "input/memory_image.hpp"

namespace ptwalk {

// The longest piece of [pa, pa+max_len) that starts at pa and is either all
// backed by one region (bytes != nullptr) or all unbacked (bytes == nullptr).
struct backed_piece {
  const std::byte* bytes = nullptr;
  u64 len = 0;
};

[[nodiscard]] inline backed_piece backed_span(const memory_image& image, u64 pa, u64 max_len) {
  const auto regions = image.regions();
  auto next = std::upper_bound(regions.begin(), regions.end(), pa,
                               [](u64 addr, const image_region& r) { return addr < r.gpa; });
  if (next != regions.begin()) {
    const image_region& r = *std::prev(next);
    if (pa - r.gpa < r.size) return {r.data + (pa - r.gpa), std::min(max_len, r.end() - pa)};
  }
  const u64 hole = next == regions.end() ? max_len : next->gpa - pa;
  return {nullptr, std::min(max_len, hole)};
}

// Calls fn(offset, piece) for the pieces of [pa, pa+len) in order.
template <class Fn>
void for_each_piece(const memory_image& image, u64 pa, u64 len, Fn&& fn) {
  for (u64 offset = 0; offset < len;) {
    const backed_piece piece = backed_span(image, pa + offset, len - offset);
    fn(offset, piece);
    offset += piece.len;
  }
}

[[nodiscard]] inline bool fully_backed(const memory_image& image, u64 pa, u64 len) {
  bool backed = true;
  for_each_piece(image, pa, len, [&](u64, backed_piece p) { backed = backed && p.bytes != nullptr; });
  return backed;
}

}  // namespace ptwalk
