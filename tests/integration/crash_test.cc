// Crash tests: SIGKILL a publisher or a reader at chosen points (pipes, and
// SHELF_FAULT_POINT in test builds) and check that nothing leaks, nothing
// half-made becomes visible, and the daemon goes on serving.
#include <signal.h>
#include <stdlib.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

constexpr uint64_t kRows = 256 * 1024;  // 2 MiB of int64 per partition

// What the daemon reported before the test's crash: everything must return to it.
struct Baseline {
  uint64_t used = 0;
  uint64_t resident = 0;
  std::vector<std::string> names;
};

Baseline baseline_of(Client& client, const TestDaemon& daemon) {
  return Baseline{status_of(client).used_bytes, daemon.resident_bytes(), listed_names(client)};
}

// After a crashed client: its session is closed (only `connections` remain),
// no unsealed memory, used and resident bytes as before, nothing new listed.
void expect_back_to(Client& client, const TestDaemon& daemon, const Baseline& before,
                    uint32_t connections = 1) {
  EXPECT_TRUE(eventually([&] { return status_of(client).num_connections == connections; }))
      << "the daemon did not notice the client's death";
  const MemoryStats st = status_once_freed(client);
  EXPECT_EQ(st.unsealed_bytes, 0u);
  EXPECT_EQ(st.used_bytes, before.used);
  EXPECT_EQ(daemon.resident_bytes(), before.resident) << "the pages were not given back";
  EXPECT_EQ(listed_names(client), before.names);
  expect_daemon_serves(daemon);
}

TEST(CrashTest, PublisherKilledMidBuildLeaksNothing) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "survivor", 1000, 3);
  const Baseline before = baseline_of(client, *daemon);

  Pipe written;
  pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    auto table = c.create_table({{"v", Type::kInt64}, {"s", Type::kString}});
    ASSERT_TRUE(table.ok());
    for (int p = 0; p < 2; ++p) {
      const uint64_t string_bytes[] = {kRows};
      auto part = table->add_partition(kRows, string_bytes);
      ASSERT_TRUE(part.ok()) << part.status().to_string();
      std::span<int64_t> v = part->values<int64_t>(0);
      for (uint64_t r = 0; r < kRows; ++r) v[r] = static_cast<int64_t>(r);
      StringColumnWriter s = part->strings(1);
      for (uint64_t r = 0; r < kRows / 2; ++r) ASSERT_TRUE(s.append("x").ok());
    }
    ASSERT_TRUE(written.signal());
    for (;;) ::pause();  // killed here, mid-build
  });
  ASSERT_TRUE(written.wait());
  const MemoryStats building = status_of(client);
  EXPECT_GE(building.unsealed_bytes, 2 * kRows * 9);
  EXPECT_EQ(building.used_bytes, before.used + building.unsealed_bytes);
  EXPECT_GE(daemon->resident_bytes(), before.resident + building.unsealed_bytes);
  EXPECT_EQ(kill_child(publisher), 128 + SIGKILL);

  expect_back_to(client, *daemon, before);
  expect_int64_published(client, "survivor", 1000, 3);
}

// SIGKILL inside publish_dataset, at a fault point of the client's seal.
class SealFaultTest : public ::testing::TestWithParam<const char*> {};

TEST_P(SealFaultTest, PublisherKilledInsideSealPublishesNothing) {
  const std::string point = GetParam();
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "survivor", 1000, 3);
  const Baseline before = baseline_of(client, *daemon);

  Pipe notify;
  pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder t = make_int64_table(c, kRows, 0, 2);
    ScopedFaultPoint armed(point, notify);
    Status s = c.publish_dataset("half-made", t);
    ADD_FAILURE() << "publish returned past the fault point: " << s.to_string();
  });
  auto reached = notify.read_line();
  ASSERT_TRUE(reached.has_value()) << "the publisher never reached " << point;
  EXPECT_EQ(*reached, point);
  // Stopped inside the seal: written (maybe), not published.
  EXPECT_EQ(listed_names(client), before.names);
  EXPECT_EQ(client.get_dataset("half-made").status().code(), Status::Code::kNotFound);
  EXPECT_GT(status_of(client).unsealed_bytes, 0u);
  EXPECT_EQ(kill_child(publisher), 128 + SIGKILL);

  expect_back_to(client, *daemon, before);
  EXPECT_EQ(client.get_dataset("half-made").status().code(), Status::Code::kNotFound);
  expect_int64_published(client, "survivor", 1000, 3);
}

INSTANTIATE_TEST_SUITE_P(ClientSeal, SealFaultTest,
                         ::testing::Values("client.seal.before_written",
                                           "client.seal.after_written"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           return std::string(param.param).substr(12);  // "before_written"
                         });

TEST(CrashTest, ReaderKilledWhileHoldingLeasesFreesThem) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Baseline empty = baseline_of(client, *daemon);
  publish_int64(client, "kept", kRows, 1);
  publish_int64(client, "dropped", kRows, 2);
  const Baseline with_kept_only = [&] {
    MemoryStats st = status_of(client);
    uint64_t dropped_bytes = 0;
    for (const DatasetInfo& d : st.datasets)
      dropped_bytes += d.name == "dropped" ? d.memory_bytes : 0;
    return Baseline{st.used_bytes - dropped_bytes, 0, {"kept"}};
  }();

  Pipe holding;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    auto kept = c.get_dataset("kept");
    auto dropped = c.get_dataset("dropped");
    auto dropped_again = c.get_dataset("dropped");  // two leases on one dataset
    ASSERT_TRUE(kept.ok() && dropped.ok() && dropped_again.ok());
    expect_int64_dataset(*dropped, kRows, 2);
    ASSERT_TRUE(holding.signal());
    for (;;) ::pause();
  });
  ASSERT_TRUE(holding.wait());
  EXPECT_EQ(status_of(client).num_leases, 3u);
  ASSERT_TRUE(client.unpublish_dataset("dropped").ok());
  MemoryStats st = status_of(client);
  EXPECT_GT(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.used_bytes, with_kept_only.used + st.pending_free_bytes);
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);

  EXPECT_TRUE(eventually([&] { return status_of(client).num_leases == 0; }))
      << "the dead reader's leases were not released";
  st = status_once_freed(client);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.used_bytes, with_kept_only.used);
  EXPECT_EQ(st.num_connections, 1u);
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.datasets[0].leases, 0u);
  expect_int64_published(client, "kept", kRows, 1);

  // With "kept" gone too, memory is exactly what it was at the start.
  ASSERT_TRUE(client.unpublish_dataset("kept").ok());
  EXPECT_EQ(status_of(client).used_bytes, empty.used);
  EXPECT_EQ(daemon->resident_bytes(), empty.resident);
}

TEST(CrashTest, DaemonKilledBeforePublishCommitsFailsThePublisherWithoutHanging) {
  // The fault point is in shelfd: it inherits the environment and the pipe
  // (not close-on-exec) from this process.
  Pipe notify(/*cloexec=*/false);
  auto daemon = start_daemon_stopping_at("daemon.publish.before_commit", notify);
  ASSERT_NE(daemon, nullptr);

  Pipe result;
  pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder t = make_int64_table(c, 1000, 0);
    Status s = c.publish_dataset("never", t);
    EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.to_string();
    // Every later call fails the same way, at once.
    EXPECT_EQ(c.list_datasets().status().code(), Status::Code::kUnavailable);
    EXPECT_EQ(c.get_dataset("never").status().code(), Status::Code::kUnavailable);
    ASSERT_TRUE(result.signal());
  });
  auto reached = notify.read_line();
  ASSERT_TRUE(reached.has_value()) << "shelfd never reached its fault point";
  EXPECT_EQ(*reached, "daemon.publish.before_commit");
  daemon->kill9();
  EXPECT_FALSE(daemon->alive());
  EXPECT_TRUE(result.wait()) << "the publisher hung on a dead daemon";
  EXPECT_EQ(wait_child(publisher), 0);
  EXPECT_EQ(Client::connect(daemon->client_options()).status().code(), Status::Code::kUnavailable);
}

}  // namespace
}  // namespace shelf::test
