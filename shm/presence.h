// Presence locks: how a restarted daemon learns that a process still maps
// the segment as an earlier daemon left it, whoever that process runs as.
//
// Every process that maps the segment holds a shared lock on one byte of the
// segment file, at offset G, G being the generation of the daemon it
// connected to (SegmentHeaderLayout::generation), for as long as it keeps
// the file open (which the client does exactly as long as it maps it). A
// daemon of generation G' asks whether any lock lies on [0, G'): a reader of
// an earlier generation. /proc/PID/maps tells the same of processes of
// shelfd's own user only; another user's (a member of --group) cannot be
// read, and a lock is seen whoever holds it.
//
// Open file description locks (F_OFD_SETLK), not flock and not POSIX record
// locks: one byte per generation in one file; owned by the open file, so two
// Clients in one process, or a second descriptor closed, never drop each
// other's; and released by the kernel when the file is closed, however the
// process ends. A lock lies past the end of the file at no cost. flock (the
// daemon's lock on the segment) and these locks do not interact.
//
// Thread-safe (system calls on a descriptor); no state of its own.
#pragma once

#include <cstdint>

#include <shelf/status.h>

#include "shm/segment.h"

namespace shelf::shm {

// Takes the presence lock of `generation` on `segment` (open for reading).
// Errors: the fcntl's, e.g. ENOLCK.
Status announce_presence(const ShmObject& segment, uint64_t generation);

// True when some open file holds a presence lock of a generation below
// `generation` on `segment`.
Result<bool> present_before(const ShmObject& segment, uint64_t generation);

}  // namespace shelf::shm
