// tests/support/archive_fleets.hpp — fleets for the archive tests, built from a generated guest.
//
// Sandbox fleets repeat one guest image with small differences: `variants`
// copies of a generated snapshot's raw image, each with a few pages
// rewritten, and copy-on-write children whose pages are their parent's
// except a few written and a few freed (zeroed). One variant is written as
// an ELF core (headers and notes before unaligned segments) so the archive
// must keep the container bytes too. expect_round_trip restores a
// manifest's snapshots from an archive and compares them with the originals.
#pragma once

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "generate/fleet_generator.hpp"
#include "input/manifest.hpp"
#include "support/elf_builder.hpp"
#include "support/run_cli.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk::testing {

inline std::vector<std::byte> read_bytes(const std::filesystem::path& file) {
  const std::string text = read_text(file);
  const auto* p = reinterpret_cast<const std::byte*>(text.data());
  return {p, p + text.size()};
}

// Overwrites `count` random 4 KiB pages with random bytes (zero = true: with zeros).
inline void touch_pages(std::vector<std::byte>& image, std::mt19937_64& rng, int count, bool zero = false) {
  const u64 pages = image.size() / 4096;
  for (int i = 0; i < count; ++i) {
    const u64 page = rng() % pages;
    for (u64 b = 0; b < 4096; ++b) image[page * 4096 + b] = zero ? std::byte{0} : static_cast<std::byte>(rng());
  }
}

// Writes the fleet into `dir` and returns its manifest. Snapshot ids:
// base, v1..v{variants}, cow1..cow{children}, elf.
inline std::filesystem::path write_sandbox_fleet(const temp_dir& dir, int variants, int children) {
  const auto generated = dir / "generated";
  (void)write_fleet(parse_fleet_shape("small"), generated);
  snapshot_spec base = read_manifest(generated / "manifest.jsonl").front();
  const auto image = read_bytes(generated / std::get<raw_source>(base.memory).path);
  std::mt19937_64 rng(42);
  std::string manifest;
  const auto emit = [&](const std::string& id, const std::vector<std::byte>& bytes, bool as_elf) {
    snapshot_spec spec = base;
    spec.id = id;
    spec.meta = nullptr;
    if (as_elf) {
      elf_core_builder elf;
      elf.set_notes({{"CORE", 1, std::vector<std::byte>(336, std::byte{7})}});
      const u64 half = bytes.size() / 2 / 4096 * 4096;
      elf.add_load(std::get<raw_source>(base.memory).base, {bytes.begin(), bytes.begin() + half});
      elf.add_load(std::get<raw_source>(base.memory).base + half, {bytes.begin() + half, bytes.end()});
      dir.write(id + ".elf", elf.build());
      spec.memory = elf_source{id + ".elf"};
    } else {
      dir.write(id + ".img", bytes);
      spec.memory = raw_source{id + ".img", std::get<raw_source>(base.memory).base};
    }
    manifest += format_manifest_line(spec) + "\n";
  };
  emit("base", image, false);
  std::vector<std::byte> parent = image;
  for (int v = 1; v <= variants; ++v) {
    auto copy = image;
    touch_pages(copy, rng, 3);
    emit(fmt::format("v{}", v), copy, false);
    if (v == 1) parent = copy;
  }
  for (int c = 1; c <= children; ++c) {
    auto child = parent;
    touch_pages(child, rng, 2);
    touch_pages(child, rng, 2, true);
    emit(fmt::format("cow{}", c), child, false);
    parent = child;
  }
  auto elf_copy = image;
  touch_pages(elf_copy, rng, 1);
  emit("elf", elf_copy, true);
  return dir.write("fleet.jsonl", manifest);
}

// The image file a raw or ELF snapshot was added from, as its manifest names it.
inline std::string file_of(const snapshot_spec& spec) {
  if (const auto* raw = std::get_if<raw_source>(&spec.memory)) return raw->path;
  return std::get<elf_source>(spec.memory).path;
}

// Restores every snapshot of `manifest` (raw or ELF) and compares it with its original, byte for byte.
inline void expect_round_trip(const temp_dir& dir, const std::filesystem::path& archive,
                              const std::filesystem::path& manifest) {
  for (const auto& spec : read_manifest(manifest)) {
    const auto out = dir / ("restored-" + spec.id);
    const auto restore = run_ptwalk(dir, {"archive", "restore", archive.string(), spec.id, "--out", out.string()});
    ASSERT_EQ(restore.status, 0) << restore.err;
    const std::filesystem::path named(file_of(spec));
    const auto original = named.is_absolute() ? named : manifest.parent_path() / named;
    const mapped_file a(original), b(out);
    ASSERT_EQ(a.bytes().size(), b.bytes().size()) << spec.id;
    EXPECT_EQ(std::memcmp(a.bytes().data(), b.bytes().data(), a.bytes().size()), 0) << spec.id;
    std::filesystem::remove(out);
  }
}

// Every file under `dir` by relative path, with its bytes: two archives
// written by different backends must compare equal.
inline std::map<std::string, std::string> files_under(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) out[std::filesystem::relative(entry.path(), dir).string()] = read_text(entry.path());
  return out;
}

}  // namespace ptwalk::testing
