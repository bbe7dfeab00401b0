// host/root_discovery.hpp — find every address space's top-level table in an image, without symbols.
//
// x86-64, like the DTB scans of memory-forensics tools: an OS copies the
// kernel half of its own top-level table into every process's (Linux: pgd_alloc clones
// entries 256..511 of init_top_pgt), so a page whose upper 256 entries equal
// those of a known root is another root. Known roots come from the dump's
// CPU state (vCPU CR3s, VMCOREINFO's kernel root) or from --hint; without
// any, the kernel half most pages share is taken as the reference (census).
//
// Every 4 KiB page of the image is tested by one PTWALK_HD predicate
// (`test_root_candidate`, include/ptwalk/root_candidate.hpp) over raw page
// bytes, on a backend: all cores (`cpu`), or the GPU
// (`cuda`, kernels/root_scan.hpp), which streams the image through in chunks
// and copies back only the hits. Everything after the scan (PTI pairing,
// labels, evidence) is this file's, whichever backend scanned. AArch64
// TTBR0 tables hold no kernel half: they are found by shape
// (aarch64_discovery.hpp), with the same scan on the same backends.
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

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "input/cpu_state.hpp"
#include "kernels/root_scan.hpp"
#include "input/memory_image.hpp"
#include "input/snapshot.hpp"
#include "ptwalk/format.hpp"
#include "ptwalk/root_candidate.hpp"

namespace ptwalk {

// ---- discovery ----

// Who tests the pages. `thrust_cpu` is the GPU scan's Thrust-OMP build, for
// tests and benchmarks, not a user-facing choice.
enum class scan_backend { cpu, cuda, automatic, thrust_cpu };

[[nodiscard]] std::string_view scan_backend_name(scan_backend backend);
[[nodiscard]] std::optional<scan_backend> parse_scan_backend(std::string_view name);
// `automatic` is cuda when this binary has it and a GPU is visible, else
// cpu: the page hash's choice, which reads every byte of a page either way.
// Root discovery resolves `automatic` by `faster_scan_backend` instead.
[[nodiscard]] scan_backend resolve_scan_backend(scan_backend backend);

// What `auto` weighs for a root scan. The cpu scan tests each page where it
// lies, reading the one or two cache lines the test needs; the GPU scan
// first gathers every page whole into pinned staging on the host (as many
// threads as the cpu scan) and uploads it, the gather overlapping the
// upload. So the GPU only wins where the test costs more than the copy.
struct scan_costs {
  u64 pages = 0;             // pages the scan will test
  unsigned threads = 1;      // host threads, for the test or the gather
  double test_page_s = 0;    // one page tested on one host thread (measured)
  double gather_page_s = 0;  // one page copied into staging on one host thread (measured)
  double upload_page_s = 0;  // one page over PCIe
  double device_setup_s = 0; // buffers and predicate inputs on the device
};
// PCIe Gen5 x16 from pinned memory at its best (H100/H200), and a device
// setup with the context already up: both favour the GPU, so a cpu choice
// is safe.
inline constexpr double best_upload_bytes_per_s = 50e9;
inline constexpr double best_device_setup_s = 0.005;

struct scan_estimate {
  double cpu_s = 0;
  double cuda_s = 0;
};
[[nodiscard]] scan_estimate estimate_scan(const scan_costs& costs);
// cuda when its estimate is lower, else cpu.
[[nodiscard]] scan_backend faster_scan_backend(const scan_costs& costs);
// The costs `auto` weighs, measured on a sample of `image`'s pages with the
// census test (discovery measures with the test of its first scan).
[[nodiscard]] scan_costs sample_scan_costs(const memory_image& image, paging_format format, unsigned threads);

struct root_discovery_options {
  paging_format format = paging_format::x86_64;
  std::vector<root_hint> known;  // primacy order: machine_state::known_roots(), then --hint
  bool keep_kernel_only = false;
  unsigned threads = 0;  // 0: every core (the cpu scan; the GPU scans' gather)
  scan_backend backend = scan_backend::automatic;
  std::size_t chunk_pages = 0;  // GPU scans: pages per chunk, 0 = default
  std::optional<u64> ttbr1;     // AArch64: the kernel's TTBR1 value, never a process's root
};

struct discovered_root {
  u64 root = 0;
  std::string label;     // "cpu0", "kernel", "hint", "process"; "/pti-kernel" or "/pti-user" appended
  std::string evidence;  // what identifies it, for people
  bool user_half_empty = false;

  friend bool operator==(const discovered_root&, const discovered_root&) = default;
};

struct root_discovery_result {
  std::vector<discovered_root> roots;  // known roots first, then by physical address
  u64 pages_scanned = 0;
  u64 bytes_scanned = 0;
  double seconds = 0;         // all of discovery
  double scan_seconds = 0;    // the candidate scan: one pass over the pages, device setup excluded
  double census_seconds = 0;  // the census scan, when no root was known
  scan_backend backend = scan_backend::cpu;  // the one that ran
  std::string backend_choice;                // how `auto` chose it, when it weighed costs
  std::string device;                        // where: "2 threads", the GPU's name
  unsigned threads = 0;
  root_scan_profile profile;  // GPU scans: phases of the census and candidate scans
  u64 kernel_only_skipped = 0;  // candidates with an empty user half, not reported
  std::vector<std::string> references;  // how each reference kernel half was chosen
};

// A dump as `ptwalk roots` and `ptwalk import` read it: an ELF core or a
// compressed kdump file (with its CPU state), or a raw file of physical memory.
struct opened_dump {
  std::filesystem::path path;
  loaded_snapshot snapshot;  // memory source, image and format; no roots yet
  machine_state machine;     // empty for raw files
  std::string format_origin;  // why this format: "--format", "CR4.LA57 of the vCPUs", …
  std::optional<u64> ttbr1;   // AArch64: the TTBR1 every space shares
  std::string ttbr1_origin;   // "--ttbr1", "VMCOREINFO swapper_pg_dir - kimage_voffset"
};
// `format`: the user's choice, else what the dump's state implies, else
// x86_64; `ttbr1` (AArch64): the user's, else VMCOREINFO's.
[[nodiscard]] opened_dump open_dump(const std::filesystem::path& path, u64 raw_base,
                                    std::optional<paging_format> format, std::optional<u64> ttbr1 = std::nullopt);

// Scans every 4 KiB page of `image`. Throws input_error (naming `origin`)
// when a known root is outside the image or no reference can be found.
[[nodiscard]] root_discovery_result discover_roots(const memory_image& image,
                                                   const root_discovery_options& options,
                                                   std::string_view origin);

// Discovery of one opened dump: its CPU state's roots, then `hints` (CR3
// values from the user, labelled "hint").
[[nodiscard]] root_discovery_result discover_dump_roots(const opened_dump& dump, std::span<const u64> hints,
                                                        bool keep_kernel_only, unsigned threads,
                                                        scan_backend backend = scan_backend::automatic);

// One line for stderr: roots found, pages and bytes scanned, the backend,
// pages/second of the candidate scan.
[[nodiscard]] std::string format_discovery_summary(const root_discovery_result& result,
                                                   std::string_view origin);

}  // namespace ptwalk
