#include "tools/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "base/utf8.h"

namespace shelf::tools {

namespace {

template <class T>
std::string shortest(T v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  // Show that a whole float is a float: "3.0", as pandas does.
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string escape_controls(std::string_view text) { return escape_unprintable(text); }

// Display width of UTF-8 text, counting code points (good enough for
// alignment of Latin, Greek, Cyrillic; wide CJK glyphs will be off by one each).
size_t display_width(std::string_view s) {
  size_t w = 0;
  for (char c : s) w += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return w;
}

}  // namespace

std::string format_time(int64_t ns, bool iso_t) {
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, iso_t ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
  std::string out = buf;
  if (frac != 0) {
    char f[16];
    std::snprintf(f, sizeof f, ".%09lld", static_cast<long long>(frac));
    std::string fs = f;
    while (fs.back() == '0') fs.pop_back();
    out += fs;
  }
  return iso_t ? out + "Z" : out;
}

std::string format_value(const ColumnView& column, uint64_t row) {
  if (!column.is_valid(row)) return "null";
  switch (column.type()) {
    case Type::kInt8:
      return std::to_string(column.values<int8_t>()[row]);
    case Type::kInt16:
      return std::to_string(column.values<int16_t>()[row]);
    case Type::kInt32:
      return std::to_string(column.values<int32_t>()[row]);
    case Type::kInt64:
      return std::to_string(column.values<int64_t>()[row]);
    case Type::kUInt8:
      return std::to_string(column.values<uint8_t>()[row]);
    case Type::kUInt16:
      return std::to_string(column.values<uint16_t>()[row]);
    case Type::kUInt32:
      return std::to_string(column.values<uint32_t>()[row]);
    case Type::kUInt64:
      return std::to_string(column.values<uint64_t>()[row]);
    case Type::kFloat32:
      return shortest(column.values<float>()[row]);
    case Type::kFloat64:
      return shortest(column.values<double>()[row]);
    case Type::kBool:
      return column.values<uint8_t>()[row] ? "true" : "false";
    case Type::kTimestamp:
      return format_time(column.values<int64_t>()[row], false);
    case Type::kString:
      return escape_controls(column.string(row));
    case Type::kBytes:
      return "<" + std::to_string(column.data().size()) + " bytes>";
  }
  return "?";
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", u);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string json_value(const ColumnView& column, uint64_t row) {
  if (!column.is_valid(row)) return "null";
  switch (column.type()) {
    case Type::kFloat32:
    case Type::kFloat64: {
      const double v = column.type() == Type::kFloat32 ? column.values<float>()[row]
                                                       : column.values<double>()[row];
      return std::isfinite(v) ? format_value(column, row) : "null";
    }
    case Type::kString:
      return json_string(column.string(row));
    case Type::kTimestamp:
      return json_string(format_time(column.values<int64_t>()[row]));
    case Type::kBytes:
      return "null";
    default:
      return format_value(column, row);
  }
}

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = display_width(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], display_width(row[c]));
    }
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = width[c] - display_width(cells[c]);
      if (c > 0) l += "  ";
      if (right[c])
        l += std::string(pad, ' ') + cells[c];
      else
        l += cells[c] + (c + 1 < cells.size() ? std::string(pad, ' ') : "");
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  return out;
}

}  // namespace shelf::tools
