// host/archive/archive_read.cpp — restore and in-memory loading of archived snapshots.
#include "archive/archive_read.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "common/lazy_mapping.hpp"
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

std::shared_ptr<const pack_reader> archive_reader::shared_pack(const std::string& name) {
  auto& slot = packs_[name];
  if (!slot) slot = std::make_shared<const pack_reader>(pack_path(archive_, name));
  return slot;
}

namespace {

// Throws input_error when a run of `index` names pages its pack does not
// have (decode_index has checked the pack numbers).
void check_runs(const snapshot_index& index, std::span<const pack_reader* const> packs) {
  for (const auto& run : index.runs) {
    const pack_reader& p = *packs[run.pack];
    if (run.first_page + run.count > p.pages() || run.first_page + run.count < run.first_page)
      throw input_error(fmt::format("{}: snapshot index refers to page {} of {} pages", p.path().string(),
                                    run.first_page + run.count - 1, p.pages()));
  }
}

// An archived image file rebuilt page by page as it is read (lazy_mapping).
// Runs and extras are sorted by file offset, so the pieces of one page are
// found by binary search; a few recently decompressed frames are kept, as
// neighbouring pages usually share one.
class archived_pages final : public page_source {
 public:
  archived_pages(std::shared_ptr<archive_reader> reader, std::string id, snapshot_index index)
      : reader_(std::move(reader)), id_(std::move(id)), index_(std::move(index)) {
    for (const auto& name : index_.packs) packs_.push_back(reader_->shared_pack(name));
    std::vector<const pack_reader*> plain;
    for (const auto& p : packs_) plain.push_back(p.get());
    check_runs(index_, plain);
    u64 at = 0;
    cache_.reserve(cached_frames);
    for (const auto& e : index_.extras) {
      extra_starts_.push_back(at);
      at += e.size;
    }
  }

  bool fill(std::size_t page, std::span<std::byte, lazy_page_size> out) override {
    const u64 begin = u64{page} * page_size, end = begin + page_size;
    std::memset(out.data(), 0, out.size());
    bool any = false;
    // A stored page at `offset` of the file, clipped to this page.
    const auto place = [&](u64 offset, std::span<const std::byte> bytes) {
      const u64 from = std::max(offset, begin), to = std::min(offset + bytes.size(), end);
      if (from >= to) return;
      std::memcpy(out.data() + (from - begin), bytes.data() + (from - offset), to - from);
      any = true;
    };
    auto run = std::upper_bound(index_.runs.begin(), index_.runs.end(), begin, [](u64 offset, const page_run& r) {
      return offset < r.file_offset + r.count * page_size;
    });
    for (; run != index_.runs.end() && run->file_offset < end; ++run) {
      const u64 first = run->file_offset >= begin ? 0 : (begin - run->file_offset) / page_size;
      for (u64 i = first; i < run->count && run->file_offset + i * page_size < end; ++i)
        place(run->file_offset + i * page_size, stored_page(run->pack, run->first_page + i, page));
    }
    auto extra = std::upper_bound(index_.extras.begin(), index_.extras.end(), begin,
                                  [](u64 offset, const byte_range& r) { return offset < r.offset + r.size; });
    for (; extra != index_.extras.end() && extra->offset < end; ++extra) {
      const u64 at = extra_starts_[static_cast<std::size_t>(extra - index_.extras.begin())];
      place(extra->offset, std::span<const std::byte>(index_.extra_bytes).subspan(at, extra->size));
    }
    return any;
  }

 private:
  static constexpr std::size_t cached_frames = 16;
  struct cached_frame {
    u32 pack = 0, frame = 0;
    u64 last_use = 0;
    std::vector<std::byte> bytes;
  };

  // Page `n` of pack `p`, its SHA-256 checked; `file_page` names it in errors.
  std::span<const std::byte> stored_page(u32 p, u64 n, std::size_t file_page) {
    const pack_reader& pack = *packs_[p];
    const u32 f = pack.frame_of(n);
    const auto damaged = [&](std::string_view why) {
      return input_error(fmt::format("{}: snapshot {}: page {} (file offset {:#x}) cannot be read: {}",
                                     reader_->path().string(), id_, file_page, u64{file_page} * page_size, why));
    };
    cached_frame* slot = nullptr;
    for (auto& c : cache_)
      if (c.pack == p && c.frame == f && !c.bytes.empty()) slot = &c;
    if (slot == nullptr) {
      if (cache_.size() < cached_frames) {
        slot = &cache_.emplace_back();
      } else {
        slot = &*std::min_element(cache_.begin(), cache_.end(),
                                  [](const cached_frame& a, const cached_frame& b) { return a.last_use < b.last_use; });
      }
      slot->bytes.resize(u64{pack.frames()[f].pages} * page_size);
      try {
        pack.decompress(f, slot->bytes);
      } catch (const input_error& e) {
        slot->bytes.clear();
        throw damaged(e.what());
      }
      slot->pack = p;
      slot->frame = f;
    }
    slot->last_use = ++uses_;
    const auto bytes = std::span<const std::byte>(slot->bytes).subspan((n - pack.frames()[f].first_page) * page_size,
                                                                       page_size);
    if (sha256(bytes) != pack.ids()[n])
      throw damaged(fmt::format("stored page {} of {} does not match its SHA-256", n, pack.path().string()));
    return bytes;
  }

  std::shared_ptr<archive_reader> reader_;  // holds the readers' lock: gc keeps the packs
  std::string id_;
  snapshot_index index_;
  std::vector<std::shared_ptr<const pack_reader>> packs_;
  std::vector<u64> extra_starts_;  // of each extra's bytes in index_.extra_bytes
  std::vector<cached_frame> cache_;
  u64 uses_ = 0;
};

bool environment_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::string_view(value) == "1";
}

}  // namespace

template <class Write>
void archive_reader::rebuild(const snapshot_index& index, unsigned jobs, Write&& write) {
  // Each page to place, grouped by the frame that holds it.
  struct placement {
    u32 pack, frame;
    u64 page_in_frame, file_offset;
  };
  std::vector<const pack_reader*> packs;
  for (const auto& name : index.packs) packs.push_back(&pack(name));
  check_runs(index, packs);
  std::vector<placement> placements;
  for (const auto& run : index.runs) {
    const pack_reader& p = *packs[run.pack];
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

opened_file open_archived_file(const std::shared_ptr<archive_reader>& reader, std::string_view id,
                               archive_read_mode mode) {
  if (mode == archive_read_mode::automatic && environment_flag("PTWALK_ARCHIVE_EAGER")) mode = archive_read_mode::eager;
  if (mode == archive_read_mode::eager) return {reader->load(id, 0), false};
  const snapshot_entry& e = reader->entry(id);
  snapshot_index index = reader->read_index(e);
  snapshot_spec spec = parse_manifest_line(index.spec_line, index_path(reader->path(), e.index), 1);
  const u64 size = index.file_size;
  const std::string name = fmt::format("{}: snapshot {}", reader->path().string(), e.id);
  auto made = lazy_mapping::create(name, size, std::make_unique<archived_pages>(reader, e.id, std::move(index)));
  if (auto* refused = std::get_if<std::string>(&made)) {
    if (mode == archive_read_mode::lazy) throw std::runtime_error(fmt::format("lazy archive reading: {}", *refused));
    static std::once_flag noted;
    std::call_once(noted, [&] {
      fmt::print(stderr, "ptwalk: note: {}: archived snapshots are decompressed whole before use\n", *refused);
    });
    return {reader->load(id, 0), false};
  }
  auto& mapping = std::get<std::unique_ptr<lazy_mapping>>(made);
  if (environment_flag("PTWALK_ARCHIVE_STATS")) mapping->print_stats_when_released();
  return {{std::move(spec), std::make_shared<const mapped_file>(std::move(mapping))}, true};
}

void add_archived_regions(memory_image& image, const archive_source& source, const std::filesystem::path& base_dir,
                          archive_read_mode mode) {
  const std::filesystem::path dir(source.archive);
  const auto reader = std::make_shared<archive_reader>(dir.is_absolute() ? dir : base_dir / dir);
  auto [spec, file] = open_archived_file(reader, source.snapshot, mode).loaded;
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
