// XXH3-64 over a buffer, and the one check of a dataset's buffers against the
// checksums its descriptor stores. Inlined (XXH_INLINE_ALL): ~8 GB/s here
// against ~6 GB/s through Debian's shared libxxhash (measured on the 2-core
// development VM before the first release).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace shelf::shm {

class DescriptorView;

uint64_t xxh3(const void* data, size_t length);

// The three buffers of a chunk, in the order they are checked.
enum class BufferKind : int { kValidity = 0, kOffsets = 1, kData = 2 };

// Where the first wrong checksum was found.
struct ChecksumMismatch {
  uint64_t partition = 0;
  uint32_t column = 0;
  BufferKind buffer = BufferKind::kData;
};

// Recomputes the XXH3 of every non-empty buffer of `partition` (column by
// column, validity, offsets, then data) and returns the first whose value
// differs from the descriptor's, or nullopt when all match. `base` is the
// start of the segment the descriptor's offsets count from; the caller has
// validated the descriptor (DescriptorView::parse checks that every buffer
// lies in its partition's extent). When `hashed_bytes` is given, the bytes
// hashed are added to it. Reads only; thread-safe.
std::optional<ChecksumMismatch> first_checksum_mismatch(const DescriptorView& descriptor,
                                                        const std::byte* base, uint64_t partition,
                                                        uint64_t* hashed_bytes = nullptr);
// The same over every partition, in order.
std::optional<ChecksumMismatch> first_checksum_mismatch(const DescriptorView& descriptor,
                                                        const std::byte* base);

}  // namespace shelf::shm
