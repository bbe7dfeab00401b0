// host/cli/walk.cpp — `ptwalk walk`: walk every space of a fleet (or of one image) to JSON Lines.
//
// A single ELF core or kdump file without --roots is walked at the roots
// `ptwalk roots` finds in it (root_discovery: vCPU CR3s first), in the
// format its CPU state implies unless --format is given; stderr says so.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "walk/batch_walk.hpp"
#include "command.hpp"
#include "discovery/root_discovery.hpp"
#include "input/manifest.hpp"
#include "shard_options.hpp"
#include "walk/walk_output.hpp"

namespace ptwalk::cli {
namespace {

struct walk_options {
  std::string manifest;
  std::string snapshot;
  std::string elf, kdump, raw, base, roots, ttbr1;
  std::string format = "x86_64";
  bool format_given = false;  // --format on the command line, not its default
  std::string va_range_text;
  std::string out;
  std::string backend = "auto";
  std::string shard;
};

// "LO:HI" in hex, half-open; "LO:" runs to the end of the address space.
va_range parse_va_range(std::string_view text) {
  const auto fail = [&](std::string_view problem) {
    return input_error(fmt::format("--va-range: \"{}\": {}", text, problem));
  };
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) throw fail("expected LO:HI or LO: in hex");
  const auto lo = parse_hex(text.substr(0, colon));
  if (!lo) throw fail("bad hex LO");
  if (colon + 1 == text.size()) return {*lo, ~u64{0}};
  const auto hi = parse_hex(text.substr(colon + 1));
  if (!hi) throw fail("bad hex HI");
  if (*hi <= *lo) throw fail("empty range (HI must be above LO)");
  return {*lo, *hi - 1};
}

// HEX,HEX,...; nothing when any item is not hex.
std::optional<std::vector<u64>> parse_hex_list(std::string_view text) {
  std::vector<u64> values;
  for (std::string_view rest = text; !rest.empty();) {
    const auto comma = rest.find(',');
    const auto value = parse_hex(rest.substr(0, comma));
    if (!value) return std::nullopt;
    values.push_back(*value);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  return values;
}

// --roots is a file when one exists by that name, else a comma-separated hex list.
std::vector<u64> parse_roots_argument(const std::string& text) {
  // The error_code form: a long list is no valid file name, and that is no error.
  std::error_code not_a_file;
  if (std::filesystem::exists(text, not_a_file)) return read_roots_file(text);
  auto roots = parse_hex_list(text);
  if (!roots)
    throw input_error(fmt::format("--roots: \"{}\" is neither a file nor a comma-separated list of hex roots", text));
  return *roots;
}

// --ttbr1: one TTBR1 value for every root, or HEX,HEX,... with one per root.
std::vector<u64> parse_ttbr1_argument(const std::string& text, paging_format format, std::size_t roots) {
  if (!is_aarch64(format))
    throw input_error(fmt::format("--ttbr1 is for aarch64 formats, not {}", format_name(format)));
  const auto values = parse_hex_list(text);
  if (!values) throw input_error(fmt::format("--ttbr1: bad hex in \"{}\"", text));
  if (values->size() == 1) return std::vector<u64>(roots, values->front());
  if (values->size() != roots)
    throw input_error(fmt::format("--ttbr1: {} values for {} roots", values->size(), roots));
  return *values;
}

// --elf or --kdump without --roots: the dump with the roots discovery finds in it.
loaded_snapshot with_discovered_roots(const walk_options& o) {
  const bool elf = !o.elf.empty();
  const std::string& path = elf ? o.elf : o.kdump;
  opened_dump dump = open_dump(path, 0, o.format_given ? parse_format(o.format) : std::nullopt);
  if (elf != std::holds_alternative<elf_source>(dump.snapshot.spec.memory) ||
      !elf != std::holds_alternative<kdump_source>(dump.snapshot.spec.memory))
    throw input_error(fmt::format("{}: not {}", path, elf ? "an ELF core" : "a compressed kdump file"));
  const root_discovery_result found = discover_dump_roots(dump, {}, false, 0);
  fmt::print(stderr, "{}", format_discovery_summary(found, path));
  fmt::print(stderr, "walk: no --roots given: walking the {} roots `ptwalk roots` finds (CPU state first), "
             "format {} ({})\n", found.roots.size(), format_name(dump.snapshot.format()), dump.format_origin);
  loaded_snapshot snapshot = std::move(dump.snapshot);
  snapshot.spec.id = std::filesystem::path(path).filename().string();
  for (const discovered_root& root : found.roots) {
    snapshot.spec.roots.push_back(root.root);
    snapshot.spec.labels.push_back(root.label);
  }
  return snapshot;
}

std::vector<loaded_snapshot> load_fleet(const walk_options& o) {
  if (o.manifest.empty() && o.roots.empty()) {
    std::vector<loaded_snapshot> fleet;
    fleet.push_back(with_discovered_roots(o));
    return fleet;
  }
  if (o.manifest.empty()) {
    // The single-image form: one snapshot named after its image file.
    snapshot_spec spec;
    spec.format = *parse_format(o.format);
    if (!o.elf.empty()) {
      spec.memory = elf_source{o.elf};
    } else if (!o.kdump.empty()) {
      spec.memory = kdump_source{o.kdump};
    } else {
      const auto base = o.base.empty() ? std::optional<u64>{0} : parse_hex(o.base);
      if (!base) throw input_error(fmt::format("--base: bad hex \"{}\"", o.base));
      spec.memory = raw_source{o.raw, *base};
    }
    spec.id = std::filesystem::path(o.elf + o.kdump + o.raw).filename().string();
    spec.roots = parse_roots_argument(o.roots);
    if (!o.ttbr1.empty()) spec.upper_roots = parse_ttbr1_argument(o.ttbr1, spec.format, spec.roots.size());
    std::vector<loaded_snapshot> fleet;
    fleet.push_back(load_snapshot(std::move(spec), {}));
    return fleet;
  }
  if (o.snapshot.empty()) return load_manifest(o.manifest);
  const std::filesystem::path manifest(o.manifest);
  for (auto& spec : read_manifest(manifest))
    if (spec.id == o.snapshot) {
      std::vector<loaded_snapshot> fleet;
      fleet.push_back(load_snapshot(std::move(spec), manifest.parent_path(), o.manifest));
      return fleet;
    }
  throw input_error(fmt::format("{}: no snapshot with id \"{}\"", o.manifest, o.snapshot));
}

// The walk of `fleet`, its records as JSON Lines on `out`; returns the
// summary, which the caller prints once the output is safely written.
std::string walk_and_write(const walk_options& o, const std::vector<loaded_snapshot>& fleet, va_range range,
                           std::ostream& out) {
  unsigned levels = 0;
  for (const auto& s : fleet) levels = std::max(levels, format_levels(s.format()));
  const auto start = std::chrono::steady_clock::now();
  const auto walks = walk_snapshots(fleet, *parse_backend(o.backend), range);
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  write_walk_jsonl(out, walks);
  return format_walk_summary(walks, levels, o.backend, elapsed.count());
}

// What a shard's record says changes the bytes of a walk.
nlohmann::json walk_part_options(va_range range) { return {{"va_range", {hex(range.first), hex(range.last)}}}; }

void run_walk(const walk_options& o) {
  if (o.manifest.empty() == (o.elf.empty() && o.kdump.empty() && o.raw.empty()))
    throw input_error("walk: give a MANIFEST, or one image with --elf, --kdump or --raw (and --roots)");
  if (!o.raw.empty() && o.roots.empty())
    throw input_error("walk: --raw needs --roots (a raw file has no CPU state to find them from; see ptwalk roots)");
  const va_range range = o.va_range_text.empty() ? va_range{} : parse_va_range(o.va_range_text);
  std::string summary;
  if (o.manifest.empty() || !o.snapshot.empty()) {
    if (!o.shard.empty() && o.shard != "none") throw input_error("walk: --shard needs a MANIFEST and no --snapshot");
    const auto fleet = load_fleet(o);
    write_output(o.out, [&](std::ostream& out) { summary = walk_and_write(o, fleet, range, out); });
  } else {
    const std::vector<snapshot_spec> specs = read_manifest(o.manifest);
    const sharding shard = resolve_shard("walk", o.shard, o.manifest, specs);
    const std::size_t first = shard.first(), end = shard.end(specs.size());
    write_share("walk", shard, walk_part_options(range), o.out, [&](std::ostream& out) {
      summary = walk_and_write(o, load_specs(std::span(specs).subspan(first, end - first), o.manifest), range, out);
    });
  }
  fmt::print(stderr, "{}", summary);
}

void setup_walk(CLI::App& app) {
  auto o = std::make_shared<walk_options>();
  auto* cmd = app.add_subcommand(
      "walk",
      "Walk every root of every snapshot; write leaf and alias records as JSON Lines (SPEC §5).");
  auto* manifest = cmd->add_option("manifest", o->manifest, "fleet manifest (JSON Lines)");
  cmd->add_option("--snapshot", o->snapshot, "walk only the snapshot with this id")->needs(manifest);
  auto* elf = cmd->add_option("--elf", o->elf, "single image: an ELF core (QEMU dump-guest-memory, kdump)")
                  ->excludes(manifest);
  auto* kdump = cmd->add_option("--kdump", o->kdump,
                                "single image: a compressed kdump file (makedumpfile, QEMU kdump-*; flattened too)")
                    ->excludes(manifest, elf);
  auto* raw = cmd->add_option("--raw", o->raw, "single image: a raw file of guest-physical memory")
                  ->excludes(manifest, elf, kdump);
  cmd->add_option("--base", o->base, "guest-physical address of the raw file's first byte (default 0x0)")
      ->needs(raw);
  cmd->add_option("--roots", o->roots,
                  "single image: a roots file (one hex root per line) or HEX,HEX,...; without it, an ELF core's or "
                  "kdump file's roots are discovered as `ptwalk roots` does")
      ->excludes(manifest);
  std::vector<std::string> formats;
  for (const paging_format f : all_formats) formats.emplace_back(format_name(f));
  cmd->add_option("--format", o->format, "single image: paging format (discovered roots: default from the dump's CPU state)")
      ->check(CLI::IsMember(formats))
      ->excludes(manifest)
      ->capture_default_str();
  cmd->add_option("--ttbr1", o->ttbr1,
                  "single image, aarch64: TTBR1 for every root (HEX) or one per root (HEX,HEX,...); "
                  "without it only the lower half is walked")
      ->excludes(manifest);
  cmd->add_option("--va-range", o->va_range_text, "walk only LO:HI (half-open, hex; HI may be omitted)");
  cmd->add_option("--out", o->out, "output file (default: stdout)");
  cmd->add_option("--backend", o->backend, "walker")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  add_shard_option(*cmd, o->shard);
  cmd->callback([o, cmd] {
    o->format_given = cmd->count("--format") > 0;
    run_walk(*o);
  });
}

}  // namespace

PTWALK_COMMAND(20, setup_walk);

}  // namespace ptwalk::cli
