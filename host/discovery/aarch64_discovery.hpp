// host/discovery/aarch64_discovery.hpp — which AArch64 upper-level tables are processes' TTBR0 tables.
//
// AArch64 user tables hold no kernel half to match (x86's trick), so root
// discovery finds TTBR0 tables by shape. The page scan (every backend, one
// predicate: include/ptwalk/aarch64_root_candidate.hpp) selects pages whose
// entries are all valid table descriptors into the image; this file decides
// among those hits, on the host:
// - a hit that another hit (or the TTBR1 table) points at is a table below
//   a top table (a process's level-1 table looks like a top table too);
// - the TTBR1 table itself is the kernel's, not a process;
// - every table on the first path below each entry must be plausible: each
//   non-zero entry valid (invalid non-zero entries, Linux's swap and
//   PROT_NONE entries, only at the last level), table descriptors with their
//   ignored bits clear pointing at whole tables in the image;
// - a process's table reaches a user leaf (EL0 may read or execute it) on
//   one of those paths; one that reaches only kernel leaves is kernel-only
//   (idmap, trampoline tables), reported with keep_kernel_only.
// Decisions and measured precision/recall: README "Real arm64 dumps".
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "input/memory_image.hpp"
#include "kernels/root_scan_steps.hpp"

namespace ptwalk {

struct aarch64_root_choice {
  u64 root = 0;
  bool kernel_only = false;  // reaches no user leaf
  std::string evidence;
};

struct aarch64_root_selection {
  std::vector<aarch64_root_choice> roots;  // by physical address
  u64 referenced = 0;     // hits another hit or TTBR1 points at
  u64 implausible = 0;    // hits with a table below that no OS would write
  u64 kernel_only = 0;    // hits that reach no user leaf
};

// `hits` ascending by address; `ttbr1_table` the kernel's TTBR1 table address, if known.
template <class Format>
[[nodiscard]] aarch64_root_selection select_aarch64_roots(const memory_image& image,
                                                          std::span<const root_scan_hit> hits,
                                                          std::optional<u64> ttbr1_table);

}  // namespace ptwalk
