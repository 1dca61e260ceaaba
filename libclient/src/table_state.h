// The state behind TableBuilder and PartitionBuilder. Internal to libclient.
#pragma once

#include <memory>
#include <vector>

#include <shelf/table_builder.h>

#include "base/check.h"
#include "libclient/src/client_impl.h"
#include "shm/segment.h"

namespace shelf::internal {

struct TableState;

// One partition: an extent of the segment, mapped writable into this process
// only, and where each column's buffers lie in it (offsets from the extent start).
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
  std::vector<Column> columns;

  // The writable mapping is dropped once the table is published, so nothing
  // can write into sealed data (or, after an unpublish, into memory that
  // another dataset reuses). Checked: using a published partition aborts.
  bool writable() const { return mapping.has_value(); }
  std::byte* at(uint64_t offset_in_extent) const {
    SHELF_CHECK(mapping.has_value());
    return mapping->data() + offset_in_extent;
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
  // Finishes every partition: null counts, string lengths, XXH3 of every
  // buffer, then marks each extent kWritten. Returns the descriptor to send.
  // Idempotent.
  Result<std::vector<std::byte>> seal();
};

}  // namespace shelf::internal
