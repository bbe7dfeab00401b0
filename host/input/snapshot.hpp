// host/snapshot.hpp — a snapshot as the manifest describes it and as it is loaded.
//
// `snapshot_spec` is one manifest line (SPEC §5) as data: what to load.
// `loaded_snapshot` is the result: the mapped image plus its roots, ready to
// walk. Paths in a spec are as written in the manifest; `manifest_dir` makes
// relative ones absolute when loading.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "input/memory_image.hpp"
#include "ptwalk/format.hpp"

namespace ptwalk {

struct raw_source {
  std::string path;
  u64 base = 0;
};
struct elf_source {
  std::string path;
};
// A compressed kdump file (makedumpfile, QEMU kdump-*), flattened or not.
struct kdump_source {
  std::string path;
};
struct region_source {
  struct region {
    std::string path;
    u64 gpa = 0;
    u64 size = 0;
    u64 offset = 0;
  };
  std::vector<region> regions;
};
using memory_source = std::variant<raw_source, elf_source, kdump_source, region_source>;

struct snapshot_spec {
  std::string id;
  paging_format format = paging_format::x86_64;
  memory_source memory;
  std::vector<u64> roots;           // primacy order, as given (may carry CR3 flag bits)
  std::vector<std::string> labels;  // empty, or one per root
  nlohmann::json meta;              // free-form; null when absent
  // AArch64: the TTBR1 value of each root (the manifest's single "ttbr1" is
  // replicated); empty when only lower halves are walked, and always for x86.
  std::vector<u64> upper_roots;
};

struct loaded_snapshot {
  snapshot_spec spec;
  memory_image image;

  [[nodiscard]] const std::string& id() const { return spec.id; }
  [[nodiscard]] paging_format format() const { return spec.format; }
  [[nodiscard]] const std::vector<u64>& roots() const { return spec.roots; }
  [[nodiscard]] const std::vector<u64>& upper_roots() const { return spec.upper_roots; }
};

}  // namespace ptwalk
