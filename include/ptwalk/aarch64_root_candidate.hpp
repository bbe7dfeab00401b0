// ptwalk/aarch64_root_candidate.hpp — could this page be an AArch64 TTBR0 table? The per-page test.
//
// The x86 test (root_candidate.hpp) matches kernel halves, which AArch64
// user tables do not have: TTBR1 holds the kernel half. So AArch64
// discovery (host/discovery/aarch64_discovery.hpp) starts from the shape of
// a table one level above other tables, decided from the page alone so
// every scan backend (the host's threads, the Thrust scans) runs this one
// copy:
// - every non-zero entry is a valid table descriptor (type 11): an OS never
//   leaves invalid-but-non-zero entries or blocks in a top table;
// - its ignored low attribute bits 11:2 and output-address bits 51:48 are
//   zero (Linux writes them so; a page descriptor there always has AF or
//   shareability bits set, which is what tells a last-level table apart);
// - each points at a whole next-level table inside the backed image;
// - at least one entry is present.
// The host then checks each hit's subtree and its references (whole tables
// below, user leaves, referenced by no other candidate).
#pragma once

#include "ptwalk/format.hpp"
#include "ptwalk/root_candidate.hpp"

namespace ptwalk {

// Bits of a table descriptor that Linux (and any OS that zeroes what the
// architecture ignores) leaves clear: 11:2 (ignored) and 51:48 (RES0 or
// the high output address bits of 52-bit formats, which ptwalk reads as 48).
inline constexpr u64 aarch64_table_descriptor_zero_bits = (u64{0x3ff} << 2) | (u64{0xf} << 48);

template <class Format>
PTWALK_HD bool looks_like_aarch64_upper_level_table(const std::byte* page, backed_ranges_ref backed) {
  unsigned tables = 0;
  for (unsigned i = 0; i < Format::entries(0); ++i) {
    const u64 entry = load_entry(page, i);
    if (entry == 0) continue;
    if (Format::classify(entry, 0) != entry_kind::table || (entry & aarch64_table_descriptor_zero_bits) != 0 ||
        !backed.contains(Format::table_address(entry), Format::table_bytes(1)))
      return false;
    ++tables;
  }
  return tables != 0;
}

}  // namespace ptwalk
