// Resource exhaustion: a /dev/shm smaller than the limit, thousands of
// connections, tens of thousands of leases. Each is refused with a reason past its
// documented limit, and the daemon goes on serving everyone else.
#include <filesystem>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>
#include <shelf/limits.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

// Raises this process's open-files limit to `want` (or the hard limit).
rlim_t raise_open_files(rlim_t want) {
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = std::min(want, files.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &files);
  return files.rlim_cur;
}

TEST(ExhaustionTest, DevShmSmallerThanTheLimitIsRefusedAtStart) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a private /dev/shm";
  constexpr int kSkip = 77;
  const int code = run_in_child([] {
    if (!use_private_dev_shm("16m")) ::_exit(kSkip);
    const std::string name = unique_name();
    const std::string dir = "/tmp/" + name;
    std::filesystem::create_directory(dir);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
    CommandResult started = run_command({SHELFD_PATH, "--socket", dir + "/shelf.sock", "--segment",
                                         name, "--memory-limit", "64MiB", "--max-datasets", "16"});
    EXPECT_EQ(started.exit_code, 1);
    EXPECT_THAT(started.err, HasSubstr("/dev/shm has 16.00 MiB available, less than "
                                       "--memory-limit 64.00 MiB"));
    EXPECT_THAT(started.err, HasSubstr("lower --memory-limit or enlarge /dev/shm"));
    EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + name)) << "a refused start made a segment";
    EXPECT_FALSE(std::filesystem::exists(dir + "/shelf.sock"));
    std::filesystem::remove_all(dir);
  });
  if (code == kSkip) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(code, 0);
}

TEST(ExhaustionTest, ThousandsOfConnectionsAreRefusedPastTheLimitAndTheRestServed) {
  constexpr int kLimit = 1500;
  constexpr int kTries = 2000;
  // A client holds its socket and, for the mapping, the segment open.
  constexpr rlim_t kFiles = 3 * kTries + 64;
  if (raise_open_files(kFiles) < kFiles) GTEST_SKIP() << "open-files hard limit too low";
  auto daemon = TestDaemon::start({.memory_limit = "16MiB",
                                   .max_datasets = 16,
                                   .extra_args = {"--max-connections", std::to_string(kLimit)}});
  ASSERT_NE(daemon, nullptr);
  Client first = daemon->connect();
  publish_int64(first, "kept", 1000, 7);

  std::vector<Client> clients;
  int refused = 0;
  for (int i = 0; i < kTries; ++i) {
    auto c = Client::connect(daemon->client_options());
    if (c.ok()) {
      clients.push_back(std::move(c).value());
    } else {
      ++refused;
      ASSERT_EQ(c.status().code(), Status::Code::kUnavailable) << c.status().to_string();
      ASSERT_THAT(c.status().message(), HasSubstr("--max-connections"));
    }
  }
  EXPECT_EQ(clients.size() + 1, static_cast<size_t>(kLimit));
  EXPECT_EQ(refused, kTries - kLimit + 1);
  // Every connection that got in is served, the first and the last alike.
  expect_int64_published(first, "kept", 1000, 7);
  expect_int64_published(clients.back(), "kept", 1000, 7);
  EXPECT_EQ(status_of(first).num_connections, static_cast<uint32_t>(kLimit));

  clients.clear();
  EXPECT_TRUE(eventually([&] { return status_of(first).num_connections == 1; }));
  expect_daemon_serves(*daemon);
}

TEST(ExhaustionTest, LeasesPastThePerConnectionLimitAreRefusedAndTheDaemonServes) {
  // Past the lease table's slots, each lease is taken by a round trip and
  // counted against the limit.
  constexpr size_t kLimit = shelf::kMaxLeasesPerConnection;
  constexpr size_t kHeld = kLimit + shelf::kLeaseSlots;
  auto daemon = TestDaemon::start({.memory_limit = "16MiB", .max_datasets = 16, .extra_args = {}});
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "shared", 100, 3);

  std::vector<Dataset> held;
  held.reserve(kHeld);
  for (size_t i = 0; i < kHeld; ++i) {
    auto ds = client.get_dataset("shared");
    ASSERT_TRUE(ds.ok()) << "lease " << i << ": " << ds.status().to_string();
    held.push_back(std::move(ds).value());
  }
  auto refused = client.get_dataset("shared");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("holds " + std::to_string(kLimit) +
                                                    " leases, the most one connection may hold"));
  // The connection still works for everything else, and so does another.
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"shared"});
  Client other = daemon->connect();
  expect_int64_published(other, "shared", 100, 3);
  EXPECT_EQ(status_of(other).num_leases, kHeld);
  // One lease let go makes room for one more.
  held.pop_back();
  auto again = client.get_dataset("shared");
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  expect_int64_dataset(*again, 100, 3);
  held.clear();
  again->release();
  EXPECT_TRUE(eventually([&] { return status_of(other).num_leases == 0; }));
  expect_daemon_serves(*daemon);
}

}  // namespace
}  // namespace shelf::test
