// Bounds-checked access to a mapped segment: the one place where an offset
// read from shared memory becomes a pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shelf::shm {

template <class Byte>
class BasicSegmentView {
 public:
  BasicSegmentView() = default;
  BasicSegmentView(Byte* base, uint64_t size) : base_(base), size_(size) {}

  // A pointer to `count` objects of T at `offset`, or nullptr when any part of
  // them lies outside the view or the offset is misaligned for T.
  template <class T>
  auto* at(uint64_t offset, uint64_t count = 1) const {
    using Ptr = std::conditional_t<std::is_const_v<Byte>, const T*, T*>;
    if (offset > size_ || count > (size_ - offset) / sizeof(T) || offset % alignof(T) != 0) {
      return static_cast<Ptr>(nullptr);
    }
    return reinterpret_cast<Ptr>(base_ + offset);
  }
  // True when [offset, offset+length) lies inside the view.
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }
  Byte* base() const { return base_; }
  uint64_t size() const { return size_; }

 private:
  Byte* base_ = nullptr;
  uint64_t size_ = 0;
};

using SegmentView = BasicSegmentView<const std::byte>;
using MutableSegmentView = BasicSegmentView<std::byte>;

}  // namespace shelf::shm
