// Who holds what (status().clients, shelf status --clients): real shelfd,
// real holder processes, and what status says of each, through both kinds of
// lease, an unpublish, a kill -9 of a holder and a restart of the daemon.
#include <csignal>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <time.h>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>
#include <shelf/limits.h>

#include "tests/integration/integration_util.h"

namespace shelf::test {
namespace {

constexpr uint64_t kRows = 64 * 1024;  // 512 KiB of int64: a dataset of several pages

int64_t wall_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// This process's command line as status reports it: arguments joined by spaces.
std::string own_command_line() {
  std::ifstream in("/proc/self/cmdline");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  for (char& c : text) c = c == '\0' ? ' ' : c;
  return text;
}

const ClientInfo* row_of(const MemoryStats& st, pid_t pid) {
  for (const ClientInfo& c : st.clients) {
    if (c.pid == static_cast<uint32_t>(pid)) return &c;
  }
  return nullptr;
}

const HeldDataset* held(const ClientInfo& c, const std::string& name, bool published) {
  for (const HeldDataset& h : c.held) {
    if (h.name == name && h.published == published) return &h;
  }
  return nullptr;
}

uint64_t memory_of(const MemoryStats& st, const std::string& name) {
  for (const DatasetInfo& d : st.datasets) {
    if (d.name == name) return d.memory_bytes;
  }
  ADD_FAILURE() << name << " is not published";
  return 0;
}

// A child that connects as `client_name`, takes `gets` leases (one per
// name, names repeated for more), signals `holding` and keeps them.
pid_t spawn_holder(const TestDaemon& daemon, const std::vector<std::string>& gets, Pipe& holding,
                   const std::string& client_name = "holder") {
  return spawn_child([&] {
    ClientOptions options = daemon.client_options();
    options.client_name = client_name;
    Client c = Client::connect(options).value();
    std::vector<Dataset> kept;
    for (const std::string& name : gets) kept.push_back(c.get_dataset(name).value());
    holding.signal();
    for (;;) ::pause();
  });
}

TEST(HoldersTest, StatusNamesEachProcessAndWhatItHolds) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 1);
  publish_int64(client, "b", 2 * kRows, 2);
  const int64_t before = wall_ns();
  Pipe one_holding, two_holding;
  pid_t one = spawn_holder(*daemon, {"a", "a", "b"}, one_holding, "holder-one");
  ASSERT_TRUE(one_holding.wait());
  pid_t two = spawn_holder(*daemon, {"b"}, two_holding);
  ASSERT_TRUE(two_holding.wait());
  const int64_t after = wall_ns();

  const MemoryStats st = status_of(client);
  const uint64_t a = memory_of(st, "a"), b = memory_of(st, "b");
  const ClientInfo* row = row_of(st, one);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->uid, ::getuid());
  EXPECT_EQ(row->client_name, "holder-one");
  EXPECT_EQ(row->command, own_command_line());  // a fork: the test's own arguments
  EXPECT_FALSE(row->command.empty());
  EXPECT_GE(row->connected_ns, before);
  EXPECT_LE(row->connected_ns, after);
  EXPECT_EQ(row->connections, 1u);
  EXPECT_EQ(row->leases, 3u);
  EXPECT_EQ(row->held_bytes, a + b);
  EXPECT_EQ(row->unpublished_bytes, 0u);  // both still published
  EXPECT_EQ(row->writing_bytes, 0u);
  ASSERT_EQ(row->held.size(), 2u);
  EXPECT_EQ(row->held[0].name, "b");  // largest first
  const HeldDataset* held_a = held(*row, "a", true);
  ASSERT_NE(held_a, nullptr);
  EXPECT_EQ(held_a->leases, 2u);
  EXPECT_EQ(held_a->memory_bytes, a);
  EXPECT_TRUE(held_a->held_alone);
  const HeldDataset* held_b = held(*row, "b", true);
  ASSERT_NE(held_b, nullptr);
  EXPECT_FALSE(held_b->held_alone) << "the second holder holds it too";

  const ClientInfo* second = row_of(st, two);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->client_name, "holder");
  EXPECT_EQ(second->leases, 1u);
  EXPECT_EQ(second->held_bytes, b);
  // The status caller is a row too, holding nothing.
  const ClientInfo* self = row_of(st, ::getpid());
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(self->leases, 0u);
  // Rows by pid, and the lease counts agree with the totals.
  uint32_t leases = 0;
  for (size_t i = 0; i < st.clients.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(st.clients[i - 1].pid, st.clients[i].pid);
    }
    leases += st.clients[i].leases;
  }
  EXPECT_EQ(leases, st.num_leases);

  EXPECT_EQ(kill_child(one), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return row_of(status_of(client), one) == nullptr; }))
      << "a killed holder's row stayed";
  const MemoryStats later = status_of(client);
  EXPECT_EQ(later.num_leases, 1u);
  EXPECT_EQ(kill_child(two), 128 + SIGKILL);
}

TEST(HoldersTest, UnpublishedMemoryIsTheSoleHoldersUntilItExits) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 3);
  const uint64_t a = memory_of(status_of(client), "a");
  Pipe holding;
  pid_t holder = spawn_holder(*daemon, {"a"}, holding);
  ASSERT_TRUE(holding.wait());
  ASSERT_TRUE(client.unpublish_dataset("a").ok());

  const MemoryStats st = status_of(client);
  ASSERT_EQ(st.unpublished.size(), 1u);
  EXPECT_EQ(st.unpublished[0].name, "a");
  EXPECT_EQ(st.unpublished[0].memory_bytes, a);
  EXPECT_EQ(st.unpublished[0].leases, 1u);
  EXPECT_FALSE(st.unpublished[0].restart_hold);
  const ClientInfo* row = row_of(st, holder);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->unpublished_bytes, a);
  EXPECT_EQ(row->unpublished_bytes, st.pending_free_bytes);
  ASSERT_NE(held(*row, "a", false), nullptr);

  EXPECT_EQ(kill_child(holder), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return status_of(client).unpublished.empty(); }));
  EXPECT_EQ(status_of(client).pending_free_bytes, 0u);
}

TEST(HoldersTest, AnOverrideLeavesTheOldVersionWithItsReaders) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 1);
  Pipe first_holding, second_holding;
  pid_t first = spawn_holder(*daemon, {"a"}, first_holding);
  ASSERT_TRUE(first_holding.wait());
  TableBuilder next = make_int64_table(client, kRows, 2);
  PublishOptions override_it;
  override_it.override_existing = true;
  ASSERT_TRUE(client.publish_dataset("a", next, override_it).ok());
  pid_t second = spawn_holder(*daemon, {"a"}, second_holding);
  ASSERT_TRUE(second_holding.wait());

  const MemoryStats st = status_of(client);
  const ClientInfo* old_reader = row_of(st, first);
  const ClientInfo* new_reader = row_of(st, second);
  ASSERT_NE(old_reader, nullptr);
  ASSERT_NE(new_reader, nullptr);
  EXPECT_NE(held(*old_reader, "a", false), nullptr) << "it reads the replaced version";
  EXPECT_EQ(held(*old_reader, "a", true), nullptr);
  EXPECT_NE(held(*new_reader, "a", true), nullptr) << "it reads the published one";
  EXPECT_EQ(old_reader->unpublished_bytes, st.pending_free_bytes);
  EXPECT_EQ(new_reader->unpublished_bytes, 0u);
  EXPECT_EQ(kill_child(first), 128 + SIGKILL);
  EXPECT_EQ(kill_child(second), 128 + SIGKILL);
}

TEST(HoldersTest, AnUnpublishedDatasetTwoProcessesHoldIsNeitherOnesAlone) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 4);
  Pipe one_holding, two_holding;
  pid_t one = spawn_holder(*daemon, {"a"}, one_holding);
  pid_t two = spawn_holder(*daemon, {"a"}, two_holding);
  ASSERT_TRUE(one_holding.wait());
  ASSERT_TRUE(two_holding.wait());
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  const MemoryStats st = status_of(client);
  for (pid_t pid : {one, two}) {
    const ClientInfo* row = row_of(st, pid);
    ASSERT_NE(row, nullptr);
    EXPECT_EQ(row->unpublished_bytes, 0u) << "its exit alone frees nothing";
    ASSERT_EQ(row->held.size(), 1u);
    EXPECT_FALSE(row->held[0].held_alone);
  }
  EXPECT_EQ(st.unpublished.at(0).leases, 2u);
  // Once one is gone, the other holds it alone.
  EXPECT_EQ(kill_child(one), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] {
    const MemoryStats now = status_of(client);
    const ClientInfo* row = row_of(now, two);
    return row != nullptr && row->unpublished_bytes == now.pending_free_bytes &&
           row->unpublished_bytes > 0;
  }));
  EXPECT_EQ(kill_child(two), 128 + SIGKILL);
}

TEST(HoldersTest, WritingBytesArePartitionsNotYetPublished) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  Pipe writing, done;
  pid_t writer = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder table = make_int64_table(c, kRows, 5, 2);  // written, not published
    writing.signal();
    ASSERT_TRUE(done.wait());
  });
  ASSERT_TRUE(writing.wait());
  const MemoryStats st = status_of(client);
  const ClientInfo* row = row_of(st, writer);
  ASSERT_NE(row, nullptr);
  EXPECT_GE(row->writing_bytes, 2 * kRows * sizeof(int64_t));
  EXPECT_EQ(row->writing_bytes, st.unsealed_bytes);
  EXPECT_EQ(row->leases, 0u);
  ASSERT_TRUE(done.signal());
  EXPECT_EQ(wait_child(writer), 0);
}

TEST(HoldersTest, AProcessWithSeveralConnectionsIsOneRow) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", 100, 6);
  Client second = daemon->connect();
  Client third = daemon->connect();
  auto one = second.get_dataset("a");
  auto two = third.get_dataset("a");
  ASSERT_TRUE(one.ok() && two.ok());
  const MemoryStats st = status_of(client);
  const ClientInfo* self = row_of(st, ::getpid());
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(self->connections, 3u);
  EXPECT_EQ(self->leases, 2u);
  ASSERT_EQ(self->held.size(), 1u);
  EXPECT_TRUE(self->held[0].held_alone) << "two connections, one process";
  EXPECT_EQ(st.clients.size(), 1u);
}

// A process holding more datasets than a row lists: the row keeps the
// largest kMaxHoldingsPerClient, and its totals count them all.
TEST(HoldersTest, ARowListsTheLargestHoldingsAndCountsThemAll) {
  TestDaemon::Options options;
  options.max_datasets = 1024;
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const int n = static_cast<int>(kMaxHoldingsPerClient) + 44;
  std::vector<std::string> names;
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) {
    names.push_back("d" + std::to_string(i));
    publish_int64(client, names.back(), i + 1 == n ? 100'000 : 10, i);  // one large
  }
  for (const DatasetInfo& d : status_of(client).datasets) total += d.memory_bytes;
  Pipe holding;
  pid_t holder = spawn_holder(*daemon, names, holding);
  ASSERT_TRUE(holding.wait());
  const MemoryStats st = status_of(client);
  const ClientInfo* row = row_of(st, holder);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->datasets_held, static_cast<uint32_t>(n));
  EXPECT_EQ(row->leases, static_cast<uint32_t>(n));
  EXPECT_EQ(row->held_bytes, total);
  ASSERT_EQ(row->held.size(), kMaxHoldingsPerClient);
  EXPECT_EQ(row->held.front().name, names.back()) << "the largest first";
  for (size_t i = 1; i < row->held.size(); ++i) {
    EXPECT_GE(row->held[i - 1].memory_bytes, row->held[i].memory_bytes);
  }
  EXPECT_EQ(kill_child(holder), 128 + SIGKILL);
}

TEST(HoldersTest, AReaderOfTheOldDaemonIsShownAfterARestart) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_int64(client, "a", kRows, 7);
  }
  Pipe holding;
  pid_t reader = spawn_holder(*daemon, {"a"}, holding);
  ASSERT_TRUE(holding.wait());
  daemon->kill9();
  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  const MemoryStats st = status_of(client);
  const ClientInfo* row = row_of(st, reader);
  ASSERT_NE(row, nullptr) << "the process still maps the segment";
  EXPECT_EQ(row->connections, 0u);
  EXPECT_EQ(row->uid, ::geteuid());
  // No Hello to say it: its name, from /proc.
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(row->command, name);
  ASSERT_EQ(st.unpublished.size(), 1u);
  EXPECT_TRUE(st.unpublished[0].restart_hold);
  const HeldDataset* h = held(*row, "a", false);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->leases, 0u);
  EXPECT_EQ(row->unpublished_bytes, st.unpublished[0].memory_bytes);
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return row_of(status_of(client), reader) == nullptr; }));
  EXPECT_TRUE(eventually([&] { return status_of(client).pending_free_bytes == 0; }));
}

}  // namespace
}  // namespace shelf::test
