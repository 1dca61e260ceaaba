// Clients reading the segment's name index (contains, size, keys,
// list_datasets, a get of a missing name) with no message to shelfd, against
// a real daemon and real publisher and reader processes: a stress that
// publishes, overrides and unpublishes a few names as fast as it can while
// readers check every byte they get, and shelfd killed in the middle of an
// index change.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <new>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "protocol/wire.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kNames = {"churn-0", "churn-1", "churn-2"};

// The rows of the version of seed `seed`: each version has its own size.
uint64_t rows_for(int64_t seed) { return 500 + static_cast<uint64_t>(seed % 97); }

// Checks a dataset some version of the publisher wrote: its first value is
// its seed, its size follows from it, and every value and checksum agrees.
void expect_some_version(const Dataset& ds) {
  ASSERT_EQ(ds.num_partitions(), 1u);
  const auto values = ds.column(0, 0).values<int64_t>();
  ASSERT_FALSE(values.empty());
  const int64_t seed = values[0];
  expect_int64_dataset(ds, rows_for(seed), seed);
}

TEST(NameIndexTest, ReadersSeeWholeVersionsWhilePublishersChurnTheSameNames) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  // Set when the publisher is done; shared with the forked readers.
  void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* done = new (shared) std::atomic<int>(0);
  constexpr int kRounds = 1500;
  const pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    for (int round = 0; round < kRounds; ++round) {
      const std::string& name = kNames[static_cast<size_t>(round) % kNames.size()];
      const int64_t seed = 1000 + round;
      if (round % 5 == 4) {
        Status s = c.unpublish_dataset(name);
        ASSERT_TRUE(s.ok() || s.code() == Status::Code::kNotFound) << s.to_string();
        continue;
      }
      TableBuilder t = make_int64_table(c, rows_for(seed), seed);
      ASSERT_TRUE(c.publish_dataset(name, t, PublishOptions{.override_existing = true}).ok());
    }
  });
  std::vector<pid_t> readers;
  for (int r = 0; r < 2; ++r) {
    readers.push_back(spawn_child([&] {
      Client c = daemon->connect();
      DatasetMap map = c.datasets();
      uint64_t got = 0;
      for (int i = 0; done->load() == 0; ++i) {
        const std::string& name = kNames[static_cast<size_t>(i) % kNames.size()];
        auto ds = c.get_dataset(name);
        if (ds.ok()) {
          expect_some_version(*ds);
          ++got;
        } else {
          ASSERT_EQ(ds.status().code(), Status::Code::kNotFound) << ds.status().to_string();
        }
        auto has = map.contains(name);
        ASSERT_TRUE(has.ok()) << has.status().to_string();
        if (i % 50 == 0) {
          auto listed = c.list_datasets();
          ASSERT_TRUE(listed.ok()) << listed.status().to_string();
          ASSERT_LE(listed->size(), kNames.size());
          for (const DatasetInfo& d : *listed) {
            EXPECT_TRUE(d.name.rfind("churn-", 0) == 0) << d.name;
            EXPECT_GE(d.num_rows, 500u) << "a listed entry without its descriptor";
          }
          auto size = map.size();
          ASSERT_TRUE(size.ok());
          ASSERT_LE(*size, kNames.size());
        }
        if (::testing::Test::HasFailure()) return;
      }
      EXPECT_GT(got, 0u) << "no get succeeded: the race was not run";
    }));
  }
  EXPECT_EQ(wait_child(publisher), 0);
  done->store(1);
  for (pid_t r : readers) EXPECT_EQ(wait_child(r), 0);
  ::munmap(shared, 4096);

  Client client = daemon->connect();
  for (const std::string& name : listed_names(client)) {
    ASSERT_TRUE(client.unpublish_dataset(name).ok());
  }
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.num_leases, 0u);
  EXPECT_TRUE(eventually([&] { return status_of(client).pending_free_bytes == 0; }));
  EXPECT_EQ(status_of(client).used_bytes, st.index_bytes) << "memory leaked";
  EXPECT_EQ(daemon->resident_bytes(), status_of(client).used_bytes);
  auto keys = client.datasets().keys();
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty());
}

// shelfd stopped (then killed) between the start and the end of an index
// change: readers never trust the half-changed index (they ask shelfd, which
// does not answer, and fail with Unavailable); the restart rebuilds the
// index, which serves what was published.
TEST(NameIndexTest, DaemonKilledMidIndexChangeIsNeverReadAndIsRebuilt) {
  Pipe notify(/*cloexec=*/false);
  auto daemon = start_daemon_stopping_at("daemon.index.mid_change", notify);
  ASSERT_NE(daemon, nullptr);
  // A reader connected before the change: its hello was answered.
  Pipe ready, go;
  ClientOptions quick = daemon->client_options();
  quick.request_timeout = std::chrono::milliseconds(300);
  const pid_t reader = spawn_child([&] {
    auto c = Client::connect(quick);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    DatasetMap map = c->datasets();
    ASSERT_TRUE(map.contains("half").ok());
    ready.signal();
    ASSERT_TRUE(go.wait());
    // The index stays odd: after its retries the reader asks shelfd, which
    // is stopped, and gives up after request_timeout. Never a half answer.
    auto has = map.contains("half");
    EXPECT_EQ(has.status().code(), Status::Code::kUnavailable) << has.status().to_string();
    auto listed = c->list_datasets();
    EXPECT_EQ(listed.status().code(), Status::Code::kUnavailable);
  });
  ASSERT_TRUE(ready.wait());
  const pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder t = make_int64_table(c, 1000, 7);
    (void)c.publish_dataset("half", t);
  });
  ASSERT_TRUE(notify.read_line().has_value()) << "shelfd never reached its fault point";
  go.signal();
  EXPECT_EQ(wait_child(reader), 0);
  daemon->kill9();
  kill_child(publisher);
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  Client client = daemon->connect();
  auto has = client.datasets().contains("half");
  ASSERT_TRUE(has.ok()) << has.status().to_string();
  EXPECT_TRUE(*has) << "the entry was written whole before the kill";
  expect_int64_published(client, "half", 1000, 7);
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"half"});
  const MemoryStats st = status_of(client);
  EXPECT_EQ(daemon->resident_bytes(), st.used_bytes);
}

// What shelfd answers a client of protocol `version` (2: before the name
// index; 4: before used_slots_end and the lease tables): its Hello frame as
// that client sent it, and the status message of the reply ("" if none came).
std::string old_protocol_hello(const TestDaemon& daemon, uint8_t version) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", daemon.socket().c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // u32 magic 'SHLF', u16 version, u16 type 1 (Hello), u32 length;
  // payload: u16 protocol_version, string client_name "old" (u32 + bytes).
  const uint8_t frame[] = {0x53, 0x48,    0x4C, 0x46, version, 0, 1, 0,   9,   0,  0,
                           0,    version, 0,    3,    0,       0, 0, 'o', 'l', 'd'};
  if (::send(fd.get(), frame, sizeof frame, MSG_NOSIGNAL) != sizeof frame) return "";
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, n);
  // 12-byte header, u8 code, u32 length, message.
  return reply.size() > 17 ? reply.substr(17) : "";
}

// list_datasets() and keys() read the index's summaries and sort them by
// their first 16 bytes, then by the whole name: names that share 8 or 16
// bytes, a name that is another's prefix and bytes above 0x7f must come out
// in std::string order, with what the daemon itself reports of each
// (status()).
TEST(NameIndexTest, ListsAreSortedByNameAndAgreeWithTheDaemon) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const std::vector<std::string> names = {"abcdefgh",
                                          "abcdefg",
                                          "abcdefghi",
                                          "abcdefgh-2",
                                          "abcdefgh-10",
                                          "b",
                                          "\xc3\xa9t\xc3\xa9",
                                          "a",
                                          "ab",
                                          "abcdefgz",
                                          "zzzzzzzzzz",
                                          "Z",
                                          "abcdefghijklmnop",
                                          "abcdefghijklmnopq",
                                          "abcdefghijklmnoo",
                                          "abcdefghijklmnop-2",
                                          "abcdefghijklmnop-10",
                                          "abcdefghijklmno\xc3\xa9"};
  for (size_t i = 0; i < names.size(); ++i) {
    publish_int64(client, names[i], 10 + i, static_cast<int64_t>(i));
  }
  std::vector<std::string> want = names;
  std::sort(want.begin(), want.end());
  auto listed = client.list_datasets();
  ASSERT_TRUE(listed.ok()) << listed.status().to_string();
  std::vector<std::string> got;
  for (const DatasetInfo& d : *listed) got.push_back(d.name);
  EXPECT_EQ(got, want);
  auto keys = client.datasets().keys();
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  EXPECT_EQ(*keys, want);
  const MemoryStats st = status_of(client);
  ASSERT_EQ(st.datasets.size(), listed->size());
  for (const DatasetInfo& d : *listed) {
    auto it = std::find_if(st.datasets.begin(), st.datasets.end(),
                           [&](const DatasetInfo& s) { return s.name == d.name; });
    ASSERT_NE(it, st.datasets.end()) << d.name;
    const size_t i =
        static_cast<size_t>(std::find(names.begin(), names.end(), d.name) - names.begin());
    EXPECT_EQ(d.num_rows, 10 + i) << d.name;
    EXPECT_EQ(d.num_rows, it->num_rows) << d.name;
    EXPECT_EQ(d.num_columns, it->num_columns) << d.name;
    EXPECT_EQ(d.num_partitions, it->num_partitions) << d.name;
    EXPECT_EQ(d.data_bytes, it->data_bytes) << d.name;
    EXPECT_EQ(d.memory_bytes, it->memory_bytes) << d.name;
    EXPECT_EQ(d.created_ns, it->created_ns) << d.name;
    EXPECT_EQ(d.publisher_pid, it->publisher_pid) << d.name;
    EXPECT_EQ(d.publisher_uid, it->publisher_uid) << d.name;
  }
  for (const std::string& name : names) ASSERT_TRUE(client.unpublish_dataset(name).ok());
  auto empty = client.list_datasets();
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(NameIndexTest, AClientOfTheOldProtocolIsRefusedClearly) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  for (uint8_t version : {2, 4, 5, 6, 7}) {
    EXPECT_THAT(old_protocol_hello(*daemon, version),
                HasSubstr("protocol version " + std::to_string(version) +
                          " is not spoken here (shelfd speaks " +
                          std::to_string(protocol::kProtocolVersion) +
                          "); use a client of the same release"));
  }
  expect_daemon_serves(*daemon);
}

}  // namespace
}  // namespace shelf::test
