#include "tools/csv_table.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sys/stat.h>

#include <csv.h>

#include "base/utf8.h"

namespace shelf::tools {

namespace {

struct CsvField {
  std::string text;
  bool null = false;  // an empty unquoted field
};

using OnRecord = std::function<Status(const std::vector<CsvField>& fields, uint64_t line)>;

// State shared with libcsv's C callbacks for one file.
struct ParseContext {
  std::vector<CsvField> fields;
  size_t num_fields = 0;        // fields of the current record (`fields` is reused)
  uint64_t line = 1;            // physical line being fed
  uint64_t record_line = 1;     // line where the current record started
  bool between_records = true;  // the last record ended; the next starts with the next byte
  const OnRecord* on_record = nullptr;
  Status error;
};

void on_field(void* data, size_t length, void* ctx_ptr) {
  auto* ctx = static_cast<ParseContext*>(ctx_ptr);
  if (!ctx->error.ok()) return;
  if (ctx->fields.size() <= ctx->num_fields) ctx->fields.emplace_back();
  CsvField& f = ctx->fields[ctx->num_fields++];
  f.null = data == nullptr;
  f.text.assign(data ? static_cast<const char*>(data) : "", data ? length : 0);
}

void on_record_end(int, void* ctx_ptr) {
  auto* ctx = static_cast<ParseContext*>(ctx_ptr);
  if (!ctx->error.ok()) return;
  ctx->fields.resize(ctx->num_fields);
  ctx->error = (*ctx->on_record)(ctx->fields, ctx->record_line);
  ctx->num_fields = 0;
  ctx->between_records = true;
}

// RFC 4180 keeps spaces: a field is exactly what stands between the commas.
int no_space(unsigned char) { return 0; }

Status read_csv(const std::string& path, const OnRecord& on_record) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) return Status::from_errno("cannot read " + path, errno);
  csv_parser parser;
  if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL) != 0) {
    return Status::resource_exhausted("csv_init failed");
  }
  std::unique_ptr<csv_parser, void (*)(csv_parser*)> guard(&parser, &csv_free);
  csv_set_space_func(&parser, no_space);
  ParseContext ctx;
  ctx.on_record = &on_record;
  auto malformed = [&](const char* what) {
    return Status::invalid_argument(path + ":" + std::to_string(ctx.line) +
                                    ": malformed CSV: " + what);
  };
  // 1 MiB reads, or one read the size of a smaller file: allocating (and
  // zeroing) 1 MiB for every small file made the CSV fuzzer 10x slower.
  struct stat st;
  size_t block_size = 1 << 20;
  if (::fstat(::fileno(file.get()), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0 &&
      static_cast<uint64_t>(st.st_size) < block_size) {
    block_size = static_cast<size_t>(st.st_size) + 1;  // +1: read() then sees the end at once
  }
  std::vector<char> block(block_size);
  size_t got;
  while ((got = std::fread(block.data(), 1, block.size(), file.get())) > 0) {
    // Feed line by line so that errors can name the line.
    size_t start = 0;
    while (start < got && ctx.error.ok()) {
      const void* nl = std::memchr(block.data() + start, '\n', got - start);
      size_t end = nl ? static_cast<size_t>(static_cast<const char*>(nl) - block.data()) + 1 : got;
      // A record starts on the first line after the last one that is not
      // blank (libcsv skips blank lines). Noted here, not when its first
      // field ends: that field may span lines, or never be closed.
      const std::string_view piece(block.data() + start, end - start);
      if (ctx.between_records && piece.find_first_not_of("\r\n") != std::string_view::npos) {
        ctx.record_line = ctx.line;
        ctx.between_records = false;
      }
      size_t n =
          csv_parse(&parser, block.data() + start, end - start, on_field, on_record_end, &ctx);
      if (n != end - start) {
        return malformed("a quote inside an unquoted field, or text after a closing quote");
      }
      if (nl) ++ctx.line;
      start = end;
    }
    if (!ctx.error.ok()) return ctx.error;
  }
  if (std::ferror(file.get())) return Status::from_errno("cannot read " + path, errno);
  if (csv_fini(&parser, on_field, on_record_end, &ctx) != 0) {
    return Status::invalid_argument(path + ":" + std::to_string(ctx.record_line) +
                                    ": malformed CSV: a quoted field is never closed");
  }
  return ctx.error;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

template <class T>
bool parse_integer(std::string_view text, T* out) {
  text = trim(text);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

template <class T>
bool parse_floating(std::string_view text, T* out) {
  text = trim(text);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool value_fits(Type type, std::string_view text) {
  switch (type) {
    case Type::kInt8: {
      int8_t v;
      return parse_integer(text, &v);
    }
    case Type::kInt16: {
      int16_t v;
      return parse_integer(text, &v);
    }
    case Type::kInt32: {
      int32_t v;
      return parse_integer(text, &v);
    }
    case Type::kInt64: {
      int64_t v;
      return parse_integer(text, &v);
    }
    case Type::kUInt8: {
      uint8_t v;
      return parse_integer(text, &v);
    }
    case Type::kUInt16: {
      uint16_t v;
      return parse_integer(text, &v);
    }
    case Type::kUInt32: {
      uint32_t v;
      return parse_integer(text, &v);
    }
    case Type::kUInt64: {
      uint64_t v;
      return parse_integer(text, &v);
    }
    case Type::kFloat32: {
      float v;
      return parse_floating(text, &v);
    }
    case Type::kFloat64: {
      double v;
      return parse_floating(text, &v);
    }
    case Type::kBool: {
      bool v;
      return parse_bool(text, &v);
    }
    case Type::kTimestamp: {
      int64_t v;
      return parse_timestamp(text, &v);
    }
    case Type::kString:
      return true;
    case Type::kBytes:
      return false;
  }
  return false;
}

// What the values of one column seen so far could be.
struct Inference {
  bool any_value = false;
  bool can_bool = true;
  bool can_int = true;
  bool can_float = true;

  void see(std::string_view text) {
    any_value = true;
    if (can_bool) {
      bool b;
      can_bool = parse_bool(text, &b);
    }
    if (can_int) {
      int64_t i;
      can_int = parse_int64(text, &i);
    }
    if (can_float) {
      double d;
      can_float = parse_float64(text, &d);
    }
  }
  Type type() const {
    if (!any_value) return Type::kString;
    if (can_bool) return Type::kBool;
    if (can_int) return Type::kInt64;
    if (can_float) return Type::kFloat64;
    return Type::kString;
  }
};

}  // namespace

bool parse_int64(std::string_view text, int64_t* out) { return parse_integer(text, out); }
bool parse_float64(std::string_view text, double* out) { return parse_floating(text, out); }

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
  if (parse_integer(text, out_ns)) return true;  // nanoseconds since the epoch
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
    out[std::string(item.substr(0, colon))] = *type;
  }
  return out;
}

Result<CsvPlan> plan_csv(const std::vector<std::string>& files, const CsvOptions& options) {
  if (files.empty()) return Status::invalid_argument("no CSV file given");
  CsvPlan plan;
  plan.files = files;
  std::vector<std::string> header;
  std::vector<Inference> inference;
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const std::string& path = files[fi];
    bool saw_header = false;
    uint64_t row = 0;
    CsvPartition* current = nullptr;
    auto on_record = [&](const std::vector<CsvField>& fields, uint64_t line) -> Status {
      auto where = [&] { return path + ":" + std::to_string(line) + ": "; };
      if (!saw_header) {
        saw_header = true;
        std::vector<std::string> names;
        std::set<std::string> seen;
        for (size_t i = 0; i < fields.size(); ++i) {
          const std::string& name = fields[i].text;
          if (name.empty()) {
            return Status::invalid_argument(where() + "header field " + std::to_string(i + 1) +
                                            " is empty; every column needs a name");
          }
          if (!is_valid_utf8(name)) {
            return Status::invalid_argument(where() + "header is not valid UTF-8");
          }
          if (!seen.insert(name).second) {
            return Status::invalid_argument(where() + "column name '" + name +
                                            "' appears twice in the header");
          }
          names.push_back(name);
        }
        if (fi == 0) {
          header = names;
          inference.resize(header.size());
          for (const auto& [name, type] : options.forced_types) {
            if (!seen.count(name)) {
              return Status::invalid_argument("--schema names column '" + name + "', which " +
                                              path + " does not have");
            }
          }
        } else if (names != header) {
          return Status::invalid_argument(where() + "header differs from the header of " +
                                          files[0]);
        }
        return Status();
      }
      if (fields.size() != header.size()) {
        return Status::invalid_argument(where() + "expected " + std::to_string(header.size()) +
                                        " fields, found " + std::to_string(fields.size()));
      }
      if (current == nullptr ||
          (options.partition_rows > 0 && current->rows == options.partition_rows)) {
        plan.partitions.push_back(CsvPartition{fi, row, 0, std::vector<uint64_t>(header.size())});
        current = &plan.partitions.back();
      }
      for (size_t c = 0; c < fields.size(); ++c) {
        const CsvField& f = fields[c];
        if (f.null) continue;
        size_t bad;
        if (!is_valid_utf8(f.text, &bad)) {
          return Status::invalid_argument(where() + "column '" + header[c] +
                                          "' is not valid UTF-8 (byte " + std::to_string(bad) +
                                          " of the field)");
        }
        auto forced = options.forced_types.find(header[c]);
        if (forced != options.forced_types.end()) {
          if (!value_fits(forced->second, f.text)) {
            return Status::invalid_argument(where() + "column '" + header[c] + "': '" + f.text +
                                            "' is not a " + std::string(type_name(forced->second)));
          }
        } else {
          inference[c].see(f.text);
        }
        current->string_bytes[c] += f.text.size();
      }
      ++current->rows;
      ++row;
      return Status();
    };
    SHELF_RETURN_IF_ERROR(read_csv(path, on_record));
    if (!saw_header) {
      return Status::invalid_argument(path + ":1: the file is empty; expected a header row");
    }
    if (current == nullptr) {  // a header and no rows: an empty partition keeps the file's place
      plan.partitions.push_back(CsvPartition{fi, 0, 0, std::vector<uint64_t>(header.size())});
    }
    plan.total_rows += row;
  }
  for (size_t c = 0; c < header.size(); ++c) {
    auto forced = options.forced_types.find(header[c]);
    plan.schema.push_back(Field{
        header[c], forced != options.forced_types.end() ? forced->second : inference[c].type()});
  }
  // Keep only the string columns' byte counts, in schema order, as
  // TableBuilder::add_partition wants them.
  for (CsvPartition& p : plan.partitions) {
    std::vector<uint64_t> strings;
    for (size_t c = 0; c < plan.schema.size(); ++c) {
      if (plan.schema[c].type == Type::kString) strings.push_back(p.string_bytes[c]);
    }
    p.string_bytes = std::move(strings);
  }
  return plan;
}

namespace {

template <class T, class Parse>
void write_value(PartitionBuilder& part, size_t column, uint64_t row, const CsvField& f,
                 Parse parse) {
  T value{};
  if (f.null || !parse(f.text, &value)) {
    part.set_null(column, row);
    if constexpr (std::is_floating_point_v<T>)
      value = std::numeric_limits<T>::quiet_NaN();
    else
      value = T{};
  }
  part.values<T>(column)[row] = value;
}

Status write_field(PartitionBuilder& part, Type type, size_t column, uint64_t row,
                   const CsvField& f) {
  switch (type) {
    case Type::kInt8:
      write_value<int8_t>(part, column, row, f, parse_integer<int8_t>);
      break;
    case Type::kInt16:
      write_value<int16_t>(part, column, row, f, parse_integer<int16_t>);
      break;
    case Type::kInt32:
      write_value<int32_t>(part, column, row, f, parse_integer<int32_t>);
      break;
    case Type::kInt64:
      write_value<int64_t>(part, column, row, f, parse_integer<int64_t>);
      break;
    case Type::kUInt8:
      write_value<uint8_t>(part, column, row, f, parse_integer<uint8_t>);
      break;
    case Type::kUInt16:
      write_value<uint16_t>(part, column, row, f, parse_integer<uint16_t>);
      break;
    case Type::kUInt32:
      write_value<uint32_t>(part, column, row, f, parse_integer<uint32_t>);
      break;
    case Type::kUInt64:
      write_value<uint64_t>(part, column, row, f, parse_integer<uint64_t>);
      break;
    case Type::kFloat32:
      write_value<float>(part, column, row, f, parse_floating<float>);
      break;
    case Type::kFloat64:
      write_value<double>(part, column, row, f, parse_floating<double>);
      break;
    case Type::kTimestamp:
      write_value<int64_t>(part, column, row, f, parse_timestamp);
      break;
    case Type::kBool:
      write_value<uint8_t>(part, column, row, f, [](std::string_view t, uint8_t* v) {
        bool b;
        if (!parse_bool(t, &b)) return false;
        *v = b ? 1 : 0;
        return true;
      });
      break;
    case Type::kString: {
      StringColumnWriter w = part.strings(column);
      return f.null ? w.append_null() : w.append(f.text);
    }
    case Type::kBytes:
      return Status::internal("bytes column in a CSV table");
  }
  return Status();
}

}  // namespace

Status write_csv(const CsvPlan& plan, TableBuilder& table) {
  size_t next_partition = 0;
  for (size_t fi = 0; fi < plan.files.size(); ++fi) {
    const std::string& path = plan.files[fi];
    std::vector<std::pair<const CsvPartition*, PartitionBuilder>> parts;
    for (; next_partition < plan.partitions.size() && plan.partitions[next_partition].file == fi;
         ++next_partition) {
      const CsvPartition& p = plan.partitions[next_partition];
      SHELF_ASSIGN_OR_RETURN(PartitionBuilder builder, table.add_partition(p.rows, p.string_bytes));
      parts.emplace_back(&p, builder);
    }
    bool header = true;
    uint64_t row = 0;
    size_t current = 0;
    auto changed = [&] { return Status::invalid_argument(path + " changed while it was read"); };
    auto on_record = [&](const std::vector<CsvField>& fields, uint64_t) -> Status {
      if (header) {
        header = false;
        return Status();
      }
      while (current < parts.size() &&
             row >= parts[current].first->first_row + parts[current].first->rows) {
        ++current;
      }
      if (current == parts.size() || fields.size() != plan.schema.size()) return changed();
      PartitionBuilder& part = parts[current].second;
      const uint64_t r = row - parts[current].first->first_row;
      for (size_t c = 0; c < fields.size(); ++c) {
        Status s = write_field(part, plan.schema[c].type, c, r, fields[c]);
        if (!s.ok()) return changed();
      }
      ++row;
      return Status();
    };
    SHELF_RETURN_IF_ERROR(read_csv(path, on_record));
    uint64_t expected = 0;
    for (const auto& [p, builder] : parts) expected += p->rows;
    if (row != expected) return changed();
  }
  return Status();
}

}  // namespace shelf::tools
