// ExtentAllocator: hands out page-aligned extents of the segment's data area.
//
// Pure bookkeeping in the owner's private memory (only the daemon has one);
// it never touches the segment. First fit over an address-ordered free list,
// with neighbours coalesced on free; an allocation may ask for a larger
// alignment (the store puts large extents on huge-page boundaries). Not
// thread-safe.
//
// Memory is limited by byte accounting in the daemon, not by this area: the
// data area is made larger than the memory limit (address space is free in a
// sparse segment), so fragmentation cannot make an allocation fail while the
// limit still has room. See docs/design.md, "Memory".
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "shm/layout.h"

namespace shelf::shm {

class ExtentAllocator {
 public:
  // Manages [base, base + size); both must be page multiples.
  ExtentAllocator(uint64_t base, uint64_t size);

  // Returns the offset of `length` bytes (rounded up to a page), a multiple
  // of `alignment` (a power of two, at least a page), or nullopt when no free
  // range holds that. length 0 is refused (nullopt).
  std::optional<uint64_t> allocate(uint64_t length, uint64_t alignment = kPageSize);
  // Returns [offset, offset + length) to the free list; length is rounded up
  // to a page as in allocate(). The range must be allocated, page aligned and
  // inside the area (checked: a bad free aborts).
  void free(uint64_t offset, uint64_t length);
  // Marks a known range allocated (rebuilding from an index). False if it is
  // misaligned, outside the area, or any of it is not free.
  bool mark_allocated(uint64_t offset, uint64_t length);

  uint64_t free_bytes() const { return free_bytes_; }
  uint64_t capacity() const { return size_; }
  // Largest single allocation that would succeed now.
  uint64_t largest_free() const;
  size_t free_ranges() const { return free_.size(); }
  // The allocated bytes that lie in whole, wholly allocated blocks of
  // `block` bytes (a power of two; blocks start at multiples of it). Walks
  // the free list.
  uint64_t allocated_in_whole_blocks(uint64_t block) const;

 private:
  // True when [offset, offset + align_up(length)) is a non-empty, page-aligned
  // range inside the area.
  bool in_area(uint64_t offset, uint64_t length) const;

  uint64_t base_;
  uint64_t size_;
  uint64_t free_bytes_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length, no two adjacent
};

}  // namespace shelf::shm
