// ptwalk/bulk_allocator.hpp — memory for a walk's large outputs.
//
// A walk writes tens of megabytes of fresh records. Two costs come with
// that which are not the writes themselves: a std::vector zero-fills what
// it grows by, and the kernel faults fresh memory in 4 KiB at a time
// (measured on the 10,000-space `bench` fleet: the cpu walker's splice of
// 22 MB spent most of its time in page faults). This allocator grows a
// vector without zero-filling — every walk writes each record it makes
// room for — and maps blocks of 2 MiB and more on their own, asking for
// transparent huge pages (only advice: where they are off, 4 KiB pages).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace ptwalk {

template <class T>
class bulk_allocator {
  static_assert(std::is_trivially_copyable_v<T>, "elements are left uninitialised when a vector grows");

 public:
  using value_type = T;
  static constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

  bulk_allocator() = default;
  template <class U>
  bulk_allocator(const bulk_allocator<U>&) noexcept {}

  [[nodiscard]] T* allocate(std::size_t n) {
    if (n < huge_page_bytes / sizeof(T)) return std::allocator<T>{}.allocate(n);
    if (n > std::allocator_traits<std::allocator<T>>::max_size(std::allocator<T>{})) throw std::bad_array_new_length();
    // Over-map by one huge page and trim both ends, so the block starts
    // on a huge-page boundary whatever the kernel's own placement.
    const std::size_t bytes = mapped_bytes(n), padded = bytes + huge_page_bytes;
    void* raw = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    auto* const first = static_cast<std::byte*>(raw);
    const std::size_t head = (huge_page_bytes - reinterpret_cast<std::uintptr_t>(first) % huge_page_bytes) %
                             huge_page_bytes;
    if (head != 0) munmap(first, head);
    if (padded - head > bytes) munmap(first + head + bytes, padded - head - bytes);
    (void)madvise(first + head, bytes, MADV_HUGEPAGE);
    return reinterpret_cast<T*>(first + head);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n < huge_page_bytes / sizeof(T)) return std::allocator<T>{}.deallocate(p, n);
    munmap(p, mapped_bytes(n));
  }

  // Growing leaves new elements uninitialised; anything else constructs.
  template <class U>
  void construct(U*) noexcept {}
  template <class U, class First, class... Rest>
  void construct(U* p, First&& first, Rest&&... rest) {
    ::new (static_cast<void*>(p)) U(std::forward<First>(first), std::forward<Rest>(rest)...);
  }

  friend bool operator==(const bulk_allocator&, const bulk_allocator&) { return true; }

 private:
  static std::size_t mapped_bytes(std::size_t n) {
    static const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return (n * sizeof(T) + page - 1) / page * page;
  }
};

// A vector of trivially copyable elements that grows without zero-filling.
template <class T>
using bulk_vector = std::vector<T, bulk_allocator<T>>;

}  // namespace ptwalk
