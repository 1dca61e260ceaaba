// Memory: the limit (black-box: fill it and expect ResourceExhausted), leases
// that outlive an unpublish, many readers of one dataset at once.
#include <cstdlib>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kLimit = 64ull << 20;  // TestDaemon's default --memory-limit

// The number after `key` in `text` ("used=123"), or 0.
uint64_t number_after(const std::string& text, const std::string& key) {
  auto at = text.find(key);
  if (at == std::string::npos) return 0;
  return std::strtoull(text.c_str() + at + key.size(), nullptr, 10);
}

TEST(MemoryLimitTest, FillUntilResourceExhaustedKeepsEveryPublishedDataset) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const MemoryStats start = status_of(client);
  ASSERT_EQ(start.memory_limit, kLimit);

  // 4 MiB datasets until the limit refuses one.
  constexpr uint64_t kRows = 512 * 1024;
  int published = 0;
  Status refused;
  for (int i = 0; i < 64; ++i) {
    auto table = client.create_table({{"v", Type::kInt64}});
    ASSERT_TRUE(table.ok());
    auto part = table->add_partition(kRows);
    if (!part.ok()) {
      refused = part.status();
      break;
    }
    std::span<int64_t> v = part->values<int64_t>(0);
    for (uint64_t r = 0; r < kRows; ++r) v[r] = i * 10'000'000 + static_cast<int64_t>(r);
    Status s = client.publish_dataset("fill-" + std::to_string(i), *table);
    if (!s.ok()) {
      refused = s;
      break;
    }
    ++published;
  }
  ASSERT_EQ(refused.code(), Status::Code::kResourceExhausted) << refused.to_string();
  EXPECT_GE(published, 12) << "64 MiB holds at least 12 datasets of 4 MiB";
  EXPECT_LE(published, 16);
  // The message is actionable: what is used, the limit, what was asked for.
  const std::string& msg = refused.message();
  EXPECT_THAT(msg, HasSubstr("used"));
  EXPECT_THAT(msg, HasSubstr("limit"));
  EXPECT_THAT(msg, HasSubstr("requested"));
  EXPECT_EQ(number_after(msg, "limit="), kLimit) << msg;
  EXPECT_GT(number_after(msg, "requested="), 4ull << 20) << msg;
  EXPECT_GT(number_after(msg, "used=") + number_after(msg, "requested="), kLimit) << msg;

  MemoryStats full = status_of(client);
  EXPECT_LE(full.used_bytes, full.memory_limit);
  EXPECT_EQ(full.unsealed_bytes, 0u) << "the refused partition took nothing";
  EXPECT_EQ(full.datasets.size(), static_cast<size_t>(published));
  EXPECT_LE(daemon->resident_bytes(), full.memory_limit);

  // A request larger than the whole limit is refused the same way.
  {
    auto huge = client.create_table({{"v", Type::kInt64}});
    ASSERT_TRUE(huge.ok());
    auto part = huge->add_partition(uint64_t{1} << 30);  // 8 GiB
    EXPECT_EQ(part.status().code(), Status::Code::kResourceExhausted);
  }

  // Fill the rest to the last page with one-page partitions; then even the
  // descriptor of the table does not fit, and publish is refused cleanly.
  auto rest = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(rest.ok());
  uint64_t small_partitions = 0;
  for (;;) {
    auto part = rest->add_partition(256);  // header + 2 KiB: one 4 KiB page
    if (!part.ok()) {
      ASSERT_EQ(part.status().code(), Status::Code::kResourceExhausted)
          << part.status().to_string();
      break;
    }
    part->values<int64_t>(0)[0] = static_cast<int64_t>(small_partitions++);
  }
  full = status_of(client);
  EXPECT_GT(small_partitions, 0u);
  EXPECT_LE(full.used_bytes, full.memory_limit);
  EXPECT_GT(full.used_bytes + 4096, full.memory_limit) << "filled to the last page";
  Status s = client.publish_dataset("rest", *rest);
  ASSERT_EQ(s.code(), Status::Code::kResourceExhausted) << s.to_string();
  EXPECT_EQ(status_of(client).used_bytes, full.used_bytes);

  // Every dataset published before is intact.
  for (int i = 0; i < published; ++i) {
    auto ds = client.get_dataset("fill-" + std::to_string(i));
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    std::span<const int64_t> v = ds->column(0, 0).values<int64_t>();
    ASSERT_EQ(v.size(), kRows);
    uint64_t wrong = 0;
    for (uint64_t r = 0; r < kRows; ++r) wrong += v[r] != i * 10'000'000 + static_cast<int64_t>(r);
    EXPECT_EQ(wrong, 0u) << "fill-" << i;
    EXPECT_TRUE(ds->verify().ok()) << ds->verify().to_string();
  }

  // Room made, the refused table publishes on retry.
  ASSERT_TRUE(client.unpublish_dataset("fill-0").ok());
  s = client.publish_dataset("rest", *rest);
  ASSERT_TRUE(s.ok()) << s.to_string();
  auto ds = client.get_dataset("rest");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  ASSERT_EQ(ds->num_partitions(), small_partitions);
  for (uint64_t p = 0; p < small_partitions; ++p) {
    ASSERT_EQ(ds->column(p, 0).values<int64_t>()[0], static_cast<int64_t>(p));
  }
  EXPECT_LE(status_of(client).used_bytes, kLimit);
}

// A refusal says what to free: the largest datasets, largest first, the
// process that holds an unpublished one, the one still writing.
TEST(MemoryLimitTest, ARefusalNamesTheLargestDatasetsAndTheProcessesHoldingMemory) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "small", 512 * 1024, 1);  // 4 MiB
  publish_int64(client, "big", 2 << 20, 2);       // 16 MiB
  publish_int64(client, "tiny", 16, 3);
  publish_int64(client, "two", 256 * 1024, 4);  // 2 MiB
  publish_int64(client, "held", 1 << 20, 5);    // 8 MiB, unpublished below

  Pipe holding, writing, done;
  pid_t holder = spawn_child([&] {
    Client c = daemon->connect();
    Dataset ds = c.get_dataset("held").value();
    ASSERT_TRUE(holding.signal());
    done.wait();
  });
  pid_t writer = spawn_child([&] {
    Client c = daemon->connect();
    auto table = c.create_table({{"v", Type::kInt64}});
    ASSERT_TRUE(table.ok());
    ASSERT_TRUE(table->add_partition(512 * 1024).ok());  // 4 MiB, never published
    ASSERT_TRUE(writing.signal());
    done.wait();
  });
  ASSERT_TRUE(holding.wait());
  ASSERT_TRUE(writing.wait());
  ASSERT_TRUE(client.unpublish_dataset("held").ok());

  auto table = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(table.ok());
  const Status refused = table->add_partition(4 << 20).status();  // 32 MiB
  ASSERT_EQ(refused.code(), Status::Code::kResourceExhausted) << refused.to_string();
  const std::string& msg = refused.message();
  const size_t big = msg.find("'big' 16."), small = msg.find("'small' 4."),
               two = msg.find("'two' 2.");
  ASSERT_NE(big, std::string::npos) << msg;
  EXPECT_LT(big, small) << msg;
  EXPECT_LT(small, two) << msg;
  EXPECT_THAT(msg, HasSubstr("and 1 more")) << "'tiny' is left out: " << msg;
  EXPECT_EQ(msg.find("'tiny'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("'held'"), std::string::npos) << "unpublished: " << msg;
  EXPECT_THAT(msg, HasSubstr(" MiB is unpublished but still read"));
  EXPECT_THAT(msg, HasSubstr("pid " + std::to_string(holder) + " ("));
  EXPECT_THAT(msg, HasSubstr(" MiB is being written, not yet published: pid " +
                             std::to_string(writer) + " ("));
  EXPECT_THAT(msg, HasSubstr("shelf unpublish NAME"));
  EXPECT_EQ(number_after(msg, "limit="), kLimit) << msg;

  // More than the whole limit: nothing to free would make room.
  const Status never = table->add_partition(uint64_t{16} << 20).status();  // 128 MiB
  ASSERT_EQ(never.code(), Status::Code::kResourceExhausted);
  EXPECT_THAT(never.message(), HasSubstr("more than the whole limit"));
  EXPECT_EQ(never.message().find("'big'"), std::string::npos) << never.message();

  ASSERT_TRUE(done.signal(2));
  EXPECT_EQ(wait_child(holder), 0);
  EXPECT_EQ(wait_child(writer), 0);
}

// A reader process holds a lease while the dataset is unpublished.
// `release_explicitly`: the reader calls release(); otherwise it just exits.
void unpublish_while_leased(bool release_explicitly) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const MemoryStats baseline = status_of(client);
  const uint64_t baseline_resident = daemon->resident_bytes();
  constexpr uint64_t kRows = 1 << 20;  // 8 MiB
  publish_int64(client, "leased", kRows, 11);

  Pipe ready, go, done;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    auto ds = c.get_dataset("leased");
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    ASSERT_TRUE(ready.signal());
    ASSERT_TRUE(go.wait());
    expect_int64_dataset(*ds, kRows, 11);  // after the unpublish
    if (release_explicitly) {
      ds->release();
      ASSERT_TRUE(done.signal());
      go.wait();  // stay alive: the memory must come back on release alone
    }
  });
  ASSERT_TRUE(ready.wait());

  const MemoryStats held = status_of(client);
  ASSERT_EQ(held.datasets.size(), 1u);
  const uint64_t dataset_bytes = held.datasets[0].memory_bytes;
  EXPECT_EQ(held.datasets[0].leases, 1u);
  ASSERT_TRUE(client.unpublish_dataset("leased").ok());

  // Gone by name at once...
  EXPECT_TRUE(listed_names(client).empty());
  EXPECT_EQ(client.get_dataset("leased").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(client.unpublish_dataset("leased").code(), Status::Code::kNotFound);
  // ...but its memory is kept for the reader.
  MemoryStats pending = status_of(client);
  EXPECT_EQ(pending.pending_free_bytes, dataset_bytes);
  EXPECT_GT(pending.pending_free_bytes, 0u);
  EXPECT_EQ(pending.used_bytes, baseline.used_bytes + dataset_bytes);
  EXPECT_EQ(pending.num_leases, 1u);
  EXPECT_GE(daemon->resident_bytes(), baseline_resident + kRows * 8);
  // The name can be reused while the old memory is pending.
  publish_int64(client, "leased", 10, 99);
  expect_int64_published(client, "leased", 10, 99);
  ASSERT_TRUE(client.unpublish_dataset("leased").ok());

  ASSERT_TRUE(go.signal());
  if (release_explicitly) {
    ASSERT_TRUE(done.wait());
  } else {
    EXPECT_EQ(wait_child(reader), 0);
  }
  // Neither release() (posted without waiting for the reply) nor an exit is
  // ordered with this connection's requests: wait for the daemon to see it.
  EXPECT_TRUE(eventually([&] { return status_of(client).num_leases == 0; }));
  const MemoryStats after = status_once_freed(client);
  EXPECT_EQ(after.used_bytes, baseline.used_bytes);
  EXPECT_EQ(daemon->resident_bytes(), baseline_resident) << "the pages were given back";
  if (release_explicitly) {
    ASSERT_TRUE(go.signal());
    EXPECT_EQ(wait_child(reader), 0);
  }
}

TEST(LeaseTest, UnpublishWhileReaderHoldsLeaseThenRelease) { unpublish_while_leased(true); }

TEST(LeaseTest, UnpublishWhileReaderHoldsLeaseThenReaderExits) { unpublish_while_leased(false); }

// A child forked from a reader inherits its connection and its Datasets;
// letting go of its copies must not end the parent's leases.
TEST(LeaseTest, AForkedChildCannotEndItsParentsLease) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "shared", 1000, 5);
  Client reader = daemon->connect();
  auto ds = reader.get_dataset("shared");
  ASSERT_TRUE(ds.ok());
  const int code = run_in_child([&] {
    { Dataset copy = std::move(*ds); }  // its destructor would release the lease
    auto listed = reader.list_datasets();
    EXPECT_EQ(listed.status().code(), Status::Code::kUnavailable);
    EXPECT_THAT(listed.status().message(), HasSubstr("before a fork; connect again"));
    Client own = daemon->connect();  // a connection of its own works
    expect_int64_published(own, "shared", 1000, 5);
  });
  EXPECT_EQ(code, 0);
  EXPECT_EQ(status_of(client).num_leases, 1u);
  // The lease holds: unpublished, the memory is not reused under the view.
  ASSERT_TRUE(client.unpublish_dataset("shared").ok());
  publish_int64(client, "other", 1000, 9);
  expect_int64_dataset(*ds, 1000, 5);
  EXPECT_TRUE(reader.list_datasets().ok()) << "the parent's connection must still work";
}

TEST(LeaseTest, EightConcurrentReadersSumTheSameDataset) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  constexpr uint64_t kRows = 1 << 20;  // 8 MiB of int64
  constexpr int kReaders = 8;
  publish_int64(client, "shared", kRows, 0);
  constexpr int64_t kExpectedSum = static_cast<int64_t>(kRows * (kRows - 1) / 2);

  // Barrier: every reader holds its lease before any of them reads.
  Pipe ready, go;
  std::vector<pid_t> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(spawn_child([&] {
      Client c = daemon->connect();
      auto ds = c.get_dataset("shared");
      ASSERT_TRUE(ds.ok()) << ds.status().to_string();
      ASSERT_TRUE(ready.signal());
      ASSERT_TRUE(go.wait());
      int64_t sum = 0;
      for (int64_t v : ds->column(0, 0).values<int64_t>()) sum += v;
      EXPECT_EQ(sum, kExpectedSum);
    }));
  }
  ASSERT_TRUE(ready.wait(kReaders));
  MemoryStats st = status_of(client);
  EXPECT_EQ(st.num_leases, static_cast<uint32_t>(kReaders));
  EXPECT_EQ(st.num_connections, static_cast<uint32_t>(kReaders + 1));
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.datasets[0].leases, static_cast<uint32_t>(kReaders));
  ASSERT_TRUE(go.signal(kReaders));
  for (pid_t pid : readers) EXPECT_EQ(wait_child(pid), 0);
  EXPECT_TRUE(eventually([&] { return status_of(client).num_leases == 0; }));
  EXPECT_EQ(status_of(client).num_connections, 1u);
  expect_int64_published(client, "shared", kRows, 0);
}

// A large dataset's memory is given back a step at a time between requests;
// it is all back soon after, and a publish that needs it at once still fits.
TEST(MemoryLimitTest, LargeDatasetsAreGivenBackInStepsAndTheLimitStillHolds) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const MemoryStats start = status_of(client);
  constexpr uint64_t kRows = 5 << 20;  // 40 MiB: more than one 32 MiB step
  publish_int64(client, "big", kRows, 1);
  ASSERT_TRUE(client.unpublish_dataset("big").ok());
  EXPECT_TRUE(eventually([&] {
    const MemoryStats now = status_of(client);
    return now.used_bytes == start.used_bytes && now.pending_free_bytes == 0;
  }));
  EXPECT_EQ(daemon->resident_bytes(), start.resident_bytes);

  // 40 MiB again, twice in a row with an unpublish between, under a 64 MiB
  // limit: the second needs the first's memory before it is given back.
  publish_int64(client, "big", kRows, 2);
  ASSERT_TRUE(client.unpublish_dataset("big").ok());
  publish_int64(client, "big", kRows, 3);
  expect_int64_published(client, "big", kRows, 3);
  EXPECT_LE(status_of(client).used_bytes, kLimit);
  ASSERT_TRUE(client.unpublish_dataset("big").ok());

  // The same with 40 partitions of 1 MiB: many small extents go in steps too.
  {
    TableBuilder table = make_int64_table(client, 128 * 1024, 4, 40);
    ASSERT_TRUE(client.publish_dataset("many", table).ok());
  }
  ASSERT_TRUE(client.unpublish_dataset("many").ok());
  EXPECT_TRUE(eventually([&] { return status_of(client).used_bytes == start.used_bytes; }));
  EXPECT_EQ(daemon->resident_bytes(), start.resident_bytes);
}

// A /dev/shm that fills up after shelfd started (other programs use it too):
// a publish fails with a clear error and changes nothing, and nobody gets a
// SIGBUS. Runs in a private mount namespace with its own 16 MiB /dev/shm, so
// it needs root (CI and the README's test command run as root).
TEST(FullDevShmTest, PublishFailsCleanlyAndEverythingElseStays) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a private /dev/shm";
  constexpr int kSkip = 77;
  const int code = run_in_child([] {
    if (!use_private_dev_shm("16m")) ::_exit(kSkip);
    TestDaemon::Options options;
    options.memory_limit = "8MiB";
    options.max_datasets = 16;
    auto daemon = TestDaemon::start(options);
    ASSERT_NE(daemon, nullptr);
    Client client = daemon->connect();
    publish_int64(client, "kept", 64 * 1024, 5);  // 512 KiB
    const MemoryStats before = status_of(client);

    // Another program takes what is left of /dev/shm.
    const int filler = ::open("/dev/shm/filler", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(filler, 0);
    off_t filled = 0;
    while (::posix_fallocate(filler, filled, 256 * 1024) == 0) filled += 256 * 1024;

    auto table = client.create_table({{"v", Type::kInt64}});
    ASSERT_TRUE(table.ok());
    auto part = table->add_partition(256 * 1024);  // 2 MiB: under the limit, over what is left
    ASSERT_FALSE(part.ok());
    EXPECT_EQ(part.status().code(), Status::Code::kResourceExhausted);
    EXPECT_THAT(part.status().message(), HasSubstr("/dev/shm is full")) << part.status().message();
    const MemoryStats after = status_once_freed(client);
    EXPECT_EQ(after.used_bytes, before.used_bytes);
    EXPECT_EQ(after.unsealed_bytes, 0u);
    EXPECT_EQ(after.resident_bytes, before.resident_bytes);
    expect_int64_published(client, "kept", 64 * 1024, 5);

    // Once there is room again, the same publish goes through.
    ::close(filler);
    ::unlink("/dev/shm/filler");
    part = table->add_partition(256 * 1024);
    ASSERT_TRUE(part.ok()) << part.status().to_string();
    ASSERT_TRUE(client.publish_dataset("later", *table).ok());
    EXPECT_EQ(client.list_datasets()->size(), 2u);
  });
  if (code == kSkip) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace shelf::test
