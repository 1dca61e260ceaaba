#include "tools/csv_values.h"

#include <map>
#include <set>

namespace shelf::tools {

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

}  // namespace

bool parse_int64(std::string_view text, int64_t* out) { return parse_number(text, out); }
bool parse_float64(std::string_view text, double* out) { return parse_number(text, out); }

bool parse_bool(std::string_view text, bool* out) {
  text = trim(text);
  if (text == "true" || text == "True" || text == "TRUE") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    *out = false;
    return true;
  }
  return false;
}

bool parse_timestamp(std::string_view text, int64_t* out_ns) {
  text = trim(text);
  if (parse_number(text, out_ns)) return true;  // nanoseconds since the epoch
  // YYYY-MM-DD[(T| )HH:MM[:SS[.fraction]]][Z|+00:00]
  auto digits = [&](size_t pos, size_t count, int64_t* v) {
    if (pos + count > text.size()) return false;
    *v = 0;
    for (size_t i = pos; i < pos + count; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      *v = *v * 10 + (text[i] - '0');
    }
    return true;
  };
  int64_t y, mo, d, h = 0, mi = 0, s = 0, frac_ns = 0;
  if (!digits(0, 4, &y) || text.size() < 10 || text[4] != '-' || !digits(5, 2, &mo) ||
      text[7] != '-' || !digits(8, 2, &d)) {
    return false;
  }
  size_t pos = 10;
  if (pos < text.size() && (text[pos] == 'T' || text[pos] == ' ')) {
    if (!digits(pos + 1, 2, &h) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !digits(pos + 4, 2, &mi)) {
      return false;
    }
    pos += 6;
    if (pos < text.size() && text[pos] == ':') {
      if (!digits(pos + 1, 2, &s)) return false;
      pos += 3;
      if (pos < text.size() && text[pos] == '.') {
        ++pos;
        int64_t scale = 100000000;
        size_t start = pos;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
          frac_ns += (text[pos] - '0') * scale;
          scale /= 10;
          ++pos;
        }
        if (pos == start || pos - start > 9) return false;
      }
    }
  }
  std::string_view zone = text.substr(pos);
  if (!(zone.empty() || zone == "Z" || zone == "+00:00")) return false;
  static constexpr int kDaysIn[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDaysIn[mo - 1] || h > 23 || mi > 59 || s > 60) {
    return false;
  }
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return false;
  const int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  // int64 nanoseconds reach from 1677 to 2262: refuse what falls outside.
  const int64_t seconds = ((days * 24 + h) * 60 + mi) * 60 + s;
  int64_t ns;
  return !__builtin_mul_overflow(seconds, int64_t{1000000000}, &ns) &&
         !__builtin_add_overflow(ns, frac_ns, out_ns);
}

Result<std::map<std::string, Type>> parse_schema_option(std::string_view text) {
  std::map<std::string, Type> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t colon = item.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return Status::invalid_argument("--schema: '" + std::string(item) +
                                      "' is not NAME:TYPE (e.g. balance:int64)");
    }
    auto type = parse_type(item.substr(colon + 1));
    if (!type || *type == Type::kBytes) {
      return Status::invalid_argument(
          "--schema: unknown type '" + std::string(item.substr(colon + 1)) +
          "'; use int8..int64, uint8..uint64, float32, float64, bool, string or timestamp");
    }
    const std::string name(item.substr(0, colon));
    if (out.count(name)) {
      return Status::invalid_argument("--schema names column '" + name +
                                      "' twice; give each column one type");
    }
    out[name] = *type;
  }
  return out;
}

}  // namespace shelf::tools
