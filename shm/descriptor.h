// Dataset descriptors: the schema of a dataset and where each buffer of each
// partition lies (layout in layout.h and docs/shm_layout.md).
//
// A publisher builds the descriptor bytes with DescriptorBuilder and sends them
// to the daemon; the daemon validates them with DescriptorView::parse, checks
// that every partition extent is the publisher's own, and copies them into
// the segment. Readers parse the copy in the segment in place (no copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <shelf/result.h>
#include <shelf/types.h>

#include "shm/layout.h"

namespace shelf::shm {

// Accumulates partitions, then encodes the descriptor. Not validated here:
// DescriptorView::parse is the one validator, used by the daemon.
class DescriptorBuilder {
 public:
  explicit DescriptorBuilder(Schema schema);
  // `chunks` has one entry per column, in schema order.
  void add_partition(const PartitionLayout& partition, std::span<const ChunkLayout> chunks);
  uint64_t num_partitions() const { return partitions_.size(); }
  // The encoded descriptor. created_ns/uid/pid are left 0: the daemon sets them.
  std::vector<std::byte> finish() const;

 private:
  Schema schema_;
  std::vector<PartitionLayout> partitions_;
  std::vector<ChunkLayout> chunks_;
};

// A validated, read-only view of descriptor bytes; it does not own them.
class DescriptorView {
 public:
  // Checks the whole structure: magic, version, counts (columns, partitions,
  // rows per partition within <shelf/limits.h>), sizes, column types and
  // names (non-empty, unique), and for every chunk that its buffers have
  // the lengths its type and row count require, are aligned, and lie inside
  // the payload of the partition's extent. Errors: Corruption (from the
  // segment) or InvalidArgument (from a client), as `from_client` says.
  static Result<DescriptorView> parse(std::span<const std::byte> bytes, bool from_client);
  // Bytes a descriptor with these counts takes.
  static uint64_t encoded_size(uint32_t num_columns, uint64_t num_partitions,
                               uint64_t names_length);

  const DescriptorHeaderLayout& header() const { return *header_; }
  uint32_t num_columns() const { return header_->num_columns; }
  uint64_t num_partitions() const { return header_->num_partitions; }
  Type column_type(uint32_t column) const { return static_cast<Type>(columns_[column].type); }
  std::string_view column_name(uint32_t column) const;
  const PartitionLayout& partition(uint64_t p) const { return partitions_[p]; }
  const ChunkLayout& chunk(uint64_t p, uint32_t column) const {
    return chunks_[p * header_->num_columns + column];
  }
  Schema schema() const;
  std::span<const std::byte> bytes() const { return bytes_; }

 private:
  // The steps of parse(). Each returns what is wrong, or "" when nothing is.
  // locate() checks the header and sizes and sets the pointers below.
  std::string locate(std::span<const std::byte> bytes);
  std::string check_columns() const;
  // Checks partition `part` and its chunks; adds its rows and buffer bytes.
  std::string check_partition(uint64_t part, uint64_t& rows, uint64_t& data_bytes) const;

  std::span<const std::byte> bytes_;
  const DescriptorHeaderLayout* header_ = nullptr;
  const ColumnLayout* columns_ = nullptr;
  const PartitionLayout* partitions_ = nullptr;
  const ChunkLayout* chunks_ = nullptr;
  const char* names_ = nullptr;
};

}  // namespace shelf::shm
