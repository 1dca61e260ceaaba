// The filter language (libclient/include/shelf/filter.h) on heap buffers, no
// daemon: every operator on every type, nulls, precedence, every error
// message, and randomised expressions against a row-at-a-time reference
// evaluator written here independently of the library's column-at-a-time one.
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/filter.h>

namespace shelf {
namespace {

// One column on the heap, in the layout of docs/shm_layout.md.
struct HeapColumn {
  Type type;
  std::vector<std::byte> data;
  std::vector<int64_t> offsets{0};
  std::vector<uint8_t> validity;
  uint64_t rows = 0;
  bool any_null = false;

  template <class V>
  void push(std::optional<V> v) {
    V value = v.value_or(V{});
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    data.insert(data.end(), p, p + sizeof(V));
    mark(v.has_value());
  }
  void push_string(std::optional<std::string> v) {
    const std::string s = v.value_or("");
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    data.insert(data.end(), p, p + s.size());
    offsets.push_back(static_cast<int64_t>(data.size()));
    mark(v.has_value());
  }
  void mark(bool valid) {
    if (rows % 8 == 0) validity.push_back(0);
    if (valid) validity.back() |= static_cast<uint8_t>(1u << (rows % 8));
    any_null = any_null || !valid;
    ++rows;
  }
  ColumnBuffers buffers() const {
    ColumnBuffers b;
    b.type = type;
    b.rows = rows;
    b.validity = any_null ? validity.data() : nullptr;
    b.offsets = type == Type::kString ? offsets.data() : nullptr;
    b.data = data.data();
    b.data_bytes = data.size();
    return b;
  }
};

// The kept rows of `where` over `cols`, as a list of row numbers.
std::vector<uint64_t> kept(const Schema& schema, const std::vector<HeapColumn>& cols,
                           const std::string& where) {
  Result<Filter> f = Filter::parse(schema, where);
  EXPECT_TRUE(f.ok()) << where << ": " << f.status().to_string();
  if (!f.ok()) return {};
  std::vector<ColumnBuffers> buffers;
  for (const HeapColumn& c : cols) buffers.push_back(c.buffers());
  Result<Selection> sel = f->evaluate(buffers, cols.empty() ? 0 : cols[0].rows);
  EXPECT_TRUE(sel.ok()) << sel.status().to_string();
  std::vector<uint64_t> rows;
  for (uint64_t r = 0; r < sel->rows(); ++r) {
    if (sel->contains(r)) rows.push_back(r);
  }
  EXPECT_EQ(sel->count(), rows.size());
  return rows;
}

std::string parse_error(const Schema& schema, const std::string& where,
                        std::vector<std::string> columns = {}) {
  Result<Filter> f = Filter::parse(schema, where, columns);
  EXPECT_FALSE(f.ok()) << where;
  if (f.ok()) return "";
  EXPECT_EQ(f.status().code(), Status::Code::kInvalidArgument);
  return f.status().message();
}

// A small table of every type: row 3 is null in every column.
class FilterTypesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    schema_ = {{"i8", Type::kInt8},     {"i16", Type::kInt16},  {"i32", Type::kInt32},
               {"i64", Type::kInt64},   {"u8", Type::kUInt8},   {"u16", Type::kUInt16},
               {"u32", Type::kUInt32},  {"u64", Type::kUInt64}, {"f32", Type::kFloat32},
               {"f64", Type::kFloat64}, {"b", Type::kBool},     {"s", Type::kString},
               {"ts", Type::kTimestamp}};
    for (const Field& f : schema_) cols_.push_back(HeapColumn{f.type, {}, {0}, {}, 0, false});
    // Values -1, 0, 1, null, 2 (unsigned: 0, 1, 2, null, 3).
    const std::optional<int> v[] = {-1, 0, 1, std::nullopt, 2};
    for (const auto& x : v) {
      auto s = [&](auto t) {
        return x ? std::optional<decltype(t)>(static_cast<decltype(t)>(*x)) : std::nullopt;
      };
      auto u = [&](auto t) {
        return x ? std::optional<decltype(t)>(static_cast<decltype(t)>(*x + 1)) : std::nullopt;
      };
      cols_[0].push(s(int8_t{}));
      cols_[1].push(s(int16_t{}));
      cols_[2].push(s(int32_t{}));
      cols_[3].push(s(int64_t{}));
      cols_[4].push(u(uint8_t{}));
      cols_[5].push(u(uint16_t{}));
      cols_[6].push(u(uint32_t{}));
      cols_[7].push(u(uint64_t{}));
      cols_[8].push(x ? std::optional<float>(*x + 0.5f) : std::nullopt);
      cols_[9].push(x ? std::optional<double>(*x + 0.5) : std::nullopt);
      cols_[10].push(x ? std::optional<uint8_t>(*x > 0 ? 1 : 0) : std::nullopt);
      cols_[11].push_string(x ? std::optional<std::string>(std::string(1, char('b' + *x)))
                              : std::nullopt);  // a, b, c, null, d
      // 2024-01-01 plus x days.
      cols_[12].push(x ? std::optional<int64_t>((19723 + *x) * 86400LL * 1000000000LL)
                       : std::nullopt);
    }
  }
  std::vector<uint64_t> rows(const std::string& where) { return kept(schema_, cols_, where); }
  Schema schema_;
  std::vector<HeapColumn> cols_;
};

using Rows = std::vector<uint64_t>;

TEST_F(FilterTypesTest, EveryOperatorOnEverySignedIntegerType) {
  for (const char* c : {"i8", "i16", "i32", "i64"}) {
    const std::string col = c;
    EXPECT_EQ(rows(col + " < 1"), (Rows{0, 1})) << col;
    EXPECT_EQ(rows(col + " <= 1"), (Rows{0, 1, 2})) << col;
    EXPECT_EQ(rows(col + " == 1"), (Rows{2})) << col;
    EXPECT_EQ(rows(col + " = 1"), (Rows{2})) << col;
    EXPECT_EQ(rows(col + " != 1"), (Rows{0, 1, 4})) << col;  // the null row is not kept
    EXPECT_EQ(rows(col + " <> 1"), (Rows{0, 1, 4})) << col;
    EXPECT_EQ(rows(col + " > 0"), (Rows{2, 4})) << col;
    EXPECT_EQ(rows(col + " >= 0"), (Rows{1, 2, 4})) << col;
    EXPECT_EQ(rows(col + " == -1"), (Rows{0})) << col;
    EXPECT_EQ(rows(col + " in (2, -1, 7)"), (Rows{0, 4})) << col;
    EXPECT_EQ(rows(col + " not in (2, -1)"), (Rows{1, 2})) << col;
  }
}

TEST_F(FilterTypesTest, EveryOperatorOnEveryUnsignedIntegerType) {
  for (const char* c : {"u8", "u16", "u32", "u64"}) {
    const std::string col = c;
    EXPECT_EQ(rows(col + " < 2"), (Rows{0, 1})) << col;
    EXPECT_EQ(rows(col + " <= 2"), (Rows{0, 1, 2})) << col;
    EXPECT_EQ(rows(col + " == 0"), (Rows{0})) << col;
    EXPECT_EQ(rows(col + " != 0"), (Rows{1, 2, 4})) << col;
    EXPECT_EQ(rows(col + " > 2"), (Rows{4})) << col;
    EXPECT_EQ(rows(col + " >= 2"), (Rows{2, 4})) << col;
    EXPECT_EQ(rows(col + " in (3, 1)"), (Rows{1, 4})) << col;
  }
}

TEST_F(FilterTypesTest, IntegersOutsideTheColumnsRangeCompareAsSqlWould) {
  EXPECT_EQ(rows("i8 < 1000"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("i8 > 1000"), Rows{});
  EXPECT_EQ(rows("i8 >= -1000"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("i8 != 128"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("i8 == -129"), Rows{});
  EXPECT_EQ(rows("i8 >= -128"), (Rows{0, 1, 2, 4}));  // the minimum itself is in range
  EXPECT_EQ(rows("u8 > -1"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("u8 < 0"), Rows{});
  EXPECT_EQ(rows("u8 <= 256"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("u64 < 18446744073709551615"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("u16 in (-5, 70000, 1)"), (Rows{1}));
  EXPECT_EQ(rows("i64 >= -9223372036854775808"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("i64 > 9223372036854775807"), Rows{});
  EXPECT_EQ(rows("not (i8 < 1000)"), Rows{});  // the null row stays unknown
}

TEST_F(FilterTypesTest, FloatsTakeIntegersAndFloats) {
  for (const char* c : {"f32", "f64"}) {
    const std::string col = c;
    EXPECT_EQ(rows(col + " < 0"), (Rows{0})) << col;
    EXPECT_EQ(rows(col + " <= 0.5"), (Rows{0, 1})) << col;
    EXPECT_EQ(rows(col + " == 1.5"), (Rows{2})) << col;
    EXPECT_EQ(rows(col + " != 1.5"), (Rows{0, 1, 4})) << col;
    EXPECT_EQ(rows(col + " > 1e0"), (Rows{2, 4})) << col;
    EXPECT_EQ(rows(col + " >= -.5"), (Rows{0, 1, 2, 4})) << col;
    EXPECT_EQ(rows(col + " in (2.5, -0.5)"), (Rows{0, 4})) << col;
  }
  // float32 compares as float64: 0.1f is not 0.1.
  HeapColumn c{Type::kFloat32, {}, {0}, {}, 0, false};
  c.push(std::optional<float>(0.1f));
  EXPECT_EQ(kept({{"x", Type::kFloat32}}, {c}, "x == 0.1"), Rows{});
  EXPECT_EQ(kept({{"x", Type::kFloat32}}, {c}, "x > 0.1"), Rows{0});
}

TEST(FilterTest, NanEqualsNothingButIsNotNull) {
  HeapColumn c{Type::kFloat64, {}, {0}, {}, 0, false};
  c.push(std::optional<double>(std::nan("")));
  c.push(std::optional<double>(1.0));
  const Schema s = {{"x", Type::kFloat64}};
  EXPECT_EQ(kept(s, {c}, "x == 1"), Rows{1});
  EXPECT_EQ(kept(s, {c}, "x < 2"), Rows{1});
  EXPECT_EQ(kept(s, {c}, "x != 1"), Rows{0});
  EXPECT_EQ(kept(s, {c}, "x is null"), Rows{});
}

TEST_F(FilterTypesTest, BoolStringAndTimestamp) {
  EXPECT_EQ(rows("b == true"), (Rows{2, 4}));
  EXPECT_EQ(rows("b != TRUE"), (Rows{0, 1}));
  EXPECT_EQ(rows("b = false"), (Rows{0, 1}));
  EXPECT_EQ(rows("b < true"), (Rows{0, 1}));
  EXPECT_EQ(rows("b in (true)"), (Rows{2, 4}));
  EXPECT_EQ(rows("s == 'c'"), (Rows{2}));
  EXPECT_EQ(rows("s < 'b'"), (Rows{0}));
  EXPECT_EQ(rows("s <= 'b'"), (Rows{0, 1}));
  EXPECT_EQ(rows("s > 'bz'"), (Rows{2, 4}));
  EXPECT_EQ(rows("s >= 'c'"), (Rows{2, 4}));
  EXPECT_EQ(rows("s != 'a'"), (Rows{1, 2, 4}));
  EXPECT_EQ(rows("s in ('d', 'a', 'zz')"), (Rows{0, 4}));
  EXPECT_EQ(rows("s == ''"), Rows{});  // the null row is not the empty string
  EXPECT_EQ(rows("ts == '2024-01-01'"), (Rows{1}));
  EXPECT_EQ(rows("ts >= '2024-01-02T00:00:00Z'"), (Rows{2, 4}));
  EXPECT_EQ(rows("ts < '2024-01-01 00:00:00.000000001'"), (Rows{0, 1}));
  EXPECT_EQ(rows("ts > 1704067200000000000"), (Rows{2, 4}));  // 2024-01-01 in ns
  EXPECT_EQ(rows("ts in ('2023-12-31', '2024-01-03')"), (Rows{0, 4}));
}

TEST(FilterTest, QuotedStringsAndNames) {
  HeapColumn c{Type::kString, {}, {0}, {}, 0, false};
  c.push_string(std::string("it's"));
  c.push_string(std::string("its"));
  const Schema s = {{"odd name", Type::kString}};
  EXPECT_EQ(kept(s, {c}, "\"odd name\" == 'it''s'"), Rows{0});
  EXPECT_EQ(kept(s, {c}, "\"odd name\" != 'it''s'"), Rows{1});
}

TEST_F(FilterTypesTest, IsNullAndIsNotNull) {
  for (const Field& f : schema_) {
    EXPECT_EQ(rows(f.name + " is null"), Rows{3}) << f.name;
    EXPECT_EQ(rows(f.name + " IS NOT NULL"), (Rows{0, 1, 2, 4})) << f.name;
  }
  HeapColumn c{Type::kInt64, {}, {0}, {}, 0, false};
  c.push(std::optional<int64_t>(5));
  EXPECT_EQ(kept({{"x", Type::kInt64}}, {c}, "x is null"), Rows{});
  EXPECT_EQ(kept({{"x", Type::kInt64}}, {c}, "x is not null"), Rows{0});
}

TEST_F(FilterTypesTest, ThreeValuedLogic) {
  // Row 3 is null: i64 < 5 is unknown there.
  EXPECT_EQ(rows("not (i64 < 5)"), Rows{});
  EXPECT_EQ(rows("not not (i64 < 5)"), (Rows{0, 1, 2, 4}));
  EXPECT_EQ(rows("i64 < 5 or i64 is null"), (Rows{0, 1, 2, 3, 4}));
}

TEST_F(FilterTypesTest, UnknownAndFalseIsFalseUnknownOrTrueIsTrue) {
  // u8 == 99 is false everywhere valid, unknown at row 3; b's row 3 is null too.
  EXPECT_EQ(rows("not (i64 == 99 and s == 'zz')"), (Rows{0, 1, 2, 4}));  // unknown and false
  EXPECT_EQ(rows("not (i64 > -5 and s != 'zz')"), Rows{});               // true and true / unknown
  EXPECT_EQ(rows("(i64 > -5 or i8 is null)"), (Rows{0, 1, 2, 3, 4}));
  EXPECT_EQ(rows("not (i64 == 99 or s == 'zz')"), (Rows{0, 1, 2, 4}));  // null row: unknown
  EXPECT_EQ(rows("i64 is null and not (i64 == 1)"), Rows{});            // true and unknown
  EXPECT_EQ(rows("i64 is null or i64 == 1"), (Rows{2, 3}));             // true or unknown
}

TEST_F(FilterTypesTest, PrecedenceIsNotThenAndThenOr) {
  // a or b and c == a or (b and c)
  EXPECT_EQ(rows("i64 == -1 or i64 > 0 and i64 < 2"), (Rows{0, 2}));
  EXPECT_EQ(rows("(i64 == -1 or i64 > 0) and i64 < 2"), (Rows{0, 2}));
  EXPECT_EQ(rows("i64 > 0 and i64 < 2 or i64 == -1"), (Rows{0, 2}));
  EXPECT_EQ(rows("i64 == 2 or i64 == -1 and i64 > 0"), (Rows{4}));
  // not binds tighter than and: (not a) and b
  EXPECT_EQ(rows("not i64 == 1 and i64 >= 0"), (Rows{1, 4}));
  EXPECT_EQ(rows("not (i64 == 1 and i64 >= 0)"), (Rows{0, 1, 4}));
  EXPECT_EQ(rows("NOT i64 == 1 AND i64 >= 0 OR i64 == 1"), (Rows{1, 2, 4}));
  EXPECT_EQ(rows("((((i64 == 1))))"), (Rows{2}));
  EXPECT_EQ(rows("  "), (Rows{0, 1, 2, 3, 4}));
  EXPECT_EQ(rows(""), (Rows{0, 1, 2, 3, 4}));
}

TEST_F(FilterTypesTest, EveryErrorMessage) {
  EXPECT_EQ(parse_error(schema_, "i64 < "),
            "expected a value after '<' at column 6, found the end of the expression");
  EXPECT_EQ(parse_error(schema_, "i64 in (1,"),
            "expected a value after ',' at column 10, found the end of the expression");
  EXPECT_EQ(parse_error(schema_, "nope > 1"),
            "unknown column 'nope' at column 0; the columns are i8, i16, i32, i64, u8, u16, u32, "
            "u64, f32, f64, b, s, ts");
  EXPECT_EQ(parse_error(schema_, "i64 > 'x'"),
            "column 'i64' is int64, so it cannot be compared with the string 'x' at column 6");
  EXPECT_EQ(parse_error(schema_, "i64 > 1.5"),
            "column 'i64' is int64, so it cannot be compared with '1.5' at column 6; integer "
            "columns take integer values");
  EXPECT_EQ(parse_error(schema_, "i64 > true"),
            "column 'i64' is int64, so it cannot be compared with 'true' at column 6");
  EXPECT_EQ(parse_error(schema_, "b == 1"),
            "column 'b' is bool, so it cannot be compared with '1' at column 5; use true or false");
  EXPECT_EQ(parse_error(schema_, "s == 1"),
            "column 's' is string, so it cannot be compared with '1' at column 5; quote strings: "
            "'text'");
  EXPECT_EQ(parse_error(schema_, "ts > 'yesterday'"),
            "'yesterday' at column 5 is not a timestamp for column 'ts'; write '2024-01-31', "
            "'2024-01-31T12:00:00.5Z' or integer nanoseconds");
  // The date is checked as the CSV reader checks it (base/timestamp.h): no
  // 30 February, and no year whose nanoseconds overflow an int64.
  EXPECT_EQ(parse_error(schema_, "ts > '2024-02-30'"),
            "'2024-02-30' at column 5 is not a timestamp for column 'ts'; write '2024-01-31', "
            "'2024-01-31T12:00:00.5Z' or integer nanoseconds");
  EXPECT_EQ(parse_error(schema_, "ts > '9999-01-01'"),
            "'9999-01-01' at column 5 is not a timestamp for column 'ts'; write '2024-01-31', "
            "'2024-01-31T12:00:00.5Z' or integer nanoseconds");
  // Positions count characters, not bytes ('é' is two bytes), and an
  // unexpected character is shown whole, as valid UTF-8.
  EXPECT_EQ(parse_error(schema_, "s == '\u00e9' and nope > 1"),
            "unknown column 'nope' at column 13; the columns are i8, i16, i32, i64, u8, u16, u32, "
            "u64, f32, f64, b, s, ts");
  EXPECT_EQ(parse_error(schema_, "s == '\u00e9' and i64 > "),
            "expected a value after '>' at column 19, found the end of the expression");
  EXPECT_EQ(parse_error(schema_, "i64 > 1 \u00e9"), "unexpected character '\u00e9' at column 8");
  EXPECT_EQ(parse_error(schema_, "s == '\u00e9' and \"x"),
            "quoted column name starting at column 13 has no closing \"");
  EXPECT_EQ(parse_error(schema_, "i64 > 1 \xff"), "unexpected character '\\xff' at column 8");
  EXPECT_EQ(parse_error(schema_, "ts > 1.5"),
            "column 'ts' is timestamp, so it cannot be compared with '1.5' at column 5; write "
            "'2024-01-31', '2024-01-31T12:00:00.5Z' or integer nanoseconds");
  EXPECT_EQ(parse_error(schema_, "i64 == null"),
            "a comparison with null is never true at column 7; write 'is null' or 'is not null'");
  EXPECT_EQ(parse_error(schema_, "i64 is 5"),
            "expected 'null' or 'not null' after 'is', found '5' at column 7");
  EXPECT_EQ(parse_error(schema_, "i64 in 5"), "expected '(' after 'in', found '5' at column 7");
  EXPECT_EQ(parse_error(schema_, "i64 in (1 2)"),
            "expected ',' or ')' in the list after 'in', found '2' at column 10");
  EXPECT_EQ(parse_error(schema_, "i64 not 5"), "expected 'in' after 'not', found '5' at column 8");
  EXPECT_EQ(parse_error(schema_, "i64 5"),
            "expected an operator (<, <=, ==, !=, >, >=, in, is) after column 'i64', found '5' "
            "at column 4");
  EXPECT_EQ(parse_error(schema_, "(i64 > 1"),
            "expected ')' or an operator, found the end of the expression at column 8");
  EXPECT_EQ(parse_error(schema_, "i64 > 1)"),
            "expected 'and', 'or' or the end of the expression, found ')' at column 7");
  EXPECT_EQ(parse_error(schema_, "i64 > 1 i64 < 2"),
            "expected 'and', 'or' or the end of the expression, found 'i64' at column 8");
  EXPECT_EQ(parse_error(schema_, "and > 1"), "expected a column name, found 'and' at column 0");
  EXPECT_EQ(parse_error(schema_, "i64 > 1 and"),
            "expected a column name, found the end of the expression at column 11");
  EXPECT_EQ(parse_error(schema_, "5 > i64"), "expected a column name, found '5' at column 0");
  EXPECT_EQ(parse_error(schema_, "i64 > 1 & i8 < 2"), "unexpected character '&' at column 8");
  EXPECT_EQ(parse_error(schema_, "s == 'abc"), "string starting at column 5 has no closing '");
  EXPECT_EQ(parse_error(schema_, "\"s == 1"),
            "quoted column name starting at column 0 has no closing \"");
  EXPECT_EQ(parse_error(schema_, "u64 < 18446744073709551616"),
            "integer 18446744073709551616 at column 6 does not fit in 64 bits");
  EXPECT_EQ(parse_error(schema_, "f64 < 1e999"),
            "'1e999' at column 6 is not a number float64 can hold");
  EXPECT_EQ(parse_error(schema_, "", {"i64", "zz"}),
            "unknown column 'zz' in the column list; the columns are i8, i16, i32, i64, u8, u16, "
            "u32, u64, f32, f64, b, s, ts");
  EXPECT_EQ(parse_error(schema_, "", {"i64", "i64"}),
            "column 'i64' is listed twice in the column list");
  EXPECT_EQ(parse_error(bytes_schema(), ""),
            "a raw-bytes dataset has no columns to filter or select; copy it instead");
  EXPECT_EQ(parse_error(schema_, std::string(kMaxFilterNesting + 1, '(') + "i64 > 1"),
            "the expression nests more than 64 levels of parentheses and 'not' at column 64");
  EXPECT_EQ(parse_error(schema_, std::string(kMaxFilterBytes + 1, ' ')),
            "the expression is 65537 bytes; the most is 65536");
}

TEST_F(FilterTypesTest, TheIssuesExampleMessage) {
  const Schema s = {{"balance", Type::kInt64}};
  EXPECT_EQ(parse_error(s, "balance < "),
            "expected a value after '<' at column 10, found the end of the expression");
}

TEST_F(FilterTypesTest, ColumnListAndLimitAreKept) {
  const std::vector<std::string> cols = {"s", "i64"};
  Result<Filter> f = Filter::parse(schema_, "i64 > 0", cols, 7);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->output_schema(), (Schema{{"s", Type::kString}, {"i64", Type::kInt64}}));
  EXPECT_EQ(f->output_columns(), (std::vector<size_t>{11, 3}));
  EXPECT_EQ(f->limit(), std::optional<uint64_t>(7));
  EXPECT_TRUE(f->has_predicate());
  EXPECT_EQ(f->input_schema(), schema_);
  Result<Filter> all = Filter::parse(schema_, " ");
  ASSERT_TRUE(all.ok());
  EXPECT_FALSE(all->has_predicate());
  EXPECT_EQ(all->output_schema(), schema_);
}

TEST_F(FilterTypesTest, EvaluateRefusesColumnsThatDoNotMatch) {
  Result<Filter> f = Filter::parse(schema_, "i64 > 0");
  ASSERT_TRUE(f.ok());
  std::vector<ColumnBuffers> buffers;
  for (const HeapColumn& c : cols_) buffers.push_back(c.buffers());
  EXPECT_FALSE(f->evaluate(std::span(buffers).first(3), 5).ok());
  EXPECT_FALSE(f->evaluate(buffers, 6).ok());  // more rows than the buffers hold
  buffers[3].type = Type::kFloat64;
  Result<Selection> bad = f->evaluate(buffers, 5);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "column 'i64' given to the filter does not match its schema (int64, 5 rows)");
}

TEST(FilterTest, SelectionTruncateKeepsTheFirstRows) {
  HeapColumn c{Type::kInt64, {}, {0}, {}, 0, false};
  for (int64_t i = 0; i < 300; ++i) c.push(std::optional<int64_t>(i % 3));
  Result<Filter> f = Filter::parse({{"x", Type::kInt64}}, "x == 0");
  ASSERT_TRUE(f.ok());
  const ColumnBuffers b = c.buffers();
  Result<Selection> sel = f->evaluate(std::span(&b, 1), 300);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->count(), 100u);
  sel->truncate(30);  // rows 0, 3, ..., 87: crosses a word boundary
  EXPECT_EQ(sel->count(), 30u);
  uint64_t seen = 0;
  for (uint64_t r = 0; r < 300; ++r) {
    if (sel->contains(r)) {
      EXPECT_EQ(r, seen * 3);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 30u);
  sel->truncate(0);
  EXPECT_EQ(sel->count(), 0u);
  for (uint64_t w : sel->words()) EXPECT_EQ(w, 0u);
}

// max_kept (what `shelf head` of a view asks for): the evaluation stops in
// the 4096-row chunk where the count is reached, and what it keeps there is
// what the whole evaluation keeps, up to that count.
TEST(FilterTest, EvaluateWithMaxKeptStopsInTheChunkThatReachesIt) {
  HeapColumn c{Type::kInt64, {}, {0}, {}, 0, false};
  const uint64_t rows = 3 * 4096 + 10;
  for (uint64_t i = 0; i < rows; ++i) {
    c.push(std::optional<int64_t>(i < 5000 ? 1 : static_cast<int64_t>(i % 2)));
  }
  Result<Filter> f = Filter::parse({{"x", Type::kInt64}}, "x == 0");
  ASSERT_TRUE(f.ok());
  const ColumnBuffers b = c.buffers();
  Result<Selection> all = f->evaluate(std::span(&b, 1), rows);
  ASSERT_TRUE(all.ok());
  // No row of the first chunk is kept: the stop is in the second (4096..8191).
  Result<Selection> some = f->evaluate(std::span(&b, 1), rows, 10);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->rows(), rows);
  EXPECT_EQ(some->count(), (8192 - 5000) / 2);  // the second chunk, whole
  EXPECT_EQ(some->words().size(), 8192u / 64);  // nothing past it evaluated
  EXPECT_FALSE(some->contains(rows - 1));
  some->truncate(10);
  all->truncate(10);
  for (uint64_t r = 0; r < rows; ++r) ASSERT_EQ(some->contains(r), all->contains(r)) << r;
  // More than there are: the whole partition, as without max_kept.
  Result<Selection> every = f->evaluate(std::span(&b, 1), rows, rows);
  ASSERT_TRUE(every.ok());
  EXPECT_EQ(every->count(), f->evaluate(std::span(&b, 1), rows)->count());
}

// A lone int64 comparison takes its own path (straight into the bitmap,
// nulls masked by the validity words): every operator, over chunks and a
// tail that is not a multiple of 64, against a row-at-a-time reference.
TEST(FilterTest, ALoneInt64ComparisonMatchesTheReferenceAcrossChunksAndNulls) {
  HeapColumn c{Type::kInt64, {}, {0}, {}, 0, false};
  const uint64_t rows = 2 * 4096 + 77;
  std::vector<std::optional<int64_t>> values;
  for (uint64_t i = 0; i < rows; ++i) {
    values.push_back(i % 13 == 5 ? std::nullopt
                                 : std::optional<int64_t>(static_cast<int64_t>(i % 7) - 3));
    c.push(values.back());
  }
  const ColumnBuffers b = c.buffers();
  const std::pair<const char*, bool (*)(int64_t)> ops[] = {
      {"x < 0", [](int64_t v) { return v < 0; }},   {"x <= 0", [](int64_t v) { return v <= 0; }},
      {"x == 0", [](int64_t v) { return v == 0; }}, {"x != 0", [](int64_t v) { return v != 0; }},
      {"x > 0", [](int64_t v) { return v > 0; }},   {"x >= 0", [](int64_t v) { return v >= 0; }},
  };
  for (const auto& [text, keep] : ops) {
    Result<Filter> f = Filter::parse({{"x", Type::kInt64}}, text);
    ASSERT_TRUE(f.ok()) << text;
    Result<Selection> sel = f->evaluate(std::span(&b, 1), rows);
    ASSERT_TRUE(sel.ok()) << text;
    uint64_t count = 0;
    for (uint64_t r = 0; r < rows; ++r) {
      const bool expected = values[r] && keep(*values[r]);
      ASSERT_EQ(sel->contains(r), expected) << text << " row " << r;
      count += expected ? 1 : 0;
    }
    EXPECT_EQ(sel->count(), count) << text;
  }
}

TEST_F(FilterTypesTest, LongChainsDoNotNestAndDeepNestingStopsAtTheLimit) {
  std::string chain = "i64 > -5";
  for (int i = 0; i < 2000; ++i) chain += " and i64 < 100 or i64 == 1";  // 52 KB
  EXPECT_EQ(rows(chain), (Rows{0, 1, 2, 4}));  // (a and b) or (c and b) ... n-ary, not nested
  std::string nots;
  for (int i = 0; i < kMaxFilterNesting - 1; ++i) nots += "not ";
  EXPECT_EQ(rows(nots + "i64 == 1"), (Rows{0, 1, 4}));  // 63 nots: odd
  EXPECT_FALSE(Filter::parse(schema_, nots + "not not i64 == 1").ok());
}

TEST_F(FilterTypesTest, GarbageNeverCrashesAndAlwaysSaysWhere) {
  const char* pieces[] = {
      "i64", "s",   "b",    "ts", "f32", "(",  ")",    "not", "and", "or",
      "in",  "is",  "null", "<",  "<=",  "==", "!=",   ">",   ",",   "'x",
      "'y'", "\"q", "1",    "-2", "3.5", "1e", "true", "@",   " ",   "99999999999999999999"};
  std::mt19937_64 rng(99);
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    for (uint64_t n = rng() % 8; n > 0; --n) text += std::string(pieces[rng() % 30]) + " ";
    Result<Filter> f = Filter::parse(schema_, text);
    if (f.ok()) continue;
    EXPECT_EQ(f.status().code(), Status::Code::kInvalidArgument) << text;
    EXPECT_NE(f.status().message().find("column"), std::string::npos)
        << text << ": " << f.status().message();
  }
}

// ---------------------------------------------------------- randomised --

using Tri = std::optional<bool>;  // nullopt: unknown

struct RandomTable {
  Schema schema = {{"i", Type::kInt64},
                   {"u", Type::kUInt16},
                   {"f", Type::kFloat64},
                   {"s", Type::kString},
                   {"b", Type::kBool}};
  std::vector<std::optional<int64_t>> i;
  std::vector<std::optional<uint16_t>> u;
  std::vector<std::optional<double>> f;
  std::vector<std::optional<std::string>> s;
  std::vector<std::optional<bool>> b;
  std::vector<HeapColumn> cols;
};

RandomTable make_table(std::mt19937_64& rng, uint64_t rows, double null_rate) {
  RandomTable t;
  std::bernoulli_distribution is_null(null_rate);
  std::uniform_int_distribution<int64_t> small(-5, 5);
  for (const Field& f : t.schema) t.cols.push_back(HeapColumn{f.type, {}, {0}, {}, 0, false});
  for (uint64_t r = 0; r < rows; ++r) {
    auto maybe = [&](auto v) { return is_null(rng) ? std::nullopt : std::optional(v); };
    t.i.push_back(maybe(small(rng) * 1000));
    t.u.push_back(maybe(static_cast<uint16_t>(small(rng) + 5)));
    t.f.push_back(maybe(small(rng) / 2.0));
    t.s.push_back(maybe(std::string(static_cast<size_t>(small(rng) + 5), 'a')));
    t.b.push_back(maybe(small(rng) > 0));
    t.cols[0].push(t.i.back());
    t.cols[1].push(t.u.back());
    t.cols[2].push(t.f.back());
    t.cols[3].push_string(t.s.back());
    t.cols[4].push(t.b.back() ? std::optional<uint8_t>(*t.b.back()) : std::nullopt);
  }
  return t;
}

// A random expression as text and as a row-at-a-time reference.
struct RandomExpr {
  std::string text;
  std::function<Tri(const RandomTable&, size_t)> eval;
};

template <class T>
Tri cmp(const std::optional<T>& v, const std::string& op, const T& lit) {
  if (!v) return std::nullopt;
  if (op == "<") return *v < lit;
  if (op == "<=") return *v <= lit;
  if (op == "==") return *v == lit;
  if (op == "!=") return *v != lit;
  if (op == ">") return *v > lit;
  return *v >= lit;
}

RandomExpr random_leaf(std::mt19937_64& rng) {
  static const char* kOps[] = {"<", "<=", "==", "!=", ">", ">="};
  const std::string op = kOps[rng() % 6];
  const int64_t k = static_cast<int64_t>(rng() % 11) - 5;
  switch (rng() % 7) {
    case 0:
      return {"i " + op + " " + std::to_string(k * 1000),
              [=](const RandomTable& t, size_t r) { return cmp(t.i[r], op, k * 1000); }};
    case 1:
      return {"u " + op + " " + std::to_string(k + 5), [=](const RandomTable& t, size_t r) {
                return cmp(t.u[r], op, static_cast<uint16_t>(k + 5));
              }};
    case 2:
      return {"f " + op + " " + std::to_string(k / 2.0),
              [=](const RandomTable& t, size_t r) { return cmp(t.f[r], op, k / 2.0); }};
    case 3: {
      const std::string lit(static_cast<size_t>(k + 5), 'a');
      return {"s " + op + " '" + lit + "'",
              [=](const RandomTable& t, size_t r) { return cmp(t.s[r], op, lit); }};
    }
    case 4:
      return {std::string("b == ") + (k > 0 ? "true" : "false"),
              [=](const RandomTable& t, size_t r) { return cmp(t.b[r], "==", k > 0); }};
    case 5: {
      const bool neg = k > 0;
      return {std::string("i is ") + (neg ? "not " : "") + "null",
              [=](const RandomTable& t, size_t r) -> Tri { return t.i[r].has_value() == neg; }};
    }
    default: {
      const int64_t a = k * 1000, b2 = ((k + 3) % 5) * 1000;
      return {"i in (" + std::to_string(a) + ", " + std::to_string(b2) + ")",
              [=](const RandomTable& t, size_t r) -> Tri {
                if (!t.i[r]) return std::nullopt;
                return *t.i[r] == a || *t.i[r] == b2;
              }};
    }
  }
}

RandomExpr random_expr(std::mt19937_64& rng, int depth) {
  if (depth == 0 || rng() % 3 == 0) return random_leaf(rng);
  switch (rng() % 3) {
    case 0: {
      RandomExpr e = random_expr(rng, depth - 1);
      return {"not (" + e.text + ")", [=](const RandomTable& t, size_t r) -> Tri {
                Tri v = e.eval(t, r);
                if (!v) return std::nullopt;
                return !*v;
              }};
    }
    case 1: {
      RandomExpr a = random_expr(rng, depth - 1), b = random_expr(rng, depth - 1);
      return {"(" + a.text + ") and (" + b.text + ")", [=](const RandomTable& t, size_t r) -> Tri {
                Tri x = a.eval(t, r), y = b.eval(t, r);
                if (x == false || y == false) return false;
                if (!x || !y) return std::nullopt;
                return true;
              }};
    }
    default: {
      RandomExpr a = random_expr(rng, depth - 1), b = random_expr(rng, depth - 1);
      return {"(" + a.text + ") or (" + b.text + ")", [=](const RandomTable& t, size_t r) -> Tri {
                Tri x = a.eval(t, r), y = b.eval(t, r);
                if (x == true || y == true) return true;
                if (!x || !y) return std::nullopt;
                return false;
              }};
    }
  }
}

TEST(FilterRandomTest, MatchesARowAtATimeReference) {
  std::mt19937_64 rng(20261202);
  // Sizes around the 4096-row chunks and 64-row words; with and without nulls.
  const uint64_t sizes[] = {0, 1, 63, 64, 65, 4095, 4096, 4097, 10000};
  for (uint64_t rows : sizes) {
    for (double null_rate : {0.0, 0.2}) {
      RandomTable t = make_table(rng, rows, null_rate);
      std::vector<ColumnBuffers> buffers;
      for (const HeapColumn& c : t.cols) buffers.push_back(c.buffers());
      for (int e = 0; e < 40; ++e) {
        RandomExpr expr = random_expr(rng, 4);
        Result<Filter> f = Filter::parse(t.schema, expr.text);
        ASSERT_TRUE(f.ok()) << expr.text << ": " << f.status().to_string();
        Result<Selection> sel = f->evaluate(buffers, rows);
        ASSERT_TRUE(sel.ok());
        uint64_t expected_count = 0;
        for (uint64_t r = 0; r < rows; ++r) {
          const bool expected = expr.eval(t, r) == true;
          expected_count += expected ? 1 : 0;
          ASSERT_EQ(sel->contains(r), expected) << expr.text << " row " << r << " of " << rows;
        }
        EXPECT_EQ(sel->count(), expected_count);
      }
    }
  }
}

}  // namespace
}  // namespace shelf
