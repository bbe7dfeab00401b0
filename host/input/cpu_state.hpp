// host/cpu_state.hpp — what a memory dump says about its machine, besides its memory.
//
// ELF cores carry the vCPUs' registers and the kernel's own hints in notes:
// - "QEMU" notes (dump-guest-memory): struct QEMUCPUState, with CR0/CR3/CR4,
//   so each vCPU's root and paging format (CR4.LA57) are known exactly;
// - "CORE" NT_PRSTATUS notes (QEMU and kdump): general registers and the
//   pid running on the CPU, but no control registers;
// - the "VMCOREINFO" note (kdump; QEMU with -device vmcoreinfo): text lines
//   such as NUMBER(pgtable_l5_enabled)=1, SYMBOL(init_top_pgt)=…,
//   NUMBER(phys_base)=…, from which the kernel's own root follows; on arm64
//   NUMBER(VA_BITS), NUMBER(TCR_EL1_T1SZ), PAGESIZE, SYMBOL(swapper_pg_dir)
//   and NUMBER(kimage_voffset) give the format and the TTBR1 table (QEMU's
//   aarch64 notes carry no TTBR or TCR, only NT_PRSTATUS: pc, sp, pid).
// Compressed kdump files carry the same notes in their sub-header. Import
// and root discovery start from these roots; `ptwalk info` prints them.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "input/elf_core.hpp"
#include "ptwalk/format.hpp"

namespace ptwalk {

// One vCPU, from its notes (the i-th NT_PRSTATUS and the i-th QEMU note).
struct vcpu_state {
  unsigned index = 0;
  bool has_control_registers = false;  // a QEMU note gave CR0/CR3/CR4
  u64 cr0 = 0, cr3 = 0, cr4 = 0;
  u64 rip = 0, rsp = 0;  // aarch64: pc and sp
  std::optional<u32> pid;  // NT_PRSTATUS pr_pid (QEMU: vCPU index + 1; kdump: the task's pid)

  static constexpr u64 cr0_paging = u64{1} << 31;
  static constexpr u64 cr4_la57 = u64{1} << 12;

  [[nodiscard]] bool paging_enabled() const { return has_control_registers && (cr0 & cr0_paging); }
  // The root CR3 names (its low 12 bits, PCID or PWT/PCD, masked off).
  [[nodiscard]] u64 root() const;
  // 5-level paging exactly when CR4.LA57 is set.
  [[nodiscard]] paging_format format() const {
    return (cr4 & cr4_la57) != 0 ? paging_format::x86_64_la57 : paging_format::x86_64;
  }
};

// The VMCOREINFO note: KEY=VALUE lines, kept as text.
class vmcoreinfo {
 public:
  explicit vmcoreinfo(std::string_view text);

  [[nodiscard]] std::optional<std::string_view> value(std::string_view key) const;
  // NUMBER(name): decimal, possibly negative (phys_base often is).
  [[nodiscard]] std::optional<std::int64_t> number(std::string_view name) const;
  // SYMBOL(name): a kernel virtual address in hex without 0x.
  [[nodiscard]] std::optional<u64> symbol(std::string_view name) const;

  // An arm64 kernel's (it writes NUMBER(kimage_voffset)).
  [[nodiscard]] bool is_arm64() const;
  // x86-64: NUMBER(pgtable_l5_enabled); arm64: aarch64-{PAGESIZE}-{64 -
  // TCR_EL1_T1SZ, else VA_BITS}; nullopt when the kernel did not write them.
  [[nodiscard]] std::optional<paging_format> format() const;
  // arm64: the TTBR1 table every process shares, swapper_pg_dir's physical
  // address (its kernel-image VA minus kimage_voffset).
  [[nodiscard]] std::optional<u64> kernel_ttbr1() const;
  // Physical address of the kernel's own top-level table (init_top_pgt, or
  // swapper_pg_dir on older kernels): the symbol's offset in the kernel
  // image map plus phys_base.
  [[nodiscard]] std::optional<u64> kernel_root() const;
  [[nodiscard]] std::optional<std::string_view> os_release() const { return value("OSRELEASE"); }

 private:
  std::map<std::string, std::string, std::less<>> entries_;
};

// A root known before any scan, with what identifies it.
struct root_hint {
  u64 root = 0;         // a CR3 value; flag bits are masked off where it is used
  std::string label;    // "cpu0", "cpu1", …, "kernel" (VMCOREINFO), "hint"
  std::string evidence;  // for people: "vCPU 0 CR3 0x… (CR4 0x…)"
};

// Everything a dump's notes say about its CPUs.
struct machine_state {
  std::vector<vcpu_state> vcpus;
  std::optional<vmcoreinfo> info;

  // vCPU roots in vCPU order (a CR3 shared by several vCPUs once), then the
  // kernel root from VMCOREINFO if no vCPU already names it.
  [[nodiscard]] std::vector<root_hint> known_roots() const;
  // The paging format the state implies: CR4.LA57 of the first vCPU with
  // paging on, else VMCOREINFO's pgtable_l5_enabled; nullopt if neither says.
  // Throws input_error (naming `origin`) if vCPUs disagree.
  [[nodiscard]] std::optional<paging_format> implied_format(std::string_view origin) const;
};

// Reads a dump's notes (an ELF core's PT_NOTE segments, a compressed kdump
// file's note area); `machine` is the ELF e_machine the NT_PRSTATUS layout
// depends on. Malformed notes of a known kind (a QEMU note whose size field
// does not match, a short NT_PRSTATUS) are input errors naming `origin`.
[[nodiscard]] machine_state read_machine_state(std::span<const elf_note> notes, u32 machine,
                                               std::string_view origin);

// Lines for `ptwalk info`: one per vCPU (CR3, CR4, implied format) and the
// VMCOREINFO facts that matter for walking.
[[nodiscard]] std::string describe_machine_state(const machine_state& state);

}  // namespace ptwalk
