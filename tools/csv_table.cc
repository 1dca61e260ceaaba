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
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/check.h"
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

// Feeds every record of `path` to `on_record` and stores in `*xxh3` the XXH3
// of the bytes read, so that pass 2 can tell whether it read what pass 1 did.
Status read_csv(const std::string& path, const OnRecord& on_record, uint64_t* xxh3) {
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
  XXH3_state_t digest;
  XXH3_64bits_reset(&digest);
  size_t got;
  while ((got = std::fread(block.data(), 1, block.size(), file.get())) > 0) {
    XXH3_64bits_update(&digest, block.data(), got);
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
  *xxh3 = XXH3_64bits_digest(&digest);
  return ctx.error;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// Integers and floating-point numbers: one rule, from_chars of the whole
// field after trimming blanks and one leading '+'.
template <class T>
bool parse_number(std::string_view text, T* out) {
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

bool parse_bool_byte(std::string_view text, uint8_t* out) {
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

bool value_fits(Type type, std::string_view text) {
  if (type == Type::kString) return true;
  if (type == Type::kBytes) return false;
  return with_parser(type, [&](auto parse, auto value) { return parse(text, &value); });
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
    out[std::string(item.substr(0, colon))] = *type;
  }
  return out;
}

namespace {

std::string at(const std::string& path, uint64_t line) {
  return path + ":" + std::to_string(line) + ": ";
}

// Pass 1 over the files, one after the other: checks each header and row,
// infers the types and measures the partitions into `plan`.
class Planner {
 public:
  Planner(const std::vector<std::string>& files, const CsvOptions& options) : options_(options) {
    plan_.files = files;
  }

  Status read_file(size_t fi) {
    file_ = fi;
    saw_header_ = false;
    row_ = 0;
    current_ = nullptr;
    const std::string& path = plan_.files[fi];
    uint64_t xxh3 = 0;
    SHELF_RETURN_IF_ERROR(read_csv(
        path,
        [this](const std::vector<CsvField>& fields, uint64_t line) {
          return saw_header_ ? on_row(fields, line) : on_header(fields, line);
        },
        &xxh3));
    if (!saw_header_) {
      return Status::invalid_argument(path + ":1: the file is empty; expected a header row");
    }
    if (current_ == nullptr) {  // a header and no rows: an empty partition keeps the file's place
      plan_.partitions.push_back(CsvPartition{fi, 0, 0, std::vector<uint64_t>(header_.size())});
    }
    plan_.total_rows += row_;
    plan_.file_xxh3.push_back(xxh3);
    return Status();
  }

  // The schema (forced types, else the inferred ones), and each partition's
  // string byte counts cut to the string columns, in schema order, as
  // TableBuilder::add_partition wants them.
  CsvPlan finish() && {
    for (size_t c = 0; c < header_.size(); ++c) {
      auto forced = options_.forced_types.find(header_[c]);
      plan_.schema.push_back(Field{header_[c], forced != options_.forced_types.end()
                                                   ? forced->second
                                                   : inference_[c].type()});
    }
    for (CsvPartition& p : plan_.partitions) {
      std::vector<uint64_t> strings;
      for (size_t c = 0; c < plan_.schema.size(); ++c) {
        if (plan_.schema[c].type == Type::kString) strings.push_back(p.string_bytes[c]);
      }
      p.string_bytes = std::move(strings);
    }
    return std::move(plan_);
  }

 private:
  // Every file's header names each column once, in UTF-8; the first file's
  // header is the table's, and the others must repeat it.
  Status on_header(const std::vector<CsvField>& fields, uint64_t line) {
    saw_header_ = true;
    const std::string& path = plan_.files[file_];
    std::vector<std::string> names;
    std::set<std::string> seen;
    for (size_t i = 0; i < fields.size(); ++i) {
      const std::string& name = fields[i].text;
      if (name.empty()) {
        return Status::invalid_argument(at(path, line) + "header field " + std::to_string(i + 1) +
                                        " is empty; every column needs a name");
      }
      if (!is_valid_utf8(name)) {
        return Status::invalid_argument(at(path, line) + "header is not valid UTF-8");
      }
      if (!seen.insert(name).second) {
        return Status::invalid_argument(at(path, line) + "column name '" + name +
                                        "' appears twice in the header");
      }
      names.push_back(name);
    }
    if (file_ > 0) {
      if (names != header_) {
        return Status::invalid_argument(at(path, line) + "header differs from the header of " +
                                        plan_.files[0]);
      }
      return Status();
    }
    header_ = std::move(names);
    inference_.resize(header_.size());
    for (const auto& [name, type] : options_.forced_types) {
      if (!seen.count(name)) {
        return Status::invalid_argument("--schema names column '" + name + "', which " + path +
                                        " does not have");
      }
    }
    return Status();
  }

  // A data row: the header's number of fields, each in UTF-8 and of its
  // --schema type if it has one; counted into the current partition.
  Status on_row(const std::vector<CsvField>& fields, uint64_t line) {
    const std::string& path = plan_.files[file_];
    if (fields.size() != header_.size()) {
      return Status::invalid_argument(at(path, line) + "expected " +
                                      std::to_string(header_.size()) + " fields, found " +
                                      std::to_string(fields.size()));
    }
    if (current_ == nullptr ||
        (options_.partition_rows > 0 && current_->rows == options_.partition_rows)) {
      plan_.partitions.push_back(
          CsvPartition{file_, row_, 0, std::vector<uint64_t>(header_.size())});
      current_ = &plan_.partitions.back();
    }
    for (size_t c = 0; c < fields.size(); ++c) {
      const CsvField& f = fields[c];
      if (f.null) continue;
      size_t bad;
      if (!is_valid_utf8(f.text, &bad)) {
        return Status::invalid_argument(at(path, line) + "column '" + header_[c] +
                                        "' is not valid UTF-8 (byte " + std::to_string(bad) +
                                        " of the field)");
      }
      auto forced = options_.forced_types.find(header_[c]);
      if (forced != options_.forced_types.end()) {
        if (!value_fits(forced->second, f.text)) {
          return Status::invalid_argument(at(path, line) + "column '" + header_[c] + "': '" +
                                          f.text + "' is not a " +
                                          std::string(type_name(forced->second)));
        }
      } else {
        inference_[c].see(f.text);
      }
      current_->string_bytes[c] += f.text.size();
    }
    ++current_->rows;
    ++row_;
    return Status();
  }

  const CsvOptions& options_;
  CsvPlan plan_;
  std::vector<std::string> header_;  // of the first file
  std::vector<Inference> inference_;
  // The file being read.
  size_t file_ = 0;
  bool saw_header_ = false;
  uint64_t row_ = 0;                 // data rows of this file so far
  CsvPartition* current_ = nullptr;  // the partition its rows go to
};

}  // namespace

Result<CsvPlan> plan_csv(const std::vector<std::string>& files, const CsvOptions& options) {
  if (files.empty()) return Status::invalid_argument("no CSV file given");
  Planner planner(files, options);
  for (size_t fi = 0; fi < files.size(); ++fi) SHELF_RETURN_IF_ERROR(planner.read_file(fi));
  return std::move(planner).finish();
}

namespace {

// Writes field `f` of `column` at `row`. Only an empty unquoted field is a
// null; a value that does not parse as the column's type is an error, never
// a null. Pass 1 checked every value, so such a value means the file changed.
Status write_field(PartitionBuilder& part, const Field& field, size_t column, uint64_t row,
                   const CsvField& f, const std::string& path, uint64_t line) {
  auto changed = [&](const std::string& what) {
    return Status::invalid_argument(at(path, line) + "column '" + field.name + "': " + what + "; " +
                                    path + " changed while it was read");
  };
  if (field.type == Type::kString) {
    StringColumnWriter w = part.strings(column);
    Status s = f.null ? w.append_null() : w.append(f.text);
    return s.ok() ? s : changed("more bytes than when it was first read");
  }
  if (field.type == Type::kBytes) return Status::internal("bytes column in a CSV table");
  return with_parser(field.type, [&](auto parse, auto value) {
    using T = decltype(value);
    if (f.null) {
      part.set_null(column, row);
      if constexpr (std::is_floating_point_v<T>) value = std::numeric_limits<T>::quiet_NaN();
    } else if (!parse(f.text, &value)) {
      return changed("'" + f.text + "' is not a " + std::string(type_name(field.type)));
    }
    part.values<T>(column)[row] = value;
    return Status();
  });
}

// Pass 2 over file `fi`: writes its rows into `parts`, its partitions.
Status write_file(const CsvPlan& plan, size_t fi,
                  std::vector<std::pair<const CsvPartition*, PartitionBuilder>>& parts) {
  const std::string& path = plan.files[fi];
  bool header = true;
  uint64_t row = 0;
  size_t current = 0;
  auto changed = [&](uint64_t line, const std::string& what) {
    return Status::invalid_argument(at(path, line) + what + "; " + path +
                                    " changed while it was read");
  };
  auto on_record = [&](const std::vector<CsvField>& fields, uint64_t line) -> Status {
    if (header) {
      header = false;
      bool same = fields.size() == plan.schema.size();
      for (size_t c = 0; same && c < fields.size(); ++c) {
        same = fields[c].text == plan.schema[c].name;
      }
      return same ? Status() : changed(line, "the header differs from when it was first read");
    }
    while (current < parts.size() &&
           row >= parts[current].first->first_row + parts[current].first->rows) {
      ++current;
    }
    if (current == parts.size()) return changed(line, "more rows than when it was first read");
    if (fields.size() != plan.schema.size()) {
      return changed(line, "expected " + std::to_string(plan.schema.size()) + " fields, found " +
                               std::to_string(fields.size()));
    }
    PartitionBuilder& part = parts[current].second;
    const uint64_t r = row - parts[current].first->first_row;
    for (size_t c = 0; c < fields.size(); ++c) {
      SHELF_RETURN_IF_ERROR(write_field(part, plan.schema[c], c, r, fields[c], path, line));
    }
    ++row;
    return Status();
  };
  uint64_t xxh3 = 0;
  SHELF_RETURN_IF_ERROR(read_csv(path, on_record, &xxh3));
  uint64_t expected = 0;
  for (const auto& [p, builder] : parts) expected += p->rows;
  // Same rows and values that parse are not enough: any other byte (a value
  // changed within its type, a string, a null) would be published unchecked.
  if (row != expected || fi >= plan.file_xxh3.size() || xxh3 != plan.file_xxh3[fi]) {
    return Status::invalid_argument(path + " changed while it was read: its bytes differ from " +
                                    "what the first pass checked");
  }
  return Status();
}

}  // namespace

Status write_csv(const CsvPlan& plan, TableBuilder& table) {
  size_t next_partition = 0;
  for (size_t fi = 0; fi < plan.files.size(); ++fi) {
    std::vector<std::pair<const CsvPartition*, PartitionBuilder>> parts;
    for (; next_partition < plan.partitions.size() && plan.partitions[next_partition].file == fi;
         ++next_partition) {
      const CsvPartition& p = plan.partitions[next_partition];
      SHELF_ASSIGN_OR_RETURN(PartitionBuilder builder, table.add_partition(p.rows, p.string_bytes));
      parts.emplace_back(&p, builder);
    }
    SHELF_RETURN_IF_ERROR(write_file(plan, fi, parts));
  }
  return Status();
}

}  // namespace shelf::tools
