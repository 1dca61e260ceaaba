// The daemon's life: killed with SIGKILL (clients fail fast, a new daemon
// takes over the stale socket and segment) and refusing a second instance.
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> shelfd_args(const TestDaemon& d) {
  return {SHELFD_PATH,      "--socket", d.socket(),       "--segment", d.segment(),
          "--memory-limit", "64MiB",    "--max-datasets", "256"};
}

// Stops the shelfd whose pid is in <socket>.lock with SIGTERM and waits until
// it is gone: it holds an flock on that file until it exits.
void stop_shelfd(const std::string& socket) {
  UniqueFd lock(::open((socket + ".lock").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(lock.valid()) << "no " << socket << ".lock";
  pid_t pid = 0;
  std::ifstream(socket + ".lock") >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ASSERT_EQ(::flock(lock.get(), LOCK_EX), 0);
  shelf::test::wait_for_exit(pid);
}

// Stops a shelfd this test started itself, also when an ASSERT ends the test
// early, so no daemon outlives the test.
class ShelfdGuard {
 public:
  explicit ShelfdGuard(std::string socket) : socket_(std::move(socket)) {}
  ~ShelfdGuard() { stop(); }
  void stop() {
    if (!socket_.empty()) stop_shelfd(std::exchange(socket_, std::string()));
  }

 private:
  std::string socket_;
};

TEST(DaemonTest, KilledDaemonFailsClientsFastAndANewOneTakesOverItsSocket) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  const std::string segment_path = "/dev/shm/" + daemon->segment();

  // A client in another process holds a lease when the daemon dies.
  Pipe holding, go, finished;
  pid_t client_proc = spawn_child([&] {
    Client c = daemon->connect();
    publish_int64(c, "before-crash", 10'000, 4);
    auto ds = c.get_dataset("before-crash");
    ASSERT_TRUE(ds.ok());
    ASSERT_TRUE(holding.signal());
    ASSERT_TRUE(go.wait());
    // The daemon is dead: every call fails with Unavailable, not a hang.
    auto st = c.status();
    EXPECT_EQ(st.status().code(), Status::Code::kUnavailable) << st.status().to_string();
    EXPECT_EQ(c.get_dataset("before-crash").status().code(), Status::Code::kUnavailable);
    EXPECT_EQ(c.list_datasets().status().code(), Status::Code::kUnavailable);
    EXPECT_EQ(c.unpublish_dataset("before-crash").code(), Status::Code::kUnavailable);
    auto table = c.create_table({{"v", Type::kInt64}});
    if (table.ok()) {
      EXPECT_EQ(table->add_partition(10).status().code(), Status::Code::kUnavailable);
    }
    // The mapping this process already holds stays readable.
    expect_int64_dataset(*ds, 10'000, 4);
    ASSERT_TRUE(finished.signal());
  });
  ASSERT_TRUE(holding.wait());
  Client parent = daemon->connect();
  daemon->kill9();
  EXPECT_FALSE(daemon->alive());
  ASSERT_TRUE(go.signal());
  EXPECT_TRUE(finished.wait()) << "a client call hung on the dead daemon";
  EXPECT_EQ(wait_child(client_proc), 0);
  EXPECT_EQ(parent.status().status().code(), Status::Code::kUnavailable);

  // Nothing cleaned up after the SIGKILL: the socket file is stale.
  EXPECT_TRUE(exists(daemon->socket()));
  auto refused = Client::connect(daemon->client_options());
  EXPECT_EQ(refused.status().code(), Status::Code::kUnavailable) << refused.status().to_string();
  EXPECT_THAT(refused.status().message(), HasSubstr(daemon->socket()));

  // A new shelfd on the same socket and segment replaces the stale socket
  // and serves what was published before the crash.
  CommandResult started = run_command(shelfd_args(*daemon));
  ASSERT_EQ(started.exit_code, 0) << started.err;
  ShelfdGuard restarted(daemon->socket());
  EXPECT_THAT(started.out, HasSubstr("serving " + daemon->socket()));
  EXPECT_THAT(started.out, HasSubstr("1 datasets served again"));
  {
    Client c = daemon->connect();
    EXPECT_EQ(listed_names(c), std::vector<std::string>{"before-crash"});
    expect_int64_published(c, "before-crash", 10'000, 4);
    const MemoryStats st = status_of(c);
    EXPECT_EQ(st.segment_name, daemon->segment());
    EXPECT_NE(st.daemon_pid, static_cast<uint32_t>(daemon->pid()));
    EXPECT_EQ(st.num_leases, 0u) << "leases do not survive the daemon";
    publish_int64(c, "after-restart", 1000, 8);
    Client reader = daemon->connect();
    expect_int64_published(reader, "after-restart", 1000, 8);
  }
  restarted.stop();
  EXPECT_TRUE(exists(segment_path)) << "a stopped daemon keeps its segment for the next one";
  EXPECT_FALSE(exists(daemon->socket()));
  EXPECT_FALSE(exists(daemon->socket() + ".lock"));
}

TEST(DaemonTest, SecondDaemonOnTheSameSocketIsRefused) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "first", 1000, 1);
  const uint64_t resident = daemon->resident_bytes();

  // Same socket and same segment: the running daemon's must stay untouched.
  CommandResult second = run_command(shelfd_args(*daemon));
  EXPECT_NE(second.exit_code, 0);
  EXPECT_THAT(second.err, HasSubstr("already serves"));
  EXPECT_THAT(second.err, HasSubstr(std::to_string(daemon->pid())));
  // In the foreground too, and with a segment of its own.
  std::vector<std::string> args = {SHELFD_PATH, "--socket",    daemon->socket(),
                                   "--segment", unique_name(), "--memory-limit",
                                   "64MiB",     "--foreground"};
  CommandResult third = run_command(args);
  EXPECT_NE(third.exit_code, 0);
  EXPECT_THAT(third.err, HasSubstr("already serves"));
  EXPECT_FALSE(exists("/dev/shm/" + args[4])) << "the refused daemon created its segment";

  EXPECT_TRUE(daemon->alive());
  EXPECT_TRUE(exists(daemon->socket()));
  EXPECT_EQ(daemon->resident_bytes(), resident);
  expect_int64_published(client, "first", 1000, 1);
  Client another = daemon->connect();
  expect_int64_published(another, "first", 1000, 1);
  expect_daemon_serves(*daemon);
}

// Under a small open-files limit shelfd keeps --max-connections below it, so
// the clients past it are told why instead of meeting a daemon that has run
// out of descriptors (which once made it spin and flood its log).
TEST(DaemonTest, ClientsPastTheOpenFilesLimitAreRefusedWithAReason) {
  const std::string name = unique_name();
  const std::string dir = "/tmp/" + name;
  std::filesystem::create_directory(dir);
  const std::string socket = dir + "/shelf.sock";
  CommandResult started = run_command(
      {"/bin/sh", "-c",
       std::string("ulimit -n 40 && exec ") + SHELFD_PATH + " --socket " + socket + " --segment " +
           name + " --memory-limit 8MiB --max-datasets 16 --remove-segment-on-exit"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  {
    ShelfdGuard guard(socket);
    ClientOptions options;
    options.socket = socket;
    std::vector<Client> clients;
    int refused = 0;
    for (int i = 0; i < 30; ++i) {
      auto c = Client::connect(options);
      if (c.ok()) {
        clients.push_back(std::move(c).value());
      } else {
        ++refused;
        EXPECT_EQ(c.status().code(), Status::Code::kUnavailable);
        EXPECT_THAT(c.status().message(), HasSubstr("--max-connections"));
      }
    }
    EXPECT_EQ(clients.size(), 20u);  // 40 descriptors, less 20 kept for shelfd itself
    EXPECT_EQ(refused, 10);
    clients.clear();
    // Served again once clients leave, and its log stayed small.
    EXPECT_TRUE(eventually([&] { return Client::connect(options).ok(); }));
    auto c = Client::connect(options);
    ASSERT_TRUE(c.ok());
    publish_int64(*c, "after", 100, 1);
    expect_int64_published(*c, "after", 100, 1);
    EXPECT_LT(std::filesystem::file_size(socket + ".log"), 64u * 1024);
  }
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(exists("/dev/shm/" + name)) << "--remove-segment-on-exit left the segment";
}

}  // namespace
}  // namespace shelf::test
