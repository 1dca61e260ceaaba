// The CSV reader behind `shelf publish`: parsing, inference, errors.
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/test_daemon.h"
#include "tools/csv_table.h"

namespace shelf::tools {
namespace {

class CsvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / test::unique_name();
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(CsvTest, InfersTypesAndCountsStringBytes) {
  auto f =
      write("a.csv", "name,balance,score,active,note\nAlice,-100,1.5,true,\nBob,200,2,False,x\n");
  auto plan = plan_csv({f}, {});
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  ASSERT_EQ(plan->schema.size(), 5u);
  EXPECT_EQ(plan->schema[0], (Field{"name", Type::kString}));
  EXPECT_EQ(plan->schema[1], (Field{"balance", Type::kInt64}));
  EXPECT_EQ(plan->schema[2], (Field{"score", Type::kFloat64}));
  EXPECT_EQ(plan->schema[3], (Field{"active", Type::kBool}));
  EXPECT_EQ(plan->schema[4], (Field{"note", Type::kString}));
  ASSERT_EQ(plan->partitions.size(), 1u);
  EXPECT_EQ(plan->partitions[0].rows, 2u);
  // Only the string columns, in schema order: "AliceBob" and "x".
  EXPECT_EQ(plan->partitions[0].string_bytes, (std::vector<uint64_t>{8, 1}));
  EXPECT_EQ(plan->total_rows, 2u);
}

// "+-5" has two signs: it is text, not the integer -5 (inference used to say int64).
TEST_F(CsvTest, TwoSignsAreNotANumber) {
  auto f = write("signs.csv", "a,b\n+-5,+-1.5\n+7,+2.5\n");
  auto plan = plan_csv({f}, {});
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->schema[0], (Field{"a", Type::kString}));
  EXPECT_EQ(plan->schema[1], (Field{"b", Type::kString}));
}

TEST_F(CsvTest, QuotedFieldsKeepCommasQuotesNewlinesAndSpaces) {
  auto f = write("q.csv", "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n\"two\nlines\", padded \n");
  auto plan = plan_csv({f}, {});
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->total_rows, 2u);
  // "x, y" (4) + "two\nlines" (9); "say "hi"" (8) + " padded " (8).
  EXPECT_EQ(plan->partitions[0].string_bytes, (std::vector<uint64_t>{13, 16}));
}

TEST_F(CsvTest, CrlfLineEndingsAndBlankLines) {
  auto f = write("crlf.csv", "a,b\r\n1,2\r\n\r\n3,4\r\n");
  auto plan = plan_csv({f}, {});
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->total_rows, 2u);
  EXPECT_EQ(plan->schema[1].type, Type::kInt64);
}

TEST_F(CsvTest, EmptyFieldsAreNullAndAllNullColumnIsString) {
  auto f = write("n.csv", "a,b\n1,\n,\n3,\n");
  auto plan = plan_csv({f}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->schema[0].type, Type::kInt64);
  EXPECT_EQ(plan->schema[1].type, Type::kString);
}

TEST_F(CsvTest, WrongFieldCountNamesFileAndLine) {
  auto f = write("bad.csv", "a,b\n1,2\n3\n4,5\n");
  auto plan = plan_csv({f}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("bad.csv:3: expected 2 fields, found 1"),
            std::string::npos)
      << plan.status().message();
}

TEST_F(CsvTest, StrayQuoteAndUnclosedQuoteAreMalformed) {
  auto stray = write("stray.csv", "a,b\n1,2\n3,x\"y\"z\n");
  auto plan = plan_csv({stray}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("stray.csv:3: malformed CSV"), std::string::npos)
      << plan.status().message();
  auto unclosed = write("unclosed.csv", "a,b\n1,\"open\n2,3\n");
  plan = plan_csv({unclosed}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("never closed"), std::string::npos)
      << plan.status().message();
}

// Found by CsvPropertyTest: errors named the line where a record's first
// field ended (or, for a quote never closed, the previous record's line)
// instead of the line where the record starts.
TEST_F(CsvTest, ErrorsNameTheLineWhereTheRecordStarts) {
  auto multiline = write("m.csv", "a,b\n1,2\n\n\"two\nlines\",5,6\n");
  auto plan = plan_csv({multiline}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message().rfind(multiline + ":4: expected 2 fields, found 3", 0), 0u)
      << plan.status().message();
  auto unclosed = write("u.csv", "a,b\n1,2\n\r\n\"open,3\n4,5\n");
  plan = plan_csv({unclosed}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message().rfind(unclosed + ":4: malformed CSV: a quoted field is never "
                                                     "closed",
                                          0),
            0u)
      << plan.status().message();
}

TEST_F(CsvTest, EmptyFileDuplicateHeaderAndEmptyHeaderAreRefused) {
  EXPECT_NE(plan_csv({write("e.csv", "")}, {}).status().message().find("empty"), std::string::npos);
  EXPECT_NE(plan_csv({write("d.csv", "a,a\n1,2\n")}, {}).status().message().find("appears twice"),
            std::string::npos);
  EXPECT_NE(plan_csv({write("h.csv", "a,\n1,2\n")}, {}).status().message().find("needs a name"),
            std::string::npos);
  EXPECT_FALSE(plan_csv({(dir_ / "missing.csv").string()}, {}).ok());
}

TEST_F(CsvTest, InvalidUtf8IsRefused) {
  auto f = write("u.csv", "a\nok\n\xff\xfe\n");
  auto plan = plan_csv({f}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("u.csv:3"), std::string::npos);
  EXPECT_NE(plan.status().message().find("UTF-8"), std::string::npos);
}

TEST_F(CsvTest, HeaderOnlyFileGivesAnEmptyPartition) {
  auto plan = plan_csv({write("h.csv", "a,b\n")}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->total_rows, 0u);
  ASSERT_EQ(plan->partitions.size(), 1u);
  EXPECT_EQ(plan->partitions[0].rows, 0u);
}

TEST_F(CsvTest, FilesMustShareTheHeader) {
  auto a = write("a.csv", "x,y\n1,2\n");
  auto b = write("b.csv", "x,z\n1,2\n");
  auto plan = plan_csv({a, b}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("b.csv:1: header differs"), std::string::npos);
}

TEST_F(CsvTest, TypesWidenAcrossFilesAndPartitionsFollowFilesOrRows) {
  auto a = write("a.csv", "x\n1\n2\n3\n");
  auto b = write("b.csv", "x\n4.5\n5\n");
  auto plan = plan_csv({a, b}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->schema[0].type, Type::kFloat64);
  ASSERT_EQ(plan->partitions.size(), 2u);
  CsvOptions by_rows;
  by_rows.partition_rows = 2;
  plan = plan_csv({a, b}, by_rows);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->partitions.size(), 3u);  // a: 2 + 1, b: 2
  EXPECT_EQ(plan->partitions[0].rows, 2u);
  EXPECT_EQ(plan->partitions[1].rows, 1u);
  EXPECT_EQ(plan->partitions[1].first_row, 2u);
  EXPECT_EQ(plan->partitions[2].file, 1u);
}

TEST_F(CsvTest, ForcedSchemaChecksEveryValue) {
  auto f = write("s.csv", "id,when,amount\n1,2024-01-31,3\n2,2024-02-01T12:30:00.5Z,oops\n");
  auto forced = parse_schema_option("id:int32,when:timestamp,amount:int64");
  ASSERT_TRUE(forced.ok());
  CsvOptions options;
  options.forced_types = *forced;
  auto plan = plan_csv({f}, options);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("s.csv:3: column 'amount': 'oops' is not a int64"),
            std::string::npos)
      << plan.status().message();
  options.forced_types.erase("amount");
  plan = plan_csv({f}, options);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->schema[0].type, Type::kInt32);
  EXPECT_EQ(plan->schema[1].type, Type::kTimestamp);
  options.forced_types["nope"] = Type::kInt64;
  EXPECT_NE(plan_csv({f}, options).status().message().find("'nope'"), std::string::npos);
  EXPECT_FALSE(parse_schema_option("id").ok());
  EXPECT_FALSE(parse_schema_option("id:complex").ok());
}

// Pass 2 (write_csv) against a file that changed after pass 1 (plan_csv):
// nothing it reads differently may reach the table, and in particular a
// value that no longer parses must not become a null.
class CsvWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = test::TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    return path;
  }
  // plan_csv of `before`, then write_csv after `path` holds `after`: the
  // status of write_csv. Checks that the failed table costs nothing.
  Status plan_then_write(const std::string& before, const std::string& after,
                         const CsvOptions& options = {}) {
    const std::string path = write("c.csv", before);
    auto plan = plan_csv({path}, options);
    EXPECT_TRUE(plan.ok()) << plan.status().to_string();
    if (!plan.ok()) return plan.status();
    write("c.csv", after);
    Client client = daemon_->connect();
    Status s;
    {
      auto table = client.create_table(plan->schema);
      EXPECT_TRUE(table.ok()) << table.status().to_string();
      if (!table.ok()) return table.status();
      s = write_csv(*plan, *table);
      if (s.ok()) {
        EXPECT_TRUE(client.publish_dataset("c", *table).ok());
      }
    }
    if (!s.ok()) {
      auto names = client.list_datasets();
      EXPECT_TRUE(names.ok() && names->empty());
      EXPECT_EQ(client.status()->unsealed_bytes, 0u);
    }
    return s;
  }
  std::unique_ptr<test::TestDaemon> daemon_;
};

TEST_F(CsvWriteTest, UnchangedFileWritesAndOnlyEmptyUnquotedFieldsAreNull) {
  ASSERT_TRUE(plan_then_write("a,b,s\n1,,\n,2.5,\"\"\n", "a,b,s\n1,,\n,2.5,\"\"\n").ok());
  Client client = daemon_->connect();
  auto ds = client.get_dataset("c");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  EXPECT_TRUE(ds->column(0, 0).is_valid(0));
  EXPECT_FALSE(ds->column(0, 0).is_valid(1));
  EXPECT_FALSE(ds->column(0, 1).is_valid(0));
  EXPECT_TRUE(ds->column(0, 1).is_valid(1));
  EXPECT_FALSE(ds->column(0, 2).is_valid(0));  // empty, unquoted: null
  ASSERT_TRUE(ds->column(0, 2).is_valid(1));   // "": an empty string
  EXPECT_EQ(ds->column(0, 2).string(1), "");
}

// The file keeps its size and shape, but a value late in it no longer fits
// the type pass 1 inferred: an error naming FILE:LINE, column and value.
TEST_F(CsvWriteTest, ValueThatNoLongerParsesFailsNamingLineColumnAndValue) {
  Status s = plan_then_write("a,b\n1,2\n3,4\n5,6\n", "a,b\n1,2\n3,4\n5,x\n");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("c.csv:4: column 'b': 'x' is not a int64"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("changed while it was read"), std::string::npos) << s.message();
}

TEST_F(CsvWriteTest, ValueThatNoLongerFitsAForcedTypeFails) {
  CsvOptions options;
  options.forced_types["b"] = Type::kUInt8;
  Status s = plan_then_write("a,b\n1,200\n", "a,b\n1,300\n", options);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("c.csv:2: column 'b': '300' is not a uint8"), std::string::npos)
      << s.message();
}

// Values that still parse, a value turned null, a renamed column: all fail.
TEST_F(CsvWriteTest, AnyOtherChangeFails) {
  for (const char* after : {"a,b\n1,2\n3,5\n", "a,b\n1,2\n3,\n", "a,c\n1,2\n3,4\n"}) {
    Status s = plan_then_write("a,b\n1,2\n3,4\n", after);
    ASSERT_FALSE(s.ok()) << after;
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
    EXPECT_NE(s.message().find("c.csv changed while it was read"), std::string::npos)
        << s.message();
  }
}

TEST(CsvValues, ParsesNumbersBoolsAndTimestamps) {
  int64_t i;
  EXPECT_TRUE(parse_int64("-42", &i));
  EXPECT_EQ(i, -42);
  EXPECT_TRUE(parse_int64(" +7 ", &i));
  EXPECT_EQ(i, 7);
  EXPECT_FALSE(parse_int64("4.0", &i));
  EXPECT_FALSE(parse_int64("99999999999999999999", &i));
  // One sign: "+-5" is not -5 (the '+' went and from_chars took the '-').
  EXPECT_FALSE(parse_int64("+-5", &i));
  EXPECT_FALSE(parse_int64("++5", &i));
  EXPECT_FALSE(parse_int64("+", &i));
  double d;
  EXPECT_TRUE(parse_float64("1e3", &d));
  EXPECT_EQ(d, 1000.0);
  EXPECT_TRUE(parse_float64("+1.5", &d));
  EXPECT_EQ(d, 1.5);
  EXPECT_FALSE(parse_float64("+-1.5", &d));
  EXPECT_FALSE(parse_float64("+-inf", &d));
  EXPECT_FALSE(parse_float64("1,5", &d));
  bool b;
  EXPECT_TRUE(parse_bool("TRUE", &b));
  EXPECT_TRUE(b);
  EXPECT_FALSE(parse_bool("yes", &b));
  int64_t ns;
  EXPECT_TRUE(parse_timestamp("1970-01-02", &ns));
  EXPECT_EQ(ns, 86400LL * 1000000000);
  EXPECT_TRUE(parse_timestamp("2000-03-01T00:00:01.25Z", &ns));
  EXPECT_EQ(ns, 951868801250000000LL);
  EXPECT_FALSE(parse_timestamp("2023-02-29", &ns));
  EXPECT_FALSE(parse_timestamp("2024-13-01", &ns));
  EXPECT_FALSE(parse_timestamp("2024-01-01T10:00+02:00", &ns));
  // int64 nanoseconds end in 2262 and begin in 1677.
  EXPECT_TRUE(parse_timestamp("2262-04-11", &ns));
  EXPECT_FALSE(parse_timestamp("2300-01-01", &ns));
  EXPECT_FALSE(parse_timestamp("1600-01-01", &ns));
}

}  // namespace
}  // namespace shelf::tools
