// host/memory_image.cpp — regions, lookups and file mappings of an image.
#include "input/memory_image.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "common/lazy_mapping.hpp"

namespace ptwalk {

namespace {

std::string_view file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "something else";
}

}  // namespace

mapped_file::mapped_file(const std::filesystem::path& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer before fstat refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw input_error(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string_view kind = file_kind(st.st_mode);
    ::close(fd);
    throw input_error(fmt::format("{}: is {}, not a regular file", path.string(), kind));
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw input_error(fmt::format("{}: cannot map: {}", path.string(), std::strerror(err)));
    }
    data_ = static_cast<const std::byte*>(p);
    registration_.emplace(path, data_, size_);
  }
  ::close(fd);
}

mapped_file::mapped_file(std::filesystem::path name, std::size_t size,
                         const std::function<void(std::span<std::byte>)>& fill)
    : path_(std::move(name)), size_(size) {
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<const std::byte*>(p);
  try {
    fill({static_cast<std::byte*>(p), size_});
  } catch (...) {
    ::munmap(p, size_);
    throw;
  }
  ::mprotect(p, size_, PROT_READ);
}

mapped_file::mapped_file(std::unique_ptr<lazy_mapping> pages)
    : path_(pages->name()), data_(pages->data()), size_(pages->size()), lazy_(std::move(pages)) {}

mapped_file::~mapped_file() {
  if (data_ != nullptr && !lazy_) ::munmap(const_cast<std::byte*>(data_), size_);
}

void memory_image::add_file_region(std::shared_ptr<const mapped_file> file, u64 offset, u64 size,
                                   u64 gpa) {
  const u64 file_size = file->bytes().size();
  if (offset > file_size || size > file_size - offset)
    throw input_error(fmt::format("{}: region at offset {:#x} size {:#x} runs past the end of the file ({:#x} bytes)",
                                  file->path().string(), offset, size, file_size));
  if (size == 0) return;
  image_region region{gpa, size, file->bytes().data() + offset,
                      fmt::format("{}@{:#x}", file->path().string(), offset)};
  insert_region(std::move(region));
  files_.push_back(std::move(file));
}

void memory_image::add_owned_region(u64 gpa, std::vector<std::byte> bytes, std::string source) {
  if (bytes.empty()) return;
  auto buffer = std::make_unique<std::byte[]>(bytes.size());
  std::memcpy(buffer.get(), bytes.data(), bytes.size());
  insert_region({gpa, bytes.size(), buffer.get(), std::move(source)});
  owned_.push_back(std::move(buffer));
}

std::span<std::byte> memory_image::add_zeroed_region(u64 gpa, u64 size, std::string source) {
  const std::pair<u64, u64> range{gpa, size};
  return add_zeroed_regions({&range, 1}, source);
}

std::span<std::byte> memory_image::add_zeroed_regions(std::span<const std::pair<u64, u64>> ranges,
                                                      const std::string& source) {
  u64 total = 0;
  for (const auto& [gpa, size] : ranges) total += size;
  if (total == 0) return {};
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  std::shared_ptr<std::byte> mapping(static_cast<std::byte*>(p), [total](std::byte* q) { ::munmap(q, total); });
  zeroed_.push_back(mapping);
  std::byte* next = mapping.get();
  for (const auto& [gpa, size] : ranges) {
    if (size == 0) continue;
    insert_region({gpa, size, next, source});
    next += size;
  }
  return {mapping.get(), total};
}

void memory_image::insert_region(image_region region) {
  if (region.gpa + region.size < region.gpa)
    throw input_error(fmt::format("{}: region at {:#x} size {:#x} wraps past the top of physical memory",
                                  region.source, region.gpa, region.size));
  auto pos = std::lower_bound(regions_.begin(), regions_.end(), region.gpa,
                              [](const image_region& r, u64 gpa) { return r.gpa < gpa; });
  const bool overlaps_next = pos != regions_.end() && pos->gpa < region.end();
  const bool overlaps_prev = pos != regions_.begin() && std::prev(pos)->end() > region.gpa;
  if (overlaps_next || overlaps_prev) {
    const image_region& other = overlaps_next ? *pos : *std::prev(pos);
    throw input_error(fmt::format("{}: region {:#x}..{:#x} overlaps {} at {:#x}..{:#x}", region.source,
                                  region.gpa, region.end(), other.source, other.gpa, other.end()));
  }
  regions_.insert(pos, std::move(region));
}

const image_region* memory_image::find(u64 pa, u64 len) const {
  auto pos = std::upper_bound(regions_.begin(), regions_.end(), pa,
                              [](u64 addr, const image_region& r) { return addr < r.gpa; });
  if (pos == regions_.begin()) return nullptr;
  const image_region& r = *std::prev(pos);
  return r.contains(pa, len) ? &r : nullptr;
}

const std::byte* memory_image::bytes_at(u64 pa, u64 len) const {
  const image_region* r = find(pa, len);
  return r != nullptr ? r->data + (pa - r->gpa) : nullptr;
}

u64 memory_image::read_u64(u64 pa, bool& backed) const {
  const std::byte* p = bytes_at(pa, 8);
  backed = p != nullptr;
  u64 value = 0;
  if (backed) std::memcpy(&value, p, 8);
  return value;
}

u64 memory_image::backed_bytes() const {
  u64 total = 0;
  for (const auto& r : regions_) total += r.size;
  return total;
}

}  // namespace ptwalk
