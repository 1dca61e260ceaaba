// Helpers shared by the two units of the Store: store.cc (the live store)
// and recovery.cc (re-attaching a segment). Not for use outside server/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <shelf/status.h>

#include "protocol/messages.h"
#include "shm/layout.h"
#include "shm/segment.h"
#include "shm/view.h"

namespace shelf::server::internal {

int64_t now_ns();  // CLOCK_REALTIME

// What status() says of a process held from before a restart, which has no
// Hello to say it: its name (/proc/PID/comm, which unlike its cmdline is
// read without waiting for its mmap lock) and the owner of /proc/PID (its
// effective uid); "" and 0 when they cannot be read.
std::string process_name(uint32_t pid);
uint32_t process_uid(uint32_t pid);

// The size of the address range extents are carved from. Twice the limit:
// memory is bounded by accounting against the limit, so a fragmented address
// space can never refuse an allocation the limit allows (the segment is
// sparse: unused address space costs nothing).
uint64_t data_area_bytes(uint64_t memory_limit);
// What the header and an index of `max_datasets` slots are charged: the
// pages they use (shm::index_pages()), not the room left for a larger index.
uint64_t header_and_index_bytes(uint32_t max_datasets);
// The one rule for the index against the limit: it must leave room for a
// dataset (create(), a header checked at attach(), a restart that grows it).
bool index_fits(uint32_t max_datasets, uint64_t memory_limit);
// Allocates the pages an index of `max_datasets` slots uses (its entries,
// then its buckets: shm::index_pages()), so that a full /dev/shm is an
// error now rather than a SIGBUS later; the rest of the room stays a hole.
Status reserve_index_pages(const shm::ShmObject& segment, uint32_t max_datasets);

std::string quoted(std::string_view name);  // 'name'

// What list() and status() say of a dataset, from its descriptor's header as
// it lies in the segment (created_ns and the publisher set by publish()).
protocol::DatasetSummary summarise(std::string_view name, const shm::DescriptorHeaderLayout& h,
                                   uint64_t memory_bytes);
// The same of a view, from its definition (no buffers: rows and bytes 0).
protocol::DatasetSummary summarise_view(std::string_view name, const shm::ViewDefinition& v,
                                        uint64_t memory_bytes);

// The directory of the segment (/dev/shm, or --shm-dir) must be a directory;
// a --shm-dir also a tmpfs that others cannot write to without the sticky
// bit (another user could replace the segment). Errors: InvalidArgument
// saying why not.
Status check_shm_dir(const std::string& dir);
// It must be able to hold the limit (less what the segment already holds), or
// a publish would fail later on a full tmpfs. (Docker gives containers a
// 64 MiB /dev/shm by default.) Errors: ResourceExhausted saying how to make room.
Status check_shm_room(const std::string& dir, uint64_t memory_limit, uint64_t already_held);
// The spill directory (--spill-dir): an absolute path, made 0700 when it is
// missing (its parent must exist); else a directory (not a symlink) of our
// user that neither group nor others may write, as the files in it hold
// datasets' contents. Errors: InvalidArgument or PermissionDenied saying
// what is wrong and what to do; from mkdir(2).
Status prepare_spill_dir(const std::string& dir);

}  // namespace shelf::server::internal
