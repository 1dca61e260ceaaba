// Fuzzes DescriptorView::parse, the validator every client descriptor goes
// through before shelfd trusts its offsets, and every reader before it
// follows them; and parse_view, its counterpart for a view's definition
// (shm/view.h), whose accepted input must encode back to the same bytes.
//
// Beyond "no crash, no undefined behaviour" it checks what parse promises:
// every buffer of an accepted descriptor lies inside its partition's extent,
// past the extent header, aligned, with lengths that fit its type and rows;
// and an accepted descriptor re-built with DescriptorBuilder parses again.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <shelf/limits.h>

#include "base/check.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/view.h"

namespace shelf::shm {
namespace {

void check_buffer(const BufferLayout& b, const PartitionLayout& p) {
  if (b.length == 0) return;
  SHELF_CHECK(b.offset % kBufferAlignment == 0);
  SHELF_CHECK(b.offset >= p.extent_offset + kExtentHeaderBytes);
  SHELF_CHECK(b.offset + b.length >= b.offset);  // no wrap
  SHELF_CHECK(b.offset + b.length <= p.extent_offset + p.extent_length);
}

void check_view(const DescriptorView& v) {
  SHELF_CHECK(v.num_columns() >= 1 && v.num_columns() <= kMaxColumns);
  SHELF_CHECK(v.num_partitions() <= kMaxPartitions);
  Schema schema = v.schema();
  SHELF_CHECK(schema.size() == v.num_columns());
  for (const Field& f : schema)
    SHELF_CHECK(!f.name.empty() && is_valid_type(static_cast<uint8_t>(f.type)));
  DescriptorBuilder rebuilt(schema);
  for (uint64_t p = 0; p < v.num_partitions(); ++p) {
    const PartitionLayout& part = v.partition(p);
    SHELF_CHECK(part.extent_offset % kPageSize == 0 && part.extent_length > kExtentHeaderBytes);
    std::vector<ChunkLayout> chunks;
    for (uint32_t c = 0; c < v.num_columns(); ++c) {
      const ChunkLayout& ch = v.chunk(p, c);
      check_buffer(ch.validity, part);
      check_buffer(ch.offsets, part);
      check_buffer(ch.data, part);
      SHELF_CHECK(ch.null_count <= part.num_rows);
      if (v.column_type(c) == Type::kString) {
        SHELF_CHECK(ch.offsets.length == (part.num_rows + 1) * 8);
      } else if (v.column_type(c) != Type::kBytes) {
        SHELF_CHECK(ch.data.length == part.num_rows * fixed_width(v.column_type(c)));
      }
      chunks.push_back(ch);
    }
    rebuilt.add_partition(part, chunks);
  }
  std::vector<std::byte> bytes = rebuilt.finish();
  std::vector<uint64_t> aligned((bytes.size() + 7) / 8);
  std::memcpy(aligned.data(), bytes.data(), bytes.size());
  auto again = DescriptorView::parse(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(aligned.data()), bytes.size()),
      /*from_client=*/true);
  SHELF_CHECK(again.ok());
  SHELF_CHECK(again->num_partitions() == v.num_partitions());
  SHELF_CHECK(again->header().num_rows == v.header().num_rows);
  SHELF_CHECK(again->header().data_bytes == v.header().data_bytes);
}

}  // namespace
}  // namespace shelf::shm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shelf::shm;
  // The daemon parses descriptors from 8-aligned storage (a copy of the
  // message, or the segment); so do we.
  std::vector<uint64_t> aligned((size + 7) / 8);
  if (size > 0) std::memcpy(aligned.data(), data, size);
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(aligned.data()), size);
  for (bool from_client : {true, false}) {
    auto view = DescriptorView::parse(bytes, from_client);
    if (!view.ok()) {
      SHELF_CHECK(view.status().code() == (from_client ? shelf::Status::Code::kInvalidArgument
                                                       : shelf::Status::Code::kCorruption));
      continue;
    }
    check_view(*view);
  }
  for (bool from_client : {true, false}) {
    auto definition = parse_view(bytes, from_client);
    if (!definition.ok()) {
      SHELF_CHECK(definition.status().code() == (from_client ? shelf::Status::Code::kInvalidArgument
                                                             : shelf::Status::Code::kCorruption));
      continue;
    }
    SHELF_CHECK(is_view(bytes));
    for (const std::string& base : definition->bases) {
      SHELF_CHECK(!base.empty() && base.size() <= shelf::kMaxNameBytes);
    }
    SHELF_CHECK(definition->kind == ViewKind::kFilter ? definition->bases.size() == 1
                                                      : !definition->graph.empty());
    // The publisher fields are the daemon's: set them as it does, then the
    // encoding is the input, byte for byte.
    std::vector<std::byte> again = encode_view(*definition);
    stamp_view(again.data(), definition->created_ns, definition->publisher_uid,
               definition->publisher_pid);
    SHELF_CHECK(again.size() == bytes.size() &&
                std::memcmp(again.data(), bytes.data(), bytes.size()) == 0);
  }
  return 0;
}
