// host/cli/dump_options.hpp — the options `ptwalk roots` and `ptwalk import` share.
//
// How to read a dump (raw base address, paging format) and how to discover
// its roots (hints, kernel-only tables, threads, scan backend); parsed once
// here so both commands accept and check them alike.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "input/manifest.hpp"
#include "discovery/root_discovery.hpp"

namespace ptwalk::cli {

struct dump_options {
  std::vector<std::string> hint_text;
  std::string format_text;
  std::string ttbr1_text;
  std::string base_text;
  bool keep_kernel_only = false;
  unsigned jobs = 0;
  std::string backend_text = "auto";

  [[nodiscard]] std::vector<u64> hints() const {
    std::vector<u64> out;
    for (const auto& text : hint_text) {
      const auto value = parse_hex(text);
      if (!value) throw input_error(fmt::format("--hint: bad hex \"{}\"", text));
      out.push_back(*value);
    }
    return out;
  }
  [[nodiscard]] std::optional<paging_format> format() const {
    if (format_text.empty()) return std::nullopt;
    return parse_format(format_text);
  }
  // AArch64: the TTBR1 value every space shares, when the dump's VMCOREINFO does not say.
  [[nodiscard]] std::optional<u64> ttbr1() const {
    if (ttbr1_text.empty()) return std::nullopt;
    const auto value = parse_hex(ttbr1_text);
    if (!value) throw input_error(fmt::format("--ttbr1: bad hex \"{}\"", ttbr1_text));
    return value;
  }
  [[nodiscard]] scan_backend backend() const { return *parse_scan_backend(backend_text); }
  [[nodiscard]] u64 raw_base() const {
    if (base_text.empty()) return 0;
    const auto value = parse_hex(base_text);
    if (!value) throw input_error(fmt::format("--base: bad hex \"{}\"", base_text));
    return *value;
  }
  // What changes the bytes `roots` and `import` write: a shard part records
  // it so `ptwalk merge` refuses parts run with other options.
  [[nodiscard]] nlohmann::json part_options() const {
    nlohmann::json hex_hints = nlohmann::json::array();
    for (const u64 hint : hints()) hex_hints.push_back(hex(hint));
    const auto chosen = format();
    const auto kernel = ttbr1();
    return {{"format", chosen ? nlohmann::json(std::string(format_name(*chosen))) : nlohmann::json()},
            {"base", hex(raw_base())},
            {"ttbr1", kernel ? nlohmann::json(hex(*kernel)) : nlohmann::json()},
            {"hints", std::move(hex_hints)},
            {"keep_kernel_only", keep_kernel_only}};
  }
};

inline void add_dump_options(CLI::App& cmd, dump_options& o) {
  cmd.add_option("--hint", o.hint_text,
                 "a known root (CR3 or TTBR0 value, hex); repeatable. Dumps without CPU state need one, "
                 "or a kernel half that several tables share");
  cmd.add_option("--format", o.format_text,
                 "paging format (default: CR4.LA57 of the dump's vCPUs, else VMCOREINFO, else x86_64); "
                 "discovery scans x86_64, x86_64-la57, aarch64-4k-48 and aarch64-4k-39")
      ->check(CLI::IsMember({"x86_64", "x86_64-la57", "aarch64-4k-48", "aarch64-4k-39"}));
  cmd.add_option("--ttbr1", o.ttbr1_text,
                 "aarch64: the kernel's TTBR1 value (hex) every space shares (default: VMCOREINFO's "
                 "swapper_pg_dir - kimage_voffset)");
  cmd.add_option("--base", o.base_text, "guest-physical address of a raw file's first byte (default 0x0)");
  cmd.add_flag("--keep-kernel-only", o.keep_kernel_only,
               "also report tables whose user half is empty (exited processes, kernel copies)");
  cmd.add_option("--jobs", o.jobs, "scan threads (default: every core; with cuda, the threads gathering pages)");
  cmd.add_option("--backend", o.backend_text,
                 "who tests the pages: cpu (every core), cuda (the GPU), auto (cuda when a GPU is visible)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
}

}  // namespace ptwalk::cli
