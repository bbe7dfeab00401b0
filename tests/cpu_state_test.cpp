// CPU state from ELF core notes: QEMU CPU-state and NT_PRSTATUS per vCPU,
// VMCOREINFO facts, the roots and format they imply, and every malformed note.
#include <gtest/gtest.h>

#include <elf.h>

#include <cstring>

#include "input/cpu_state.hpp"
#include "support/error_of.hpp"
#include "support/cpu_notes.hpp"
#include "support/elf_builder.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::cr4_4level;
using testing::cr4_la57;
using testing::elf_core_builder;
using testing::paging_on;
using testing::prstatus_note;
using testing::qemu_note;
using testing::store;
using testing::text;

constexpr std::string_view vmcoreinfo_text =
    "OSRELEASE=6.1.0-56-amd64\n"
    "SYMBOL(swapper_pg_dir)=ffffffffba410000\n"
    "NUMBER(phys_base)=-799014912\n"
    "SYMBOL(init_top_pgt)=ffffffffba410000\n"
    "NUMBER(pgtable_l5_enabled)=0\n"
    "KERNELOFFSET=37a00000\n";

machine_state read_core(const testing::temp_dir& dir, std::vector<elf_core_builder::note> notes) {
  elf_core_builder b;
  b.add_load(0, std::vector<std::byte>(4096));
  b.set_notes(std::move(notes));
  const elf_core core(dir.write("core.elf", b.build()));
  return read_machine_state(core.notes(), core.machine(), core.path().string());
}

using testing::error_of;

TEST(CpuState, PairsPrstatusAndQemuNotesPerVcpuAsQemuOrdersThem) {
  const testing::temp_dir dir;
  // QEMU writes every vCPU's NT_PRSTATUS, then every vCPU's QEMU note.
  const auto state = read_core(dir, {{"CORE", NT_PRSTATUS, prstatus_note(1, 0x1111)},
                                     {"CORE", NT_PRSTATUS, prstatus_note(2, 0x2222)},
                                     {"QEMU", 0, qemu_note(paging_on, 0x1062000, cr4_4level)},
                                     {"QEMU", 0, qemu_note(paging_on, 0x11f09801, cr4_4level)}});
  ASSERT_EQ(state.vcpus.size(), 2u);
  EXPECT_EQ(state.vcpus[0].pid, 1u);
  EXPECT_EQ(state.vcpus[1].pid, 2u);
  EXPECT_EQ(state.vcpus[0].cr3, 0x1062000u);
  EXPECT_EQ(state.vcpus[0].cr4, cr4_4level);
  EXPECT_EQ(state.vcpus[0].rip, 0xffffffff81000000ull);
  EXPECT_EQ(state.vcpus[0].rsp, 0xffffc90000003f00ull);
  // PCID and PWT/PCD bits are not part of the root.
  EXPECT_EQ(state.vcpus[1].root(), 0x11f09000u);
  EXPECT_EQ(state.vcpus[1].format(), paging_format::x86_64);
  EXPECT_FALSE(state.info.has_value());
  EXPECT_EQ(state.implied_format("core"), paging_format::x86_64);
}

TEST(CpuState, La57InCr4MeansFiveLevelPaging) {
  const testing::temp_dir dir;
  const auto state = read_core(dir, {{"QEMU", 0, qemu_note(paging_on, 0x1070000, cr4_la57)}});
  ASSERT_EQ(state.vcpus.size(), 1u);
  EXPECT_EQ(state.vcpus[0].format(), paging_format::x86_64_la57);
  EXPECT_EQ(state.implied_format("core"), paging_format::x86_64_la57);
  EXPECT_NE(describe_machine_state(state).find("cr3 0x1070000 cr4 0x751ef0 → root 0x1070000 format x86_64-la57"),
            std::string::npos)
      << describe_machine_state(state);
}

TEST(CpuState, VcpusThatDisagreeOnTheFormatAreAnError) {
  const testing::temp_dir dir;
  const auto state = read_core(dir, {{"QEMU", 0, qemu_note(paging_on, 0x1000, cr4_la57)},
                                     {"QEMU", 0, qemu_note(paging_on, 0x2000, cr4_4level)}});
  EXPECT_EQ(error_of([&] { (void)state.implied_format("core.elf"); }),
            "core.elf: vCPUs disagree on the paging format (CR4.LA57 differs)");
}

TEST(CpuState, VcpuWithPagingOffGivesNoRootAndNoFormat) {
  const testing::temp_dir dir;
  // A vCPU still in real mode (CR0.PG clear) at dump time.
  const auto state = read_core(dir, {{"QEMU", 0, qemu_note(0x10, 0x5000, cr4_la57)}});
  EXPECT_TRUE(state.known_roots().empty());
  EXPECT_FALSE(state.implied_format("core").has_value());
  EXPECT_NE(describe_machine_state(state).find("paging off"), std::string::npos);
}

TEST(CpuState, KdumpCoreHasRegistersButNoControlRegisters) {
  const testing::temp_dir dir;
  const auto state = read_core(dir, {{"CORE", NT_PRSTATUS, prstatus_note(4242, 0xffffffff81234567ull)},
                                     {"VMCOREINFO", 0, text(vmcoreinfo_text)}});
  ASSERT_EQ(state.vcpus.size(), 1u);
  EXPECT_FALSE(state.vcpus[0].has_control_registers);
  EXPECT_EQ(state.vcpus[0].pid, 4242u);
  EXPECT_EQ(state.vcpus[0].rip, 0xffffffff81234567ull);
  // Only VMCOREINFO names a root and the format.
  const auto roots = state.known_roots();
  ASSERT_EQ(roots.size(), 1u);
  EXPECT_EQ(roots[0].label, "kernel");
  EXPECT_EQ(roots[0].root, 0xaa10000u);
  EXPECT_EQ(state.implied_format("core"), paging_format::x86_64);
}

TEST(CpuState, VmcoreinfoKernelRootIsInitTopPgtOffsetByPhysBase) {
  const vmcoreinfo info(vmcoreinfo_text);
  EXPECT_EQ(info.os_release(), "6.1.0-56-amd64");
  EXPECT_EQ(info.number("phys_base"), -799014912);
  EXPECT_EQ(info.symbol("init_top_pgt"), 0xffffffffba410000ull);
  // 0xffffffffba410000 - __START_KERNEL_map (0xffffffff80000000) + phys_base.
  EXPECT_EQ(info.kernel_root(), 0xaa10000u);
  EXPECT_EQ(info.format(), paging_format::x86_64);
  EXPECT_EQ(vmcoreinfo("NUMBER(pgtable_l5_enabled)=1\n").format(), paging_format::x86_64_la57);
  // Older kernels name only swapper_pg_dir; without phys_base there is no root.
  EXPECT_EQ(vmcoreinfo("SYMBOL(swapper_pg_dir)=ffffffff82a0a000\nNUMBER(phys_base)=0\n").kernel_root(),
            0x2a0a000u);
  EXPECT_FALSE(vmcoreinfo("SYMBOL(init_top_pgt)=ffffffff82a0a000\n").kernel_root().has_value());
  EXPECT_FALSE(vmcoreinfo("NUMBER(phys_base)=12x\n").number("phys_base").has_value());
}

TEST(CpuState, KnownRootsListVcpusFirstAndNameEachRootOnce) {
  const testing::temp_dir dir;
  // vCPU 1 runs on the kernel's own table, which VMCOREINFO names too.
  const auto state = read_core(dir, {{"QEMU", 0, qemu_note(paging_on, 0x3000, cr4_4level)},
                                     {"QEMU", 0, qemu_note(paging_on, 0xaa10000, cr4_4level)},
                                     {"QEMU", 0, qemu_note(paging_on, 0x3000, cr4_4level)},
                                     {"VMCOREINFO", 0, text(vmcoreinfo_text)}});
  const auto roots = state.known_roots();
  ASSERT_EQ(roots.size(), 2u);
  EXPECT_EQ(roots[0].root, 0x3000u);
  EXPECT_EQ(roots[0].label, "cpu0");
  EXPECT_EQ(roots[0].evidence, "vCPU 0 CR3 0x3000 (CR4 0x6f0)");
  EXPECT_EQ(roots[1].root, 0xaa10000u);
  EXPECT_EQ(roots[1].label, "cpu1");
}

TEST(CpuState, MalformedNotesAreInputErrorsNamingTheFile) {
  const testing::temp_dir dir;
  const auto path = (dir / "core.elf").string();
  auto oversized = qemu_note(paging_on, 0x1000, cr4_4level);
  store<u32>(oversized, 4, 512);
  EXPECT_EQ(error_of([&] { (void)read_core(dir, {{"QEMU", 0, oversized}}); }),
            path + ": QEMU CPU-state note says 512 bytes, has 440 (at least 432 needed)");
  auto version2 = qemu_note(paging_on, 0x1000, cr4_4level);
  store<u32>(version2, 0, 2);
  EXPECT_EQ(error_of([&] { (void)read_core(dir, {{"QEMU", 0, version2}}); }),
            path + ": QEMU CPU-state note version 2 (expected 1)");
  EXPECT_EQ(error_of([&] { (void)read_core(dir, {{"QEMU", 0, std::vector<std::byte>(4)}}); }),
            path + ": QEMU CPU-state note of 4 bytes");
  EXPECT_EQ(error_of([&] { (void)read_core(dir, {{"CORE", NT_PRSTATUS, std::vector<std::byte>(100)}}); }),
            path + ": NT_PRSTATUS note of 100 bytes (x86-64 expects 336)");
  // An older QEMU without kernel_gs_base (432 bytes) is fine.
  auto older = qemu_note(paging_on, 0x1000, cr4_4level);
  older.resize(432);
  store<u32>(older, 4, 432);
  EXPECT_EQ(read_core(dir, {{"QEMU", 0, older}}).vcpus.at(0).cr3, 0x1000u);
}

}  // namespace
}  // namespace ptwalk

namespace ptwalk {
namespace {

// VMCOREINFO as Debian's arm64 6.1 kernel writes it (values from the real
// fixture): hex NUMBERs, the kernel image VA of swapper_pg_dir.
constexpr std::string_view arm64_vmcoreinfo_text =
    "OSRELEASE=6.1.0-57-arm64\n"
    "PAGESIZE=4096\n"
    "SYMBOL(swapper_pg_dir)=ffffb415a5258000\n"
    "NUMBER(VA_BITS)=48\n"
    "NUMBER(kimage_voffset)=0xffffb41563a00000\n"
    "NUMBER(PHYS_OFFSET)=0x40000000\n"
    "KERNELOFFSET=3415a3c00000\n"
    "NUMBER(TCR_EL1_T1SZ)=0x10\n";

// aarch64 struct elf_prstatus: pr_pid at 32, x0..x30, sp, pc, pstate from 112; 392 bytes.
std::vector<std::byte> aarch64_prstatus_note(u32 pid, u64 pc, u64 sp) {
  std::vector<std::byte> desc(392);
  testing::store<u32>(desc, 32, pid);
  testing::store<u64>(desc, 112 + 31 * 8, sp);
  testing::store<u64>(desc, 112 + 32 * 8, pc);
  return desc;
}

machine_state read_aarch64_notes(const std::vector<std::pair<std::string_view, std::vector<std::byte>>>& notes) {
  std::vector<elf_note> out;
  for (const auto& [name, desc] : notes) out.push_back({name, name == "CORE" ? u32{NT_PRSTATUS} : 0u, desc});
  return read_machine_state(out, EM_AARCH64, "arm64.elf");
}

TEST(CpuStateArm64, VmcoreinfoGivesTheFormatAndSwapperPgDirAsTtbr1) {
  const vmcoreinfo info(arm64_vmcoreinfo_text);
  EXPECT_TRUE(info.is_arm64());
  EXPECT_EQ(info.format(), paging_format::aarch64_4k_48);
  EXPECT_EQ(info.kernel_ttbr1(), 0x41858000u);
  EXPECT_EQ(info.number("PHYS_OFFSET"), 0x40000000);
  EXPECT_FALSE(info.kernel_root().has_value()) << "no x86 kernel root on arm64";
  // 64 - T1SZ wins over VA_BITS; the granule comes from PAGESIZE.
  EXPECT_EQ(vmcoreinfo("PAGESIZE=4096\nNUMBER(VA_BITS)=48\nNUMBER(kimage_voffset)=0x1\nNUMBER(TCR_EL1_T1SZ)=0x19\n")
                .format(),
            paging_format::aarch64_4k_39);
  EXPECT_EQ(vmcoreinfo("PAGESIZE=65536\nNUMBER(VA_BITS)=42\nNUMBER(kimage_voffset)=0x1\n").format(),
            paging_format::aarch64_64k_42);
  // A size no SPEC format has, or a missing PAGESIZE, implies nothing.
  EXPECT_FALSE(vmcoreinfo("PAGESIZE=4096\nNUMBER(VA_BITS)=52\nNUMBER(kimage_voffset)=0x1\n").format());
  EXPECT_FALSE(vmcoreinfo("NUMBER(VA_BITS)=48\nNUMBER(kimage_voffset)=0x1\n").format());
  EXPECT_FALSE(vmcoreinfo(vmcoreinfo_text).is_arm64());
  EXPECT_FALSE(vmcoreinfo(vmcoreinfo_text).kernel_ttbr1().has_value());
}

TEST(CpuStateArm64, PrstatusGivesPidPcAndSpAndTheFormatComesFromVmcoreinfo) {
  const auto state = read_aarch64_notes({{"CORE", aarch64_prstatus_note(7, 0x4011d8, 0xffffd6b75e10)},
                                         {"VMCOREINFO", testing::text(arm64_vmcoreinfo_text)}});
  ASSERT_EQ(state.vcpus.size(), 1u);
  EXPECT_EQ(state.vcpus[0].pid, 7u);
  EXPECT_EQ(state.vcpus[0].rip, 0x4011d8u);
  EXPECT_EQ(state.vcpus[0].rsp, 0xffffd6b75e10u);
  EXPECT_FALSE(state.vcpus[0].has_control_registers);
  EXPECT_TRUE(state.known_roots().empty()) << "no TTBR0 in the notes";
  EXPECT_EQ(state.implied_format("arm64.elf"), paging_format::aarch64_4k_48);
  EXPECT_NE(describe_machine_state(state).find("ttbr1 0x41858000"), std::string::npos);
}

TEST(CpuStateArm64, PrstatusOfTheWrongSizeIsAnInputError) {
  const auto message = testing::error_of([] { (void)read_aarch64_notes({{"CORE", std::vector<std::byte>(336)}}); });
  EXPECT_EQ(message, "arm64.elf: NT_PRSTATUS note of 336 bytes (aarch64 expects 392)");
}

}  // namespace
}  // namespace ptwalk
