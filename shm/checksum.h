// XXH3-64 over a buffer. Inlined (XXH_INLINE_ALL): ~8 GB/s here against
// ~6 GB/s through Debian's shared libxxhash (measured, README.md, "Design").
#pragma once

#include <cstddef>
#include <cstdint>

namespace shelf::shm {

uint64_t xxh3(const void* data, size_t length);

}  // namespace shelf::shm
