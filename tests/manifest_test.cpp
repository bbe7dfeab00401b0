// The fleet manifest (SPEC §5): every key, every error with its line number,
// roots files, and loading (relative paths, regions, roots inside the image).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstring>

#include "input/json_path.hpp"
#include "input/manifest.hpp"
#include "walk/batch_walk.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::error_of;

snapshot_spec parse(std::string_view line) { return parse_manifest_line(line, "fleet.jsonl", 7); }
std::string parse_error(std::string_view line) { return error_of([&] { (void)parse(line); }); }

std::vector<std::byte> pattern_bytes(std::size_t size, u8 seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(seed + i * 7);
  return bytes;
}

TEST(manifest_parse, raw_source_with_every_optional_key) {
  const auto spec = parse(
      R"({"id":"vm1","format":"x86_64-la57","memory":{"raw":"a/b.raw","base":"0x100000"},)"
      R"("roots":["0x1a2b000","0X5001"],"labels":["1","pti-user"],"meta":{"from":"gen","n":[1,2]}})");
  EXPECT_EQ(spec.id, "vm1");
  EXPECT_EQ(spec.format, paging_format::x86_64_la57);
  const auto& raw = std::get<raw_source>(spec.memory);
  EXPECT_EQ(raw.path, "a/b.raw");
  EXPECT_EQ(raw.base, 0x100000u);
  EXPECT_EQ(spec.roots, (std::vector<u64>{0x1a2b000, 0x5001}));
  EXPECT_EQ(spec.labels, (std::vector<std::string>{"1", "pti-user"}));
  EXPECT_EQ(spec.meta["from"], "gen");
  EXPECT_EQ(spec.meta["n"][1], 2);
}

TEST(manifest_parse, optional_keys_default) {
  const auto spec = parse(R"({"id":"x","format":"x86_64","memory":{"raw":"r"},"roots":["1000"]})");
  EXPECT_EQ(spec.format, paging_format::x86_64);
  EXPECT_EQ(std::get<raw_source>(spec.memory).base, 0u);
  EXPECT_EQ(spec.roots, (std::vector<u64>{0x1000}));
  EXPECT_TRUE(spec.labels.empty());
  EXPECT_TRUE(spec.meta.is_null());
}

TEST(manifest_parse, aarch64_ttbr1_one_value_or_one_per_root) {
  const auto shared = parse(R"({"id":"a","format":"aarch64-4k-48","memory":{"raw":"r"},)"
                            R"("roots":["0x1000","0x2000"],"ttbr1":"0x00ff000000003001"})");
  EXPECT_EQ(shared.format, paging_format::aarch64_4k_48);
  EXPECT_EQ(shared.upper_roots, (std::vector<u64>{0x00ff'0000'0000'3001, 0x00ff'0000'0000'3001}));
  // Written back as one value, and read back the same.
  EXPECT_NE(format_manifest_line(shared).find(R"("ttbr1":"0xff000000003001")"), std::string::npos);
  EXPECT_EQ(parse(format_manifest_line(shared)).upper_roots, shared.upper_roots);

  const auto per_root = parse(R"({"id":"b","format":"aarch64-64k-42","memory":{"raw":"r"},)"
                              R"("roots":["0x1000","0x2000"],"ttbr1":["0x5000","0x6000"]})");
  EXPECT_EQ(per_root.upper_roots, (std::vector<u64>{0x5000, 0x6000}));
  EXPECT_EQ(parse(format_manifest_line(per_root)).upper_roots, per_root.upper_roots);

  const auto lower_only = parse(R"({"id":"c","format":"aarch64-16k-48","memory":{"raw":"r"},"roots":["0x1000"]})");
  EXPECT_TRUE(lower_only.upper_roots.empty());
  EXPECT_EQ(format_manifest_line(lower_only).find("ttbr1"), std::string::npos);
}

TEST(manifest_parse, elf_and_region_sources) {
  const auto elf = parse(R"({"id":"e","format":"x86_64","memory":{"elf":"/d/vm.elf"},"roots":["0x1000"]})");
  EXPECT_EQ(std::get<elf_source>(elf.memory).path, "/d/vm.elf");

  const auto regions = parse(
      R"({"id":"r","format":"x86_64","memory":{"regions":[)"
      R"({"path":"lo.bin","gpa":"0x0","size":"0xa0000","offset":"0x2000"},)"
      R"({"path":"hi.bin","gpa":"0x100000","size":"0x1000"}]},"roots":["0x1000"]})");
  const auto& list = std::get<region_source>(regions.memory).regions;
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].path, "lo.bin");
  EXPECT_EQ(list[0].gpa, 0u);
  EXPECT_EQ(list[0].size, 0xa0000u);
  EXPECT_EQ(list[0].offset, 0x2000u);
  EXPECT_EQ(list[1].path, "hi.bin");
  EXPECT_EQ(list[1].gpa, 0x100000u);
  EXPECT_EQ(list[1].offset, 0u);
}

TEST(manifest_parse, writer_output_parses_back_to_the_same_spec) {
  const std::string line =
      R"({"id":"vm","format":"x86_64","memory":{"regions":[{"path":"f","gpa":"0x1000","size":"0x2000","offset":"0x30"}]},)"
      R"("roots":["0x1000","0x2000"],"labels":["a","b"],"meta":{"k":1}})";
  const auto spec = parse(line);
  EXPECT_EQ(format_manifest_line(spec), line);
  const auto again = parse(format_manifest_line(spec));
  EXPECT_EQ(again.roots, spec.roots);
  EXPECT_EQ(again.labels, spec.labels);
  EXPECT_EQ(again.meta, spec.meta);
}

struct bad_line {
  const char* line;
  const char* message;  // after "fleet.jsonl:7: "
};

TEST(manifest_parse, every_error_names_file_line_and_problem) {
  const std::string ok_memory = R"("memory":{"raw":"r"})";
  const bad_line cases[] = {
      {R"({"id":"a",)", "malformed JSON at column 11: syntax error while parsing object key - "
                        "unexpected end of input; expected string literal"},
      {R"(["id"])", "expected a JSON object"},
      {R"({"format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})", R"(missing key "id")"},
      {R"({"id":3,"format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})", R"("id" must be a string)"},
      {R"({"id":"","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})", R"("id" must not be empty)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"colour":"red"})",
       R"(unknown key "colour")"},
      {R"({"id":"a","id":"b","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})",
       R"(duplicate key "id")"},
      {R"({"id":"a","memory":{"raw":"r"},"roots":["0x1000"]})", R"(missing key "format")"},
      {R"({"id":"a","format":"aarch64","memory":{"raw":"r"},"roots":["0x1000"]})",
       R"(unknown format "aarch64" (expected one of "x86_64", "x86_64-la57", "aarch64-4k-48", "aarch64-4k-39", )"
       R"("aarch64-16k-47", "aarch64-16k-48", "aarch64-64k-42", "aarch64-64k-48"))"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"ttbr1":"0x2000"})",
       R"("ttbr1" is for aarch64 formats, not "x86_64")"},
      {R"({"id":"a","format":"aarch64-4k-48","memory":{"raw":"r"},"roots":["0x1000"],"ttbr1":["0x2000","0x3000"]})",
       R"("ttbr1" has 2 entries for 1 roots)"},
      {R"({"id":"a","format":"aarch64-4k-48","memory":{"raw":"r"},"roots":["0x1000"],"ttbr1":"0xg"})",
       R"("ttbr1": bad hex "0xg")"},
      {R"({"id":"a","format":"aarch64-4k-48","memory":{"raw":"r"},"roots":["0x1000"],"ttbr1":["zz"]})",
       R"("ttbr1[0]": bad hex "zz")"},
      {R"({"id":"a","format":"aarch64-4k-48","memory":{"raw":"r"},"roots":["0x1000"],"ttbr1":7})",
       R"("ttbr1" must be a hex string such as "0x1000")"},
      {R"({"id":"a","format":4,"memory":{"raw":"r"},"roots":["0x1000"]})", R"("format" must be a string)"},
      {R"({"id":"a","format":"x86_64","roots":["0x1000"]})", R"(missing key "memory")"},
      {R"({"id":"a","format":"x86_64","memory":"r.raw","roots":["0x1000"]})",
       R"("memory" must be an object with exactly one of "raw", "elf", "kdump", "regions", "archive")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r","elf":"e"},"roots":["0x1000"]})",
       R"("memory" must be an object with exactly one of "raw", "elf", "kdump", "regions", "archive")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r","size":"0x10"},"roots":["0x1000"]})",
       R"(unknown key "memory.size")"},
      {R"({"id":"a","format":"x86_64","memory":{"elf":"e","base":"0x0"},"roots":["0x1000"]})",
       R"(unknown key "memory.base")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r","base":"0xzz"},"roots":["0x1000"]})",
       R"("memory.base": bad hex "0xzz")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r","base":4096},"roots":["0x1000"]})",
       R"("memory.base" must be a hex string such as "0x1000")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":""},"roots":["0x1000"]})",
       R"("memory.raw" must not be empty)"},
      {R"({"id":"a","format":"x86_64","memory":{"regions":{}},"roots":["0x1000"]})",
       R"("memory.regions" must be an array)"},
      {R"({"id":"a","format":"x86_64","memory":{"regions":[{"path":"f","gpa":"0x0","size":"0x1000"},)"
       R"({"path":"f","gpa":"0x1000","size":"0x1000","flags":"rw"}]},"roots":["0x1000"]})",
       R"(unknown key "memory.regions[1].flags")"},
      {R"({"id":"a","format":"x86_64","memory":{"regions":[{"path":"f","size":"0x1000"}]},"roots":["0x1000"]})",
       R"(missing key "memory.regions[0].gpa")"},
      {R"({"id":"a","format":"x86_64","memory":{"regions":[{"path":"f","gpa":"0x0","size":"0x1g"}]},"roots":["0x1000"]})",
       R"("memory.regions[0].size": bad hex "0x1g")"},
      {R"({"id":"a","format":"x86_64","memory":{"regions":["f"]},"roots":["0x1000"]})",
       R"("memory.regions[0]" must be an object)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"}})", R"(missing key "roots")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":[]})",
       R"("roots" must be a non-empty array of hex strings)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":"0x1000"})",
       R"("roots" must be a non-empty array of hex strings)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000","0x12345678901234567"]})",
       R"("roots[1]": bad hex "0x12345678901234567")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000",8192]})",
       R"("roots[1]" must be a hex string such as "0x1000")"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000","0x2000"],"labels":["one"]})",
       R"("labels" has 1 entries for 2 roots)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"labels":[1]})",
       R"("labels[0]" must be a string)"},
      {R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"meta":"gen"})",
       R"("meta" must be an object)"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(parse_error(c.line), std::string("fleet.jsonl:7: ") + c.message) << c.line;
}

TEST(manifest_read, skips_blank_lines_and_counts_them_in_line_numbers) {
  testing::temp_dir dir;
  const std::string good = R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})";
  const auto manifest = dir.write(
      "m.jsonl", good + "\n\n   \r\n" + R"({"id":"b","format":"x86_64","memory":{"raw":"r"},"roots":["0x2000"]})" +
                     "\n");
  const auto specs = read_manifest(manifest);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].id, "a");
  EXPECT_EQ(specs[1].id, "b");
  EXPECT_EQ(specs[1].roots, (std::vector<u64>{0x2000}));

  const auto broken = dir.write("broken.jsonl", good + "\n\n\n" + R"({"id":"c","format":"x86_64"})" + "\n");
  EXPECT_EQ(error_of([&] { (void)read_manifest(broken); }),
            broken.string() + R"(:4: missing key "memory")");
}

TEST(manifest_read, duplicate_ids_name_both_lines) {
  testing::temp_dir dir;
  const std::string line = R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"]})";
  const auto manifest = dir.write("m.jsonl", line + "\n\n" + line + "\n");
  EXPECT_EQ(error_of([&] { (void)read_manifest(manifest); }),
            manifest.string() + R"(:3: duplicate id "a" (first on line 1))");
}

TEST(manifest_read, missing_and_empty_manifests) {
  testing::temp_dir dir;
  const auto missing = dir / "nope.jsonl";
  EXPECT_EQ(error_of([&] { (void)read_manifest(missing); }),
            missing.string() + ": cannot open: No such file or directory");
  const auto empty = dir.write("empty.jsonl", "\n\n");
  EXPECT_EQ(error_of([&] { (void)read_manifest(empty); }), empty.string() + ": no snapshots in the manifest");
}

TEST(roots_file, comments_blank_lines_and_errors) {
  testing::temp_dir dir;
  const auto roots = dir.write("roots.txt", "# pid 1\n0x1000  # kernel\n\n  2000\n0xABC000\n");
  EXPECT_EQ(read_roots_file(roots), (std::vector<u64>{0x1000, 0x2000, 0xabc000}));
  const auto bad = dir.write("bad.txt", "0x1000\n# x\n0x2000 0x3000\n");
  EXPECT_EQ(error_of([&] { (void)read_roots_file(bad); }), bad.string() + R"(:3: bad hex root "0x2000 0x3000")");
  const auto none = dir.write("none.txt", "# nothing\n");
  EXPECT_EQ(error_of([&] { (void)read_roots_file(none); }), none.string() + ": no roots in the file");
}

TEST(manifest_load, relative_paths_are_relative_to_the_manifest) {
  testing::temp_dir dir;
  std::filesystem::create_directories(dir / "images");
  const auto raw = pattern_bytes(0x3000, 1);
  dir.write("images/a.raw", raw);
  const auto regions_file = pattern_bytes(0x5000, 9);
  dir.write("images/r.bin", regions_file);
  const auto manifest = dir.write(
      "fleet.jsonl",
      R"({"id":"a","format":"x86_64","memory":{"raw":"images/a.raw","base":"0x10000"},"roots":["0x11fff"]})"
      "\n"
      R"({"id":"r","format":"x86_64","memory":{"regions":[{"path":"images/r.bin","gpa":"0x200000","size":"0x2000","offset":"0x1000"},)"
      R"({"path":"images/r.bin","gpa":"0x0","size":"0x1000"}]},"roots":["0x201000","0x0"]})"
      "\n");
  const auto fleet = load_manifest(manifest);
  ASSERT_EQ(fleet.size(), 2u);
  // Raw: the whole file at its base.
  ASSERT_EQ(fleet[0].image.regions().size(), 1u);
  EXPECT_EQ(fleet[0].image.regions()[0].gpa, 0x10000u);
  EXPECT_EQ(fleet[0].image.regions()[0].size, 0x3000u);
  EXPECT_EQ(std::memcmp(fleet[0].image.bytes_at(0x10000, raw.size()), raw.data(), raw.size()), 0);
  // Regions: each at its offset of the (shared) file; the roots keep their CR3 bits.
  EXPECT_EQ(fleet[1].roots(), (std::vector<u64>{0x201000, 0}));
  ASSERT_EQ(fleet[1].image.regions().size(), 2u);
  EXPECT_EQ(std::memcmp(fleet[1].image.bytes_at(0x200000, 0x2000), regions_file.data() + 0x1000, 0x2000), 0);
  EXPECT_EQ(std::memcmp(fleet[1].image.bytes_at(0, 0x1000), regions_file.data(), 0x1000), 0);
  EXPECT_EQ(fleet[1].image.bytes_at(0x1000, 8), nullptr);
}

TEST(manifest_load, a_root_must_start_inside_a_region) {
  testing::temp_dir dir;
  dir.write("a.raw", pattern_bytes(0x2800, 0));
  const auto manifest = dir.write(
      "m.jsonl", R"({"id":"vm","format":"x86_64","memory":{"raw":"a.raw"},"roots":["0x1000","0x2000","0x3000"]})" "\n");
  // 0x2000 is cut off by the end of the 10 KiB image: it keeps its whole
  // entries and reads the rest as 0 (SPEC §1). 0x3000 is past the end.
  EXPECT_EQ(error_of([&] { (void)load_manifest(manifest); }),
            manifest.string() + ": snapshot vm: root 0x3000 is outside every region");
  snapshot_spec cut{"cut", paging_format::x86_64, raw_source{(dir / "a.raw").string(), 0}, {0x2000}, {}, {}, {}};
  const auto loaded = load_snapshot(cut, {});
  EXPECT_EQ(loaded.image.bytes_at(0x2000, 0x800) != nullptr, true);
  EXPECT_EQ(loaded.image.bytes_at(0x2800, 8), nullptr);
  // A region that ends inside the root's first entry: the root starts in
  // it, so it is walked; every entry, the cut first one too, reads as 0
  // and is counted dangling.
  dir.write("b.raw", pattern_bytes(0x1004, 0));
  snapshot_spec first_cut{"first-cut", paging_format::x86_64, raw_source{(dir / "b.raw").string(), 0}, {0x1000}, {}, {}, {}};
  const auto walk = reference_walk(load_snapshot(first_cut, {}));
  EXPECT_EQ(walk.stats.dangling_reads, 512u);
  EXPECT_EQ(walk.stats.entries_read, 512u);
  // Without a manifest the error names the memory file.
  snapshot_spec spec{"one", paging_format::x86_64, raw_source{(dir / "a.raw").string(), 0x100000}, {0x1000}, {}, {}, {}};
  EXPECT_EQ(error_of([&] { (void)load_snapshot(spec, {}); }),
            (dir / "a.raw").string() + ": snapshot one: root 0x1000 is outside every region");
}

TEST(manifest_load, missing_memory_file_is_named) {
  testing::temp_dir dir;
  const auto manifest = dir.write(
      "m.jsonl", R"({"id":"vm","format":"x86_64","memory":{"elf":"gone.elf"},"roots":["0x1000"]})" "\n");
  EXPECT_EQ(error_of([&] { (void)load_manifest(manifest); }),
            (dir / "gone.elf").string() + ": cannot open: No such file or directory");
}

TEST(manifest_load, region_past_the_end_of_its_file_is_an_error) {
  testing::temp_dir dir;
  dir.write("f.bin", pattern_bytes(0x1000, 0));
  const auto manifest = dir.write(
      "m.jsonl", R"({"id":"vm","format":"x86_64","memory":{"regions":[{"path":"f.bin","gpa":"0x0","size":"0x2000"}]},"roots":["0x0"]})" "\n");
  EXPECT_EQ(error_of([&] { (void)load_manifest(manifest); }),
            (dir / "f.bin").string() +
                ": region at offset 0x0 size 0x2000 runs past the end of the file (0x1000 bytes)");
}

// Issue 9's reproducers: deep nesting crashed info, compact and walk; an
// overflowing number escaped as an exception without file or line; a FIFO hung.
const std::string line_head = R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000"],"meta":{"x":)";

std::string nested_meta(std::size_t arrays) { return line_head + std::string(arrays, '[') + std::string(arrays, ']') + "}}"; }

TEST(manifest_parse, nesting_is_bounded_with_a_one_line_error) {
  // The line's object and "meta" are two levels; the arrays make the rest.
  EXPECT_EQ(parse(nested_meta(max_json_depth - 2)).meta["x"].size(), 1u);
  EXPECT_EQ(parse_error(nested_meta(max_json_depth - 1)),
            R"(fleet.jsonl:7: JSON nested deeper than 100 levels at "meta.x[0][0][0][0][0][0]…")");
  // A million levels (no closing brackets: the parser never gets that far).
  EXPECT_EQ(parse_error(line_head + std::string(1'000'000, '[')),
            R"(fleet.jsonl:7: JSON nested deeper than 100 levels at "meta.x[0][0][0][0][0][0]…")");
}

TEST(manifest_parse, a_number_overflowing_a_double_names_its_key) {
  EXPECT_EQ(parse_error(line_head + R"([1,{"b":1e400}]}})"),
            R"(fleet.jsonl:7: "meta.x[1].b": number overflow parsing '1e400')");
  EXPECT_EQ(parse_error(R"({"id":"a","format":"x86_64","memory":{"raw":"r"},"roots":["0x1000",-1e999]})"),
            R"(fleet.jsonl:7: "roots[1]": number overflow parsing '-1e999')");
}

TEST(manifest_read, a_fifo_is_refused_without_waiting_for_a_writer) {
  testing::temp_dir dir;
  const auto fifo = dir / "fleet.jsonl";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(error_of([&] { (void)read_manifest(fifo); }), fifo.string() + ": is a FIFO, not a regular file");
}

}  // namespace
}  // namespace ptwalk
