// host/memory_image.hpp — the guest-physical memory of one snapshot (SPEC §1).
//
// An image is a sorted set of non-overlapping regions, each a guest-physical
// range backed by bytes: a memory-mapped file (never read whole) or a buffer
// the image owns (generated images, tests). Reads that no single region
// backs completely return 0 and are counted as dangling, never a crash.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/signal_cleanup.hpp"
#include "ptwalk/config.hpp"

namespace ptwalk {

class lazy_mapping;

// Bad input: the message names the file and the problem, on one line.
class input_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A read-only memory mapping of a whole regular file. Anything else (a
// FIFO, a device) is refused before a read could block on it; a file that
// shrinks while mapped ends the process with a message naming it (SIGBUS,
// see signal_cleanup).
class mapped_file {
 public:
  explicit mapped_file(const std::filesystem::path& path);
  // `size` bytes of zero-filled anonymous memory that `fill` writes once
  // before they become read-only (an archived image file rebuilt in
  // memory); pages `fill` leaves alone cost nothing. `name` stands for the
  // file in messages.
  mapped_file(std::filesystem::path name, std::size_t size, const std::function<void(std::span<std::byte>)>& fill);
  // Bytes filled on first touch (an archived image file read in place);
  // its name stands for the file.
  explicit mapped_file(std::unique_ptr<lazy_mapping> pages);
  ~mapped_file();
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::optional<registered_mapping> registration_;
  std::unique_ptr<lazy_mapping> lazy_;  // owns data_ when set
};

struct image_region {
  u64 gpa = 0;
  u64 size = 0;
  const std::byte* data = nullptr;
  std::string source;  // file (and offset) the bytes come from, for messages

  [[nodiscard]] u64 end() const { return gpa + size; }
  [[nodiscard]] bool contains(u64 pa, u64 len) const {
    return pa >= gpa && len <= size && pa - gpa <= size - len;
  }
};

class memory_image {
 public:
  memory_image() = default;
  memory_image(memory_image&&) = default;
  memory_image& operator=(memory_image&&) = default;

  // Maps `size` bytes of `file` from `offset` at guest-physical `gpa`. The
  // file stays mapped as long as the image lives. Throws input_error when
  // the range lies outside the file or overlaps another region.
  void add_file_region(std::shared_ptr<const mapped_file> file, u64 offset, u64 size, u64 gpa);
  // Adds a region backed by a buffer the image owns.
  void add_owned_region(u64 gpa, std::vector<std::byte> bytes, std::string source = "memory");
  // Adds a zero-filled region the image owns and returns its bytes for the
  // caller to fill before sharing the image. Pages never written cost no
  // memory, so a mostly empty guest (a generated 1 GiB frame) stays cheap.
  std::span<std::byte> add_zeroed_region(u64 gpa, u64 size, std::string source = "memory");
  // The same for many (gpa, size) ranges at once, all in one mapping: their
  // bytes lie back to back in the returned span, in the order given. A
  // filtered kdump file has tens of thousands of runs of pages; one mapping
  // costs one mmap and one munmap for them all.
  std::span<std::byte> add_zeroed_regions(std::span<const std::pair<u64, u64>> ranges, const std::string& source);

  // The region that backs all of [pa, pa+len), or nullptr.
  [[nodiscard]] const image_region* find(u64 pa, u64 len) const;
  // Pointer to `len` bytes at `pa` if one region backs them all.
  [[nodiscard]] const std::byte* bytes_at(u64 pa, u64 len) const;
  // The 8-byte entry at `pa`; `backed` is false (and the result 0) when no
  // single region holds all 8 bytes.
  [[nodiscard]] u64 read_u64(u64 pa, bool& backed) const;

  [[nodiscard]] std::span<const image_region> regions() const { return regions_; }
  [[nodiscard]] u64 backed_bytes() const;

 private:
  void insert_region(image_region region);

  std::vector<image_region> regions_;  // sorted by gpa, disjoint
  std::vector<std::shared_ptr<const mapped_file>> files_;
  std::vector<std::unique_ptr<std::byte[]>> owned_;
  std::vector<std::shared_ptr<std::byte>> zeroed_;  // anonymous mappings, unmapped on release
};

}  // namespace ptwalk
