// Inline part of types.h; include types.h, not this.
#pragma once

#include <type_traits>

namespace shelf {

template <class V>
bool can_view_as(Type type) {
  switch (type) {
    case Type::kInt8:
      return std::is_same_v<V, int8_t>;
    case Type::kInt16:
      return std::is_same_v<V, int16_t>;
    case Type::kInt32:
      return std::is_same_v<V, int32_t>;
    case Type::kInt64:
    case Type::kTimestamp:
      return std::is_same_v<V, int64_t>;
    case Type::kUInt8:
    case Type::kBool:
      return std::is_same_v<V, uint8_t>;
    case Type::kUInt16:
      return std::is_same_v<V, uint16_t>;
    case Type::kUInt32:
      return std::is_same_v<V, uint32_t>;
    case Type::kUInt64:
      return std::is_same_v<V, uint64_t>;
    case Type::kFloat32:
      return std::is_same_v<V, float>;
    case Type::kFloat64:
      return std::is_same_v<V, double>;
    case Type::kString:
    case Type::kBytes:
      return false;
  }
  return false;
}

}  // namespace shelf
