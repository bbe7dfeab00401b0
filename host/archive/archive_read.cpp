// host/archive/archive_read.cpp — restore and in-memory loading of archived snapshots.
#include "archive/archive_read.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/parallel_for.hpp"
#include "input/elf_core.hpp"
#include "input/manifest.hpp"

namespace ptwalk::archive {

archive_reader::archive_reader(const std::filesystem::path& archive)
    : archive_(archive), reading_(lock_for_reading(archive)), catalog_(read_catalog(archive)) {}

const snapshot_entry& archive_reader::entry(std::string_view id) const {
  const snapshot_entry* found = catalog_.find(id);
  if (found == nullptr) throw input_error(fmt::format("{}: no snapshot {} in the archive", archive_.string(), id));
  return *found;
}

snapshot_index archive_reader::read_index(const snapshot_entry& entry) const {
  const auto file = index_path(archive_, entry.index);
  const auto bytes = read_whole_file(file);
  if (to_hex(sha256(bytes)) != entry.index)
    throw input_error(fmt::format("{}: damaged snapshot index (its hash is not its name)", file.string()));
  return decode_index(bytes, file);
}

const pack_reader& archive_reader::pack(const std::string& name) {
  auto& slot = packs_[name];
  if (!slot) slot = std::make_unique<pack_reader>(pack_path(archive_, name));
  return *slot;
}

template <class Write>
void archive_reader::rebuild(const snapshot_index& index, unsigned jobs, Write&& write) {
  // Each page to place, grouped by the frame that holds it.
  struct placement {
    u32 pack, frame;
    u64 page_in_frame, file_offset;
  };
  std::vector<const pack_reader*> packs;
  for (const auto& name : index.packs) packs.push_back(&pack(name));
  std::vector<placement> placements;
  for (const auto& run : index.runs) {
    const pack_reader& p = *packs[run.pack];
    if (run.first_page + run.count > p.pages() || run.first_page + run.count < run.first_page)
      throw input_error(fmt::format("{}: snapshot index refers to page {} of {} pages", p.path().string(),
                                    run.first_page + run.count - 1, p.pages()));
    for (u64 i = 0; i < run.count; ++i) {
      const u64 page = run.first_page + i;
      const u32 frame = p.frame_of(page);
      placements.push_back({run.pack, frame, page - p.frames()[frame].first_page, run.file_offset + i * page_size});
    }
  }
  std::sort(placements.begin(), placements.end(), [](const placement& a, const placement& b) {
    return std::tie(a.pack, a.frame, a.file_offset) < std::tie(b.pack, b.frame, b.file_offset);
  });
  std::vector<std::size_t> group_starts;
  for (std::size_t i = 0; i < placements.size(); ++i)
    if (i == 0 || placements[i].pack != placements[i - 1].pack || placements[i].frame != placements[i - 1].frame)
      group_starts.push_back(i);
  group_starts.push_back(placements.size());

  parallel_for(group_starts.size() - 1, jobs, [&](std::size_t g) {
    const placement& first = placements[group_starts[g]];
    const pack_reader& p = *packs[first.pack];
    thread_local std::vector<std::byte> frame;
    frame.resize(u64{p.frames()[first.frame].pages} * page_size);
    p.decompress(first.frame, frame);
    // Pages that follow each other in the frame and in the file go out in one write.
    for (std::size_t i = group_starts[g]; i < group_starts[g + 1];) {
      std::size_t j = i + 1;
      while (j < group_starts[g + 1] && placements[j].page_in_frame == placements[j - 1].page_in_frame + 1 &&
             placements[j].file_offset == placements[j - 1].file_offset + page_size)
        ++j;
      write(placements[i].file_offset,
            std::span<const std::byte>(frame).subspan(placements[i].page_in_frame * page_size, (j - i) * page_size));
      i = j;
    }
  });
  std::size_t at = 0;
  for (const auto& e : index.extras) {
    write(e.offset, std::span<const std::byte>(index.extra_bytes).subspan(at, e.size));
    at += e.size;
  }
}

void archive_reader::restore(std::string_view id, const std::filesystem::path& out, unsigned jobs) {
  const snapshot_index index = read_index(entry(id));
  const auto temporary = out.parent_path() / fmt::format(".{}.tmp-{}", out.filename().string(), ::getpid());
  struct remove_unless_done {
    const std::filesystem::path& path;
    bool done = false;
    ~remove_unless_done() {
      if (!done) ::unlink(path.c_str());
    }
  } cleanup{temporary};
  {
    const file_descriptor fd = create_file(temporary);
    if (::ftruncate(fd.get(), static_cast<off_t>(index.file_size)) != 0)
      throw input_error(fmt::format("{}: cannot size the output: {}", out.string(), std::strerror(errno)));
    rebuild(index, jobs, [&](u64 offset, std::span<const std::byte> bytes) { write_at(fd.get(), bytes, offset, out); });
  }
  std::error_code ec;
  std::filesystem::rename(temporary, out, ec);
  if (ec) throw input_error(fmt::format("{}: cannot rename output into place: {}", out.string(), ec.message()));
  cleanup.done = true;
}

archive_reader::loaded_file archive_reader::load(std::string_view id, unsigned jobs) {
  const snapshot_entry& e = entry(id);
  snapshot_index index = read_index(e);
  loaded_file out{parse_manifest_line(index.spec_line, index_path(archive_, e.index), 1), nullptr};
  out.file = std::make_shared<const mapped_file>(
      archive_ / fmt::format("{}", e.id), index.file_size, [&](std::span<std::byte> memory) {
        rebuild(index, jobs, [&](u64 offset, std::span<const std::byte> bytes) {
          std::memcpy(memory.data() + offset, bytes.data(), bytes.size());
        });
      });
  return out;
}

void add_archived_regions(memory_image& image, const archive_source& source, const std::filesystem::path& base_dir) {
  const std::filesystem::path dir(source.archive);
  archive_reader reader(dir.is_absolute() ? dir : base_dir / dir);
  auto [spec, file] = reader.load(source.snapshot, 0);
  if (const auto* raw = std::get_if<raw_source>(&spec.memory)) {
    const u64 size = file->bytes().size();
    image.add_file_region(std::move(file), 0, size, raw->base);
  } else if (std::holds_alternative<elf_source>(spec.memory)) {
    add_elf_regions(image, elf_core(std::move(file)));
  } else {
    for (const auto& r : std::get<region_source>(spec.memory).regions)
      image.add_file_region(file, r.offset, r.size, r.gpa);
  }
}

}  // namespace ptwalk::archive
