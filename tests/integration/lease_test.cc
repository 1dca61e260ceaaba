// Leases taken in the connection's lease table, without a message
// (docs/leases.md): real shelfd, real reader and publisher processes, and
// kill -9 between each step of both sides of the protocol.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <sys/mman.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>
#include <shelf/limits.h>

#include "tests/integration/integration_util.h"

namespace shelf::test {
namespace {

constexpr uint64_t kRows = 64 * 1024;  // 512 KiB a dataset: a few pages to punch

// What the daemon holds once `name`s are gone and every reader let go.
struct Usage {
  uint64_t used = 0;
  uint64_t resident = 0;
};
Usage usage_of(Client& client, const TestDaemon& daemon) {
  return Usage{status_of(client).used_bytes, daemon.resident_bytes()};
}
// Eventually nothing pending, used and resident as in `before`.
void expect_freed_back_to(Client& client, const TestDaemon& daemon, const Usage& before) {
  EXPECT_TRUE(eventually([&] { return status_of(client).pending_free_bytes == 0; }))
      << "still pending: " << status_of(client).pending_free_bytes;
  EXPECT_EQ(status_of(client).used_bytes, before.used);
  EXPECT_TRUE(eventually([&] { return daemon.resident_bytes() == before.resident; }))
      << "the pages were not given back";
}

TEST(LeaseTest, AGetNeedsNoAnswerFromTheDaemon) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 5);
  // A round trip to a stopped daemon would time out: a get must not need one.
  ClientOptions options = daemon->client_options();
  options.request_timeout = std::chrono::milliseconds(500);
  auto reader = Client::connect(options);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  ASSERT_EQ(::kill(daemon->pid(), SIGSTOP), 0);
  {
    auto ds = reader->get_dataset("a");
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    expect_int64_dataset(*ds, kRows, 5);
  }  // released: a store, no message either
  auto again = reader->get_dataset("a");
  EXPECT_TRUE(again.ok()) << again.status().to_string();
  ASSERT_EQ(::kill(daemon->pid(), SIGCONT), 0);
  EXPECT_EQ(status_of(client).num_leases, 1u);
}

TEST(LeaseTest, TableLeasesAreCountedInStatusAndList) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", 100, 1);
  {
    auto one = client.get_dataset("a");
    auto two = client.get_dataset("a");
    ASSERT_TRUE(one.ok() && two.ok());
    const MemoryStats st = status_of(client);
    EXPECT_EQ(st.num_leases, 2u);
    ASSERT_EQ(st.datasets.size(), 1u);
    EXPECT_EQ(st.datasets[0].leases, 2u);
  }
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.num_leases, 0u);
  EXPECT_EQ(st.datasets[0].leases, 0u);
}

TEST(LeaseTest, AnUnpublishedDatasetStaysUntilItsReaderLetsGo) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  publish_int64(client, "a", kRows, 7);

  Pipe holding, unpublished, released;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    std::optional<Dataset> ds = c.get_dataset("a").value();
    holding.signal();
    ASSERT_TRUE(unpublished.wait());
    expect_int64_dataset(*ds, kRows, 7);  // every byte still there
    ds.reset();
    released.signal();
    for (;;) ::pause();  // the connection stays open: the release alone frees it
  });
  ASSERT_TRUE(holding.wait());
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  const MemoryStats held = status_of(client);
  EXPECT_GT(held.pending_free_bytes, 2 * kRows * sizeof(int64_t) / 2);
  EXPECT_GT(held.used_bytes, empty.used);
  unpublished.signal();
  ASSERT_TRUE(released.wait());
  expect_freed_back_to(client, *daemon, empty);
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);
}

TEST(LeaseTest, AnOverrideUnderAReaderKeepsTheOldBytes) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "a", kRows, 1);
  const Usage one_version = usage_of(client, *daemon);
  std::optional<Dataset> old = client.get_dataset("a").value();
  TableBuilder next = make_int64_table(client, kRows, 2);
  ASSERT_TRUE(client.publish_dataset("a", next, PublishOptions{true}).ok());
  EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  expect_int64_dataset(*old, kRows, 1);
  expect_int64_published(client, "a", kRows, 2);
  old.reset();
  expect_freed_back_to(client, *daemon, one_version);
}

// A reader stopped (then killed) at each step of taking and ending a lease.
class ReaderFaultTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ReaderFaultTest, AReaderKilledBetweenStepsLeaksNothing) {
  const std::string point = GetParam();
  const bool releasing = point == "client.lease.after_clear";
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  publish_int64(client, "a", kRows, 3);

  Pipe notify, holding, go;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    std::optional<ScopedFaultPoint> armed;
    if (!releasing) armed.emplace(point, notify);
    std::optional<Dataset> ds = c.get_dataset("a").value();  // stops inside, unless releasing
    holding.signal();
    ASSERT_TRUE(go.wait());
    armed.emplace(point, notify);
    ds.reset();  // stops inside
    ADD_FAILURE() << "the reader ran past " << point;
  });
  if (releasing) {
    ASSERT_TRUE(holding.wait());
    ASSERT_TRUE(client.unpublish_dataset("a").ok());
    EXPECT_GT(status_of(client).pending_free_bytes, 0u);
    go.signal();
  }
  auto reached = notify.read_line();
  ASSERT_TRUE(reached.has_value()) << "the reader never reached " << point;
  EXPECT_EQ(*reached, point);
  if (releasing) {
    // The slot is empty but no LeaseReleased came, and the connection is
    // open: the daemon's next look (kHoldRecheckMs) frees it.
    expect_freed_back_to(client, *daemon, empty);
  } else {
    // The slot names the dataset: it is held until the reader is gone.
    ASSERT_TRUE(client.unpublish_dataset("a").ok());
    EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  }
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return status_of(client).num_connections == 1; }));
  expect_freed_back_to(client, *daemon, empty);
  expect_daemon_serves(*daemon);
}

INSTANTIATE_TEST_SUITE_P(Steps, ReaderFaultTest,
                         ::testing::Values("client.lease.after_set", "client.lease.after_fence",
                                           "client.lease.after_clear"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           return std::string(param.param).substr(13);  // "after_set"
                         });

// shelfd killed between the steps of freeing: after the index change, before
// the scan; after the scan, before the free. A reader that leased the
// dataset in its table reads it intact after the restart.
class DaemonFaultTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DaemonFaultTest, ADaemonKilledWhileFreeingHurtsNoReader) {
  const std::string point = GetParam();
  Pipe notify(/*cloexec=*/false);
  auto daemon = start_daemon_stopping_at(point, notify);
  ASSERT_NE(daemon, nullptr);
  Usage empty;
  {
    Client client = daemon->connect();
    empty = usage_of(client, *daemon);
    publish_int64(client, "a", kRows, 11);
    publish_int64(client, "b", kRows, 12);
  }
  Pipe holding, restarted;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    // "b" leased in the table; "a" is what the unpublish below stops in.
    std::optional<Dataset> b = c.get_dataset("b").value();
    holding.signal();
    ASSERT_TRUE(restarted.wait());
    expect_int64_dataset(*b, kRows, 12);
  });
  ASSERT_TRUE(holding.wait());
  pid_t unpublisher = spawn_child([&] {
    Client c = daemon->connect();
    (void)c.unpublish_dataset(point == "daemon.retire.before_free" ? "a" : "b");
  });
  auto reached = notify.read_line();
  ASSERT_TRUE(reached.has_value()) << "shelfd never reached " << point;
  daemon->kill9();
  EXPECT_EQ(wait_child(unpublisher), 0);
  ASSERT_EQ(daemon->restart().exit_code, 0);
  restarted.signal();
  EXPECT_EQ(wait_child(reader), 0);
  Client client = daemon->connect();
  // Whatever is still published is intact; once the old reader is gone,
  // everything else is freed.
  for (const std::string& name : listed_names(client)) {
    expect_int64_published(client, name, kRows, name == "a" ? 11 : 12);
  }
  for (const std::string& name : listed_names(client)) {
    ASSERT_TRUE(client.unpublish_dataset(name).ok());
  }
  expect_freed_back_to(client, *daemon, empty);
}

INSTANTIATE_TEST_SUITE_P(Steps, DaemonFaultTest,
                         ::testing::Values("daemon.retire.before_scan",
                                           "daemon.retire.before_free"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           return std::string(param.param).substr(14);  // "before_scan"
                         });

// A list reads every dataset's descriptor without the daemon. A dataset
// unpublished under a list stays until the list is done or its process is
// gone: freed, its descriptor would be a hole, and the list's read of it
// would fault in a page that nothing gives back (in CI, NameIndexTest's
// churn once left one page resident beyond what was in use).
class ListerEndTest : public ::testing::TestWithParam<bool> {};

TEST_P(ListerEndTest, ADatasetUnpublishedUnderAListStaysUntilTheListEnds) {
  const bool killed = GetParam();
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  publish_int64(client, "a", kRows, 3);
  Pipe notify;
  pid_t lister = spawn_child([&] {
    Client c = daemon->connect();
    ScopedFaultPoint armed("client.list.after_mark", notify);
    auto listed = c.list_datasets();  // stops after each attempt's mark
    ASSERT_TRUE(listed.ok()) << listed.status().to_string();
    EXPECT_TRUE(listed->empty()) << "the list did not read the index as unpublished";
  });
  ASSERT_EQ(notify.read_line(), "client.list.after_mark");
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  EXPECT_GT(status_of(client).pending_free_bytes, 0u) << "freed under a list that may read it";
  if (killed) {
    EXPECT_EQ(kill_child(lister), 128 + SIGKILL);
  } else {
    // The attempt marked before the unpublish is thrown away, and the next
    // one is marked anew.
    ASSERT_TRUE(resume_when_stopped(lister));
    ASSERT_EQ(notify.read_line(), "client.list.after_mark");
    ASSERT_TRUE(resume_when_stopped(lister));
    EXPECT_EQ(wait_child(lister), 0);
  }
  expect_freed_back_to(client, *daemon, empty);
  expect_daemon_serves(*daemon);
}

INSTANTIATE_TEST_SUITE_P(Ends, ListerEndTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "Killed" : "Done";
                         });

TEST(LeaseTest, AForkedChildNeverTouchesItsParentsLeases) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  publish_int64(client, "a", kRows, 4);
  Client parent = daemon->connect();
  std::optional<Dataset> ds = parent.get_dataset("a").value();
  const int child = run_in_child([&] {
    auto got = parent.get_dataset("a");
    EXPECT_EQ(got.status().code(), Status::Code::kUnavailable) << got.status().to_string();
    EXPECT_NE(got.status().message().find("fork"), std::string::npos);
    // A connection of the child's own works, and dropping what it inherited
    // (the copy of the parent's lease and table) neither ends the parent's
    // lease nor unmaps anything of the child's.
    Client own = daemon->connect();
    std::optional<Dataset> mine = own.get_dataset("a").value();
    ds.reset();
    { Client dropped = std::move(parent); }
    expect_int64_dataset(*mine, kRows, 4);
    mine.reset();
    expect_int64_published(own, "a", kRows, 4);
  });
  EXPECT_EQ(child, 0);
  EXPECT_EQ(status_of(client).num_leases, 1u);
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  expect_int64_dataset(*ds, kRows, 4);
  ds.reset();
  expect_freed_back_to(client, *daemon, empty);
}

TEST(LeaseTest, AFullTableFallsBackToRoundTrips) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  publish_int64(client, "a", 100, 9);
  std::vector<Dataset> held;
  const uint32_t n = kLeaseSlots + 10;
  for (uint32_t i = 0; i < n; ++i) {
    auto ds = client.get_dataset("a");
    ASSERT_TRUE(ds.ok()) << i << ": " << ds.status().to_string();
    held.push_back(std::move(ds).value());
  }
  EXPECT_EQ(status_of(client).num_leases, n);
  // No slot left to mark a list with (docs/leases.md, "Lists"): the daemon
  // answers it.
  auto listed = client.list_datasets();
  ASSERT_TRUE(listed.ok()) << listed.status().to_string();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().num_rows, 100u);
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  for (const Dataset& ds : held) ASSERT_EQ(ds.column(0, 0).values<int64_t>()[99], 9 + 99);
  held.clear();
  expect_freed_back_to(client, *daemon, empty);
  EXPECT_EQ(status_of(client).num_leases, 0u);
}

// Publishers override and unpublish a few names as fast as they can while
// readers get them and check every byte: no reader ever sees freed memory
// or another dataset's bytes, and nothing leaks.
TEST(LeaseStressTest, ReadersRacingOverridesAndUnpublishesSeeOnlyWholeDatasets) {
  const int rounds = [] {
    const char* env = std::getenv("SHELF_LEASE_STRESS_ROUNDS");
    return env != nullptr ? std::atoi(env) : 1500;
  }();
  constexpr uint64_t kStressRows = 8 * 1024;
  auto daemon = TestDaemon::start(TestDaemon::Options{"256MiB", 64, {}});
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const Usage empty = usage_of(client, *daemon);
  const std::vector<std::string> names = {"x0", "x1", "x2"};

  // Shared with the children (fork keeps a MAP_SHARED page shared): the
  // readers' stop flag and their counts of datasets read.
  struct Shared {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> reads[3]{};
  };
  void* page =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  auto* shared = new (page) Shared;
  std::vector<pid_t> readers;
  for (size_t r = 0; r < 3; ++r) {
    readers.push_back(spawn_child([&, r] {
      Client c = daemon->connect();
      for (uint64_t i = 0; !shared->stop.load(); ++i) {
        auto ds = c.get_dataset(names[(i + r) % names.size()]);
        if (!ds.ok()) {
          ASSERT_EQ(ds.status().code(), Status::Code::kNotFound) << ds.status().to_string();
          continue;
        }
        // A whole dataset: one seed throughout, and its checksums hold.
        std::span<const int64_t> v = ds->column(0, 0).values<int64_t>();
        ASSERT_EQ(v.size(), kStressRows);
        for (uint64_t k = 0; k < v.size(); ++k) ASSERT_EQ(v[k], v[0] + static_cast<int64_t>(k));
        ASSERT_TRUE(ds->verify().ok());
        shared->reads[r].fetch_add(1);
      }
    }));
  }
  std::vector<pid_t> publishers;
  for (int p = 0; p < 2; ++p) {
    publishers.push_back(spawn_child([&, p] {
      Client c = daemon->connect();
      for (int i = 0; i < rounds; ++i) {
        const std::string& name = names[static_cast<size_t>(i + p) % names.size()];
        if (i % 5 == 4) {
          Status s = c.unpublish_dataset(name);
          ASSERT_TRUE(s.ok() || s.code() == Status::Code::kNotFound) << s.to_string();
          continue;
        }
        TableBuilder t = make_int64_table(c, kStressRows, (int64_t{p} << 40) + i * 1000003);
        Status s = c.publish_dataset(name, t, PublishOptions{true});
        ASSERT_TRUE(s.ok()) << s.to_string();
      }
    }));
  }
  for (pid_t p : publishers) EXPECT_EQ(wait_child(p), 0);
  shared->stop.store(true);
  for (pid_t r : readers) EXPECT_EQ(wait_child(r), 0);
  for (const auto& reads : shared->reads) EXPECT_GT(reads.load(), 0u);
  std::printf("lease stress: %d rounds, %lu + %lu + %lu datasets read\n", rounds,
              static_cast<unsigned long>(shared->reads[0].load()),
              static_cast<unsigned long>(shared->reads[1].load()),
              static_cast<unsigned long>(shared->reads[2].load()));
  ::munmap(page, sizeof(Shared));
  EXPECT_TRUE(eventually([&] { return status_of(client).num_connections == 1; }));
  for (const std::string& name : listed_names(client)) {
    ASSERT_TRUE(client.unpublish_dataset(name).ok());
  }
  expect_freed_back_to(client, *daemon, empty);
}

}  // namespace
}  // namespace shelf::test
