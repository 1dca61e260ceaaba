#include <shelf/types.h>

namespace shelf {

std::string_view type_name(Type type) {
  switch (type) {
    case Type::kInt8:
      return "int8";
    case Type::kInt16:
      return "int16";
    case Type::kInt32:
      return "int32";
    case Type::kInt64:
      return "int64";
    case Type::kUInt8:
      return "uint8";
    case Type::kUInt16:
      return "uint16";
    case Type::kUInt32:
      return "uint32";
    case Type::kUInt64:
      return "uint64";
    case Type::kFloat32:
      return "float32";
    case Type::kFloat64:
      return "float64";
    case Type::kBool:
      return "bool";
    case Type::kString:
      return "string";
    case Type::kTimestamp:
      return "timestamp";
    case Type::kBytes:
      return "bytes";
  }
  return "?";
}

std::optional<Type> parse_type(std::string_view name) {
  for (uint8_t v = 1; v <= static_cast<uint8_t>(Type::kBytes); ++v) {
    if (type_name(static_cast<Type>(v)) == name) return static_cast<Type>(v);
  }
  if (name == "int") return Type::kInt64;
  if (name == "float" || name == "double") return Type::kFloat64;
  if (name == "str" || name == "utf8") return Type::kString;
  if (name == "boolean") return Type::kBool;
  return std::nullopt;
}

uint32_t fixed_width(Type type) {
  switch (type) {
    case Type::kInt8:
    case Type::kUInt8:
    case Type::kBool:
      return 1;
    case Type::kInt16:
    case Type::kUInt16:
      return 2;
    case Type::kInt32:
    case Type::kUInt32:
    case Type::kFloat32:
      return 4;
    case Type::kInt64:
    case Type::kUInt64:
    case Type::kFloat64:
    case Type::kTimestamp:
      return 8;
    case Type::kString:
    case Type::kBytes:
      return 0;
  }
  return 0;
}

bool is_valid_type(uint8_t value) {
  return value >= static_cast<uint8_t>(Type::kInt8) && value <= static_cast<uint8_t>(Type::kBytes);
}

Schema bytes_schema() { return {Field{"bytes", Type::kBytes}}; }

bool is_bytes_schema(const Schema& schema) {
  return schema.size() == 1 && schema[0].type == Type::kBytes;
}

}  // namespace shelf
