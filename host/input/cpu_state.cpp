// host/cpu_state.cpp — QEMU CPU-state, NT_PRSTATUS and VMCOREINFO notes.
#include "input/cpu_state.hpp"

#include <elf.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "input/manifest.hpp"
#include "ptwalk/walk.hpp"

namespace ptwalk {

namespace {

// Layout of QEMU's struct QEMUCPUState (target/i386/arch_dump.c), version 1:
// version, size, 18 general registers (rax … r15, rip, rflags), 10 segments
// of 24 bytes (cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt), cr[5], then
// fields QEMU added later without a version bump (kernel_gs_base), which is
// why `size` and not the version tells how much is there.
namespace qemu_note {
constexpr u32 version = 1;
constexpr std::size_t rsp = 8 + 6 * 8;
constexpr std::size_t rip = 8 + 16 * 8;
constexpr std::size_t cr = 8 + 18 * 8 + 10 * 24;
constexpr std::size_t min_size = cr + 5 * 8;
}  // namespace qemu_note

// struct elf_prstatus: pr_pid at 32 and pr_reg at 112 on both; x86-64's
// pr_reg is user_regs_struct (27 registers in ptrace order, 336 bytes in
// all), aarch64's x0…x30, sp, pc, pstate (392 bytes; no system registers:
// TTBRs come from VMCOREINFO or the user).
struct prstatus_layout {
  u32 machine;
  std::string_view name;
  std::size_t size, pc, sp;
};
constexpr std::size_t prstatus_pid = 32, prstatus_regs = 112;
constexpr prstatus_layout prstatus_layouts[] = {
    {EM_X86_64, "x86-64", 336, prstatus_regs + 16 * 8, prstatus_regs + 19 * 8},
    {EM_AARCH64, "aarch64", 392, prstatus_regs + 32 * 8, prstatus_regs + 31 * 8},
};

// x86-64 __START_KERNEL_map: where the kernel image is mapped, whatever its
// physical load address (phys_base) is.
constexpr u64 start_kernel_map = 0xffff'ffff'8000'0000ull;

template <class T>
T load(std::span<const std::byte> bytes, std::size_t offset) {
  T value{};
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

}  // namespace

u64 vcpu_state::root() const { return root_table_address<x86_64_4level>(cr3); }

vmcoreinfo::vmcoreinfo(std::string_view text) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (const auto eq = line.find('='); eq != std::string_view::npos)
      entries_.emplace(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
  }
}

std::optional<std::string_view> vmcoreinfo::value(std::string_view key) const {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::int64_t> vmcoreinfo::number(std::string_view name) const {
  const auto text = value(fmt::format("NUMBER({})", name));
  if (!text) return std::nullopt;
  // arm64 writes some in hex with 0x (kimage_voffset, PHYS_OFFSET, TCR_EL1_T1SZ).
  if (text->starts_with("0x")) {
    const auto value = parse_hex(*text);
    if (!value) return std::nullopt;
    return static_cast<std::int64_t>(*value);
  }
  std::int64_t out = 0;
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), out);
  if (error != std::errc{} || end != text->data() + text->size()) return std::nullopt;
  return out;
}

std::optional<u64> vmcoreinfo::symbol(std::string_view name) const {
  const auto text = value(fmt::format("SYMBOL({})", name));
  if (!text) return std::nullopt;
  return parse_hex(*text);
}

bool vmcoreinfo::is_arm64() const { return number("kimage_voffset").has_value(); }

std::optional<paging_format> vmcoreinfo::format() const {
  if (is_arm64()) {
    // The kernel half's VA size (64 - T1SZ) where written, else VA_BITS; SPEC
    // §2.1 formats have the same size for both halves.
    const auto t1sz = number("TCR_EL1_T1SZ");
    const auto va_bits = t1sz ? std::optional<std::int64_t>(64 - *t1sz) : number("VA_BITS");
    const auto page_size = value("PAGESIZE");
    if (!va_bits || !page_size) return std::nullopt;
    const auto granule_kib = std::atoi(std::string(*page_size).c_str()) / 1024;
    return parse_format(fmt::format("aarch64-{}k-{}", granule_kib, *va_bits));
  }
  const auto l5 = number("pgtable_l5_enabled");
  if (!l5) return std::nullopt;
  return *l5 != 0 ? paging_format::x86_64_la57 : paging_format::x86_64;
}

std::optional<u64> vmcoreinfo::kernel_root() const {
  auto pgd = symbol("init_top_pgt");
  if (!pgd) pgd = symbol("swapper_pg_dir");
  const auto phys_base = number("phys_base");
  if (!pgd || !phys_base || *pgd < start_kernel_map) return std::nullopt;
  return *pgd - start_kernel_map + static_cast<u64>(*phys_base);
}

std::optional<u64> vmcoreinfo::kernel_ttbr1() const {
  const auto pgd = symbol("swapper_pg_dir");
  const auto voffset = number("kimage_voffset");
  if (!pgd || !voffset) return std::nullopt;
  return *pgd - static_cast<u64>(*voffset);
}

std::vector<root_hint> machine_state::known_roots() const {
  std::vector<root_hint> out;
  const auto seen = [&](u64 root) {
    return std::any_of(out.begin(), out.end(), [&](const root_hint& k) { return k.root == root; });
  };
  for (const auto& cpu : vcpus)
    if (cpu.paging_enabled() && !seen(cpu.root()))
      out.push_back({cpu.root(), fmt::format("cpu{}", cpu.index),
                     fmt::format("vCPU {} CR3 {} (CR4 {})", cpu.index, hex(cpu.cr3), hex(cpu.cr4))});
  if (info)
    if (const auto kernel = info->kernel_root(); kernel && !seen(*kernel))
      out.push_back({*kernel, "kernel", "VMCOREINFO init_top_pgt + phys_base"});
  return out;
}

std::optional<paging_format> machine_state::implied_format(std::string_view origin) const {
  std::optional<paging_format> from_cpus;
  for (const auto& cpu : vcpus) {
    if (!cpu.paging_enabled()) continue;
    if (from_cpus && *from_cpus != cpu.format())
      throw input_error(fmt::format("{}: vCPUs disagree on the paging format (CR4.LA57 differs)",
                                    origin));
    from_cpus = cpu.format();
  }
  if (from_cpus) return from_cpus;
  return info ? info->format() : std::nullopt;
}

machine_state read_machine_state(std::span<const elf_note> notes, u32 machine, std::string_view origin) {
  machine_state out;
  std::size_t prstatus_seen = 0, qemu_seen = 0;
  const auto cpu = [&](std::size_t index) -> vcpu_state& {
    while (out.vcpus.size() <= index) {
      out.vcpus.emplace_back();
      out.vcpus.back().index = static_cast<unsigned>(out.vcpus.size() - 1);
    }
    return out.vcpus[index];
  };
  for (const auto& note : notes) {
    if (note.name == "CORE" && note.type == NT_PRSTATUS) {
      const auto* layout = std::find_if(std::begin(prstatus_layouts), std::end(prstatus_layouts),
                                        [&](const prstatus_layout& l) { return l.machine == machine; });
      if (layout == std::end(prstatus_layouts)) continue;
      if (note.desc.size() != layout->size)
        throw input_error(fmt::format("{}: NT_PRSTATUS note of {} bytes ({} expects {})", origin,
                                      note.desc.size(), layout->name, layout->size));
      auto& state = cpu(prstatus_seen++);
      state.pid = load<u32>(note.desc, prstatus_pid);
      state.rip = load<u64>(note.desc, layout->pc);
      state.rsp = load<u64>(note.desc, layout->sp);
    } else if (note.name == "QEMU") {
      if (note.desc.size() < 8)
        throw input_error(fmt::format("{}: QEMU CPU-state note of {} bytes", origin, note.desc.size()));
      const auto version = load<u32>(note.desc, 0);
      const auto size = load<u32>(note.desc, 4);
      if (version != qemu_note::version)
        throw input_error(fmt::format("{}: QEMU CPU-state note version {} (expected {})", origin,
                                      version, qemu_note::version));
      if (size < qemu_note::min_size || size > note.desc.size())
        throw input_error(fmt::format("{}: QEMU CPU-state note says {} bytes, has {} (at least {} needed)",
                                      origin, size, note.desc.size(), qemu_note::min_size));
      auto& state = cpu(qemu_seen++);
      state.has_control_registers = true;
      state.rip = load<u64>(note.desc, qemu_note::rip);
      state.rsp = load<u64>(note.desc, qemu_note::rsp);
      state.cr0 = load<u64>(note.desc, qemu_note::cr + 0 * 8);
      state.cr3 = load<u64>(note.desc, qemu_note::cr + 3 * 8);
      state.cr4 = load<u64>(note.desc, qemu_note::cr + 4 * 8);
    } else if (note.name == "VMCOREINFO") {
      const std::string_view text(reinterpret_cast<const char*>(note.desc.data()), note.desc.size());
      out.info.emplace(text.substr(0, text.find('\0')));
    }
  }
  return out;
}

std::string describe_machine_state(const machine_state& state) {
  std::string out;
  for (const auto& cpu : state.vcpus) {
    out += fmt::format("  vcpu {}:", cpu.index);
    if (cpu.pid) out += fmt::format(" pid {}", *cpu.pid);
    out += fmt::format(" rip {} rsp {}", hex(cpu.rip), hex(cpu.rsp));
    if (state.info && state.info->is_arm64()) {
      out += " (aarch64: pc, sp; no system registers in the notes)\n";
    } else if (!cpu.has_control_registers) {
      out += " (no control registers: no QEMU note)\n";
    } else if (!cpu.paging_enabled()) {
      out += fmt::format(" cr0 {}: paging off\n", hex(cpu.cr0));
    } else {
      out += fmt::format(" cr3 {} cr4 {} → root {} format {}\n", hex(cpu.cr3), hex(cpu.cr4),
                         hex(cpu.root()), format_name(cpu.format()));
    }
  }
  if (state.info) {
    out += "  vmcoreinfo:";
    if (const auto release = state.info->os_release()) out += fmt::format(" osrelease {}", *release);
    if (const auto f = state.info->format()) out += fmt::format(" format {}", format_name(*f));
    if (const auto root = state.info->kernel_root()) out += fmt::format(" kernel root {}", hex(*root));
    if (const auto ttbr1 = state.info->kernel_ttbr1()) out += fmt::format(" ttbr1 {} (swapper_pg_dir)", hex(*ttbr1));
    out += "\n";
  }
  return out;
}

}  // namespace ptwalk
