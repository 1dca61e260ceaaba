#include "shm/extent_allocator.h"

#include <algorithm>

#include "base/check.h"
#include "shm/layout.h"

namespace shelf::shm {

ExtentAllocator::ExtentAllocator(uint64_t base, uint64_t size)
    : base_(base), size_(size), free_bytes_(size) {
  SHELF_CHECK(base % kPageSize == 0 && size % kPageSize == 0);
  if (size > 0) free_.emplace(base, size);
}

std::optional<uint64_t> ExtentAllocator::allocate(uint64_t length) {
  if (length == 0 || length > size_) return std::nullopt;
  length = align_up(length, kPageSize);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < length) continue;
    const uint64_t offset = it->first;
    const uint64_t rest = it->second - length;
    free_.erase(it);
    if (rest > 0) free_.emplace(offset + length, rest);
    free_bytes_ -= length;
    return offset;
  }
  return std::nullopt;
}

bool ExtentAllocator::in_area(uint64_t offset, uint64_t length) const {
  // Written so that nothing can wrap around: length <= size_ bounds the
  // rounding, and the end is compared as a distance from base_.
  return length > 0 && length <= size_ && offset % kPageSize == 0 && offset >= base_ &&
         offset - base_ <= size_ - align_up(length, kPageSize);
}

void ExtentAllocator::free(uint64_t offset, uint64_t length) {
  SHELF_CHECK(in_area(offset, length));
  length = align_up(length, kPageSize);
  free_bytes_ += length;
  auto next = free_.lower_bound(offset);
  // The range must not overlap a free neighbour: that would be a double free.
  SHELF_CHECK(next == free_.end() || offset + length <= next->first);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    SHELF_CHECK(prev->first + prev->second <= offset);
    if (prev->first + prev->second == offset) {  // merge with the range before
      offset = prev->first;
      length += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && offset + length == next->first) {  // and the one after
    length += next->second;
    free_.erase(next);
  }
  free_.emplace(offset, length);
}

bool ExtentAllocator::mark_allocated(uint64_t offset, uint64_t length) {
  if (!in_area(offset, length)) return false;
  length = align_up(length, kPageSize);
  auto it = free_.upper_bound(offset);
  if (it == free_.begin()) return false;
  --it;
  const uint64_t start = it->first, len = it->second;
  if (offset < start || offset + length > start + len) return false;
  free_.erase(it);
  if (offset > start) free_.emplace(start, offset - start);
  if (offset + length < start + len) free_.emplace(offset + length, start + len - offset - length);
  free_bytes_ -= length;
  return true;
}

uint64_t ExtentAllocator::largest_free() const {
  uint64_t largest = 0;
  for (const auto& [offset, length] : free_) largest = std::max(largest, length);
  return largest;
}

}  // namespace shelf::shm
