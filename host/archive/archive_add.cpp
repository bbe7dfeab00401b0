// host/archive/archive_add.cpp — laying out, deduplicating, packing and committing snapshots.
#include "archive/archive_add.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "archive/pack.hpp"
#include "input/elf_core.hpp"
#include "input/manifest.hpp"
#include "common/parallel_for.hpp"

namespace ptwalk::archive {

namespace {

// A stretch of the file that holds guest memory from `gpa` on.
struct file_segment {
  u64 file_offset = 0, gpa = 0, size = 0;
};

std::filesystem::path resolve(const std::filesystem::path& base_dir, const std::string& path) {
  const std::filesystem::path p(path);
  return p.is_absolute() ? p : base_dir / p;
}

std::vector<file_segment> segments_of(const snapshot_spec& spec, const std::filesystem::path& base_dir,
                                      const image_opener& open, std::shared_ptr<const mapped_file>& file) {
  const auto open_file = [&](const std::string& path) {
    const auto resolved = resolve(base_dir, path);
    return open ? open(spec, resolved) : std::make_shared<const mapped_file>(resolved);
  };
  std::vector<file_segment> out;
  if (const auto* raw = std::get_if<raw_source>(&spec.memory)) {
    file = open_file(raw->path);
    out.push_back({0, raw->base, file->bytes().size()});
  } else if (const auto* elf = std::get_if<elf_source>(&spec.memory)) {
    file = open_file(elf->path);
    const elf_core core(file);
    for (const auto& load : core.load_segments()) out.push_back({load.file_offset, load.paddr, load.file_size});
  } else if (const auto* regions = std::get_if<region_source>(&spec.memory);
             regions != nullptr && !regions->regions.empty() &&
             std::all_of(regions->regions.begin(), regions->regions.end(),
                         [&](const auto& r) { return r.path == regions->regions.front().path; })) {
    file = open_file(regions->regions.front().path);
    for (const auto& r : regions->regions) {
      if (r.offset > file->bytes().size() || r.size > file->bytes().size() - r.offset)
        throw input_error(fmt::format("{}: region at offset {:#x} runs past the end of the file",
                                      file->path().string(), r.offset));
      out.push_back({r.offset, r.gpa, r.size});
    }
  } else {
    throw input_error(fmt::format("snapshot {}: archive add takes raw images, ELF cores and single-file region "
                                  "lists (convert compressed kdump files with `ptwalk import` first)",
                                  spec.id));
  }
  return out;
}

}  // namespace

image_file_layout lay_out_image_file(const snapshot_spec& spec, const std::filesystem::path& base_dir,
                                     const image_opener& open) {
  image_file_layout layout;
  for (const auto& s : segments_of(spec, base_dir, open, layout.file)) {
    const u64 first = (s.gpa + page_size - 1) / page_size * page_size;
    const u64 end = (s.gpa + s.size) / page_size * page_size;
    for (u64 gpa = first; gpa < end && gpa >= s.gpa; gpa += page_size)
      layout.page_offsets.push_back(s.file_offset + (gpa - s.gpa));
  }
  // Overlapping segments (kdump repeats the kernel text) give the same page twice.
  std::sort(layout.page_offsets.begin(), layout.page_offsets.end());
  layout.page_offsets.erase(std::unique(layout.page_offsets.begin(), layout.page_offsets.end()),
                            layout.page_offsets.end());
  u64 covered = 0;  // end of the pages' union so far
  const u64 file_size = layout.file->bytes().size();
  for (const u64 offset : layout.page_offsets) {
    if (offset > covered) layout.extras.push_back({covered, offset - covered});
    covered = std::max(covered, offset + page_size);
  }
  if (file_size > covered) layout.extras.push_back({covered, file_size - covered});
  return layout;
}

std::optional<page_location> page_store::find(const digest& id) const {
  const auto it = locations_.find(id);
  return it == locations_.end() ? std::nullopt : std::optional(it->second);
}

page_store load_page_store(const std::filesystem::path& archive, const catalog& contents) {
  page_store store;
  for (u32 p = 0; p < contents.packs.size(); ++p) {
    const pack_reader pack(pack_path(archive, contents.packs[p].name));
    for (u64 page = 0; page < pack.pages(); ++page) store.insert(pack.ids()[page], {p, page});
  }
  return store;
}

page_plan plan_pages(std::span<const page_identity> pages, page_store& store, u32 new_pack, u64 next_page) {
  page_plan plan;
  plan.where.resize(pages.size());
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (pages[i].zero) {
      ++plan.zero;
    } else if (const auto found = store.find(pages[i].id)) {
      plan.where[i] = found;
      ++plan.already_stored;
    } else {
      plan.where[i] = page_location{new_pack, next_page++};
      store.insert(pages[i].id, *plan.where[i]);
      plan.new_pages.push_back(i);
    }
  }
  return plan;
}

namespace {

// The index with pack numbers of the writer's list, before the new pack has a name.
struct pending_snapshot {
  snapshot_index index;
  snapshot_entry entry;
};

pending_snapshot store_snapshot(const snapshot_spec& spec, const std::filesystem::path& base_dir, page_store& store,
                                pack_writer& writer, u32 new_pack, const add_options& options,
                                add_report& report) {
  const image_file_layout layout = lay_out_image_file(spec, base_dir, options.open_image);
  const std::byte* base = layout.file->bytes().data();
  std::vector<const std::byte*> pages(layout.page_offsets.size());
  for (std::size_t i = 0; i < pages.size(); ++i) pages[i] = base + layout.page_offsets[i];
  const auto identities = identify_pages(pages, options.jobs, options.hash_backend);
  const page_plan plan = plan_pages(identities, store, new_pack, writer.pages());

  std::vector<const std::byte*> new_pages;
  std::vector<digest> new_ids;
  for (const std::size_t i : plan.new_pages) new_pages.push_back(pages[i]), new_ids.push_back(identities[i].id);
  (void)writer.append(new_pages, new_ids, options.jobs);
  crash_point("pack-appended");

  pending_snapshot out;
  out.index = index_image(spec, layout, plan.where);
  out.entry = {spec.id, "", out.index.file_size, pages.size(), plan.zero, plan.new_pages.size(), 0};
  report.input_bytes += out.index.file_size;
  report.pages += pages.size();
  report.zero_pages += plan.zero;
  report.already_stored += plan.already_stored;
  report.newly_stored += plan.new_pages.size();
  return out;
}

}  // namespace

snapshot_index index_image(const snapshot_spec& spec, const image_file_layout& layout,
                           std::span<const std::optional<page_location>> where) {
  snapshot_index index;
  index.spec_line = format_manifest_line(spec);
  index.file_size = layout.file->bytes().size();
  for (std::size_t i = 0; i < where.size(); ++i)
    if (where[i]) append_page(index.runs, layout.page_offsets[i], where[i]->pack, where[i]->page);
  index.extras = layout.extras;
  const std::byte* base = layout.file->bytes().data();
  for (const auto& e : layout.extras)
    index.extra_bytes.insert(index.extra_bytes.end(), base + e.offset, base + e.offset + e.size);
  return index;
}

std::string write_index(const std::filesystem::path& archive, snapshot_index& index,
                        const std::vector<std::string>& pack_names, u64& bytes) {
  std::vector<u32> local(pack_names.size(), ~0u);
  for (auto& run : index.runs) {
    if (local[run.pack] == ~0u) {
      local[run.pack] = static_cast<u32>(index.packs.size());
      index.packs.push_back(pack_names[run.pack]);
    }
    run.pack = local[run.pack];
  }
  const auto encoded = encode_index(index);
  const std::string name = to_hex(sha256(encoded));
  write_file_durably(index_path(archive, name), encoded);
  bytes = encoded.size();
  return name;
}

nlohmann::ordered_json add_report::to_json() const {
  return {{"snapshots", snapshots},
          {"input_bytes", input_bytes},
          {"pages", pages},
          {"zero_pages", zero_pages},
          {"already_stored", already_stored},
          {"newly_stored", newly_stored},
          {"written_bytes", written_bytes},
          {"archive_bytes", archive_bytes},
          {"archive_nonzero_pages", archive_nonzero_pages},
          {"archive_stored_pages", archive_stored_pages},
          {"seconds", seconds},
          {"hash_backend", hash_backend.name},
          {"hash_threads", hash_backend.threads}};
}

add_report add_snapshots(const std::filesystem::path& archive, const std::vector<snapshot_spec>& specs,
                         const std::filesystem::path& base_dir, const add_options& options) {
  const auto start = std::chrono::steady_clock::now();
  // Bad inputs fail here, before the archive (or its directory) is touched.
  for (const auto& spec : specs) (void)lay_out_image_file(spec, base_dir, options.open_image);
  const file_lock writing = lock_for_writing(archive);
  catalog next = open_catalog_for_writing(archive, options.level);
  for (const auto& spec : specs)
    if (next.find(spec.id) != nullptr)
      throw input_error(fmt::format("{}: snapshot {} is already in the archive", archive.string(), spec.id));

  add_report report;
  page_store store = load_page_store(archive, next);
  const u32 new_pack = static_cast<u32>(next.packs.size());
  pack_writer writer(archive / "packs", next.level);
  std::vector<pending_snapshot> added;
  for (const auto& spec : specs)
    added.push_back(store_snapshot(spec, base_dir, store, writer, new_pack, options, report));

  std::vector<std::string> pack_names;
  for (const auto& p : next.packs) pack_names.push_back(p.name);
  if (writer.pages() > 0) {
    pack_names.push_back(writer.finish());
    next.packs.push_back({pack_names.back(), writer.pages(), writer.bytes()});
    report.written_bytes += writer.bytes();
    crash_point("pack-finished");
  }
  for (auto& s : added) {
    s.entry.index = write_index(archive, s.index, pack_names, s.entry.index_bytes);
    report.written_bytes += s.entry.index_bytes;
    next.snapshots.push_back(s.entry);
  }
  crash_point("indexes-written");
  commit_catalog(archive, next);

  report.snapshots = specs.size();
  report.archive_bytes = next.stored_bytes();
  for (const auto& s : next.snapshots) report.archive_nonzero_pages += s.pages - s.zero_pages;
  for (const auto& p : next.packs) report.archive_stored_pages += p.pages;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.hash_backend = hash_backend_for(options.jobs, options.hash_backend);
  return report;
}

}  // namespace ptwalk::archive
