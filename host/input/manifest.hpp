// host/manifest.hpp — the JSON Lines fleet manifest (SPEC §5): parse, load, write.
//
// Parsing is strict: unknown keys, bad hex, unknown formats and missing
// fields are errors naming the manifest, the line number and the problem.
#pragma once

#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "input/snapshot.hpp"

namespace ptwalk {

// Lowercase hex with 0x and no leading zeros (SPEC §2), as used in all output.
[[nodiscard]] std::string hex(u64 value);
// Parses "0x…" (or plain hex digits); nullopt when malformed or over 64 bits.
[[nodiscard]] std::optional<u64> parse_hex(std::string_view text);

// One manifest line → spec; throws input_error("FILE:LINE: problem").
[[nodiscard]] snapshot_spec parse_manifest_line(std::string_view line,
                                                const std::filesystem::path& manifest,
                                                std::size_t line_number);
// All snapshots of a manifest (blank lines skipped).
[[nodiscard]] std::vector<snapshot_spec> read_manifest(const std::filesystem::path& manifest);
// The spec as one manifest line (no newline); inverse of parse_manifest_line.
[[nodiscard]] std::string format_manifest_line(const snapshot_spec& spec);

// A roots file: one hex root per line in primacy order; '#' starts a
// comment, blank lines are skipped. Throws input_error("FILE:LINE: problem").
[[nodiscard]] std::vector<u64> read_roots_file(const std::filesystem::path& path);

// Maps the spec's memory (relative paths resolved against `base_dir`) and
// checks every root's table lies inside some region. `origin` is the file
// errors about the snapshot name (the manifest); empty: its memory file.
[[nodiscard]] loaded_snapshot load_snapshot(snapshot_spec spec, const std::filesystem::path& base_dir,
                                            std::string_view origin = {});
// Reads and loads a whole manifest.
[[nodiscard]] std::vector<loaded_snapshot> load_manifest(const std::filesystem::path& manifest);
// Loads some of the manifest's snapshots (a shard's), as load_manifest would.
[[nodiscard]] std::vector<loaded_snapshot> load_specs(std::span<const snapshot_spec> specs,
                                                      const std::filesystem::path& manifest);

// The files a snapshot's memory is read from, relative paths resolved
// against `base_dir` (a manifest's folder), in the order the spec names them.
[[nodiscard]] std::vector<std::filesystem::path> memory_files(const memory_source& memory,
                                                              const std::filesystem::path& base_dir);

// `file` as a manifest in `manifest_dir` names it: relative to that folder,
// both made absolute and normal (`import` and `merge` of import parts).
[[nodiscard]] std::string manifest_relative_path(const std::filesystem::path& file,
                                                 const std::filesystem::path& manifest_dir);
// Replaces every file name `memory` holds by `rename(name)`.
void rename_memory_files(memory_source& memory, const std::function<std::string(const std::string&)>& rename);

}  // namespace ptwalk
