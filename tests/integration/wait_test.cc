// Waiting for datasets (Client::wait_for_dataset, `shelf wait`): waiters in
// other processes, woken by the daemon when a publish commits. Real shelfd,
// real child processes, real kill -9. No test asserts how fast a waiter
// wakes (bench/shelf_bench.cc measures that); each asserts that it does, and
// with the right data.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <optional>
#include <unistd.h>

#include <gtest/gtest.h>

#include <shelf/limits.h>

#include "tests/integration/integration_util.h"

namespace shelf::test {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class WaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
  }
  uint32_t connections() {
    Client c = daemon_->connect();
    return status_of(c).num_connections - 1;  // not this one
  }
  // Until the daemon holds `n` connections besides the asker's: a waiter
  // holds two (its Client's and the one its wait is parked on).
  void expect_connections(uint32_t n) {
    ASSERT_TRUE(eventually([&] { return connections() == n; })) << connections();
  }
  CommandResult shelf(std::vector<std::string> args) {
    args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", daemon_->socket()});
    return run_command(args);
  }
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(WaitTest, AWaiterInAnotherProcessIsWokenByAPublishAndReadsIt) {
  const std::string name = unique_name();
  pid_t waiter = spawn_child([&] {
    Client c = daemon_->connect();
    auto ds = c.wait_for_dataset(name, kWaitTimeout);
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    expect_int64_dataset(*ds, 1000, 7);
  });
  expect_connections(2);  // parked: the publish below is what wakes it
  Client publisher = daemon_->connect();
  publish_int64(publisher, name, 1000, 7);
  EXPECT_EQ(wait_child(waiter), 0);
  expect_connections(1);  // the waiter's connections are gone with it
}

TEST_F(WaitTest, WaitingForPublishedNamesReturnsAtOnce) {
  const std::string a = unique_name(), b = unique_name();
  Client c = daemon_->connect();
  publish_int64(c, a, 10, 1);
  publish_int64(c, b, 20, 2);
  const std::string names[] = {a, b};
  EXPECT_TRUE(c.wait_for_datasets(names, std::chrono::milliseconds(0)).ok());
  auto ds = c.wait_for_dataset(b);  // no timeout: it must not need one
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  expect_int64_dataset(*ds, 20, 2);
}

TEST_F(WaitTest, ATimeoutIsTimedOutNamingWhatIsMissing) {
  const std::string here = unique_name(), missing = unique_name();
  Client c = daemon_->connect();
  publish_int64(c, here, 10, 1);
  const std::string names[] = {here, missing};
  Status s = c.wait_for_datasets(names, std::chrono::milliseconds(50));
  EXPECT_EQ(s.code(), Status::Code::kTimedOut);
  EXPECT_TRUE(contains(s.message(), "timed out")) << s.message();
  EXPECT_TRUE(contains(s.message(), "'" + missing + "'")) << s.message();
  EXPECT_FALSE(contains(s.message(), "'" + here + "'")) << s.message();
  auto ds = c.wait_for_dataset(missing, std::chrono::milliseconds(50));
  EXPECT_EQ(ds.status().code(), Status::Code::kTimedOut);
  // The timed-out waits' connections closed, and the daemon dropped them:
  // a later publish of the name wakes nobody and works.
  expect_connections(1);
  publish_int64(c, missing, 5, 3);
  expect_int64_published(c, missing, 5, 3);
}

TEST_F(WaitTest, AnInterruptionCheckEndsAWaitWithoutATimeout) {
  const std::string missing = unique_name();
  const std::string names[] = {missing};
  Client c = daemon_->connect();
  int calls = 0;
  const auto third_call = [&calls] { return ++calls == 3; };
  // A timeout far past what the test allows: the check is what ends the wait.
  const auto start = std::chrono::steady_clock::now();
  Status s = c.wait_for_datasets(names, 3 * kWaitTimeout, third_call);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), Status::Code::kTimedOut) << s.to_string();
  EXPECT_TRUE(contains(s.message(), "interrupted while waiting")) << s.message();
  EXPECT_TRUE(contains(s.message(), "'" + missing + "'")) << s.message();
  EXPECT_EQ(calls, 3);
  EXPECT_LT(took, kWaitTimeout);  // about 3 * kWaitCheckMs
  // No timeout at all: wait_for_dataset too ends on the check's third true...
  // in a child, which SIGALRM ends should the check never be called.
  pid_t waiter = spawn_child([&] {
    Client w = daemon_->connect();
    int child_calls = 0;
    auto ds = w.wait_for_dataset(missing, std::nullopt, [&] { return ++child_calls == 3; });
    EXPECT_EQ(ds.status().code(), Status::Code::kTimedOut) << ds.status().to_string();
    EXPECT_EQ(child_calls, 3);
  });
  EXPECT_EQ(wait_child(waiter), 0);
  // The interrupted waits' connections are closed: only `c` is left.
  expect_connections(1);
  publish_int64(c, missing, 5, 3);
  expect_int64_published(c, missing, 5, 3);
}

TEST_F(WaitTest, TwentyWaitersInTwentyProcessesAreAllWoken) {
  const std::string first = unique_name(), second = unique_name();
  constexpr int kWaiters = 20;
  std::vector<pid_t> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(spawn_child([&, i] {
      Client c = daemon_->connect();
      // Half wait for both names in one wait, half for the second alone.
      if (i % 2 == 0) {
        const std::string both[] = {first, second};
        ASSERT_TRUE(c.wait_for_datasets(both, kWaitTimeout).ok());
      }
      auto ds = c.wait_for_dataset(second, kWaitTimeout);
      ASSERT_TRUE(ds.ok()) << ds.status().to_string();
      expect_int64_dataset(*ds, 100, 42);
    }));
  }
  expect_connections(2 * kWaiters);
  Client publisher = daemon_->connect();
  publish_int64(publisher, first, 10, 1);  // wakes nobody yet: all wait for `second`
  publish_int64(publisher, second, 100, 42);
  for (pid_t w : waiters) EXPECT_EQ(wait_child(w), 0);
}

TEST_F(WaitTest, AWaiterKilledWithKill9LeavesTheDaemonServingAndItsWaitsGone) {
  const std::string name = unique_name();
  pid_t waiter = spawn_child([&] {
    Client c = daemon_->connect();
    (void)c.wait_for_dataset(name, kWaitTimeout);
  });
  expect_connections(2);
  EXPECT_EQ(kill_child(waiter), 128 + SIGKILL);
  expect_connections(0);  // both of its connections closed, the parked one too
  Client c = daemon_->connect();
  publish_int64(c, name, 10, 9);  // the dead waiter's wait is not woken: it is gone
  expect_int64_published(c, name, 10, 9);
  expect_daemon_serves(*daemon_);
  EXPECT_TRUE(daemon_->alive());
}

TEST_F(WaitTest, AWaiterIsToldWhenTheDaemonDies) {
  const std::string name = unique_name();
  pid_t waiter = spawn_child([&] {
    Client c = daemon_->connect();
    auto ds = c.wait_for_dataset(name, kWaitTimeout);
    EXPECT_EQ(ds.status().code(), Status::Code::kUnavailable) << ds.status().to_string();
  });
  expect_connections(2);
  daemon_->kill9();
  EXPECT_EQ(wait_child(waiter), 0);
}

TEST_F(WaitTest, ShelfWaitOutlivesARestartOfTheDaemon) {
  const std::string name = unique_name();
  const std::string socket = daemon_->socket();
  pid_t waiter = spawn_child([&] {
    CommandResult r = run_command({SHELF_CLI_PATH, "--socket", socket, "wait", name, "--timeout",
                                   std::to_string(kWaitTimeout.count() / 1000)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  });
  expect_connections(2);
  daemon_->kill9();
  CommandResult restarted = daemon_->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  Client c = daemon_->connect();
  publish_int64(c, name, 10, 4);
  EXPECT_EQ(wait_child(waiter), 0);
}

TEST_F(WaitTest, ShelfWaitExitsZeroOncePublishedAndOneAtItsTimeout) {
  const std::string a = unique_name(), b = unique_name(), c_name = unique_name();
  Client c = daemon_->connect();
  publish_int64(c, a, 10, 1);
  CommandResult r = shelf({"wait", a});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = shelf({"wait", a, b, c_name, "--timeout", "0.2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'" + b + "', '" + c_name + "'")) << r.err;
  EXPECT_FALSE(contains(r.err, "'" + a + "'")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  pid_t waiter = spawn_child([&] {
    CommandResult w =
        run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "wait", b, "--timeout", "20"});
    EXPECT_EQ(w.exit_code, 0) << w.err;
  });
  expect_connections(3);  // the waiter's two and `c`
  publish_int64(c, b, 10, 2);
  EXPECT_EQ(wait_child(waiter), 0);
}

// The README's promise: `shelf wait` started before any shelfd has served
// its socket keeps trying, then waits on the one that starts.
TEST_F(WaitTest, ShelfWaitWaitsForAShelfdNotStartedYet) {
  std::unique_ptr<TestDaemon> later = TestDaemon::unstarted();
  const std::string name = unique_name();
  const std::string socket = later->socket();
  Pipe stderr_pipe;
  pid_t waiter = spawn_child([&] {
    // shelf's own stderr, read by the test as it is written.
    ::dup2(stderr_pipe.write_fd(), STDERR_FILENO);
    ::execl(SHELF_CLI_PATH, SHELF_CLI_PATH, "--socket", socket.c_str(), "wait", name.c_str(),
            "--timeout", "20", static_cast<char*>(nullptr));
    ::_exit(127);
  });
  stderr_pipe.close_write();
  // Its one line saying there is no daemon: it ran before any existed.
  std::optional<std::string> told = stderr_pipe.read_line();
  ASSERT_TRUE(told.has_value());
  EXPECT_TRUE(contains(*told, "still waiting")) << *told;
  CommandResult started = later->restart();
  ASSERT_EQ(started.exit_code, 0) << started.err;
  Client c = later->connect();
  publish_int64(c, name, 10, 6);
  EXPECT_EQ(wait_child(waiter), 0);
  EXPECT_FALSE(stderr_pipe.read_line().has_value());  // and nothing more said: EOF
}

TEST_F(WaitTest, ShelfWaitRefusesBadArgumentsWithExitTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"wait"},
           {"wait", "x", "--timeout", "-1"},
           {"wait", "x", "--timeout", "soon"},
           {"wait", "x", "--timeout"},
           {"wait", "x", "--bogus"},
       }) {
    CommandResult r = shelf(args);
    EXPECT_EQ(r.exit_code, 2) << args.back() << ": " << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  Client c = daemon_->connect();
  EXPECT_EQ(c.wait_for_datasets({}).code(), Status::Code::kInvalidArgument);
  const std::string bad[] = {std::string("a\nb")};
  EXPECT_EQ(c.wait_for_datasets(bad, kWaitTimeout).code(), Status::Code::kInvalidArgument);
  std::vector<std::string> too_many(kMaxWaitNames + 1, "x");
  EXPECT_EQ(c.wait_for_datasets(too_many).code(), Status::Code::kInvalidArgument);
  expect_daemon_serves(*daemon_);
}

}  // namespace
}  // namespace shelf::test
