// Accounts: the randomised table the filter and view tests publish (nulls
// in every column, partitions of any size), kept in the test's own memory
// as the reference, and the cases both tests check against it.
#pragma once

#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/support/test_daemon.h"

namespace shelf::test {

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The rows the test publishes, kept in the test's own memory as the reference.
struct Accounts {
  std::vector<std::optional<int64_t>> balance;
  std::vector<std::optional<double>> score;
  std::vector<std::optional<std::string>> name;
  std::vector<std::optional<bool>> active;
  std::vector<uint64_t> partition_rows;
};

inline const Schema kSchema = {{"balance", Type::kInt64},
                               {"score", Type::kFloat64},
                               {"name", Type::kString},
                               {"active", Type::kBool}};

inline Accounts make_accounts(uint64_t seed, const std::vector<uint64_t>& partition_rows) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution null(0.15);
  Accounts a;
  a.partition_rows = partition_rows;
  for (uint64_t rows : partition_rows) {
    for (uint64_t r = 0; r < rows; ++r) {
      const int64_t b = static_cast<int64_t>(rng() % 2001) - 1000;
      a.balance.push_back(null(rng) ? std::nullopt : std::optional(b));
      a.score.push_back(null(rng) ? std::nullopt : std::optional(static_cast<double>(b) / 7));
      a.name.push_back(null(rng) ? std::nullopt : std::optional("n" + std::to_string(rng() % 50)));
      a.active.push_back(null(rng) ? std::nullopt : std::optional(rng() % 2 == 0));
    }
  }
  return a;
}

inline void publish_accounts(Client& client, const std::string& name, const Accounts& a) {
  TableBuilder table = client.create_table(kSchema).value();
  uint64_t row = 0;
  for (uint64_t rows : a.partition_rows) {
    uint64_t name_bytes = 0;
    for (uint64_t r = row; r < row + rows; ++r) name_bytes += a.name[r].value_or("").size();
    PartitionBuilder part = table.add_partition(rows, std::span(&name_bytes, 1)).value();
    std::span<int64_t> balance = part.values<int64_t>(0);
    std::span<double> score = part.values<double>(1);
    std::span<uint8_t> active = part.values<uint8_t>(3);
    StringColumnWriter names = part.strings(2);
    for (uint64_t i = 0; i < rows; ++i, ++row) {
      balance[i] = a.balance[row].value_or(0);
      if (!a.balance[row]) part.set_null(0, i);
      score[i] = a.score[row].value_or(0);
      if (!a.score[row]) part.set_null(1, i);
      active[i] = a.active[row].value_or(false) ? 1 : 0;
      if (!a.active[row]) part.set_null(3, i);
      ASSERT_TRUE((a.name[row] ? names.append(*a.name[row]) : names.append_null()).ok());
    }
  }
  ASSERT_TRUE(client.publish_dataset(name, table).ok());
}

// One output row as text, nulls as "null", for comparison.
using Row = std::vector<std::string>;

inline std::string cell(const Accounts& a, size_t column, size_t r) {
  switch (column) {
    case 0:
      return a.balance[r] ? std::to_string(*a.balance[r]) : "null";
    case 1:
      return a.score[r] ? std::to_string(*a.score[r]) : "null";
    case 2:
      return a.name[r] ? *a.name[r] : "null";
    default:
      return a.active[r] ? (*a.active[r] ? "true" : "false") : "null";
  }
}

inline std::vector<Row> read_rows(const Dataset& d) {
  std::vector<Row> rows;
  for (uint64_t p = 0; p < d.num_partitions(); ++p) {
    for (uint64_t r = 0; r < d.num_rows(p); ++r) {
      Row row;
      for (size_t c = 0; c < d.schema().size(); ++c) {
        const ColumnView v = d.column(p, c);
        if (!v.is_valid(r)) {
          row.push_back("null");
        } else if (v.type() == Type::kInt64) {
          row.push_back(std::to_string(v.values<int64_t>()[r]));
        } else if (v.type() == Type::kFloat64) {
          row.push_back(std::to_string(v.values<double>()[r]));
        } else if (v.type() == Type::kString) {
          row.push_back(std::string(v.string(r)));
        } else {
          row.push_back(v.values<uint8_t>()[r] ? "true" : "false");
        }
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

// What the test expects: rows where `keep` is true (SQL: unknown is not
// kept), the columns `columns` (indices into kSchema), at most `limit`.
inline std::vector<Row> reference(const Accounts& a, const std::function<bool(size_t)>& keep,
                                  const std::vector<size_t>& columns, uint64_t limit) {
  std::vector<Row> rows;
  for (size_t r = 0; r < a.balance.size() && rows.size() < limit; ++r) {
    if (!keep(r)) continue;
    Row row;
    for (size_t c : columns) row.push_back(cell(a, c, r));
    rows.push_back(std::move(row));
  }
  return rows;
}

struct Case {
  std::string where;
  std::vector<std::string> columns;
  std::optional<uint64_t> limit;
  std::function<bool(const Accounts&, size_t)> keep;
  std::vector<size_t> column_indices;
};

inline std::vector<Case> cases() {
  const std::vector<size_t> all = {0, 1, 2, 3};
  return {
      {"balance < 0",
       {},
       {},
       [](const Accounts& a, size_t r) { return a.balance[r] && *a.balance[r] < 0; },
       all},
      {"", {}, {}, [](const Accounts&, size_t) { return true; }, all},                 // every row
      {"balance > 5000", {}, {}, [](const Accounts&, size_t) { return false; }, all},  // none
      {"not (balance >= 0) or name is null",
       {"name", "balance"},
       {},
       [](const Accounts& a, size_t r) {
         return (a.balance[r] && *a.balance[r] < 0) || !a.name[r];
       },
       {2, 0}},
      {"name in ('n1', 'n2', 'n3') and active == true",
       {"active", "score"},
       {},
       [](const Accounts& a, size_t r) {
         return a.name[r] && (*a.name[r] == "n1" || *a.name[r] == "n2" || *a.name[r] == "n3") &&
                a.active[r] == true;
       },
       {3, 1}},
      {"score >= -10.5 and score < 20 and balance is not null",
       {},
       500,
       [](const Accounts& a, size_t r) {
         return a.score[r] && *a.score[r] >= -10.5 && *a.score[r] < 20 && a.balance[r];
       },
       all},
      {"", {"name"}, 4100, [](const Accounts&, size_t) { return true; }, {2}},
      {"balance < 0", {}, 0, [](const Accounts&, size_t) { return true; }, all},
  };
}

// A real shelfd of its own (256 MiB) per test, and the CLI against it.
class AccountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TestDaemon::Options options;
    options.memory_limit = "256MiB";
    daemon_ = TestDaemon::start(options);
    ASSERT_NE(daemon_, nullptr);
  }
  CommandResult shelf(std::vector<std::string> args) {
    args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", daemon_->socket()});
    return run_command(args);
  }
  std::unique_ptr<TestDaemon> daemon_;
};

}  // namespace shelf::test
