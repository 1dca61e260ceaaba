#include "shm/presence.h"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <limits>

namespace shelf::shm {

namespace {

// Generations are counted from 1 and bumped once per daemon start: far from
// off_t's range, but a forged header could say anything.
constexpr uint64_t kMaxLockOffset = std::numeric_limits<off_t>::max() - 1;

struct flock byte_range(short type, uint64_t start, uint64_t length) {
  struct flock range {};
  range.l_type = type;
  range.l_whence = SEEK_SET;
  range.l_start = static_cast<off_t>(start);
  range.l_len = static_cast<off_t>(length);
  return range;
}

}  // namespace

Status announce_presence(const ShmObject& segment, uint64_t generation) {
  if (generation > kMaxLockOffset) {
    return Status::invalid_argument("generation " + std::to_string(generation) + " of " +
                                    segment.name() + " is out of range");
  }
  struct flock range = byte_range(F_RDLCK, generation, 1);
  int r;
  do {
    r = ::fcntl(segment.fd(), F_OFD_SETLK, &range);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return Status::from_errno("lock a byte of " + segment.path(), errno);
  return Status();
}

Result<bool> present_before(const ShmObject& segment, uint64_t generation) {
  if (generation == 0) return false;
  // F_OFD_GETLK with a write lock: answers the first lock that conflicts,
  // i.e. any read lock of another open file on the range, or F_UNLCK.
  struct flock range = byte_range(F_WRLCK, 0, std::min(generation, kMaxLockOffset));
  if (::fcntl(segment.fd(), F_OFD_GETLK, &range) != 0) {
    return Status::from_errno("look for locks on " + segment.path(), errno);
  }
  return range.l_type != F_UNLCK;
}

}  // namespace shelf::shm
