#include "shm/checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace shelf::shm {

uint64_t xxh3(const void* data, size_t length) { return XXH3_64bits(data, length); }

}  // namespace shelf::shm
