// The intent record of a publish of several names (layout.h,
// IntentHeaderLayout; docs/shm_layout.md, "Publishing several names").
//
// The daemon commits such a publish in four steps: it writes the record (the
// index entries it is about to write) into an extent of its own, points page
// 0's PendingPublishLayout at it (release: the commit point), writes the
// entries, and clears the pointer. A daemon killed before the pointer leaves
// none of the names published; one killed after it leaves a record the next
// daemon writes again, whole: all the names.
//
// Only the daemon writes a record, and only the daemon that attaches the
// segment reads one (through the file, never a mapping, so what it checks
// is a private copy). Not thread-safe; holds no resources.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <shelf/status.h>

#include "shm/layout.h"
#include "shm/segment.h"

namespace shelf::shm {

// Payload bytes of a record of `num_items` items (after the extent header).
uint64_t intent_payload_bytes(uint64_t num_items);

// Writes the record of `items` at `payload` (intent_payload_bytes() long, in
// the daemon's writable mapping): items first, then the header with their
// checksum. The caller then points PendingPublishLayout at the extent.
void write_intent(std::byte* payload, std::span<const IntentItemLayout> items);

// The pointer in page 0 of the mapping at `segment` (writable, the daemon's).
PendingPublishLayout* pending_publish(std::byte* segment);

// What a daemon that attaches a segment finds pending.
struct PendingIntent {
  uint64_t extent_offset = 0;           // of the record's extent: 0 when none is pending
  std::vector<IntentItemLayout> items;  // a checked private copy
  std::string problem;                  // why a record pointed at was not used
};
// Reads the pointer and the record it names from the file of `segment`,
// whose extent area is [data_offset, segment_bytes). A record that is not
// whole and consistent (outside the area, wrong magic or kind, a count out
// of range, a checksum mismatch, a slot at or past `index_capacity`, an
// entry not in state published) is reported in `problem`, items empty.
// Errors: only a failed read of the file.
Result<PendingIntent> read_pending_intent(const ShmObject& segment, uint64_t data_offset,
                                          uint64_t segment_bytes, uint32_t index_capacity);

}  // namespace shelf::shm
