// Column types and schemas, shared by the daemon, the segment layout and the
// client library.
//
// Buffers are laid out like the Apache Arrow columnar format (64-byte aligned
// buffers, an optional LSB-first validity bitmap, int64 offsets + UTF-8 data
// for strings, as Arrow's large_utf8), with one deliberate difference: bool
// is one byte per value (0 or 1), not one bit, so numpy and pandas can view
// it without a copy. docs/shm_layout.md has the byte layout.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shelf {

// The values are stored in shared memory: never renumber, only append.
enum class Type : uint8_t {
  kInt8 = 1,
  kInt16 = 2,
  kInt32 = 3,
  kInt64 = 4,
  kUInt8 = 5,
  kUInt16 = 6,
  kUInt32 = 7,
  kUInt64 = 8,
  kFloat32 = 9,
  kFloat64 = 10,
  kBool = 11,       // one byte per value, 0 or 1
  kString = 12,     // int64 offsets (rows + 1) + UTF-8 data
  kTimestamp = 13,  // int64 nanoseconds since the Unix epoch, UTC
  kBytes = 14,      // the single column of a raw-bytes dataset: one opaque buffer per partition
};

// "int64", "float64", "string", ...; "?" for a value that is not a Type.
std::string_view type_name(Type type);
// The inverse of type_name; also accepts "str", "utf8", "double", "int", "float", "boolean".
std::optional<Type> parse_type(std::string_view name);
// Bytes per value of a fixed-width type; 0 for kString and kBytes.
uint32_t fixed_width(Type type);
bool is_valid_type(uint8_t value);

struct Field {
  std::string name;
  Type type;
  bool operator==(const Field&) const = default;
};
using Schema = std::vector<Field>;

// The schema of a raw-bytes dataset: one kBytes column named "bytes".
Schema bytes_schema();
bool is_bytes_schema(const Schema& schema);

// True when a span of C++ type V may view a column of type `type`
// (int64_t views int64 and timestamp columns, uint8_t views uint8 and bool).
template <class V>
bool can_view_as(Type type);

}  // namespace shelf

#include <shelf/types_inl.h>
