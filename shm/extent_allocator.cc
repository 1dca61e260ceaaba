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

std::optional<uint64_t> ExtentAllocator::allocate(uint64_t length, uint64_t alignment) {
  SHELF_CHECK(alignment >= kPageSize && (alignment & (alignment - 1)) == 0);
  if (length == 0 || length > size_) return std::nullopt;
  length = align_up(length, kPageSize);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const uint64_t start = it->first, size = it->second;
    const uint64_t skip = align_up(start, alignment) - start;
    if (skip > size || size - skip < length) continue;
    const uint64_t offset = start + skip;
    const uint64_t rest = size - skip - length;
    free_.erase(it);
    if (skip > 0) free_.emplace(start, skip);
    if (rest > 0) free_.emplace(offset + length, rest);
    free_bytes_ -= length;
    return offset;
  }
  return std::nullopt;
}

uint64_t ExtentAllocator::allocated_in_whole_blocks(uint64_t block) const {
  SHELF_CHECK(block >= kPageSize && (block & (block - 1)) == 0);
  uint64_t total = 0;
  // The allocated ranges are the gaps between free ones, and the area's ends.
  auto count = [&](uint64_t from, uint64_t to) {
    const uint64_t first = align_up(from, block), last = to / block * block;
    if (last > first) total += last - first;
  };
  uint64_t at = base_;
  for (const auto& [offset, length] : free_) {
    count(at, offset);
    at = offset + length;
  }
  count(at, base_ + size_);
  return total;
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
