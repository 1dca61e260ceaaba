#include "base/timestamp.h"

namespace shelf {
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

// `count` decimal digits of `text` at `pos` into *v; false if any is missing.
bool digits(std::string_view text, size_t pos, size_t count, int64_t* v) {
  if (pos + count > text.size()) return false;
  *v = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    *v = *v * 10 + (text[i] - '0');
  }
  return true;
}

bool valid_date(int64_t y, int64_t mo, int64_t d) {
  static constexpr int kDaysIn[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDaysIn[mo - 1]) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return !(mo == 2 && d == 29 && !leap);
}

}  // namespace

std::optional<int64_t> parse_timestamp_text(std::string_view text) {
  int64_t y, mo, d, h = 0, mi = 0, s = 0, frac_ns = 0;
  if (!digits(text, 0, 4, &y) || text.size() < 10 || text[4] != '-' || !digits(text, 5, 2, &mo) ||
      text[7] != '-' || !digits(text, 8, 2, &d)) {
    return std::nullopt;
  }
  size_t pos = 10;
  if (pos < text.size() && (text[pos] == 'T' || text[pos] == ' ')) {
    if (!digits(text, pos + 1, 2, &h) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !digits(text, pos + 4, 2, &mi)) {
      return std::nullopt;
    }
    pos += 6;
    if (pos < text.size() && text[pos] == ':') {
      if (!digits(text, pos + 1, 2, &s)) return std::nullopt;
      pos += 3;
      if (pos < text.size() && text[pos] == '.') {
        const size_t start = ++pos;
        for (int64_t scale = 100000000; pos < text.size() && text[pos] >= '0' && text[pos] <= '9';
             ++pos, scale /= 10) {
          frac_ns += (text[pos] - '0') * scale;
        }
        if (pos == start || pos - start > 9) return std::nullopt;
      }
    }
  }
  const std::string_view zone = text.substr(pos);
  if (!(zone.empty() || zone == "Z" || zone == "+00:00")) return std::nullopt;
  if (!valid_date(y, mo, d) || h > 23 || mi > 59 || s > 60) return std::nullopt;
  const int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  // int64 nanoseconds reach from 1677 to 2262: refuse what falls outside.
  const int64_t seconds = ((days * 24 + h) * 60 + mi) * 60 + s;
  int64_t ns;
  if (__builtin_mul_overflow(seconds, int64_t{1000000000}, &ns) ||
      __builtin_add_overflow(ns, frac_ns, &ns)) {
    return std::nullopt;
  }
  return ns;
}

}  // namespace shelf
