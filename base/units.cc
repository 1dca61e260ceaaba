#include "base/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

namespace shelf {

Result<uint64_t> parse_count(std::string_view text, std::string_view option, uint64_t min,
                             uint64_t max) {
  uint64_t value = 0;
  bool ok = !text.empty() && text.size() <= 20;
  for (char c : text) {
    if (!ok) break;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    ok = c >= '0' && c <= '9' && value <= (UINT64_MAX - digit) / 10;
    if (ok) value = value * 10 + digit;
  }
  if (!ok || value < min || value > max) {
    const std::string range = max != UINT64_MAX
                                  ? "from " + std::to_string(min) + " to " + std::to_string(max)
                              : min == 0 ? "(0 or more)"
                                         : "(at least " + std::to_string(min) + ")";
    return Status::invalid_argument(std::string(option) + " must be a whole number " + range +
                                    ", not '" + std::string(text) + "'");
  }
  return value;
}

Result<double> parse_seconds(std::string_view text, std::string_view option, double min,
                             double max) {
  const std::string copy(text);
  char* end = nullptr;
  // strtod alone would take " 1", "0x10" and "infinity": a plain decimal only.
  const bool plain = !copy.empty() &&
                     copy.find_first_not_of("0123456789.eE+-") == std::string::npos &&
                     (std::isdigit(static_cast<unsigned char>(copy[0])) || copy[0] == '.');
  const double value = plain ? std::strtod(copy.c_str(), &end) : 0;
  if (!plain || end != copy.c_str() + copy.size() || !(value >= min && value <= max)) {
    char range[64];
    std::snprintf(range, sizeof range, "from %g to %g", min, max);
    return Status::invalid_argument(std::string(option) + " must be a number of seconds " + range +
                                    ", not '" + copy + "'");
  }
  return value;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&] {
    return Status::invalid_argument("'" + std::string(text) +
                                    "' is not a size; write e.g. 4096, 512MiB or 8GiB");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    ++i;
  }
  if (i == 0) return bad();
  std::string number(text.substr(0, i));
  char* end = nullptr;
  double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size()) return bad();
  std::string unit;
  for (char c : text.substr(i)) {
    if (c != ' ') unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    shift = 30;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    shift = 40;
  } else if (unit == "p" || unit == "pb" || unit == "pib") {
    shift = 50;
  } else {
    return bad();
  }
  double bytes = std::ldexp(value, shift);
  // A fraction of a byte ("1.5", "0.3KiB") is surely a mistake: refuse it.
  if (!(bytes >= 0) || bytes >= 18446744073709551615.0 || bytes != std::floor(bytes)) {
    return bad();
  }
  return static_cast<uint64_t>(bytes);
}

std::string format_bytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", value, kUnits[unit]);
  return buf;
}

}  // namespace shelf
