#include "shm/checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shm/descriptor.h"

namespace shelf::shm {

uint64_t xxh3(const void* data, size_t length) { return XXH3_64bits(data, length); }

std::optional<ChecksumMismatch> first_checksum_mismatch(const DescriptorView& descriptor,
                                                        const std::byte* base, uint64_t partition,
                                                        uint64_t* hashed_bytes) {
  for (uint32_t c = 0; c < descriptor.num_columns(); ++c) {
    const ChunkLayout& chunk = descriptor.chunk(partition, c);
    const BufferLayout* buffers[] = {&chunk.validity, &chunk.offsets, &chunk.data};
    for (int b = 0; b < 3; ++b) {
      if (buffers[b]->length == 0) continue;
      if (hashed_bytes != nullptr) *hashed_bytes += buffers[b]->length;
      if (xxh3(base + buffers[b]->offset, buffers[b]->length) != buffers[b]->xxh3) {
        return ChecksumMismatch{partition, c, static_cast<BufferKind>(b)};
      }
    }
  }
  return std::nullopt;
}

std::optional<ChecksumMismatch> first_checksum_mismatch(const DescriptorView& descriptor,
                                                        const std::byte* base) {
  for (uint64_t p = 0; p < descriptor.num_partitions(); ++p) {
    if (auto m = first_checksum_mismatch(descriptor, base, p)) return m;
  }
  return std::nullopt;
}

}  // namespace shelf::shm
