// What libclient's publisher does around Store::allocate and Store::publish,
// without a socket: for the Store's unit tests (tests/unit/server) and its
// fuzzer (fuzz/store_fuzz.cc), which drive a Store directly. Not used by
// shelfd. Header-only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <shelf/result.h>
#include <shelf/types.h>

#include "shm/checksum.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace shelf::server::for_tests {

// What a publisher does before it writes into the extent [offset,
// offset+length) that Store::allocate gave it, through `object` (the segment
// opened read-write in the publisher's process): reserves and touches every
// page (posix_fallocate, MADV_POPULATE_WRITE). Returns its mapping of the
// extent.
inline Result<shm::Mapping> reserve_extent(const shm::ShmObject& object, uint64_t offset,
                                           uint64_t length) {
  SHELF_RETURN_IF_ERROR(object.reserve(offset, length));
  return shm::Mapping::map(object, offset, length, /*writable=*/true, /*populate=*/true);
}

// What a publisher does once it has written the extent `extent` maps:
// stores kWritten with release (pairs with the acquire in Store::publish).
inline void mark_written(const shm::Mapping& extent) {
  auto* header = reinterpret_cast<shm::ExtentHeaderLayout*>(extent.data());
  std::atomic_ref<uint32_t>(header->state)
      .store(static_cast<uint32_t>(shm::ExtentState::kWritten), std::memory_order_release);
}

// Both, with nothing written in between: the payload stays zeros.
inline Status write_extent(const shm::ShmObject& object, uint64_t offset, uint64_t length) {
  SHELF_ASSIGN_OR_RETURN(shm::Mapping m, reserve_extent(object, offset, length));
  mark_written(m);
  return Status();
}

// One partition of a one-column int64 dataset: `rows` values right after
// the header of the extent at `extent_offset`.
struct Int64Partition {
  uint64_t extent_offset = 0;
  uint64_t extent_length = 0;
  uint64_t rows = 0;
};

// The descriptor of a dataset with one int64 column "v" over `partitions`.
// Checksums are computed over `segment` (a mapping of the whole segment),
// or left 0 when it is null.
inline std::vector<std::byte> int64_descriptor(std::span<const Int64Partition> partitions,
                                               const std::byte* segment = nullptr) {
  shm::DescriptorBuilder builder(Schema{{"v", Type::kInt64}});
  for (const Int64Partition& p : partitions) {
    shm::ChunkLayout chunk{};
    const uint64_t data = p.extent_offset + shm::kExtentHeaderBytes;
    const uint64_t bytes = p.rows * 8;
    chunk.data = shm::BufferLayout{data, bytes, segment ? shm::xxh3(segment + data, bytes) : 0};
    builder.add_partition(shm::PartitionLayout{p.rows, p.extent_offset, p.extent_length, 0},
                          std::span<const shm::ChunkLayout>(&chunk, 1));
  }
  return builder.finish();
}

}  // namespace shelf::server::for_tests
