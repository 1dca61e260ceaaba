// The `shelf` command line against a real shelfd: each command is its own
// process, as a user's shell would run it.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  CommandResult shelf(std::vector<std::string> args) {
    args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", daemon_->socket()});
    return run_command(args);
  }
  uint64_t used_bytes() {
    Client c = daemon_->connect();
    return c.status().value().used_bytes;
  }
  std::unique_ptr<TestDaemon> daemon_;
};

const char* kAccounts1 = "name,balance\nAlice,-100\nBob,-200\n\"Charlie, Jr.\",-300\n";
const char* kAccounts2 = "name,balance\nDennis,-400\n\"Ed\"\"ith\",-500\n";

TEST_F(CliTest, PublishInOneProcessReadFromOthers) {
  auto a = write("a1.csv", kAccounts1), b = write("a2.csv", kAccounts2);
  CommandResult r = shelf({"publish", "accounts", a, b});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "published 'accounts': 5 rows in 2 partitions")) << r.out;

  r = shelf({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "accounts")) << r.out;
  EXPECT_TRUE(contains(r.out, "NAME")) << r.out;

  r = shelf({"head", "accounts"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Charlie, Jr.")) << r.out;
  EXPECT_TRUE(contains(r.out, "Ed\"ith")) << r.out;
  EXPECT_TRUE(contains(r.out, "-500")) << r.out;
  EXPECT_FALSE(contains(r.out, "more rows")) << r.out;

  r = shelf({"head", "accounts", "-n", "2"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "Bob"));
  EXPECT_FALSE(contains(r.out, "Charlie"));
  EXPECT_TRUE(contains(r.out, "... 3 more rows")) << r.out;

  // The values really are in shared memory: read them with the C++ API.
  Client c = daemon_->connect();
  Dataset ds = c.get_dataset("accounts").value();
  ASSERT_EQ(ds.num_partitions(), 2u);
  EXPECT_EQ(ds.schema(), (Schema{{"name", Type::kString}, {"balance", Type::kInt64}}));
  EXPECT_EQ(ds.column(1, 1).values<int64_t>()[1], -500);
  EXPECT_EQ(ds.column(0, 0).string(2), "Charlie, Jr.");
  EXPECT_TRUE(ds.verify().ok());
}

TEST_F(CliTest, InfoAndJsonOutputs) {
  ASSERT_EQ(shelf({"publish", "accounts", write("a.csv", kAccounts1)}).exit_code, 0);
  CommandResult r = shelf({"info", "accounts"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"rows:        3 in 1 partition", "balance", "int64", "string", "XXH3",
                           "created:", "by uid"}) {
    EXPECT_TRUE(contains(r.out, want)) << want << " not in:\n" << r.out;
  }
  r = shelf({"info", "accounts", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "\"schema\":[{\"name\":\"name\",\"type\":\"string\"}")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"xxh3\":\"")) << r.out;
  r = shelf({"list", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "[{\"name\":\"accounts\",\"rows\":3,\"columns\":2")) << r.out;
  r = shelf({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  for (const char* want : {"\"memory_limit\":67108864", "\"used_bytes\":", "\"resident_bytes\":",
                           "\"num_datasets\":1", "\"leases\":0"}) {
    EXPECT_TRUE(contains(r.out, want)) << want << " not in:\n" << r.out;
  }
}

TEST_F(CliTest, StatusShowsMemoryAndDatasetsAndWatches) {
  ASSERT_EQ(shelf({"publish", "accounts", write("a.csv", kAccounts1)}).exit_code, 0);
  CommandResult r = shelf({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"used of 64.00 MiB", "free", "resident in /dev/shm", "datasets: 1",
                           "leases held 0", "accounts"}) {
    EXPECT_TRUE(contains(r.out, want)) << want << " not in:\n" << r.out;
  }
  r = shelf({"status", "--watch", "0.05", "--iterations", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t count = 0;
  for (size_t pos = 0; (pos = r.out.find("shelfd pid", pos)) != std::string::npos; ++pos) ++count;
  EXPECT_EQ(count, 3u) << r.out;
  EXPECT_EQ(shelf({"status", "--watch", "0"}).exit_code, 2);
}

TEST_F(CliTest, CollisionOverrideAndUnpublish) {
  auto a = write("a.csv", kAccounts1), b = write("b.csv", kAccounts2);
  ASSERT_EQ(shelf({"publish", "accounts", a}).exit_code, 0);
  CommandResult r = shelf({"publish", "accounts", b});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'accounts' already exists")) << r.err;
  EXPECT_TRUE(contains(r.err, "--override")) << r.err;
  EXPECT_TRUE(contains(shelf({"head", "accounts"}).out, "Alice"));  // unchanged

  r = shelf({"publish", "accounts", b, "--override"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = shelf({"head", "accounts"});
  EXPECT_TRUE(contains(r.out, "Dennis"));
  EXPECT_FALSE(contains(r.out, "Alice"));

  r = shelf({"unpublish", "accounts"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = shelf({"unpublish", "accounts"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "dataset 'accounts' not found")) << r.err;
  r = shelf({"head", "accounts"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "not found")) << r.err;
  EXPECT_TRUE(contains(shelf({"list"}).out, "no datasets published"));
}

TEST_F(CliTest, BadCsvPublishesNothingAndCostsNothing) {
  const uint64_t before = used_bytes();
  struct Case {
    std::string text, error;
  } cases[] = {
      {"name,balance\nA,2\nB\n", "bad.csv:3: expected 2 fields, found 1"},
      {"name,balance\nA,\"open\n", "malformed CSV"},
      {"name,balance\nA,x\"y\n", "bad.csv:2: malformed CSV"},
      {"", "empty"},
      {"name,balance\n\xff,1\n", "UTF-8"},
      {"name,total\nA,1\n", "header differs"},
  };
  for (const Case& c : cases) {
    auto good = write("good.csv", kAccounts1);
    auto bad = write("bad.csv", c.text);
    CommandResult r = shelf({"publish", "mixed", good, bad});
    EXPECT_EQ(r.exit_code, 1) << c.text;
    EXPECT_TRUE(contains(r.err, c.error)) << "want '" << c.error << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
  EXPECT_TRUE(contains(shelf({"list"}).out, "no datasets published"));
  EXPECT_EQ(used_bytes(), before);
}

TEST_F(CliTest, SchemaForcesTypesAndRefusesMisfits) {
  auto f = write("t.csv", "id,when,score\n1,2024-01-31,\n2,2024-02-01 12:00:00,2.5\n");
  CommandResult r =
      shelf({"publish", "typed", f, "--schema", "id:int32,when:timestamp,score:float32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client c = daemon_->connect();
  Dataset ds = c.get_dataset("typed").value();
  EXPECT_EQ(ds.schema()[0].type, Type::kInt32);
  EXPECT_EQ(ds.schema()[1].type, Type::kTimestamp);
  EXPECT_EQ(ds.column(0, 1).values<int64_t>()[0], 1706659200LL * 1000000000);
  EXPECT_FALSE(ds.column(0, 2).is_valid(0));  // empty field: null
  EXPECT_EQ(ds.column(0, 2).values<float>()[1], 2.5f);
  r = shelf({"head", "typed"});
  EXPECT_TRUE(contains(r.out, "2024-02-01 12:00:00")) << r.out;
  EXPECT_TRUE(contains(r.out, "null")) << r.out;

  r = shelf({"publish", "bad", f, "--schema", "when:int64"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "t.csv:2: column 'when': '2024-01-31' is not a int64")) << r.err;
  EXPECT_EQ(shelf({"publish", "bad", f, "--schema", "when:complex"}).exit_code, 2);
}

TEST_F(CliTest, PinAndUnpin) {
  ASSERT_EQ(shelf({"publish", "accounts", write("a.csv", kAccounts1), "--pin"}).exit_code, 0);
  CommandResult r = shelf({"list"});
  EXPECT_TRUE(contains(r.out, ", pinned")) << r.out;
  EXPECT_TRUE(contains(shelf({"info", "accounts"}).out, "pinned:      yes")) << r.out;
  EXPECT_TRUE(contains(shelf({"list", "--json"}).out, "\"pinned\":true"));
  r = shelf({"unpin", "accounts"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "unpinned 'accounts': shelfd may spill it again\n");
  EXPECT_FALSE(contains(shelf({"list"}).out, "pinned"));
  r = shelf({"pin", "accounts"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "pinned 'accounts'")) << r.out;
  EXPECT_TRUE(contains(shelf({"status"}).out, ", pinned"));
  r = shelf({"pin", "nobody"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'nobody' not found")) << r.err;
  EXPECT_EQ(shelf({"pin"}).exit_code, 2);
  EXPECT_EQ(shelf({"unpin", "a", "b"}).exit_code, 2);
}

TEST_F(CliTest, PartitionRowsCutsFiles) {
  auto f = write("p.csv", "x\n1\n2\n3\n4\n5\n");
  ASSERT_EQ(shelf({"publish", "parts", f, "--partition-rows", "2"}).exit_code, 0);
  Client c = daemon_->connect();
  Dataset ds = c.get_dataset("parts").value();
  ASSERT_EQ(ds.num_partitions(), 3u);
  EXPECT_EQ(ds.num_rows(2), 1u);
  EXPECT_EQ(ds.column(2, 0).values<int64_t>()[0], 5);
  EXPECT_EQ(shelf({"publish", "parts0", f, "--partition-rows", "0"}).exit_code, 2);
}

TEST_F(CliTest, UsageErrorsAndHelp) {
  CommandResult r = shelf({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown command 'frobnicate'"));
  r = shelf({"publish", "onlyname"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = run_command({SHELF_CLI_PATH, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "Usage: shelf"));
  r = shelf({"publish", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "--partition-rows"));
  // Every command that `shelf --help` lists answers --help with its usage.
  for (const char* command :
       {"publish", "list", "head", "info", "unpublish", "pin", "unpin", "status", "save", "load"}) {
    r = shelf({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command << ": " << r.err;
    EXPECT_TRUE(contains(r.out, std::string("Usage: shelf ") + command)) << r.out;
  }
  r = run_command({SHELFD_PATH, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "--memory-limit"));
  r = run_command({SHELFD_PATH, "--memory-limit", "lots"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "'lots' is not a size")) << r.err;
}

// docs/cpp.md's C++ example and the demo's reader, run as users would.
TEST_F(CliTest, ExamplesRun) {
  const std::string env = "SHELF_SOCKET=" + daemon_->socket();
  CommandResult r = run_command({std::string(SHELF_EXAMPLES_DIR) + "/quickstart"}, {env});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "negative_accounts: 3 rows, sum(balance) = -600\n");
  EXPECT_TRUE(contains(shelf({"list"}).out, "no datasets published"));

  ASSERT_EQ(shelf({"publish", "accounts", write("a.csv", kAccounts1)}).exit_code, 0);
  r = run_command({std::string(SHELF_EXAMPLES_DIR) + "/sum_column", "accounts", "balance"}, {env});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "sum(accounts.balance) = -600 over 3 rows")) << r.out;
  r = run_command({std::string(SHELF_EXAMPLES_DIR) + "/sum_column", "accounts", "name"}, {env});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "column 'name' is string")) << r.err;
}

TEST(Shelfd, RefusesALimitDevShmCannotHold) {
  const std::string name = unique_name();
  const std::string socket = "/tmp/" + name + ".sock";
  CommandResult r = run_command(
      {SHELFD_PATH, "--socket", socket, "--segment", name, "--memory-limit", "1000TiB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "/dev/shm has")) << r.err;
  EXPECT_TRUE(contains(r.err, "lower --memory-limit")) << r.err;
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + name));
  EXPECT_FALSE(std::filesystem::exists(socket));
  // The log file, opened for the start, says why there is no daemon, in a
  // log line (so that the next shelfd knows the file for its own log).
  std::ifstream log(socket + ".log");
  std::string line;
  std::getline(log, line);
  EXPECT_TRUE(contains(line, " shelfd[")) << line;
  EXPECT_TRUE(contains(line, "] error: not started: /dev/shm has")) << line;
  std::filesystem::remove(socket + ".lock");
  std::filesystem::remove(socket + ".log");
}

// A directory other users can write is no place for the socket and lock.
TEST(Shelfd, RefusesASocketDirectoryOthersCanWrite) {
  const std::string name = unique_name();
  const std::string dir = "/tmp/" + name;
  std::filesystem::create_directory(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::all);  // 0777, not sticky
  CommandResult r = run_command(
      {SHELFD_PATH, "--socket", dir + "/shelf.sock", "--segment", name, "--memory-limit", "8MiB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "is writable by other users")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/shelf.sock.lock"));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + name));
  std::filesystem::remove_all(dir);
}

TEST(CliNoDaemon, SaysHowToStartOne) {
  const std::string socket = "/tmp/" + unique_name() + ".sock";
  CommandResult r = run_command({SHELF_CLI_PATH, "--socket", socket, "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no shelfd at " + socket)) << r.err;
  EXPECT_TRUE(contains(r.err, "start it with: shelfd --socket " + socket)) << r.err;
  // SHELF_SOCKET is honoured the same way.
  r = run_command({SHELF_CLI_PATH, "status"}, {"SHELF_SOCKET=" + socket});
  EXPECT_TRUE(contains(r.err, "no shelfd at " + socket)) << r.err;
}

}  // namespace
}  // namespace shelf::test
