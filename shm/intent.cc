#include "shm/intent.h"

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include <shelf/limits.h>

#include "shm/checksum.h"

namespace shelf::shm {

namespace {

// Reads exactly `length` bytes at `offset` of the file (holes read as zeros).
Status read_exactly(const ShmObject& segment, uint64_t offset, void* out, uint64_t length) {
  auto* at = static_cast<std::byte*>(out);
  while (length > 0) {
    const ssize_t n = ::pread(segment.fd(), at, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::from_errno("read " + segment.path(), errno);
    if (n == 0) return Status::corruption(segment.path() + " ends early");
    at += n;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return Status();
}

}  // namespace

uint64_t intent_payload_bytes(uint64_t num_items) {
  return sizeof(IntentHeaderLayout) + num_items * sizeof(IntentItemLayout);
}

void write_intent(std::byte* payload, std::span<const IntentItemLayout> items) {
  std::byte* first_item = payload + sizeof(IntentHeaderLayout);
  std::memcpy(first_item, items.data(), items.size_bytes());
  IntentHeaderLayout h{};
  h.magic = kIntentMagic;
  h.num_items = items.size();
  h.items_xxh3 = xxh3(first_item, items.size_bytes());
  std::memcpy(payload, &h, sizeof h);
}

PendingPublishLayout* pending_publish(std::byte* segment) {
  return reinterpret_cast<PendingPublishLayout*>(segment + kPendingPublishOffset);
}

Result<PendingIntent> read_pending_intent(const ShmObject& segment, uint64_t data_offset,
                                          uint64_t segment_bytes, uint32_t index_capacity) {
  PendingIntent out;
  PendingPublishLayout pointer;
  SHELF_RETURN_IF_ERROR(read_exactly(segment, kPendingPublishOffset, &pointer, sizeof pointer));
  if (pointer.intent_offset == 0) return out;
  out.extent_offset = pointer.intent_offset;
  const uint64_t at = pointer.intent_offset;
  const uint64_t payload_at = at + kExtentHeaderBytes;
  if (at < data_offset || at % kPageSize != 0 || at >= segment_bytes ||
      segment_bytes - at < kExtentHeaderBytes + sizeof(IntentHeaderLayout)) {
    out.problem = "it lies outside the extent area";
    return out;
  }
  ExtentHeaderLayout extent;
  IntentHeaderLayout h;
  SHELF_RETURN_IF_ERROR(read_exactly(segment, at, &extent, sizeof extent));
  SHELF_RETURN_IF_ERROR(read_exactly(segment, payload_at, &h, sizeof h));
  if (extent.magic != kExtentMagic || extent.kind != static_cast<uint32_t>(ExtentKind::kIntent) ||
      h.magic != kIntentMagic) {
    out.problem = "its extent holds no intent record";
    return out;
  }
  if (h.num_items < 2 || h.num_items > kMaxPublishItems ||
      extent.length < kExtentHeaderBytes + intent_payload_bytes(h.num_items) ||
      extent.length > segment_bytes - at) {
    out.problem = "its count of names does not fit its extent";
    return out;
  }
  out.items.resize(h.num_items);
  SHELF_RETURN_IF_ERROR(read_exactly(segment, payload_at + sizeof h, out.items.data(),
                                     h.num_items * sizeof(IntentItemLayout)));
  auto refuse = [&](std::string why) {
    out.items.clear();
    out.problem = std::move(why);
    return out;
  };
  if (xxh3(out.items.data(), h.num_items * sizeof(IntentItemLayout)) != h.items_xxh3) {
    return refuse("its checksum does not match");
  }
  for (const IntentItemLayout& item : out.items) {
    if (item.slot >= index_capacity) {
      return refuse("it names index slot " + std::to_string(item.slot) + ", past the index");
    }
    if (item.entry.state != static_cast<uint32_t>(IndexEntryState::kPublished)) {
      return refuse("an entry in it is not in state published");
    }
  }
  return out;
}

}  // namespace shelf::shm
