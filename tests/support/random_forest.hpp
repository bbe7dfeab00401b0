// tests/support/random_forest.hpp — random page-table forests that stress the ownership rule.
//
// A forest is a small pool of tables per depth wired together at random, so
// tables are shared heavily within and across spaces, and with chosen rates
// also: large leaves, pointers outside the image, one table used at two
// depths (including ancestors: self-reference and cycles), duplicate roots,
// CR3 flag bits, PS set where it is ignored, and regions cut mid-table or
// mid-entry. Backends are compared on these against the reference.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "input/snapshot.hpp"

namespace ptwalk::testing {

struct forest_shape {
  unsigned levels = 4;
  unsigned roots = 8;
  unsigned tables_per_depth = 6;   // small pools: heavy sharing
  unsigned entries_per_table = 24; // entries set per table (some collide)
  double large_leaf = 0.15;        // PDPT/PD entries that map 1 GiB / 2 MiB
  double outside = 0.03;           // table pointers to unbacked memory
  double cross_depth = 0.06;       // pointers to a table of another depth
  unsigned duplicate_roots = 2;
  double cut_pages = 0.0;          // pages split into two regions with a gap
};

class random_forest {
 public:
  random_forest(const forest_shape& shape, u64 seed) : shape_(shape), rng_(seed) {
    for (unsigned d = 0; d < shape.levels; ++d)
      for (unsigned i = 0; i < shape.tables_per_depth; ++i) pools_.push_back(next_frame());
    for (unsigned d = 0; d < shape.levels; ++d)
      for (unsigned i = 0; i < shape.tables_per_depth; ++i) fill(pool(d, i), d);
    for (unsigned r = 0; r < shape.roots; ++r) {
      u64 root = pool(0, pick(shape.tables_per_depth));
      if (chance(0.3)) root |= pick(4096);  // PCID / PWT / PCD bits
      roots_.push_back(root);
    }
    for (unsigned k = 0; k < shape.duplicate_roots && !roots_.empty(); ++k)
      roots_.insert(roots_.begin() + pick(unsigned(roots_.size() + 1)), roots_[pick(unsigned(roots_.size()))]);
    if (chance(0.3)) roots_.push_back(outside_frame());  // a root nothing backs
  }

  [[nodiscard]] loaded_snapshot snapshot(std::string id) const {
    loaded_snapshot s;
    s.spec.id = std::move(id);
    s.spec.format = shape_.levels == 5 ? paging_format::x86_64_la57 : paging_format::x86_64;
    s.spec.roots = roots_;
    s.image = image();
    return s;
  }

 private:
  u64 pool(unsigned depth, unsigned i) const { return pools_[depth * shape_.tables_per_depth + i]; }
  unsigned pick(unsigned n) { return std::uniform_int_distribution<unsigned>(0, n - 1)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  u64 next_frame() { return frame_ += 0x1000 * (1 + pick(3)); }
  u64 outside_frame() { return (u64{1} << 40) + 0x1000 * pick(64); }

  // Random non-address bits: RW, US, PWT/PCD, A/D, G, the CoW field 11:9,
  // protection-key/available bits 62:52 and NX.
  u64 random_flags() {
    u64 f = rng_() & (0x0000'0000'0000'0f7eull | 0x7ff0'0000'0000'0000ull);
    if (chance(0.3)) f |= u64{1} << 63;
    if (chance(0.5)) f |= 0x6;  // writable+user often, so permissions vary along paths
    if (chance(0.3)) f = (f & ~(u64{7} << 9)) | (u64{1} << 9);  // CoW marker
    return f;
  }

  void fill(u64 table, unsigned depth) {
    const bool last = depth + 1 == shape_.levels;
    const bool can_be_large = depth + 2 == shape_.levels || depth + 3 == shape_.levels;
    auto& words = pages_[table];
    for (unsigned k = 0; k < shape_.entries_per_table; ++k) {
      const unsigned index = pick(512);
      u64 entry;
      if (last) {
        entry = (u64{pick(1u << 20)} << 12) | random_flags() | (chance(0.2) ? 0x80 : 0) | 1;  // bit 7: PAT
      } else if (can_be_large && chance(shape_.large_leaf)) {
        const unsigned shift = 12 + 9 * (shape_.levels - 1 - depth);
        entry = ((u64{pick(1u << 10)} << shift) & 0x000f'ffff'ffff'f000ull) | random_flags() | 0x81;
      } else {
        u64 child = pool(depth + 1, pick(shape_.tables_per_depth));
        if (chance(shape_.outside)) child = outside_frame();
        else if (chance(shape_.cross_depth)) child = pool(pick(shape_.levels), pick(shape_.tables_per_depth));
        // PS must stay clear where it would make a leaf; in a root entry it is ignored.
        const u64 ps = depth == 0 && chance(0.2) ? 0x80 : 0;
        entry = child | (random_flags() & ~u64{0x80}) | ps | 1;
      }
      words[index] = entry;
    }
  }

  // Consecutive pages share a region, as in a real image; cut pages are
  // split at a random byte with a gap, so entries there straddle or miss.
  memory_image image() const {
    memory_image out;
    std::mt19937_64 cut_rng(frame_);
    std::vector<std::byte> run;
    u64 run_start = 0;
    auto flush = [&] {
      if (!run.empty()) out.add_owned_region(run_start, std::move(run));
      run = {};
    };
    for (const auto& [pa, words] : pages_) {
      if (run.empty() || run_start + run.size() != pa) {
        flush();
        run_start = pa;
      }
      const auto* bytes = reinterpret_cast<const std::byte*>(words.data());
      if (std::bernoulli_distribution(shape_.cut_pages)(cut_rng)) {
        const u64 cut = std::uniform_int_distribution<u64>(1, 4000)(cut_rng);
        const u64 gap = std::uniform_int_distribution<u64>(0, 12)(cut_rng);
        run.insert(run.end(), bytes, bytes + cut);
        flush();
        run_start = pa + cut + gap;
        run.insert(run.end(), bytes + cut + gap, bytes + 4096);
        continue;
      }
      run.insert(run.end(), bytes, bytes + 4096);
    }
    flush();
    return out;
  }

  forest_shape shape_;
  std::mt19937_64 rng_;
  u64 frame_ = 0x10'0000;
  std::vector<u64> pools_;
  std::vector<u64> roots_;
  std::map<u64, std::array<u64, 512>> pages_;
};

}  // namespace ptwalk::testing
