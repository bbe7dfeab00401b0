// ptwalk/bulk_allocator.hpp — memory for a walk's large outputs.
//
// A walk writes tens of megabytes of fresh records, and a std::vector
// zero-fills what it grows by: a resize before a parallel fill would write
// every record twice, the first time on one thread. This allocator grows a
// vector without zero-filling — every walk writes each record it makes
// room for. (Blocks mapped on their own with transparent huge pages were
// tried on the 10,000- and 1,000-space `bench` fleets: no faster than the
// heap, which reuses the last walk's memory without faulting it in again,
// and twice as spread on the small fleet.)
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace ptwalk {

template <class T>
class bulk_allocator : public std::allocator<T> {
  static_assert(std::is_trivially_copyable_v<T>, "elements are left uninitialised when a vector grows");

 public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = bulk_allocator<U>;
  };

  bulk_allocator() = default;
  template <class U>
  bulk_allocator(const bulk_allocator<U>&) noexcept {}

  // Growing leaves new elements uninitialised; anything else constructs.
  template <class U>
  void construct(U*) noexcept {}
  template <class U, class First, class... Rest>
  void construct(U* p, First&& first, Rest&&... rest) {
    ::new (static_cast<void*>(p)) U(std::forward<First>(first), std::forward<Rest>(rest)...);
  }
};

// A vector of trivially copyable elements that grows without zero-filling.
template <class T>
using bulk_vector = std::vector<T, bulk_allocator<T>>;

}  // namespace ptwalk
