// Property tests of the CSV reader behind `shelf publish`: random tables of
// every type, with nulls, empty strings, quotes, commas, newlines, CRLF and
// multi-byte UTF-8, are written as CSV, read back through plan_csv and
// write_csv into a real shelfd, and compared value by value, bit for bit;
// and random corruptions of valid files must fail with an error naming
// FILE:LINE of the bad record, publishing nothing.
//
// Each case is seeded; a failure prints its seed and the CSV text.
#include <bit>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/cli/csv_dump.h"
#include "tests/support/test_daemon.h"
#include "tools/csv_table.h"

namespace shelf::tools {
namespace {

struct Cell {
  bool null = false;
  std::string text;  // as written in the file, before quoting
  // The value the reader must produce: integers in i or u, floating point
  // bit patterns in bits, bools in i, strings in text.
  int64_t i = 0;
  uint64_t u = 0;
  uint64_t bits = 0;
};

struct Column {
  std::string name;
  Type type;
  bool forced = false;  // given with --schema, else inferred
  std::vector<Cell> cells;
};

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  uint64_t next() { return rng_(); }
  uint64_t below(uint64_t n) { return rng_() % n; }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  // Integers: small ones, the extremes and anything in between.
  template <class T>
  T integer() {
    switch (below(4)) {
      case 0:
        return static_cast<T>(static_cast<int64_t>(below(21)) - 10);
      case 1:
        return chance(0.5) ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max();
      default:
        return static_cast<T>(next());
    }
  }

  Cell value(Type type) {
    Cell c;
    char buf[64];
    switch (type) {
      case Type::kInt8:
        c.i = integer<int8_t>();
        break;
      case Type::kInt16:
        c.i = integer<int16_t>();
        break;
      case Type::kInt32:
        c.i = integer<int32_t>();
        break;
      case Type::kInt64:
        c.i = integer<int64_t>();
        break;
      case Type::kUInt8:
        c.u = integer<uint8_t>();
        break;
      case Type::kUInt16:
        c.u = integer<uint16_t>();
        break;
      case Type::kUInt32:
        c.u = integer<uint32_t>();
        break;
      case Type::kUInt64:
        c.u = integer<uint64_t>();
        break;
      case Type::kFloat32: {
        float f;
        do {
          f = std::bit_cast<float>(static_cast<uint32_t>(next()));
        } while (!std::isfinite(f));
        if (chance(0.3)) f = static_cast<float>(static_cast<int>(below(2001)) - 1000) / 8;
        std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(f));
        c.text = buf;
        c.bits = std::bit_cast<uint32_t>(f);
        return c;
      }
      case Type::kFloat64: {
        double d;
        do {
          d = std::bit_cast<double>(next());
        } while (!std::isfinite(d));
        if (chance(0.3)) d = static_cast<double>(static_cast<int>(below(2001)) - 1000) / 8;
        std::snprintf(buf, sizeof buf, "%.17g", d);
        c.text = buf;
        c.bits = std::bit_cast<uint64_t>(d);
        return c;
      }
      case Type::kBool: {
        static const char* kTrue[] = {"true", "True", "TRUE"};
        static const char* kFalse[] = {"false", "False", "FALSE"};
        c.i = chance(0.5);
        c.text = c.i ? kTrue[below(3)] : kFalse[below(3)];
        return c;
      }
      case Type::kString: {
        static const char* kPieces[] = {
            "a", "Z", " ", ",", "\"", "\n", "\r\n", "\xc3\xa9", "\xe6\x97\xa5",
            "0", "1", ".", "-", "\t", "x y"};
        const uint64_t n = below(8);
        for (uint64_t k = 0; k < n; ++k) c.text += kPieces[below(std::size(kPieces))];
        return c;
      }
      case Type::kTimestamp:
        return timestamp();
      case Type::kBytes:
        break;
    }
    if (type == Type::kUInt8 || type == Type::kUInt16 || type == Type::kUInt32 ||
        type == Type::kUInt64) {
      c.text = (chance(0.2) ? "+" : "") + std::to_string(c.u);
    } else {
      c.text = (c.i >= 0 && chance(0.2) ? "+" : "") + std::to_string(c.i);
    }
    if (chance(0.1)) c.text = " " + c.text + " ";  // numbers may be padded
    return c;
  }

  // Nanoseconds since the epoch, written as an integer or as an ISO date
  // with a fraction of up to 9 digits.
  Cell timestamp() {
    Cell c;
    constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000000000 - 1;
    const int64_t seconds = static_cast<int64_t>(next() % (2 * kMaxSeconds)) - kMaxSeconds;
    const int64_t frac = chance(0.5) ? 0 : static_cast<int64_t>(below(1000000000));
    c.i = seconds * 1000000000 + frac;
    if (chance(0.3)) {
      c.text = std::to_string(c.i);
      return c;
    }
    // Civil date from days (Howard Hinnant's algorithm).
    int64_t days = seconds / 86400, secs = seconds % 86400;
    if (secs < 0) {
      secs += 86400;
      --days;
    }
    const int64_t z = days + 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<uint64_t>(z - era * 146097);
    const uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = static_cast<int64_t>(yoe) + era * 400;
    const uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const uint64_t mp = (5 * doy + 2) / 153;
    const uint64_t d = doy - (153 * mp + 2) / 5 + 1;
    const uint64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRIu64 "-%02" PRIu64 "T%02d:%02d:%02d", y, m,
                  d, static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60),
                  static_cast<int>(secs % 60));
    c.text = buf;
    if (frac != 0) {
      std::snprintf(buf, sizeof buf, ".%09" PRId64, frac);
      std::string f = buf;
      while (f.back() == '0') f.pop_back();  // 1 to 9 digits
      c.text += f;
    }
    if (chance(0.5)) c.text += "Z";
    return c;
  }

 private:
  std::mt19937_64 rng_;
};

// A text read as uint64 the way the reader reads numbers: blanks and one
// leading '+' trimmed, then all of it.
bool parse_uint64(std::string text, uint64_t* out) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.erase(0, 1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.pop_back();
  if (!text.empty() && text.front() == '+') text.erase(0, 1);
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

// What plan_csv infers for these cells, by its documented rule: bool, else
// int64, else uint64, else float64, else string; a column of nulls is a
// string column. (The generator writes no integer that float64 would round,
// so the rule's exception for those does not arise here.)
Type inferred(const std::vector<Cell>& cells) {
  bool any = false, can_bool = true, can_int = true, can_uint = true, can_float = true;
  for (const Cell& c : cells) {
    if (c.null) continue;
    any = true;
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    can_bool = can_bool && parse_bool(c.text, &b);
    can_int = can_int && parse_int64(c.text, &i);
    can_uint = can_uint && parse_uint64(c.text, &u);
    can_float = can_float && parse_float64(c.text, &d);
  }
  if (!any) return Type::kString;
  if (can_bool) return Type::kBool;
  if (can_int) return Type::kInt64;
  if (can_uint) return Type::kUInt64;
  if (can_float) return Type::kFloat64;
  return Type::kString;
}

// RFC 4180 quoting: doubled quotes inside.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    out += ch;
    if (ch == '"') out += '"';
  }
  return out + "\"";
}

bool needs_quotes(const std::string& s) {
  return s.empty() || s.find_first_of(",\"\r\n") != std::string::npos;
}

struct Table {
  std::vector<Column> columns;
  std::vector<uint64_t> rows_per_file;
  std::vector<std::string> texts;  // one CSV text per file
  // Line on which each data row of each file starts (1 = the header).
  std::vector<std::vector<uint64_t>> row_lines;
};

Table random_table(Gen& g) {
  static const Type kTypes[] = {Type::kInt8,     Type::kInt16,   Type::kInt32,  Type::kInt64,
                                Type::kUInt8,    Type::kUInt16,  Type::kUInt32, Type::kUInt64,
                                Type::kFloat32,  Type::kFloat64, Type::kBool,   Type::kString,
                                Type::kTimestamp};
  static const char* kNames[] = {"id",
                                 "a,b",
                                 "say \"hi\"",
                                 "gr\xc3\xb6\xc3\x9f"
                                 "e",
                                 "x y",
                                 "v"};
  Table t;
  const uint64_t num_columns = 1 + g.below(6);
  const uint64_t files = 1 + g.below(3);
  uint64_t total_rows = 0;
  for (uint64_t f = 0; f < files; ++f) {
    t.rows_per_file.push_back(g.below(30));
    total_rows += t.rows_per_file.back();
  }
  for (uint64_t c = 0; c < num_columns; ++c) {
    Column col;
    col.name = std::string(kNames[g.below(std::size(kNames))]) + std::to_string(c);
    col.type = kTypes[g.below(std::size(kTypes))];
    // One column alone cannot hold a null: its line would be blank, and
    // blank lines are skipped.
    const double null_rate = num_columns == 1 ? 0 : g.chance(0.5) ? 0.2 : 0;
    for (uint64_t r = 0; r < total_rows; ++r) {
      Cell cell;
      if (g.chance(null_rate)) {
        cell.null = true;
      } else {
        cell = g.value(col.type);
        // A lone string column cannot hold "" either (a blank line).
        if (num_columns == 1 && col.type == Type::kString && cell.text.empty()) cell.text = "e";
      }
      col.cells.push_back(std::move(cell));
    }
    col.forced = inferred(col.cells) != col.type || g.chance(0.3);
    t.columns.push_back(std::move(col));
  }
  uint64_t row = 0;
  for (uint64_t f = 0; f < files; ++f) {
    const std::string eol = g.chance(0.5) ? "\n" : "\r\n";
    std::string text;
    for (uint64_t c = 0; c < num_columns; ++c) {
      const std::string& name = t.columns[c].name;
      text += (c ? "," : "") + (needs_quotes(name) || g.chance(0.2) ? quoted(name) : name);
    }
    text += eol;
    std::vector<uint64_t> lines;
    for (uint64_t r = 0; r < t.rows_per_file[f]; ++r, ++row) {
      lines.push_back(1 + static_cast<uint64_t>(std::count(text.begin(), text.end(), '\n')));
      for (uint64_t c = 0; c < num_columns; ++c) {
        const Cell& cell = t.columns[c].cells[row];
        if (c) text += ",";
        if (cell.null) continue;
        const bool quote =
            needs_quotes(cell.text) || cell.text.find(' ') != std::string::npos || g.chance(0.2);
        text += quote ? quoted(cell.text) : cell.text;
      }
      text += eol;
    }
    if (g.chance(0.2) && !text.empty()) text.resize(text.size() - eol.size());  // no final EOL
    t.texts.push_back(std::move(text));
    t.row_lines.push_back(std::move(lines));
  }
  return t;
}

CsvOptions options_for(const Table& t, Gen& g) {
  CsvOptions o;
  static const uint64_t kPartitionRows[] = {0, 1, 3, 7};
  o.partition_rows = kPartitionRows[g.below(4)];
  for (const Column& c : t.columns) {
    if (c.forced) o.forced_types[c.name] = c.type;
  }
  return o;
}

class CsvPropertyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = test::TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
  }
  std::vector<std::string> write_files(const Table& t) {
    std::vector<std::string> paths;
    for (size_t f = 0; f < t.texts.size(); ++f) {
      paths.push_back(daemon_->dir() + "/t" + std::to_string(f) + ".csv");
      std::ofstream(paths.back(), std::ios::binary | std::ios::trunc) << t.texts[f];
    }
    return paths;
  }
  std::unique_ptr<test::TestDaemon> daemon_;
};

std::string describe(uint64_t seed, const Table& t) {
  std::string out = "seed " + std::to_string(seed) + "\n";
  for (size_t f = 0; f < t.texts.size(); ++f) {
    out += "--- file " + std::to_string(f) + " ---\n" + t.texts[f] + "\n";
  }
  return out;
}

template <class V>
void expect_fixed(const ColumnView& col, uint64_t r, const Cell& cell, const std::string& where) {
  std::span<const V> values = col.values<V>();
  ASSERT_EQ(values.size(), col.length()) << where;
  if constexpr (std::is_floating_point_v<V>) {
    using Bits = std::conditional_t<sizeof(V) == 4, uint32_t, uint64_t>;
    EXPECT_EQ(std::bit_cast<Bits>(values[r]), static_cast<Bits>(cell.bits))
        << where << ": " << cell.text << " read as " << values[r];
  } else if constexpr (std::is_unsigned_v<V> && sizeof(V) > 1) {
    EXPECT_EQ(values[r], static_cast<V>(cell.u)) << where << ": " << cell.text;
  } else if constexpr (std::is_same_v<V, uint8_t>) {  // uint8 and bool
    EXPECT_EQ(values[r], static_cast<V>(cell.u | static_cast<uint64_t>(cell.i)))
        << where << ": " << cell.text;
  } else {
    EXPECT_EQ(values[r], static_cast<V>(cell.i)) << where << ": " << cell.text;
  }
}

void expect_cell(const ColumnView& col, Type type, uint64_t r, const Cell& cell,
                 const std::string& where) {
  if (cell.null) {
    EXPECT_FALSE(col.is_valid(r)) << where << " should be null";
    return;
  }
  ASSERT_TRUE(col.is_valid(r)) << where << " is null, should be '" << cell.text << "'";
  switch (type) {
    case Type::kInt8:
      return expect_fixed<int8_t>(col, r, cell, where);
    case Type::kInt16:
      return expect_fixed<int16_t>(col, r, cell, where);
    case Type::kInt32:
      return expect_fixed<int32_t>(col, r, cell, where);
    case Type::kInt64:
    case Type::kTimestamp:
      return expect_fixed<int64_t>(col, r, cell, where);
    case Type::kUInt8:
    case Type::kBool:
      return expect_fixed<uint8_t>(col, r, cell, where);
    case Type::kUInt16:
      return expect_fixed<uint16_t>(col, r, cell, where);
    case Type::kUInt32:
      return expect_fixed<uint32_t>(col, r, cell, where);
    case Type::kUInt64:
      return expect_fixed<uint64_t>(col, r, cell, where);
    case Type::kFloat32:
      return expect_fixed<float>(col, r, cell, where);
    case Type::kFloat64:
      return expect_fixed<double>(col, r, cell, where);
    case Type::kString:
      EXPECT_EQ(col.string(r), cell.text) << where;
      return;
    case Type::kBytes:
      FAIL() << "bytes column";
  }
}

TEST_F(CsvPropertyTest, RandomTablesReadBackExactly) {
  Client client = daemon_->connect();
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    Gen g(seed);
    Table t = random_table(g);
    const CsvOptions options = options_for(t, g);
    const std::string context = describe(seed, t);
    auto plan = plan_csv(write_files(t), options);
    ASSERT_TRUE(plan.ok()) << plan.status().to_string() << "\n" << context;
    ASSERT_EQ(plan->schema.size(), t.columns.size()) << context;
    for (size_t c = 0; c < t.columns.size(); ++c) {
      ASSERT_EQ(plan->schema[c], (Field{t.columns[c].name, t.columns[c].type})) << context;
    }
    auto table = client.create_table(plan->schema);
    ASSERT_TRUE(table.ok()) << table.status().to_string();
    Status s = write_csv(*plan, *table);
    ASSERT_TRUE(s.ok()) << s.to_string() << "\n" << context;
    const std::string name = "t" + std::to_string(seed);
    s = client.publish_dataset(name, *table);
    ASSERT_TRUE(s.ok()) << s.to_string() << "\n" << context;

    auto ds = client.get_dataset(name);
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    ASSERT_EQ(ds->num_partitions(), plan->partitions.size()) << context;
    uint64_t row = 0;
    for (uint64_t p = 0; p < ds->num_partitions(); ++p) {
      for (uint64_t r = 0; r < ds->num_rows(p); ++r, ++row) {
        for (size_t c = 0; c < t.columns.size(); ++c) {
          const std::string where = "seed " + std::to_string(seed) + " row " + std::to_string(row) +
                                    " column " + t.columns[c].name;
          ASSERT_LT(row, t.columns[c].cells.size()) << context;
          expect_cell(ds->column(p, c), t.columns[c].type, r, t.columns[c].cells[row], where);
        }
      }
      if (HasFailure()) FAIL() << context;
    }
    ASSERT_EQ(row, t.columns[0].cells.size()) << context;
    ASSERT_TRUE(client.unpublish_dataset(name).ok());
  }
}

// Corrupts one data record of a valid file; every kind must fail plan_csv
// with "FILE:LINE: " where LINE is the line the record starts on.
TEST_F(CsvPropertyTest, CorruptRecordsNameFileAndLineAndPublishNothing) {
  enum Kind { kExtraField, kMissingField, kStrayQuote, kBadUtf8, kNotTheForcedType, kUnclosed };
  for (uint64_t seed = 1; seed <= 120; ++seed) {
    Gen g(1000 + seed);
    Table t = random_table(g);
    CsvOptions options = options_for(t, g);
    // A file with a data row to spoil.
    size_t f = 0;
    while (f < t.texts.size() && t.rows_per_file[f] == 0) ++f;
    if (f == t.texts.size()) continue;
    const uint64_t victim = g.below(t.rows_per_file[f]);
    const uint64_t line = t.row_lines[f][victim];
    std::string& text = t.texts[f];
    // The victim record's first byte: the start of its line.
    size_t at = 0;
    for (uint64_t l = 1; l < line; ++l) at = text.find('\n', at) + 1;
    auto kind = static_cast<Kind>(g.below(6));
    // Forcing the first column's own type keeps every other value valid.
    if (kind == kNotTheForcedType && t.columns[0].type == Type::kString) kind = kBadUtf8;
    std::string bad;
    switch (kind) {
      case kExtraField:
        bad = "1,";  // one more field in front
        break;
      case kMissingField:
        // A record of one field fewer (two for one column), before the victim.
        bad = "x";
        for (size_t c = 1; c + 1 < t.columns.size(); ++c) bad += ",";
        bad += t.columns.size() > 1 ? "\n" : ",\n";
        break;
      case kStrayQuote:
        bad = "x\"y";
        for (size_t c = 1; c < t.columns.size(); ++c) bad += ",";
        bad += "\n";
        break;
      case kBadUtf8:
        bad = "\"\xff\xfe\"";
        for (size_t c = 1; c < t.columns.size(); ++c) bad += ",";
        bad += "\n";
        break;
      case kNotTheForcedType:
        options.forced_types[t.columns[0].name] = t.columns[0].type;
        bad = "not a number";
        for (size_t c = 1; c < t.columns.size(); ++c) bad += ",";
        bad += "\n";
        break;
      case kUnclosed:
        bad = "\"open";  // up to the end of the file
        text.resize(at);
        break;
    }
    text.insert(at, bad);
    const std::vector<std::string> paths = write_files(t);
    const std::string context = "kind " + std::to_string(kind) + ", " + describe(1000 + seed, t);
    auto plan = plan_csv(paths, options);
    ASSERT_FALSE(plan.ok()) << context;
    EXPECT_EQ(plan.status().code(), Status::Code::kInvalidArgument);
    const std::string expected = paths[f] + ":" + std::to_string(line) + ": ";
    EXPECT_EQ(plan.status().message().rfind(expected, 0), 0u)
        << plan.status().message() << "\nexpected it to start with " << expected << "\n"
        << context;

    // Through the CLI: it refuses, names the place, and publishes nothing.
    if (seed % 10 == 0) {
      std::vector<std::string> argv = {SHELF_CLI_PATH, "--socket", daemon_->socket(), "publish",
                                       "spoilt"};
      argv.insert(argv.end(), paths.begin(), paths.end());
      std::string schema;
      bool sayable = true;
      for (const auto& [name, type] : options.forced_types) {
        sayable = sayable && name.find(',') == std::string::npos;
        schema += (schema.empty() ? "" : ",") + name + ":" + std::string(type_name(type));
      }
      if (!sayable) continue;  // --schema cannot name a column with a comma
      if (!schema.empty()) argv.insert(argv.end(), {"--schema", schema});
      test::CommandResult r = test::run_command(argv);
      EXPECT_NE(r.exit_code, 0) << context;
      EXPECT_NE(r.err.find(expected), std::string::npos) << r.err << "\n" << context;
      Client c = daemon_->connect();
      auto names = c.list_datasets();
      ASSERT_TRUE(names.ok());
      EXPECT_TRUE(names->empty()) << context;
      EXPECT_EQ(c.status()->unsealed_bytes, 0u);
    }
  }
}

// Plans, writes and publishes `paths` as `name`; returns the dataset's dump,
// or the error's message.
std::string publish_and_dump(Client& client, const std::vector<std::string>& paths,
                             const CsvOptions& options, const std::string& name) {
  auto plan = plan_csv(paths, options);
  if (!plan.ok()) return "error: " + plan.status().message();
  auto table = client.create_table(plan->schema);
  if (!table.ok()) return "error: " + table.status().message();
  if (Status s = write_csv(*plan, *table); !s.ok()) return "error: " + s.message();
  if (Status s = client.publish_dataset(name, *table); !s.ok()) return "error: " + s.message();
  std::string dump = test::dump_dataset(client, name);
  (void)client.unpublish_dataset(name);
  return dump;
}

// The chunk size and the thread count never change a dataset: chunks split
// every small table at every byte (one split alone at each position past
// the middle: chunk_bytes = k cuts a file of under 2k bytes once, at k), and
// a split may fall inside a quoted field with a newline, between the two
// quotes of a doubled quote, or between the CR and LF of a CRLF.
TEST_F(CsvPropertyTest, EverySplitPointAndThreadCountGivesTheSameDataset) {
  Client client = daemon_->connect();
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    Gen g(5000 + seed);
    Table t = random_table(g);
    CsvOptions options = options_for(t, g);
    const std::vector<std::string> paths = write_files(t);
    const std::string context = describe(5000 + seed, t);
    const std::string expected = publish_and_dump(client, paths, options, "base");
    ASSERT_EQ(expected.rfind("error", 0), std::string::npos) << expected << "\n" << context;
    size_t longest = 0;
    for (const std::string& text : t.texts) longest = std::max(longest, text.size());
    for (uint64_t k = 1; k <= longest + 1; ++k) {
      options.chunk_bytes = k;
      options.threads = 1 + static_cast<unsigned>(k % 3);
      ASSERT_EQ(publish_and_dump(client, paths, options, "split"), expected)
          << "chunk_bytes " << k << ", threads " << options.threads << "\n"
          << context;
    }
  }
}

// Hand-made files whose awkward bytes land on every split point.
TEST_F(CsvPropertyTest, QuotedNewlinesDoubledQuotesAndCrlfAtEverySplitPoint) {
  Client client = daemon_->connect();
  const std::vector<std::string> texts = {
      "a,b\r\n\"x\r\ny\",\"q\"\"r\"\r\n3,\"\"\"\"\r\n\r\n4,5",
      "s,n\n\"\n\n\n\",1\n\"\"\"\n\"\"\",2\n\"a,b\r\nc\",3\n",
      "s\n\"line one\nline two\nline three\"\n\"\"\"quoted\"\"\"\nplain\n",
      "a,b\r\r\n1,\"\r\"\r\n\r\n\r\n2,\"\"\r\n",
  };
  for (const std::string& text : texts) {
    const std::string path = daemon_->dir() + "/edge.csv";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    const std::string expected = publish_and_dump(client, {path}, {}, "base");
    ASSERT_EQ(expected.rfind("error", 0), std::string::npos) << expected << "\n" << text;
    for (uint64_t k = 1; k <= text.size(); ++k) {
      for (unsigned threads : {1u, 2u, 3u}) {
        CsvOptions options;
        options.chunk_bytes = k;
        options.threads = threads;
        ASSERT_EQ(publish_and_dump(client, {path}, options, "split"), expected)
            << "chunk_bytes " << k << ", threads " << threads << "\n"
            << text;
      }
    }
  }
}

// LF, CRLF and a lone CR (old Mac files) each end a line: an error names the
// same line whichever a file uses, for every chunk size and thread count
// (a split may fall between the CR and LF of a CRLF).
TEST_F(CsvPropertyTest, ErrorsNameTheSameLineWhateverTheLineEnds) {
  const std::vector<std::pair<std::string, uint64_t>> texts = {
      {"a,b\n1,2\n3,4,5\n6,7\n", 3},          // too many fields
      {"a,b\n1,2\n\"x\ny\",3\n4\n5,6\n", 5},  // a short record after a quoted newline
      {"a,b\n\n1,2\n3,\"open\n4,5\n", 4},     // never closed, after a blank line
      {"\n\na,b\"\n1,2\n", 3},                // a bad header after blank lines
  };
  const std::pair<const char*, const char*> ends[] = {{"LF", "\n"}, {"CRLF", "\r\n"}, {"CR", "\r"}};
  for (const auto& [lf_text, line] : texts) {
    for (const auto& [end_name, end] : ends) {
      std::string text;
      for (char ch : lf_text) text += ch == '\n' ? std::string(end) : std::string(1, ch);
      const std::string path = daemon_->dir() + "/ends.csv";
      std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
      const std::string expected = path + ":" + std::to_string(line) + ": ";
      for (uint64_t k = 1; k <= text.size(); ++k) {
        CsvOptions options;
        options.chunk_bytes = k;
        options.threads = 1 + static_cast<unsigned>(k % 3);
        auto plan = plan_csv({path}, options);
        ASSERT_FALSE(plan.ok()) << end_name << " " << lf_text;
        EXPECT_EQ(plan.status().message().rfind(expected, 0), 0u)
            << end_name << ", chunk_bytes " << k << ": " << plan.status().message();
      }
    }
  }
}

// Errors do not depend on where the chunks fall either: the same first bad
// record, the same FILE:LINE and message.
TEST_F(CsvPropertyTest, ErrorsAreTheSameForEveryChunkSize) {
  const std::vector<std::string> texts = {
      "a,b\n1,2\n\"x\ny\",3\n4\n5,6\n",     // a short record after a quoted newline
      "a,b\n1,2\n3,\"open\n4,5\n",          // never closed
      "a,b\n1,\"q\"x\n\"ok\",\"\n\"\n",     // text after a closing quote
      "a,b\n1,2\n3,\xff\n\"\xfe\",4\n",     // invalid UTF-8
      "a,b\n\"1\n2\",3\n4,5,6\n\"7\",8\n",  // too many fields, after a quoted newline
  };
  for (const std::string& text : texts) {
    const std::string path = daemon_->dir() + "/bad.csv";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    auto base = plan_csv({path}, {});
    ASSERT_FALSE(base.ok()) << text;
    for (uint64_t k = 1; k <= text.size(); ++k) {
      CsvOptions options;
      options.chunk_bytes = k;
      options.threads = 1 + static_cast<unsigned>(k % 3);
      auto plan = plan_csv({path}, options);
      ASSERT_FALSE(plan.ok()) << text;
      EXPECT_EQ(plan.status().message(), base.status().message()) << "chunk_bytes " << k;
    }
  }
}

}  // namespace
}  // namespace shelf::tools
