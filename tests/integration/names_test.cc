// Names: the datasets() mapping, collisions, override, missing names, bad
// names, and publish_datasets' all-or-nothing.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

TEST(DatasetMapTest, BehavesLikeADict) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  DatasetMap map = client.datasets();

  auto size = map.size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 0u);
  EXPECT_EQ(map.begin(), map.end());

  for (const auto& [name, seed] :
       std::vector<std::pair<std::string, int64_t>>{{"beta", 2}, {"alpha", 1}, {"gamma", 3}}) {
    TableBuilder t = make_int64_table(client, 100, seed);
    Status s = map.set(name, t);
    ASSERT_TRUE(s.ok()) << name << ": " << s.to_string();
  }
  size = map.size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 3u);
  auto keys = map.keys();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"alpha", "beta", "gamma"}));
  std::vector<std::string> iterated;
  for (const std::string& name : map) iterated.push_back(name);
  EXPECT_EQ(iterated, *keys);
  EXPECT_TRUE(*map.contains("beta"));
  EXPECT_FALSE(*map.contains("bet"));
  EXPECT_FALSE(*map.contains("delta"));

  auto got = map.get("beta");
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  expect_int64_dataset(*got, 100, 2);

  // set on a taken name: AlreadyExists, and the data under it is unchanged.
  TableBuilder other = make_int64_table(client, 50, 1000);
  Status s = map.set("beta", other);
  EXPECT_EQ(s.code(), Status::Code::kAlreadyExists) << s.to_string();
  expect_int64_published(client, "beta", 100, 2);
  got->release();

  s = map.erase("beta");
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_FALSE(*map.contains("beta"));
  EXPECT_EQ(*map.size(), 2u);
  s = map.erase("beta");
  EXPECT_EQ(s.code(), Status::Code::kNotFound) << s.to_string();
  EXPECT_EQ(map.get("beta").status().code(), Status::Code::kNotFound);

  // The name is free again: the table refused a moment ago can take it.
  s = map.set("beta", other);
  ASSERT_TRUE(s.ok()) << s.to_string();
  expect_int64_published(client, "beta", 50, 1000);

  // The mapping is the daemon's, not this client's: another process sees it.
  EXPECT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              auto k = c.datasets().keys();
              ASSERT_TRUE(k.ok());
              EXPECT_EQ(*k, (std::vector<std::string>{"alpha", "beta", "gamma"}));
            }),
            0);
}

TEST(NamesTest, CollisionsAndMissingNamesSayWhichDataset) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "prices", 10, 0);

  TableBuilder again = make_int64_table(client, 10, 500);
  Status s = client.publish_dataset("prices", again);
  ASSERT_EQ(s.code(), Status::Code::kAlreadyExists) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("'prices'"));
  EXPECT_THAT(s.message(), HasSubstr("override"));
  expect_int64_published(client, "prices", 10, 0);

  auto missing = client.get_dataset("no-such");
  ASSERT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("'no-such'"));
  s = client.unpublish_dataset("also-missing");
  ASSERT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'also-missing'"));
  // Names are exact: no prefix or case folding.
  EXPECT_EQ(client.get_dataset("price").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(client.get_dataset("Prices").status().code(), Status::Code::kNotFound);
}

TEST(NamesTest, OverrideReplacesDataButLeasedReadersKeepTheOldValues) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const uint64_t baseline = status_of(client).used_bytes;
  publish_int64(client, "x", 20'000, 0);

  // A reader in another process takes the old version and holds it.
  Pipe ready, go, done;
  pid_t reader = spawn_child([&] {
    Client c = daemon->connect();
    auto old = c.get_dataset("x");
    ASSERT_TRUE(old.ok()) << old.status().to_string();
    ASSERT_TRUE(ready.signal());
    ASSERT_TRUE(go.wait());
    expect_int64_dataset(*old, 20'000, 0);  // after the override
    old->release();
    ASSERT_TRUE(done.signal());
    go.wait();  // exit only when told: the parent checks memory first
  });
  ASSERT_TRUE(ready.wait());

  TableBuilder replacement = make_int64_table(client, 30'000, 9'000);
  Status s = client.publish_dataset("x", replacement, PublishOptions{.override_existing = true});
  ASSERT_TRUE(s.ok()) << s.to_string();
  expect_int64_published(client, "x", 30'000, 9'000);
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"x"});
  MemoryStats st = status_of(client);
  ASSERT_EQ(st.datasets.size(), 1u);
  const uint64_t new_bytes = st.datasets[0].memory_bytes;
  EXPECT_GT(st.pending_free_bytes, 0u) << "the old version is still leased";
  EXPECT_EQ(st.used_bytes, baseline + new_bytes + st.pending_free_bytes);

  ASSERT_TRUE(go.signal());
  ASSERT_TRUE(done.wait());
  // release() posts its request without waiting for the reply, so this
  // connection may be answered first: wait for the daemon to see it.
  EXPECT_TRUE(eventually([&] { return status_of(client).num_leases == 0; }));
  st = status_of(client);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.used_bytes, baseline + new_bytes);
  EXPECT_EQ(st.num_leases, 0u);
  ASSERT_TRUE(go.signal());
  EXPECT_EQ(wait_child(reader), 0);

  // Override with nobody reading frees the old version at once.
  TableBuilder third = make_int64_table(client, 10, -5);
  s = client.publish_dataset("x", third, PublishOptions{.override_existing = true});
  ASSERT_TRUE(s.ok()) << s.to_string();
  st = status_of(client);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.used_bytes, baseline + st.datasets[0].memory_bytes);
  expect_int64_published(client, "x", 10, -5);
  // Override of a name that does not exist simply publishes it.
  TableBuilder fresh = make_int64_table(client, 10, 1);
  s = client.publish_dataset("y", fresh, PublishOptions{.override_existing = true});
  EXPECT_TRUE(s.ok()) << s.to_string();
  expect_int64_published(client, "y", 10, 1);
}

TEST(NamesTest, PublishDatasetsIsAllOrNothing) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "b", 100, 100);
  const MemoryStats before_tables = status_of(client);

  TableBuilder a = make_int64_table(client, 1000, 1);
  TableBuilder b = make_int64_table(client, 1000, 2);
  TableBuilder c = make_int64_table(client, 1000, 3);
  const MemoryStats before = status_of(client);
  EXPECT_GT(before.unsealed_bytes, 0u);

  const NamedTable colliding[] = {{"a", &a}, {"b", &b}, {"c", &c}};
  Status s = client.publish_datasets(colliding);
  ASSERT_EQ(s.code(), Status::Code::kAlreadyExists) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("'b'"));
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"b"});
  MemoryStats after = status_of(client);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.unsealed_bytes, before.unsealed_bytes) << "the tables are still unsealed";
  expect_int64_published(client, "b", 100, 100);

  // The same name twice in one call is refused as a whole too.
  const NamedTable twice[] = {{"a", &a}, {"a", &c}};
  s = client.publish_datasets(twice);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.to_string();
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"b"});

  // A bad name anywhere in the batch: nothing is published.
  const std::vector<std::string> bad_names = {"",          std::string(201, 'n'),   "tab\there",
                                              "new\nline", std::string("nul\0", 4), "del\x7f",
                                              "\xff\xfe",  "next\xc2\x85line"};  // U+0085, C1
  for (const std::string& bad : bad_names) {
    const NamedTable batch[] = {{"a", &a}, {bad, &b}, {"c", &c}};
    s = client.publish_datasets(batch);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument)
        << "name of " << bad.size() << " bytes: " << s.to_string();
    EXPECT_EQ(listed_names(client), std::vector<std::string>{"b"});
    EXPECT_EQ(status_of(client).used_bytes, before.used_bytes);
  }

  // The same tables, retried under free names, publish together.
  const std::string longest(200, 'L');
  const NamedTable good[] = {{"a", &a}, {longest, &b}, {"c-données-π", &c}};
  s = client.publish_datasets(good);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{longest, "a", "b", "c-données-π"}));
  expect_int64_published(client, "a", 1000, 1);
  expect_int64_published(client, longest, 1000, 2);
  expect_int64_published(client, "c-données-π", 1000, 3);
  after = status_of(client);
  EXPECT_EQ(after.unsealed_bytes, before_tables.unsealed_bytes);
  EXPECT_GT(after.used_bytes, before.used_bytes) << "three descriptors were added";
}

TEST(NamesTest, FailedPublishLeavesNothingBehindWhenTheTableIsDropped) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "taken", 10, 0);
  const MemoryStats baseline = status_of(client);
  {
    TableBuilder t = make_int64_table(client, 100'000, 0, 3);
    EXPECT_GT(status_of(client).unsealed_bytes, 0u);
    EXPECT_EQ(client.publish_dataset("taken", t).code(), Status::Code::kAlreadyExists);
    EXPECT_EQ(client.publish_dataset(std::string(300, 'x'), t).code(),
              Status::Code::kInvalidArgument);
  }  // aborted here
  const MemoryStats after = status_of(client);
  EXPECT_EQ(after.used_bytes, baseline.used_bytes);
  EXPECT_EQ(after.unsealed_bytes, 0u);
  EXPECT_EQ(daemon->resident_bytes(), baseline.resident_bytes);
}

TEST(NamesTest, FullIndexRefusesNewNamesButNotOverride) {
  TestDaemon::Options options;
  options.max_datasets = 4;
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  for (int i = 0; i < 4; ++i) publish_int64(client, "d" + std::to_string(i), 10, i);
  const MemoryStats full = status_of(client);

  TableBuilder fifth = make_int64_table(client, 10, 4);
  Status s = client.publish_dataset("d4", fifth);
  ASSERT_EQ(s.code(), Status::Code::kResourceExhausted) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("--max-datasets"));
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"d0", "d1", "d2", "d3"}));
  // Replacing a name needs no new slot.
  s = client.publish_dataset("d2", fifth, PublishOptions{.override_existing = true});
  ASSERT_TRUE(s.ok()) << s.to_string();
  expect_int64_published(client, "d2", 10, 4);
  // A freed slot is reused.
  ASSERT_TRUE(client.unpublish_dataset("d0").ok());
  publish_int64(client, "d5", 10, 5);
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"d1", "d2", "d3", "d5"}));
  for (int i : {1, 3, 5}) expect_int64_published(client, "d" + std::to_string(i), 10, i);
  EXPECT_EQ(status_of(client).used_bytes, full.used_bytes);
}

TEST(NamesTest, ConcurrentPublishersOfOneNameExactlyOneWins) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const uint64_t baseline = status_of(client).used_bytes;
  constexpr int kPublishers = 6;
  constexpr uint64_t kRows = 100'000;
  Pipe ready, go, outcome;
  std::vector<pid_t> publishers;
  for (int i = 0; i < kPublishers; ++i) {
    publishers.push_back(spawn_child([&, i] {
      Client c = daemon->connect();
      TableBuilder t = make_int64_table(c, kRows, i * 1'000'000);
      ASSERT_TRUE(ready.signal());
      ASSERT_TRUE(go.wait());
      Status s = c.publish_dataset("race", t);
      if (s.ok()) {
        ASSERT_TRUE(outcome.signal());  // 'x' from Pipe::signal: a win
      } else {
        EXPECT_EQ(s.code(), Status::Code::kAlreadyExists) << s.to_string();
      }
    }));
  }
  ASSERT_TRUE(ready.wait(kPublishers));
  ASSERT_TRUE(go.signal(kPublishers));
  for (pid_t pid : publishers) EXPECT_EQ(wait_child(pid), 0);
  outcome.close_write();
  EXPECT_TRUE(outcome.wait(1)) << "nobody won";
  EXPECT_FALSE(outcome.wait(1, 0ms)) << "two publishers won";

  auto info = client.list_datasets();
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->size(), 1u);
  auto ds = client.get_dataset("race");
  ASSERT_TRUE(ds.ok());
  const int64_t first = ds->column(0, 0).values<int64_t>()[0];
  ASSERT_EQ(first % 1'000'000, 0);
  expect_int64_dataset(*ds, kRows, first);
  // The losers' tables went with them.
  EXPECT_TRUE(eventually([&] { return status_of(client).num_connections == 1; }));
  EXPECT_EQ(status_of(client).used_bytes, baseline + info->front().memory_bytes);
}

TEST(NamesTest, ATableIsPublishedOnlyOnce) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  TableBuilder t = make_int64_table(client, 100, 7);
  ASSERT_TRUE(client.publish_dataset("once", t).ok());
  const MemoryStats after_first = status_of(client);
  // Its memory belongs to "once" now: it cannot be published a second time...
  Status s = client.publish_dataset("twice", t);
  EXPECT_FALSE(s.ok());
  s = client.publish_dataset("once", t, PublishOptions{.override_existing = true});
  EXPECT_FALSE(s.ok()) << "a dataset overridden by its own extents";
  // ...nor grow.
  EXPECT_EQ(t.add_partition(10).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"once"});
  expect_int64_published(client, "once", 100, 7);
  EXPECT_EQ(status_of(client).used_bytes, after_first.used_bytes);
}

}  // namespace
}  // namespace shelf::test

namespace shelf::test {
namespace {

// With --verify-on-publish the daemon recomputes every checksum: bytes changed
// after the table was sealed (here: after a refused publish) are caught.
TEST(VerifyOnPublishTest, BytesChangedAfterSealingAreRefused) {
  TestDaemon::Options options;
  options.extra_args = {"--verify-on-publish"};
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "taken", 10, 0);
  auto table = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(table.ok());
  auto part = table->add_partition(10);
  ASSERT_TRUE(part.ok());
  std::span<int64_t> values = part->values<int64_t>(0);
  for (int i = 0; i < 10; ++i) values[i] = i;
  // Refused (the name is taken), but sealed: its checksums are taken now.
  ASSERT_EQ(client.publish_dataset("taken", *table).code(), Status::Code::kAlreadyExists);
  values[3] = 333;
  Status s = client.publish_dataset("taken", *table, PublishOptions{.override_existing = true});
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("checksum mismatch"));
  expect_int64_published(client, "taken", 10, 0);  // the old one is still there
}

}  // namespace
}  // namespace shelf::test
