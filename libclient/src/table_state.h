// The state behind TableBuilder and PartitionBuilder. Internal to libclient.
#pragma once

#include <memory>
#include <sys/mman.h>
#include <vector>

#include <shelf/table_builder.h>

#include "base/check.h"
#include "libclient/src/client_impl.h"
#include "shm/segment.h"

namespace shelf::internal {

// The most inline partition bytes a table holds, and one Publish message
// carries: the daemon copies them on its loop (~0.1 ms per MiB, with the
// page faults), and they are charged to the limit only at the publish. Past
// it, partitions go through Allocate as large ones do.
inline constexpr uint64_t kMaxInlinePublishBytes = 1 << 20;

struct TableState;

// Deletes private pages of `length` bytes (an inline partition's).
struct UnmapPages {
  uint64_t length = 0;
  void operator()(std::byte* p) const { ::munmap(p, length); }
};

// One partition: an extent of the segment, mapped writable into this process
// only, and where each column's buffers lie in it (offsets from the extent
// start). A small one (at most protocol::kMaxInlinePartitionBytes) is
// written into private memory instead, laid out as its extent will be, and
// sent inside the Publish message: the daemon allocates its extent then
// (protocol::InlinePartition). It has no extent until published
// (extent_offset and extent_length 0).
struct PartitionState {
  struct Column {
    uint64_t validity = 0;  // bitmap, (rows + 7) / 8 bytes
    uint64_t offsets = 0;   // string columns: (rows + 1) int64
    uint64_t data = 0;
    uint64_t data_capacity = 0;
    bool has_validity = false;  // set_null was called: the bitmap is initialised
    uint64_t strings_written = 0;
  };
  TableState* table = nullptr;
  uint64_t rows = 0;
  uint64_t extent_offset = 0;
  uint64_t extent_length = 0;
  std::optional<shm::Mapping> mapping;
  // An inline partition's bytes, laid out as its extent: the header's room
  // (kExtentHeaderBytes), then the buffers, inline_length bytes in all. In
  // private pages of their own (zeroed, as a fresh extent), unmapped once
  // published: a pointer kept from before then faults, as one into an
  // extent's mapping does.
  std::unique_ptr<std::byte, UnmapPages> inline_extent;
  uint64_t inline_length = 0;
  std::vector<Column> columns;

  bool is_inline() const { return inline_extent != nullptr; }
  // The writable mapping (or the inline bytes) is dropped once the table is
  // published, so nothing can write into sealed data (or, after an
  // unpublish, into memory that another dataset reuses). Checked: using a
  // published partition aborts.
  bool writable() const { return mapping.has_value() || is_inline(); }
  std::byte* at(uint64_t offset_in_extent) const {
    SHELF_CHECK(writable());
    return (mapping ? mapping->data() : inline_extent.get()) + offset_in_extent;
  }
  void set_null(size_t column, uint64_t row);
};

struct TableState {
  std::shared_ptr<Client::Impl> client;
  Schema schema;
  std::vector<std::unique_ptr<PartitionState>> partitions;
  bool sealed = false;     // checksums taken; no more writes
  bool published = false;  // the daemon owns the extents now
  std::vector<std::byte> descriptor;

  // Checks the schema. Errors: InvalidArgument naming the bad column.
  static Result<std::unique_ptr<TableState>> create(std::shared_ptr<Client::Impl> client,
                                                    Schema schema);
  ~TableState();
  // The daemon owns the extents now: drops every writable mapping.
  void mark_published();
  Result<PartitionState*> add_partition(uint64_t rows, std::span<const uint64_t> string_bytes);
  // Allocates an extent of `payload` bytes for `p` and maps it writable.
  Status map_extent(PartitionState& p, uint64_t payload);
  // Finishes every partition: null counts, string lengths, XXH3 of every
  // buffer, then marks each extent kWritten. Returns the descriptor to send.
  // Idempotent.
  Result<std::vector<std::byte>> seal();
  // The payloads of the inline partitions, for the Publish message (after seal()).
  std::vector<protocol::InlinePartition> inline_partitions() const;
  uint64_t inline_bytes() const;
  // Moves every inline partition into an extent of its own, as a large one
  // is (Allocate, map, copy), and seals again: for a table that also has
  // large partitions (so that the daemon checks those off its loop), or a
  // publish whose inline bytes pass kMaxInlinePublishBytes.
  Status place_inline_partitions_in_extents();
};

}  // namespace shelf::internal
