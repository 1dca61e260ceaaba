// parallel_for and threads_for (base/parallel.h).
#include "base/parallel.h"

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace shelf {
namespace {

TEST(ParallelForTest, CallsEveryIndexOnceWhateverTheThreads) {
  for (unsigned threads : {0u, 1u, 2u, 3u, 8u, 64u}) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{1000}}) {
      std::vector<std::atomic<int>> calls(count);
      parallel_for(count, threads, [&](size_t i) { calls[i].fetch_add(1); });
      for (size_t i = 0; i < count; ++i) {
        EXPECT_EQ(calls[i].load(), 1) << "index " << i << " of " << count << ", " << threads;
      }
    }
  }
}

TEST(ParallelForTest, RunsOnSeveralThreadsTheCallerIncluded) {
  std::mutex mu;
  std::set<std::thread::id> seen;
  std::atomic<int> waiting{0};
  // Each of the first two calls waits until both have begun: only two
  // threads at once can finish them.
  parallel_for(2, 2, [&](size_t) {
    {
      std::lock_guard lock(mu);
      seen.insert(std::this_thread::get_id());
    }
    waiting.fetch_add(1);
    while (waiting.load() < 2) std::this_thread::yield();
  });
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen.count(std::this_thread::get_id()), 1u);
}

TEST(ParallelForTest, AnExceptionIsRethrownOnTheCallingThreadAfterTheOthersStop) {
  std::atomic<int> running{0};
  EXPECT_THROW(parallel_for(100, 4,
                            [&](size_t i) {
                              running.fetch_add(1);
                              if (i == 3) throw std::runtime_error("three");
                              running.fetch_sub(1);
                            }),
               std::runtime_error);
  // Every call but the throwing one ran to its end before the rethrow.
  EXPECT_EQ(running.load(), 1);
}

TEST(ThreadsForTest, OneThreadPerShareUpToOnePerCore) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  EXPECT_EQ(threads_for(0, 32), 1u);
  EXPECT_EQ(threads_for(31, 32), 1u);
  EXPECT_EQ(threads_for(64, 32), std::min(2u, cores));
  EXPECT_EQ(threads_for(uint64_t{1} << 40, 1), cores);
  EXPECT_EQ(threads_for(5, 0), std::min(5u, cores));
}

}  // namespace
}  // namespace shelf
