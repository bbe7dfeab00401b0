// host/archive/pack.cpp — writing and reading pack files (layout in pack.hpp and docs/ARCHIVE.md).
#include "archive/pack.hpp"

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/parallel_for.hpp"

namespace ptwalk::archive {

namespace {

constexpr u32 skippable_magic = 0x184D2A5E;  // one of zstd's skippable-frame magics
constexpr char footer_magic[8] = {'P', 'T', 'W', 'P', 'A', 'C', 'K', '1'};
constexpr u64 frame_entry_bytes = 16;  // offset u64, compressed size u32, pages u32
constexpr u64 footer_bytes = 24;       // pages u64, frames u64, magic

template <class T>
void put(std::vector<std::byte>& out, T value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);  // little-endian hosts only (x86-64, AArch64)
  out.insert(out.end(), p, p + sizeof value);
}
template <class T>
T get(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// One compression context per thread, reused across frames.
ZSTD_CCtx* thread_compressor() {
  thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  return ctx.get();
}
ZSTD_DCtx* thread_decompressor() {
  thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  return ctx.get();
}

}  // namespace

std::filesystem::path pack_path(const std::filesystem::path& archive, const std::string& name) {
  return archive / "packs" / (name + ".pack");
}

pack_writer::pack_writer(std::filesystem::path packs_dir, int level)
    : dir_(std::move(packs_dir)),
      temporary_(dir_ / fmt::format(".pack.tmp-{}-{}", ::getpid(), static_cast<const void*>(this))),
      level_(level),
      fd_(create_file(temporary_)) {}

pack_writer::~pack_writer() {
  if (!finished_) ::unlink(temporary_.c_str());
}

u64 pack_writer::append(std::span<const std::byte* const> pages, std::span<const digest> ids, unsigned jobs) {
  const u64 first = ids_.size();
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  // Batches of frames bound the compressed bytes held in memory at once.
  constexpr std::size_t batch_frames = 512;
  const std::size_t frame_count = (pages.size() + frame_pages - 1) / frame_pages;
  std::vector<std::vector<std::byte>> compressed(std::min(batch_frames, frame_count));
  for (std::size_t batch = 0; batch < frame_count; batch += batch_frames) {
    const std::size_t in_batch = std::min(batch_frames, frame_count - batch);
    parallel_for(in_batch, jobs, [&](std::size_t i) {
      const std::size_t begin = (batch + i) * frame_pages;
      const std::size_t count = std::min<std::size_t>(frame_pages, pages.size() - begin);
      thread_local std::vector<std::byte> plain;
      plain.resize(count * page_size);
      for (std::size_t p = 0; p < count; ++p) std::memcpy(plain.data() + p * page_size, pages[begin + p], page_size);
      auto& out = compressed[i];
      out.resize(ZSTD_compressBound(plain.size()));
      const std::size_t size =
          ZSTD_compressCCtx(thread_compressor(), out.data(), out.size(), plain.data(), plain.size(), level_);
      if (ZSTD_isError(size)) throw input_error(fmt::format("zstd: {}", ZSTD_getErrorName(size)));
      out.resize(size);
    });
    for (std::size_t i = 0; i < in_batch; ++i) {
      const u64 first_page = frames_.empty() ? 0 : frames_.back().first_page + frames_.back().pages;
      const u32 count = static_cast<u32>(std::min<std::size_t>(frame_pages, pages.size() - (batch + i) * frame_pages));
      frames_.push_back({size_, static_cast<u32>(compressed[i].size()), count, first_page});
      write_at(fd_.get(), compressed[i], size_, temporary_);
      size_ += compressed[i].size();
    }
  }
  return first;
}

std::string pack_writer::finish() {
  std::vector<std::byte> table;
  for (const auto& id : ids_) table.insert(table.end(), reinterpret_cast<const std::byte*>(id.data()),
                                           reinterpret_cast<const std::byte*>(id.data()) + id.size());
  for (const auto& f : frames_) {
    put(table, f.offset);
    put(table, f.compressed_size);
    put(table, f.pages);
  }
  put(table, static_cast<u64>(ids_.size()));
  put(table, static_cast<u64>(frames_.size()));
  table.insert(table.end(), reinterpret_cast<const std::byte*>(footer_magic),
               reinterpret_cast<const std::byte*>(footer_magic) + sizeof footer_magic);
  if (table.size() > 0xffffffffu) throw input_error(fmt::format("{}: pack table over 4 GiB", dir_.string()));
  std::vector<std::byte> header;
  put(header, skippable_magic);
  put(header, static_cast<u32>(table.size()));
  write_at(fd_.get(), header, size_, temporary_);
  write_at(fd_.get(), table, size_ + header.size(), temporary_);
  size_ += header.size() + table.size();
  sync_file(fd_.get(), temporary_);
  const std::string name = to_hex(sha256(table));
  const auto target = dir_ / (name + ".pack");
  std::error_code ec;
  std::filesystem::rename(temporary_, target, ec);
  if (ec) throw input_error(fmt::format("{}: cannot rename into place: {}", target.string(), ec.message()));
  finished_ = true;
  sync_directory(dir_);
  return name;
}

pack_reader::pack_reader(const std::filesystem::path& path) : file_(path) {
  const auto bytes = file_.bytes();
  const auto bad = [&](std::string_view problem) {
    return input_error(fmt::format("{}: not a ptwalk pack: {}", path.string(), problem));
  };
  if (bytes.size() < 8 + footer_bytes) throw bad("too short");
  const std::byte* footer = bytes.data() + bytes.size() - footer_bytes;
  if (std::memcmp(footer + 16, footer_magic, sizeof footer_magic) != 0) throw bad("no footer");
  const u64 page_count = get<u64>(footer), frame_count = get<u64>(footer + 8);
  const u64 limit = bytes.size() / 16;
  if (page_count > limit || frame_count > limit) throw bad("impossible counts");
  const u64 table_size = page_count * sizeof(digest) + frame_count * frame_entry_bytes + footer_bytes;
  if (table_size + 8 > bytes.size()) throw bad("table larger than the file");
  const std::byte* table = bytes.data() + bytes.size() - table_size;
  if (get<u32>(table - 8) != skippable_magic || get<u32>(table - 4) != table_size) throw bad("bad table header");
  table_name_ = to_hex(sha256({table, table_size}));
  ids_.resize(page_count);
  std::memcpy(ids_.data(), table, page_count * sizeof(digest));
  const std::byte* entry = table + page_count * sizeof(digest);
  const u64 data_end = bytes.size() - table_size - 8;
  u64 next_page = 0, next_offset = 0;
  for (u64 f = 0; f < frame_count; ++f, entry += frame_entry_bytes) {
    pack_frame frame{get<u64>(entry), get<u32>(entry + 8), get<u32>(entry + 12), next_page};
    if (frame.offset != next_offset || frame.compressed_size > data_end - frame.offset || frame.pages == 0)
      throw bad(fmt::format("frame {} out of place", f));
    next_offset += frame.compressed_size;
    next_page += frame.pages;
    frames_.push_back(frame);
  }
  if (next_page != page_count || next_offset != data_end) throw bad("frames do not cover the pages");
}

u32 pack_reader::frame_of(u64 page) const {
  const auto it = std::upper_bound(frames_.begin(), frames_.end(), page,
                                   [](u64 p, const pack_frame& f) { return p < f.first_page; });
  return static_cast<u32>(it - frames_.begin() - 1);
}

void pack_reader::decompress(u32 f, std::span<std::byte> out) const {
  const pack_frame& frame = frames_[f];
  const std::size_t size = ZSTD_decompressDCtx(thread_decompressor(), out.data(), out.size(),
                                               file_.bytes().data() + frame.offset, frame.compressed_size);
  if (ZSTD_isError(size) || size != u64{frame.pages} * page_size)
    throw input_error(fmt::format("{}: frame {} is damaged: {}", path().string(), f,
                                  ZSTD_isError(size) ? ZSTD_getErrorName(size) : "wrong size"));
}

}  // namespace ptwalk::archive
