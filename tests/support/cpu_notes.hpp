// tests/support/cpu_notes.hpp — the CPU-state note descriptors QEMU and kdump write, built by hand.
//
// ELF cores and compressed kdump files carry the same notes; tests of both
// build them here, at the offsets QEMU and the kernel define, independent
// of the parser in host/input/cpu_state.cpp.
#pragma once

#include <cstring>
#include <string_view>
#include <vector>

#include "ptwalk/config.hpp"

namespace ptwalk::testing {

// Little-endian fields of the bytes a test builds and breaks.
template <class T>
void store(std::vector<std::byte>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}
template <class T>
T load(const std::vector<std::byte>& bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// struct QEMUCPUState as QEMU 7.2 writes it: 440 bytes, cr[] at 392.
inline std::vector<std::byte> qemu_note(u64 cr0, u64 cr3, u64 cr4, u64 rip = 0xffffffff81000000ull) {
  std::vector<std::byte> desc(440);
  store<u32>(desc, 0, 1);
  store<u32>(desc, 4, 440);
  store<u64>(desc, 8 + 6 * 8, 0xffffc90000003f00ull);  // rsp
  store<u64>(desc, 8 + 16 * 8, rip);
  store<u64>(desc, 392, cr0);
  store<u64>(desc, 392 + 3 * 8, cr3);
  store<u64>(desc, 392 + 4 * 8, cr4);
  return desc;
}

// x86-64 struct elf_prstatus: pr_pid at 32, pr_reg at 112.
inline std::vector<std::byte> prstatus_note(u32 pid, u64 rip) {
  std::vector<std::byte> desc(336);
  store<u32>(desc, 32, pid);
  store<u64>(desc, 112 + 16 * 8, rip);
  return desc;
}

inline std::vector<std::byte> text(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

inline constexpr u64 paging_on = 0x80050033;
inline constexpr u64 cr4_4level = 0x6f0;
inline constexpr u64 cr4_la57 = 0x751ef0;  // as a 5-level Linux guest has it

}  // namespace ptwalk::testing
