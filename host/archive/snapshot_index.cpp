// host/archive/snapshot_index.cpp — encoding and decoding snapshot indexes.
#include "archive/snapshot_index.hpp"

#include <zstd.h>

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "archive/page_hash.hpp"
#include "input/memory_image.hpp"

namespace ptwalk::archive {

namespace {

constexpr std::string_view index_magic = "ptwalk-archive-index 1\n";

template <class T>
void put(std::vector<std::byte>& out, T value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);  // little-endian hosts only
  out.insert(out.end(), p, p + sizeof value);
}

// Reads fixed-size values from a byte span, failing on the first overrun.
class byte_reader {
 public:
  byte_reader(std::span<const std::byte> bytes, const std::filesystem::path& file) : bytes_(bytes), file_(file) {}
  template <class T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof value).data(), sizeof value);
    return value;
  }
  std::span<const std::byte> take(u64 size) {
    if (size > bytes_.size()) fail("truncated");
    auto out = bytes_.first(size);
    bytes_ = bytes_.subspan(size);
    return out;
  }
  std::string_view line() {
    const auto* begin = reinterpret_cast<const char*>(bytes_.data());
    const auto* end = static_cast<const char*>(std::memchr(begin, '\n', bytes_.size()));
    if (end == nullptr) fail("truncated");
    take(static_cast<u64>(end - begin) + 1);
    return {begin, static_cast<std::size_t>(end - begin)};
  }
  [[nodiscard]] bool done() const { return bytes_.empty(); }
  [[noreturn]] void fail(std::string_view problem) const {
    throw input_error(fmt::format("{}: damaged snapshot index: {}", file_.string(), problem));
  }

 private:
  std::span<const std::byte> bytes_;
  const std::filesystem::path& file_;
};

}  // namespace

void append_page(std::vector<page_run>& runs, u64 file_offset, u32 pack, u64 page) {
  if (!runs.empty()) {
    auto& last = runs.back();
    if (last.pack == pack && last.file_offset + last.count * page_size == file_offset &&
        last.first_page + last.count == page) {
      ++last.count;
      return;
    }
  }
  runs.push_back({file_offset, 1, pack, page});
}

std::vector<std::byte> encode_index(const snapshot_index& index) {
  std::vector<std::byte> plain;
  const auto put_text = [&](std::string_view text) {
    plain.insert(plain.end(), reinterpret_cast<const std::byte*>(text.data()),
                 reinterpret_cast<const std::byte*>(text.data()) + text.size());
  };
  put_text(index_magic);
  const nlohmann::ordered_json header = {{"line", index.spec_line},         {"file_size", index.file_size},
                                         {"packs", index.packs},            {"runs", index.runs.size()},
                                         {"extras", index.extras.size()},   {"extra_bytes", index.extra_bytes.size()}};
  put_text(header.dump());
  put_text("\n");
  // Columns with deltas: a run usually starts where the last one ended, in
  // the pack page after it, so most deltas are 0 and compress to nothing.
  u64 end_offset = 0, end_page = 0;
  for (const auto& r : index.runs) put(plain, r.file_offset - end_offset), end_offset = r.file_offset + r.count * page_size;
  for (const auto& r : index.runs) put(plain, r.count);
  for (const auto& r : index.runs) put(plain, r.pack);
  for (const auto& r : index.runs) put(plain, r.first_page - end_page), end_page = r.first_page + r.count;
  for (const auto& e : index.extras) put(plain, e.offset), put(plain, e.size);
  plain.insert(plain.end(), index.extra_bytes.begin(), index.extra_bytes.end());

  std::vector<std::byte> out(ZSTD_compressBound(plain.size()));
  const std::size_t size = ZSTD_compress(out.data(), out.size(), plain.data(), plain.size(), 9);
  if (ZSTD_isError(size)) throw input_error(fmt::format("zstd: {}", ZSTD_getErrorName(size)));
  out.resize(size);
  return out;
}

snapshot_index decode_index(std::span<const std::byte> bytes, const std::filesystem::path& file) {
  const unsigned long long plain_size = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  byte_reader check({}, file);
  if (plain_size == ZSTD_CONTENTSIZE_ERROR || plain_size == ZSTD_CONTENTSIZE_UNKNOWN || plain_size > (u64{1} << 36))
    check.fail("not a zstd frame");
  std::vector<std::byte> plain(plain_size);
  const std::size_t got = ZSTD_decompress(plain.data(), plain.size(), bytes.data(), bytes.size());
  if (ZSTD_isError(got) || got != plain_size) check.fail("does not decompress");

  byte_reader in(plain, file);
  if (in.line() != index_magic.substr(0, index_magic.size() - 1)) in.fail("bad magic");
  snapshot_index index;
  u64 run_count = 0, extra_count = 0, extra_bytes = 0;
  try {
    const auto header = nlohmann::json::parse(in.line());
    index.spec_line = header.at("line").get<std::string>();
    index.file_size = header.at("file_size").get<u64>();
    index.packs = header.at("packs").get<std::vector<std::string>>();
    run_count = header.at("runs").get<u64>();
    extra_count = header.at("extras").get<u64>();
    extra_bytes = header.at("extra_bytes").get<u64>();
  } catch (const nlohmann::json::exception& e) {
    in.fail(e.what());
  }
  if (run_count > plain.size() || extra_count > plain.size()) in.fail("impossible counts");
  index.runs.resize(run_count);
  u64 end_offset = 0, end_page = 0;
  for (auto& r : index.runs) r.file_offset = in.get<u64>();
  for (auto& r : index.runs) r.count = in.get<u64>();
  for (auto& r : index.runs) r.pack = in.get<u32>();
  for (auto& r : index.runs) r.first_page = in.get<u64>();
  for (auto& r : index.runs) {
    if (r.count > index.file_size / page_size) in.fail("run out of range");
    r.file_offset += end_offset, end_offset = r.file_offset + r.count * page_size;
    r.first_page += end_page, end_page = r.first_page + r.count;
    if (r.pack >= index.packs.size() || r.count == 0 || end_offset > index.file_size || end_offset < r.file_offset)
      in.fail("run out of range");
  }
  u64 extra_total = 0;
  for (u64 i = 0; i < extra_count; ++i) {
    const byte_range e{in.get<u64>(), in.get<u64>()};
    if (e.offset > index.file_size || e.size > index.file_size - e.offset) in.fail("extra range out of range");
    extra_total += e.size;
    index.extras.push_back(e);
  }
  if (extra_total != extra_bytes) in.fail("extra bytes do not add up");
  const auto tail = in.take(extra_bytes);
  index.extra_bytes.assign(tail.begin(), tail.end());
  if (!in.done()) in.fail("trailing bytes");
  return index;
}

}  // namespace ptwalk::archive
