// host/root_discovery.hpp — find every address space's top-level table in an image, without symbols.
//
// Like the DTB scans of memory-forensics tools: an OS copies the kernel half
// of its own top-level table into every process's (Linux: pgd_alloc clones
// entries 256..511 of init_top_pgt), so a page whose upper 256 entries equal
// those of a known root is another root. Known roots come from the dump's
// CPU state (vCPU CR3s, VMCOREINFO's kernel root) or from --hint; without
// any, the kernel half most pages share is taken as the reference (census).
//
// Every 4 KiB page of the image is tested by one PTWALK_HD predicate
// (`test_root_candidate`) over raw page bytes and trivially copyable views,
// so a GPU scan can run the same code; the host scan runs it over all cores.
//
// Decisions (docs: README "Real dumps"):
// - Entries are compared with the Accessed bit ignored: the CPU sets it in
//   each copy independently.
// - A candidate whose user half is empty is a dead process's table (Linux
//   clears the user half on exit_mmap before freeing it) or a copy of the
//   kernel's own; it is skipped and counted unless it is a known root, the
//   PTI partner of one, or keep_kernel_only is set.
// - Linux PTI gives each process a kernel and a user top table, an 8 KiB
//   aligned pair; the user table's kernel half holds only the entry
//   trampolines, so it is recognised by its own reference (the partner of a
//   known root) and the pair is labelled "pti-kernel" / "pti-user".
#pragma once

#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cpu_state.hpp"
#include "memory_image.hpp"
#include "snapshot.hpp"
#include "ptwalk/format.hpp"

namespace ptwalk {

// ---- the per-page predicate (host and device) ----

inline constexpr unsigned half_entries = 256;  // entries in each half of a top-level table
inline constexpr u64 entry_accessed = u64{1} << 5;

// Sorted, disjoint [start, end) physical ranges the image backs.
struct backed_ranges_ref {
  const u64* starts = nullptr;
  const u64* ends = nullptr;
  u32 count = 0;

  PTWALK_HD constexpr bool contains(u64 pa, u64 len) const {
    u32 lo = 0, hi = count;  // first range with start > pa, by binary search
    while (lo < hi) {
      const u32 mid = (lo + hi) / 2;
      if (starts[mid] <= pa) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && pa + len <= ends[lo - 1] && pa + len >= pa;
  }
};

// The kernel halves a scan compares pages against: count × 256 entries.
struct kernel_halves_ref {
  const u64* entries = nullptr;
  u32 count = 0;
};

struct root_candidate {
  int reference = -1;         // index of the matching kernel half; -1: not a root
  bool user_half_empty = true;
};

PTWALK_HD inline u64 load_entry(const std::byte* page, unsigned index) {
  u64 entry;
  std::memcpy(&entry, page + 8 * index, sizeof(entry));
  return entry;
}

PTWALK_HD constexpr bool same_ignoring_accessed(u64 a, u64 b) {
  return ((a ^ b) & ~entry_accessed) == 0;
}

// Is the 4 KiB `page` a top-level table whose kernel half equals one of
// `halves`, with a user half whose present entries are plausible (a table
// inside the image; PS is reserved at the top level)?
template <class Format>
PTWALK_HD root_candidate test_root_candidate(const std::byte* page, kernel_halves_ref halves,
                                             backed_ranges_ref backed) {
  static_assert(Format::entries_per_table == 2 * half_entries);
  root_candidate out;
  for (u32 r = 0; r < halves.count && out.reference < 0; ++r) {
    const u64* half = halves.entries + u64{r} * half_entries;
    // From the top down: entry 511 maps the kernel image in Linux, so most
    // pages differ on the first compare.
    unsigned i = half_entries;
    while (i > 0 && same_ignoring_accessed(load_entry(page, half_entries + i - 1), half[i - 1])) --i;
    if (i == 0) out.reference = static_cast<int>(r);
  }
  if (out.reference < 0) return out;
  for (unsigned i = 0; i < half_entries; ++i) {
    const u64 entry = load_entry(page, i);
    if (!Format::present(entry)) continue;
    if ((entry & Format::bit_page_size) != 0 ||
        !backed.contains(Format::table_address(entry), Format::table_bytes))
      return {};
    out.user_half_empty = false;
  }
  return out;
}

// Census predicate, for images without a known root: could `page` be a
// top-level table at all? At least `min_kernel_entries` present kernel-half
// entries and every present entry a plausible table pointer.
template <class Format>
PTWALK_HD bool looks_like_top_table(const std::byte* page, backed_ranges_ref backed,
                                    unsigned min_kernel_entries) {
  unsigned kernel_present = 0;
  for (unsigned i = 0; i < Format::entries_per_table; ++i) {
    const u64 entry = load_entry(page, i);
    if (!Format::present(entry)) {
      if (entry != 0) return false;  // top-level tables hold no swap or PROT_NONE entries
      continue;
    }
    if ((entry & Format::bit_page_size) != 0 ||
        !backed.contains(Format::table_address(entry), Format::table_bytes))
      return false;
    if (i >= half_entries) ++kernel_present;
  }
  return kernel_present >= min_kernel_entries;
}

// ---- the host scan ----

struct root_discovery_options {
  paging_format format = paging_format::x86_64;
  std::vector<root_hint> known;  // primacy order: machine_state::known_roots(), then --hint
  bool keep_kernel_only = false;
  unsigned threads = 0;  // 0: every core
};

struct discovered_root {
  u64 root = 0;
  std::string label;     // "cpu0", "kernel", "hint", "process"; "/pti-kernel" or "/pti-user" appended
  std::string evidence;  // what identifies it, for people
  bool user_half_empty = false;
};

struct root_discovery_result {
  std::vector<discovered_root> roots;  // known roots first, then by physical address
  u64 pages_scanned = 0;
  u64 bytes_scanned = 0;
  double seconds = 0;
  unsigned threads = 0;
  u64 kernel_only_skipped = 0;  // candidates with an empty user half, not reported
  std::vector<std::string> references;  // how each reference kernel half was chosen
};

// A dump as `ptwalk roots` and `ptwalk import` read it: an ELF core (with
// its CPU state) or a raw file of physical memory; compressed kdump files
// are refused by name.
struct opened_dump {
  std::filesystem::path path;
  loaded_snapshot snapshot;  // memory source, image and format; no roots yet
  machine_state machine;     // empty for raw files
  std::string format_origin;  // why this format: "--format", "CR4.LA57 of the vCPUs", …
};
// `format`: the user's choice, else what the dump's state implies, else x86_64.
[[nodiscard]] opened_dump open_dump(const std::filesystem::path& path, u64 raw_base,
                                    std::optional<paging_format> format);

// Scans every 4 KiB page of `image`. Throws input_error (naming `origin`)
// when a known root is outside the image or no reference can be found.
[[nodiscard]] root_discovery_result discover_roots(const memory_image& image,
                                                   const root_discovery_options& options,
                                                   std::string_view origin);

// Discovery of one opened dump: its CPU state's roots, then `hints` (CR3
// values from the user, labelled "hint").
[[nodiscard]] root_discovery_result discover_dump_roots(const opened_dump& dump, std::span<const u64> hints,
                                                        bool keep_kernel_only, unsigned threads);

// One line for stderr: roots found, pages and bytes scanned, pages/second.
[[nodiscard]] std::string format_discovery_summary(const root_discovery_result& result,
                                                   std::string_view origin);

}  // namespace ptwalk
