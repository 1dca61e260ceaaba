// Value parsing of the CSV reader, shared by its passes: one parser per
// type, so pass 1 (which checks values) and pass 2 (which writes them)
// cannot disagree. Internal to tools/.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include <shelf/types.h>

#include "base/check.h"
#include "tools/csv_table.h"

namespace shelf::tools {

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A number's text without its one leading '+', which from_chars does not
// take. Before another sign ("+-5") the '+' stays, so the text is refused.
inline std::string_view strip_plus(std::string_view s) {
  if (s.size() >= 2 && s.front() == '+' && s[1] != '-' && s[1] != '+') s.remove_prefix(1);
  return s;
}

// A floating-point text that from_chars found out of range: +-inf beyond
// the largest value, 0 or a subnormal below the smallest (strtod's answer).
template <class T>
T out_of_range_value(std::string_view text) {
  const std::string copy(text);
  if constexpr (sizeof(T) == 4) {
    return std::strtof(copy.c_str(), nullptr);
  } else {
    return std::strtod(copy.c_str(), nullptr);
  }
}

// The digits of a plain decimal integer of at most 18 digits (so it fits
// int64 whatever its sign), or false.
inline bool small_decimal(std::string_view digits, uint64_t* out) {
  if (digits.empty() || digits.size() > 18) return false;
  uint64_t v = 0;
  for (char ch : digits) {
    const auto d = static_cast<unsigned>(ch - '0');
    if (d > 9) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// Integers and floating-point numbers: one rule, from_chars of the whole
// field after trimming blanks and one leading '+' (with a fast path for
// short plain integers that gives what from_chars would). A float beyond
// its type's range is +-inf, as "inf" itself is.
template <class T>
bool parse_number(std::string_view text, T* out) {
  text = strip_plus(trim(text));
  if (text.empty()) return false;
  if constexpr (std::is_integral_v<T>) {
    const bool negative = text.front() == '-';
    uint64_t v;
    if (small_decimal(text.substr(negative ? 1 : 0), &v)) {
      if (negative) {
        if constexpr (std::is_unsigned_v<T>) {
          return false;  // from_chars takes no sign for unsigned types
        } else {
          const int64_t s = -static_cast<int64_t>(v);
          if (s < std::numeric_limits<T>::min()) return false;
          *out = static_cast<T>(s);
          return true;
        }
      }
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
      *out = static_cast<T>(v);
      return true;
    }
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (end != text.data() + text.size()) return false;
  if constexpr (std::is_floating_point_v<T>) {
    if (ec == std::errc::result_out_of_range) {
      *out = out_of_range_value<T>(text);
      return true;
    }
  }
  return ec == std::errc();
}

// What a text is as a number, found without converting it, for inference:
// a short plain integer (<= 15 digits: int64, uint64 if not negative, and
// exactly a double), a plain decimal that from_chars takes as a float and
// not as an integer, or anything else (kOther: ask the parsers).
enum class NumberShape { kSmallInt, kNegativeSmallInt, kDecimal, kOther };

inline NumberShape number_shape(std::string_view text) {
  text = strip_plus(trim(text));
  const bool negative = !text.empty() && text.front() == '-';
  if (negative) text.remove_prefix(1);
  size_t i = 0, mantissa = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  mantissa = i;
  if (i == text.size()) {
    if (i == 0 || i > 15) return NumberShape::kOther;
    return negative ? NumberShape::kNegativeSmallInt : NumberShape::kSmallInt;
  }
  bool decimal = false;
  if (text[i] == '.') {
    decimal = true;
    const size_t start = ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    mantissa += i - start;
  }
  if (mantissa == 0) return NumberShape::kOther;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    decimal = true;
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    const size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    if (i == start) return NumberShape::kOther;
  }
  return decimal && i == text.size() ? NumberShape::kDecimal : NumberShape::kOther;
}

inline bool parse_bool_byte(std::string_view text, uint8_t* out) {
  bool b;
  if (!parse_bool(text, &b)) return false;
  *out = b ? 1 : 0;
  return true;
}

// Returns fn(parse, T{}) with the parser of a fixed-width `type` and the C++
// type its values are stored as (bool: one byte). The one place that says
// which parser reads which type: pass 1 checks values with it and pass 2
// writes them with it, so the two cannot disagree.
template <class Fn>
auto with_parser(Type type, Fn&& fn) {
  switch (type) {
    case Type::kInt8:
      return fn(parse_number<int8_t>, int8_t{});
    case Type::kInt16:
      return fn(parse_number<int16_t>, int16_t{});
    case Type::kInt32:
      return fn(parse_number<int32_t>, int32_t{});
    case Type::kInt64:
      return fn(parse_number<int64_t>, int64_t{});
    case Type::kUInt8:
      return fn(parse_number<uint8_t>, uint8_t{});
    case Type::kUInt16:
      return fn(parse_number<uint16_t>, uint16_t{});
    case Type::kUInt32:
      return fn(parse_number<uint32_t>, uint32_t{});
    case Type::kUInt64:
      return fn(parse_number<uint64_t>, uint64_t{});
    case Type::kFloat32:
      return fn(parse_number<float>, float{});
    case Type::kFloat64:
      return fn(parse_number<double>, double{});
    case Type::kTimestamp:
      return fn(parse_timestamp, int64_t{});
    case Type::kBool:
      return fn(parse_bool_byte, uint8_t{});
    case Type::kString:
    case Type::kBytes:
      break;
  }
  SHELF_CHECK(type != Type::kString && type != Type::kBytes);
  __builtin_unreachable();
}

inline bool value_fits(Type type, std::string_view text) {
  if (type == Type::kString) return true;
  if (type == Type::kBytes) return false;
  return with_parser(type, [&](auto parse, auto value) { return parse(text, &value); });
}

}  // namespace shelf::tools
