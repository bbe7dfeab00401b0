// tests/support/compact_fixtures.hpp — a hand-built snapshot with every case compaction must handle.
//
// The fleet generator builds realistic fleets; this builds one small
// snapshot whose every odd case is placed on purpose, so a compaction test
// can point at it: a kernel half shared at depth 1 with different link
// bits, a page table shared at the last depth, a table a space shares with
// itself, an all-zero shared table and one that only becomes empty when its
// unbacked leaf is dropped, 2 MiB frames and a 4 KiB page inside one, a
// frame mapped twice, unbacked 4 KiB and 1 GiB leaves, swap-like and
// PROT_NONE not-present entries (and a table holding nothing else), CoW,
// NX, read-only and protection-key bits, and a root listed twice with a PCID.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <variant>

#include "compact/compactor.hpp"
#include "ptwalk/map.hpp"
#include "input/snapshot.hpp"
#include "input/table_views.hpp"

namespace ptwalk::testing {

inline constexpr u64 kib4 = u64{1} << 12, mib2 = u64{1} << 21, gib1 = u64{1} << 30;
inline constexpr u64 nx_bit = u64{1} << 63;
inline constexpr u64 apic_pa = 0xfee0'0000;       // an unbacked 4 KiB frame
inline constexpr u64 unbacked_1g_pa = 0x40'0000'0000;
inline constexpr u64 data_base = 0x10'0000;       // 4 KiB data frames
inline constexpr u64 large_base = 0x40'0000;      // two 2 MiB frames
inline constexpr u64 data_end = 0x80'0000;
inline constexpr u64 table_base = 0x100'0000;
inline constexpr u64 swap_entry = 0x0000'0012'3450'0040;          // not present, bits set
inline constexpr u64 prot_none_entry = nx_bit | 0x0033'3000 | 0x100;  // Linux PROT_NONE: present clear

// The VAs the cases live at, in the format's canonical form.
template <class F>
struct fixture_layout {
  static constexpr u64 upper = F::canonical(u64{1} << (F::va_bits - 1));
  static constexpr u64 kernel = upper + 0x8000'0000;  // 2 MiB pages, then 4 KiB pages 1 GiB higher
  static constexpr u64 kernel_1g = upper + 0x40'0000'0000;  // unbacked 1 GiB leaf
  static constexpr u64 user = 0x40'0000;             // 4 KiB pages with assorted bits (space 0)
  static constexpr u64 user_shared_pt = 0x8000'0000;  // space 1 links space 0's user PT here
  static constexpr u64 apic = 0x7000'0000;           // space 0: the only leaf of its PT, unbacked
  static constexpr u64 empty_link = 0xc000'0000;      // space 2 links the PT above (empty once dropped)
  static constexpr u64 zero_table = 0x50'0000'0000;   // space 0: an all-zero PT, linked by space 1 too
  static constexpr u64 swap_only = 0x20'0000'0000;    // space 0: a PT of not-present entries only
  static constexpr u64 self_a = 0xa000'0000;          // space 2 maps one PT at both of these
  static constexpr u64 self_b = 0xa020'0000;
  static constexpr u64 nested = 0x9000'0000;          // space 1: a 4 KiB page inside a 2 MiB frame
  static constexpr u64 twice_a = 0x9100'0000;         // space 1: one frame at two VAs
  static constexpr u64 twice_b = 0x9200'0000;
};

template <class F>
class fixture_builder {
 public:
  fixture_builder() : tables_(table_base) {}

  loaded_snapshot build() {
    using L = fixture_layout<F>;
    const u64 s0 = new_root(), s1 = new_root(), s2 = new_root();
    intermediate_flags kernel_tables;
    kernel_tables.at_depth[0] = 0x3;  // kernel: not user at the top
    // Space 0: kernel half, user pages, the odd cases.
    use(s0);
    put(L::kernel, large_base, 21, 0x3 | (u64{1} << 8), kernel_tables);          // global
    put(L::kernel + mib2, large_base + mib2, 21, 0x1 | nx_bit, kernel_tables);   // read-only data
    for (u64 i = 0; i < 4; ++i)
      put(L::kernel + gib1 + i * kib4, frame(i), 12, 0x3 | nx_bit, kernel_tables);
    put(L::kernel_1g, unbacked_1g_pa, 30, 0x3 | nx_bit, kernel_tables);
    put(L::user + 0 * kib4, frame(4), 12, 0x7);                         // rw user exec
    put(L::user + 1 * kib4, frame(5), 12, 0x7 | nx_bit);                // rw user
    put(L::user + 2 * kib4, frame(6), 12, 0x5);                         // read-only
    put(L::user + 3 * kib4, frame(7), 12, 0x5 | (u64{1} << 9));         // CoW
    put(L::user + 4 * kib4, frame(8), 12, 0x7 | (u64{0xa} << 59) | (u64{1} << 52));  // pkey, software bit
    raw(L::user + 5 * kib4, F::levels - 1, swap_entry);
    raw(L::user + 6 * kib4, F::levels - 1, prot_none_entry);
    intermediate_flags nx_path;
    nx_path.at_depth[F::levels - 2] = 0x7 | nx_bit;  // an NX PD entry above the PT
    put(L::apic, apic_pa, 12, 0x3 | (u64{1} << 4), nx_path);  // PCD
    raw(L::swap_only, F::levels - 1, swap_entry + 0x1000);
    raw(L::swap_only + kib4, F::levels - 1, swap_entry + 0x2000);
    link(L::zero_table, F::levels - 1, tables_.alloc_table(), 0x7);

    // Space 1: kernel linked with other bits, space 0's user PT at another VA.
    use(s1);
    link(L::upper, 1, table_of(s0, L::upper, 1), 0x1);  // kernel, read-only at the link
    link(L::user_shared_pt, F::levels - 1, table_of(s0, L::user, F::levels - 1), 0x7);
    link(L::zero_table + gib1, F::levels - 1, table_of(s0, L::zero_table, F::levels - 1), 0x7);
    put(L::nested, large_base + 0x3000, 12, 0x7);
    put(L::twice_a, frame(9), 12, 0x7);
    put(L::twice_b, frame(9), 12, 0x5);

    // Space 2: kernel linked, a PT shared with itself, the soon-empty PT.
    use(s2);
    link(L::upper, 1, table_of(s0, L::upper, 1), 0x3);
    put(L::self_a, frame(10), 12, 0x7);
    put(L::self_a + kib4, frame(11), 12, 0x7);
    link(L::self_b, F::levels - 1, table_of(s2, L::self_a, F::levels - 1), 0x5);
    link(L::empty_link, F::levels - 1, table_of(s0, L::apic, F::levels - 1), 0x7);

    loaded_snapshot out;
    out.spec.id = F::levels == 4 ? "fixture" : "fixture-la57";
    out.spec.format = F::levels == 4 ? paging_format::x86_64 : paging_format::x86_64_la57;
    out.spec.roots = {s0, s1, s2, s0 | 0x001};
    out.spec.labels = {"init", "shell", "daemon", "init-again"};
    out.spec.meta = {{"built_by", "compact_fixtures"}};
    out.image.add_owned_region(0, data_bytes(), "fixture data");
    std::vector<std::byte> table_bytes(tables_.words().size() * 8);
    std::memcpy(table_bytes.data(), tables_.words().data(), table_bytes.size());
    out.image.add_owned_region(table_base, std::move(table_bytes), "fixture tables");
    return out;
  }

 private:
  static u64 frame(u64 i) { return data_base + i * kib4; }

  u64 new_root() { return tables_.alloc_table(); }
  void use(u64 root) { tables_.update_root(root); }
  void put(u64 va, u64 pa, unsigned shift, u64 flags, intermediate_flags t = {}) {
    expect(map<F>(tables_, {va, pa, shift, flags, t}));
  }
  void raw(u64 va, unsigned depth, u64 entry) { expect(write_entry_at<F>(tables_, va, depth, entry)); }
  void link(u64 va, unsigned depth, u64 table, u64 flags) {
    expect(space_aware_map<F>(tables_, depth, va, table, flags));
  }
  // The depth-`depth` table of the space at `root` that covers `va`.
  u64 table_of(u64 root, u64 va, unsigned depth) const {
    u64 table = root;
    for (unsigned d = 0; d < depth; ++d)
      table = F::table_address(tables_.read_entry(tables_.entry_addr(table, F::table_index(F::linear(va), d))));
    return table;
  }
  static void expect(map_status s) {
    if (s != map_status::ok) throw std::logic_error("fixture: map failed");
  }
  static std::vector<std::byte> data_bytes() {
    std::vector<u64> words(data_end / 8);
    std::mt19937_64 rng(42);
    for (auto& w : words) w = rng();
    std::vector<std::byte> bytes(data_end);
    std::memcpy(bytes.data(), words.data(), bytes.size());
    return bytes;
  }

  page_table_buffer tables_;
};

template <class F>
loaded_snapshot fixture_snapshot() {
  return fixture_builder<F>().build();
}

// A compacted snapshot as the bytes a writer would put in its file, so tests
// can plant differences before loading it.
struct written_image {
  std::vector<std::byte> bytes;
  memory_source source;
};

inline written_image write_to_memory(const compacted_snapshot& c) {
  static std::atomic<unsigned> serial{0};
  const auto file = std::filesystem::temp_directory_path() /
                    ("ptwalk-written-" + std::to_string(::getpid()) + "-" + std::to_string(serial++) + ".img");
  written_image w;
  w.source = write_compacted_image(c, file);
  std::ifstream in(file, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(file);
  w.bytes.resize(s.size());
  std::memcpy(w.bytes.data(), s.data(), s.size());
  return w;
}

// Loads a written image (as the manifest loader would, from memory).
inline loaded_snapshot load_written(const compacted_snapshot& c, const written_image& w) {
  loaded_snapshot out;
  out.spec = c.spec;
  out.spec.memory = w.source;
  if (const auto* raw = std::get_if<raw_source>(&w.source)) {
    out.image.add_owned_region(raw->base, w.bytes, "written");
  } else {
    for (const auto& r : std::get<region_source>(w.source).regions)
      out.image.add_owned_region(
          r.gpa, std::vector<std::byte>(w.bytes.begin() + static_cast<std::ptrdiff_t>(r.offset),
                                        w.bytes.begin() + static_cast<std::ptrdiff_t>(r.offset + r.size)),
          "written");
  }
  return out;
}

// Compacts `input` and loads the result from memory.
inline loaded_snapshot compacted_copy(const loaded_snapshot& input, const snapshot_walk& walk,
                                      const compaction_policy& policy) {
  const compacted_snapshot c = compact_snapshot(input, walk, policy);
  return load_written(c, write_to_memory(c));
}

}  // namespace ptwalk::testing
