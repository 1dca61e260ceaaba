// The client library's own contracts, against a real shelfd: what connect()
// says when there is nothing to connect to, a DatasetMap that outlives the
// move of its Client, and Datasets and TableBuilders let go of on threads
// other than their Client's (the thread contract in shelf/client.h).
//
// No fork here, so the whole executable runs under TSan
// (-DSHELF_SANITIZE=thread): the threaded test is what TSan is for.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

// ------------------------------------------------------------ connect --

TEST(ConnectTest, NoSocketFileIsUnavailableWithTheCommandToStartShelfd) {
  const std::string dir = std::filesystem::temp_directory_path() / unique_name();
  for (const std::string& socket : {dir + "/shelf.sock", dir + "/no/such/dir/shelf.sock"}) {
    std::filesystem::create_directories(dir);
    ClientOptions options;
    options.socket = socket;
    Status s = Client::connect(options).status();
    EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr("shelfd --socket " + socket));
    std::filesystem::remove_all(dir);
  }
}

TEST(ConnectTest, SocketOfADeadDaemonIsUnavailable) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  daemon->kill9();  // leaves its socket file behind: connect(2) is refused
  ASSERT_TRUE(std::filesystem::exists(daemon->socket()));
  Status s = Client::connect(daemon->client_options()).status();
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("shelfd --socket " + daemon->socket()));
}

// The segment removed under a running daemon (by hand, or a /dev/shm this
// process does not share with shelfd). This used to be NotFound, which the
// Python package turns into KeyError, as if a dataset were missing.
TEST(ConnectTest, RemovedSegmentIsUnavailableNotNotFound) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client before = daemon->connect();
  ASSERT_EQ(::unlink(("/dev/shm/" + daemon->segment()).c_str()), 0);

  Status s = Client::connect(daemon->client_options()).status();
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("/dev/shm/" + daemon->segment()));
  EXPECT_THAT(s.message(), HasSubstr("restart shelfd"));

  // A client connected before maps the segment still, but cannot open it
  // for writing: publishing fails the same way.
  auto table = before.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  Status added = table->add_partition(10).status();
  EXPECT_EQ(added.code(), Status::Code::kUnavailable) << added.to_string();
  EXPECT_THAT(added.message(), HasSubstr("restart shelfd"));
}

// ------------------------------------------------------- header comments --

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The example in table_builder.h is quickstart.cc's code, so it compiles and
// runs (cli_test runs quickstart): it cannot rot unnoticed.
TEST(HeaderExampleTest, TableBuilderExampleIsQuickstartCode) {
  const std::string root = SHELF_SOURCE_DIR;
  const std::vector<std::string> header =
      lines_of(root + "/libclient/include/shelf/table_builder.h");
  const std::vector<std::string> example = lines_of(root + "/examples/quickstart.cc");
  auto start = std::find_if(header.begin(), header.end(), [](const std::string& l) {
    return l.find("runs (cli_test); client_test checks") != std::string::npos;
  });
  ASSERT_NE(start, header.end());
  int checked = 0;
  for (auto it = start + 2; it != header.end() && *it != "//"; ++it, ++checked) {
    ASSERT_EQ(it->rfind("// ", 0), 0u) << *it;
    const std::string code = it->substr(3);  // "  SHELF_ASSIGN_OR_RETURN(..."
    EXPECT_NE(std::find(example.begin(), example.end(), code), example.end())
        << "not in examples/quickstart.cc: " << code;
  }
  EXPECT_GE(checked, 10);
}

// ---------------------------------------------------------- DatasetMap --

TEST(DatasetMapTest, StaysValidWhenItsClientIsMovedAndDestroyed) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  std::optional<Client> client(daemon->connect());
  publish_int64(*client, "kept", 100, 7);
  DatasetMap map = client->datasets();

  Client moved = std::move(*client);  // the map used to point at this moved-from object
  client.reset();
  auto keys = map.keys();
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  EXPECT_EQ(*keys, std::vector<std::string>{"kept"});
  auto ds = map.get("kept");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  expect_int64_dataset(*ds, 100, 7);

  TableBuilder t = make_int64_table(moved, 10, 1);
  EXPECT_TRUE(map.set("added", t).ok());
  EXPECT_EQ(map.size().value(), 2u);
  EXPECT_TRUE(map.erase("added").ok());
  {
    Client gone = std::move(moved);  // and now no Client object is left at all
  }
  EXPECT_TRUE(map.contains("kept").value());
  std::vector<std::string> names;
  for (const std::string& name : map) names.push_back(name);
  EXPECT_EQ(names, std::vector<std::string>{"kept"});
}

// ------------------------------------------------------------- threads --

// Handed from the Client's thread to the others, which destroy it.
using Handle = std::variant<Dataset, TableBuilder>;

class Handoff {
 public:
  void push(Handle h) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(h));
    ready_.notify_one();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    ready_.notify_all();
  }
  // nullopt once closed and empty.
  std::optional<Handle> pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return std::nullopt;
    Handle h = std::move(queue_.front());
    queue_.pop_front();
    return h;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Handle> queue_;
  bool closed_ = false;
};

// Many Datasets (and unpublished TableBuilders) made on one thread and
// destroyed on others, while the owner keeps making requests: every Release
// and Abort reaches the daemon, no reply is taken for another, and the
// connection never breaks. Before the connection's send path was serialised,
// a Release sent between the owner's request and its reply made the owner
// read the wrong reply ("out-of-order response"), and TSan saw the races.
TEST(ThreadsTest, DatasetsDestroyedOnOtherThreadsWhileTheOwnerKeepsCalling) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "shared", 1000, 5);
  const uint64_t used_before = status_of(client).used_bytes;

  Handoff handoff;
  std::atomic<uint64_t> destroyed{0};
  std::vector<std::thread> destroyers;
  for (int i = 0; i < 3; ++i) {
    destroyers.emplace_back([&] {
      while (std::optional<Handle> h = handoff.pop()) {
        if (const Dataset* ds = std::get_if<Dataset>(&*h)) {
          // Reading is allowed on any thread, concurrently with the owner.
          EXPECT_EQ(ds->column(0, 0).values<int64_t>()[999], 5 + 999);
          EXPECT_TRUE(ds->verify().ok());
        }
        h.reset();  // sends its Release (or Abort) from this thread
        destroyed.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  constexpr int kRounds = 600;
  for (int i = 0; i < kRounds; ++i) {
    auto ds = client.get_dataset("shared");
    ASSERT_TRUE(ds.ok()) << "round " << i << ": " << ds.status().to_string();
    handoff.push(std::move(ds).value());
    if (i % 10 == 0) {
      TableBuilder t = make_int64_table(client, 100, i);  // reserved, never published
      handoff.push(std::move(t));
    }
    auto listed = client.list_datasets();
    ASSERT_TRUE(listed.ok()) << "round " << i << ": " << listed.status().to_string();
  }
  handoff.close();
  for (std::thread& t : destroyers) t.join();
  EXPECT_EQ(destroyed.load(), kRounds + kRounds / 10);

  // Every Release and Abort was posted before this request, on the same
  // connection, and the daemon handles a connection's requests in order.
  MemoryStats after = status_of(client);
  EXPECT_EQ(after.num_leases, 0u);
  EXPECT_EQ(after.unsealed_bytes, 0u);
  EXPECT_EQ(after.used_bytes, used_before);
  expect_int64_published(client, "shared", 1000, 5);
}

// The Client itself destroyed on its thread while others still hold (and
// then drop) Datasets it handed out: the last one closes the connection.
TEST(ThreadsTest, DatasetsOutliveTheirClientOnOtherThreads) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  std::vector<Dataset> held;
  {
    Client client = daemon->connect();
    publish_int64(client, "shared", 1000, 5);
    for (int i = 0; i < 16; ++i) held.push_back(client.get_dataset("shared").value());
  }
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    std::vector<Dataset> mine;
    for (int i = 0; i < 4; ++i) {
      mine.push_back(std::move(held.back()));
      held.pop_back();
    }
    readers.emplace_back([mine = std::move(mine)]() mutable {
      for (Dataset& ds : mine) EXPECT_TRUE(ds.verify().ok());
      mine.clear();
    });
  }
  for (std::thread& t : readers) t.join();
  Client observer = daemon->connect();
  EXPECT_TRUE(eventually([&] { return status_of(observer).num_leases == 0; }));
}

}  // namespace
}  // namespace shelf::test
