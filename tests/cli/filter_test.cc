// Filtered publishing against a real shelfd: write_filtered (C++) run in a
// separate client process, and `shelf publish NAME --from BASE --where ...`
// as a user's shell runs it. Results are compared with a reference the test
// computes itself from the rows it generated.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/filter.h>

#include "tests/cli/accounts.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

class FilterPublishTest : public AccountsTest {
 protected:
  // Publishes `a` as "accounts", then, for each case, the filtered publish
  // run in its own client process, and checks the result against the
  // reference.
  void expect_every_case_matches(const Accounts& a) {
    Client client = daemon_->connect();
    publish_accounts(client, "accounts", a);
    const std::vector<Case> all = cases();
    for (size_t k = 0; k < all.size(); ++k) {
      const Case& c = all[k];
      const std::string out = "out" + std::to_string(k);
      const int code = run_in_child([&] {
        Client writer = daemon_->connect();
        Dataset base = writer.get_dataset("accounts").value();
        Result<Filter> filter = Filter::parse(base.schema(), c.where, c.columns, c.limit);
        ASSERT_TRUE(filter.ok()) << filter.status().to_string();
        TableBuilder table = writer.create_table(filter->output_schema()).value();
        ASSERT_TRUE(write_filtered(base, *filter, table).ok());
        Status s = writer.publish_dataset(out, table);
        ASSERT_TRUE(s.ok()) << s.to_string();
      });
      ASSERT_EQ(code, 0) << c.where;
      Dataset d = client.get_dataset(out).value();
      const std::vector<Row> expected = reference(
          a, [&](size_t r) { return c.keep(a, r); }, c.column_indices,
          c.limit.value_or(UINT64_MAX));
      EXPECT_EQ(read_rows(d), expected) << c.where;
      EXPECT_EQ(d.num_rows(), expected.size()) << c.where;
      EXPECT_TRUE(d.verify().ok()) << c.where;
      Schema expected_schema;
      for (size_t i : c.column_indices) expected_schema.push_back(kSchema[i]);
      EXPECT_EQ(d.schema(), expected_schema) << c.where;
      ASSERT_TRUE(client.unpublish_dataset(out).ok());
    }
  }
};

TEST_F(FilterPublishTest, WriteFilteredInAnotherProcessMatchesTheReference) {
  // Several partitions, one of a single row, others across the 4096-row chunks.
  expect_every_case_matches(make_accounts(7, {1000, 1, 4103, 64, 2500}));
}

// Past 2^18 rows a batch of partitions is evaluated and copied on several
// threads (filter_write.cc): the same rows must come out, in order.
TEST_F(FilterPublishTest, AScanOnSeveralThreadsMatchesTheReference) {
  expect_every_case_matches(make_accounts(17, {300000, 1, 262144, 0, 4097, 200001}));
}

TEST_F(FilterPublishTest, WriteFilteredRefusesAMismatchedTable) {
  const Accounts a = make_accounts(8, {10});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  Dataset base = client.get_dataset("accounts").value();
  Filter filter =
      Filter::parse(base.schema(), "balance < 0", std::vector<std::string>{"name"}).value();
  TableBuilder wrong = client.create_table(kSchema).value();  // not the output schema
  Status s = write_filtered(base, filter, wrong);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(wrong.num_partitions(), 0u);
  Filter other = Filter::parse({{"x", Type::kInt64}}, "x < 0").value();
  TableBuilder table = client.create_table(other.output_schema()).value();
  EXPECT_EQ(write_filtered(base, other, table).code(), Status::Code::kInvalidArgument);
}

TEST_F(FilterPublishTest, CliPublishFromWhere) {
  const Accounts a = make_accounts(9, {300, 200});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  CommandResult r = shelf({"publish", "negative_accounts", "--from", "accounts", "--where",
                           "balance < 0", "--columns", "name, balance"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "published 'negative_accounts'")) << r.out;
  EXPECT_TRUE(contains(r.out, "(from 'accounts', 500 rows)")) << r.out;
  Dataset d = client.get_dataset("negative_accounts").value();
  EXPECT_EQ(read_rows(d), reference(
                              a, [&](size_t i) { return a.balance[i] && *a.balance[i] < 0; },
                              {2, 0}, UINT64_MAX));
  // --limit and --override
  r = shelf({"publish", "negative_accounts", "--from=accounts", "--where", "balance < 0", "--limit",
             "3", "--override"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(client.get_dataset("negative_accounts").value().num_rows(), 3u);
  // No row matches: an empty dataset is published.
  r = shelf({"publish", "none", "--from", "accounts", "--where", "balance > 99999"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(client.get_dataset("none").value().num_rows(), 0u);
}

TEST_F(FilterPublishTest, CliPublishFromErrorsChangeNothing) {
  const Accounts a = make_accounts(10, {50});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  const uint64_t used = client.status().value().used_bytes;
  struct Bad {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--where", "balance < "}, 2, "expected a value after '<' at column 10"},
      {{"--where", "owner == 'x'"}, 2, "unknown column 'owner' at column 0"},
      {{"--where", "balance == 'x'"}, 2, "column 'balance' is int64, so it cannot be compared"},
      {{"--columns", "name,nope"}, 2, "unknown column 'nope' in the column list"},
      {{"--columns", "name,,balance"}, 2, "--columns 'name,,balance' has an empty column name"},
      {{"--limit", "-1"}, 2, "--limit must be a whole number (0 or more), not '-1'"},
      {{"--limit", "ten"}, 2, "--limit must be a whole number (0 or more), not 'ten'"},
      {{"extra.csv"},
       2,
       "publish --from takes no CSV files: 'extra.csv' was given with --from accounts"},
      {{"--schema", "balance:int64"}, 2, "--schema is for CSV files; it cannot go with --from"},
      {{"--quiet"}, 2, "--quiet is for CSV files; it cannot go with --from"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> args = {"publish", "out", "--from", "accounts"};
    args.insert(args.end(), b.args.begin(), b.args.end());
    CommandResult r = shelf(args);
    EXPECT_EQ(r.exit_code, b.code) << b.message << ": " << r.err;
    EXPECT_TRUE(contains(r.err, b.message)) << r.err;
  }
  CommandResult r = shelf({"publish", "out", "--from", "missing", "--where", "balance < 0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'missing' not found")) << r.err;
  r = shelf({"publish", "accounts", "--from", "accounts"});  // taken, no --override
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "accounts")) << r.err;
  r = shelf({"publish", "out", "--from"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // Nothing was published and no memory is held.
  std::vector<DatasetInfo> list = client.list_datasets().value();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "accounts");
  EXPECT_EQ(client.status().value().used_bytes, used);
}

// `shelf publish` picks its form by whether --from was given, not by a
// word in argv: a dataset named "--from" (after "--") is a CSV publish, and
// each form's options given to the other are named in a one-line error.
TEST_F(FilterPublishTest, CliPublishFormIsChosenByTheFromOption) {
  const std::filesystem::path csv =
      std::filesystem::temp_directory_path() / (unique_name() + ".csv");
  std::ofstream(csv) << "balance\n1\n-2\n";
  CommandResult r = shelf({"publish", "--", "--from", csv.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "published '--from': 2 rows")) << r.out;
  r = shelf({"publish", "out", csv.string(), "--where", "balance < 0"});  // CSV, filtered
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "published 'out': 1 row")) << r.out;
  r = shelf({"publish", "out", csv.string(), "--from", "base"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(
      r.err, "shelf: publish --from takes no CSV files: '" + csv.string() + "' was given with"))
      << r.err;
  r = shelf({"publish", "--from=base"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "missing NAME; usage: shelf publish NAME --from BASE")) << r.err;
  // Only the CSV publishes happened.
  Client client = daemon_->connect();
  std::vector<DatasetInfo> list = client.list_datasets().value();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "--from");
  EXPECT_EQ(list[1].name, "out");
  std::filesystem::remove(csv);
}

// Writes `a` as CSV files, one per partition (a null is an empty field;
// %.17g reads back as the same double), and returns their paths.
std::vector<std::string> write_csv_files(const Accounts& a, const std::string& stem) {
  std::vector<std::string> paths;
  uint64_t row = 0;
  for (uint64_t rows : a.partition_rows) {
    paths.push_back((std::filesystem::temp_directory_path() /
                     (stem + "-" + std::to_string(paths.size()) + ".csv"))
                        .string());
    std::ofstream out(paths.back());
    out << "balance,score,name,active\n";
    for (uint64_t i = 0; i < rows; ++i, ++row) {
      char score[40] = "";
      if (a.score[row]) std::snprintf(score, sizeof score, "%.17g", *a.score[row]);
      out << (a.balance[row] ? std::to_string(*a.balance[row]) : "") << "," << score << ","
          << a.name[row].value_or("") << ","
          << (a.active[row] ? (*a.active[row] ? "true" : "false") : "") << "\n";
    }
  }
  return paths;
}

// `shelf publish NAME FILE.csv... --where ... --columns ... --limit N`
// loads one file at a time and keeps what the reference keeps: every case
// of the language's table, across files (partitions), a limit included.
TEST_F(FilterPublishTest, CliPublishCsvWhereMatchesTheReference) {
  const Accounts a = make_accounts(11, {700, 1, 4200});
  const std::vector<std::string> files = write_csv_files(a, unique_name());
  Client client = daemon_->connect();
  const std::vector<Case> all = cases();
  for (size_t k = 0; k < all.size(); ++k) {
    const Case& c = all[k];
    const std::string out = "csv" + std::to_string(k);
    std::vector<std::string> args = {"publish", out};
    args.insert(args.end(), files.begin(), files.end());
    args.insert(args.end(), {"--where", c.where});
    if (!c.columns.empty()) {
      std::string list;
      for (const std::string& name : c.columns) list += (list.empty() ? "" : ",") + name;
      args.insert(args.end(), {"--columns", list});
    }
    if (c.limit) args.insert(args.end(), {"--limit", std::to_string(*c.limit)});
    CommandResult r = shelf(args);
    ASSERT_EQ(r.exit_code, 0) << c.where << ": " << r.err;
    EXPECT_TRUE(contains(r.out, "(filtered from 4901 CSV rows)")) << r.out;
    Dataset d = client.get_dataset(out).value();
    const std::vector<Row> expected = reference(
        a, [&](size_t i) { return c.keep(a, i); }, c.column_indices, c.limit.value_or(UINT64_MAX));
    EXPECT_EQ(read_rows(d), expected) << c.where;
    EXPECT_TRUE(d.verify().ok()) << c.where;
    Schema expected_schema;
    for (size_t i : c.column_indices) expected_schema.push_back(kSchema[i]);
    EXPECT_EQ(d.schema(), expected_schema) << c.where;
  }
  // A limit the first two files meet: the third is not loaded at all.
  CommandResult r = shelf({"publish", "first", files[0], files[1], files[2], "--limit", "701"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Dataset first = client.get_dataset("first").value();
  EXPECT_EQ(first.num_rows(), 701u);
  EXPECT_EQ(first.num_partitions(), 2u);
  for (const std::string& f : files) std::filesystem::remove(f);
}

// A bad expression or column list for CSV input is a usage error found
// before shelfd is asked for memory: nothing is published, nothing held.
TEST_F(FilterPublishTest, CliPublishCsvWhereErrorsChangeNothing) {
  const Accounts a = make_accounts(12, {40});
  const std::vector<std::string> files = write_csv_files(a, unique_name());
  Client client = daemon_->connect();
  const uint64_t used = client.status().value().used_bytes;
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--where", "balance < "}, "expected a value after '<' at column 10"},
      {{"--where", "owner == 'x'"}, "unknown column 'owner' at column 0"},
      {{"--where", "name < 3"}, "column 'name' is string"},
      {{"--columns", "name,nope"}, "unknown column 'nope' in the column list"},
      {{"--limit", "ten"}, "--limit must be a whole number (0 or more), not 'ten'"},
  };
  for (const auto& [extra, message] : bad) {
    std::vector<std::string> args = {"publish", "out", files[0]};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = shelf(args);
    EXPECT_EQ(r.exit_code, 2) << message << ": " << r.err;
    EXPECT_TRUE(contains(r.err, message)) << r.err;
  }
  EXPECT_TRUE(client.list_datasets().value().empty());
  EXPECT_EQ(client.status().value().used_bytes, used);
  std::filesystem::remove(files[0]);
}

}  // namespace
}  // namespace shelf::test
