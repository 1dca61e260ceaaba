// shelfd's event loop under a publisher of large datasets: nothing slow may
// run on it (hole punching and the checks of a large publish go to the
// segment worker), or every other client waits. Not a timing test: shelfd
// counts its own loop's turns (shelf_loop_turn_seconds, docs/monitoring.md),
// and the test counts those beyond a generous bound, 10 ms, a thousand
// times a usual turn. Punching 256 MiB of 4 KiB pages takes 30-45 ms here,
// so a punch (or a publish check) back on the loop fails it four times over.
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

// The value of series `series` in the Prometheus text `metrics`.
double metric(const std::string& metrics, const std::string& series) {
  const size_t at = metrics.find("\n" + series + " ");
  EXPECT_NE(at, std::string::npos) << series << " is not in:\n" << metrics;
  return at == std::string::npos ? -1 : std::stod(metrics.substr(at + series.size() + 2));
}

TEST(LoopTest, APublisherOfLargeDatasetsNeverStallsTheLoop) {
  TestDaemon::Options options;
  options.memory_limit = "768MiB";
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  constexpr int kRounds = 4;
  constexpr uint64_t kRows = (uint64_t{256} << 20) / 8;  // 256 MiB of int64
  const pid_t publisher = ::fork();
  ASSERT_GE(publisher, 0);
  if (publisher == 0) {
    Client c = daemon->connect();
    for (int r = 0; r < kRounds; ++r) {
      TableBuilder t = c.create_table({{"v", Type::kInt64}}).value();
      if (!t.add_partition(kRows).ok() || !c.publish_dataset("big", t).ok() ||
          !c.unpublish_dataset("big").ok()) {
        ::_exit(1);
      }
    }
    ::_exit(0);
  }
  // Meanwhile this process keeps asking: a stall would be felt here too.
  Client client = daemon->connect();
  uint64_t requests = 0;
  int status = 0;
  while (::waitpid(publisher, &status, WNOHANG) == 0) {
    ASSERT_TRUE(client.status().ok());
    ++requests;
  }
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The last unpublish's memory comes back on the worker.
  for (int waited = 0; client.status().value().pending_free_bytes > 0; ++waited) {
    ASSERT_LT(waited, 10000) << "the memory never came back";
    ::usleep(1000);
  }
  EXPECT_GT(requests, 0u);

  const CommandResult r = run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "metrics"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double turns = metric(r.out, "shelf_loop_turn_seconds_count");
  const double within_10ms = metric(r.out, "shelf_loop_turn_seconds_bucket{le=\"0.01\"}");
  EXPECT_GT(turns, static_cast<double>(requests)) << "every status() took a turn";
  // Allow two: on a busy machine the loop itself may wait for a core.
  EXPECT_LE(turns - within_10ms, 2) << "turns over 10 ms, of " << turns << "; the longest "
                                    << metric(r.out, "shelf_loop_turn_max_seconds") << " s";
}

}  // namespace
}  // namespace shelf::test
