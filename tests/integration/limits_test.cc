// Every limit of docs/design.md's "Limits" is refused with an error that names
// it, and the refusal leaves the daemon, the connection and the data as they
// were. (Descriptor counts past kMaxColumns and kMaxPartitions are refused by
// DescriptorView::parse: tests/unit/shm/descriptor_test.cc; frames over the
// message limit and hostile counts: protocol_abuse_test.cc.)
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "protocol/wire.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

Schema int64_columns(size_t n) {
  Schema schema;
  for (size_t c = 0; c < n; ++c) schema.push_back({"c" + std::to_string(c), Type::kInt64});
  return schema;
}

TEST(LimitsTest, NameLength) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  TableBuilder t = make_int64_table(client, 10, 1);
  Status s = client.publish_dataset(std::string(shelf::kMaxNameBytes + 1, 'n'), t);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("dataset name is 201 bytes; the limit is 200"));
  ASSERT_TRUE(client.publish_dataset(std::string(shelf::kMaxNameBytes, 'n'), t).ok());
}

TEST(LimitsTest, Columns) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  auto too_wide = client.create_table(int64_columns(shelf::kMaxColumns + 1));
  ASSERT_FALSE(too_wide.ok());
  EXPECT_EQ(too_wide.status().code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(too_wide.status().message(), HasSubstr("a table needs 1 to 4096 columns"));
  auto widest = client.create_table(int64_columns(shelf::kMaxColumns));
  ASSERT_TRUE(widest.ok()) << widest.status().to_string();
  ASSERT_TRUE(widest->add_partition(3).ok());
  Status s = client.publish_dataset("widest", *widest);
  ASSERT_TRUE(s.ok()) << s.to_string();
  auto ds = client.get_dataset("widest");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  EXPECT_EQ(ds->schema().size(), shelf::kMaxColumns);
}

// A publish whose descriptors would not fit one message (256 MiB) is refused
// by the client before it sends anything, so the connection, and the leases
// it holds, survive.
TEST(LimitsTest, MessageSize) {
  TestDaemon::Options options;
  options.memory_limit = "256MiB";
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "kept", 1000, 4);
  auto kept = client.get_dataset("kept");
  ASSERT_TRUE(kept.ok());

  // 4096 columns cost 80 bytes each per partition in the descriptor: 820
  // empty partitions make a descriptor of over 256 MiB.
  auto table = client.create_table(int64_columns(shelf::kMaxColumns));
  ASSERT_TRUE(table.ok());
  const uint64_t partitions =
      protocol::kMaxPayloadBytes /
          (sizeof(shm::PartitionLayout) + shelf::kMaxColumns * sizeof(shm::ChunkLayout)) +
      2;
  for (uint64_t p = 0; p < partitions; ++p) ASSERT_TRUE(table->add_partition(0).ok());
  Status s = client.publish_dataset("huge", *table);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("too many partitions and columns for one message"));
  EXPECT_THAT(s.message(), HasSubstr("the limit is 268435456"));

  // The connection and its lease are intact.
  expect_int64_dataset(*kept, 1000, 4);
  expect_int64_published(client, "kept", 1000, 4);
  EXPECT_EQ(status_of(client).num_leases, 1u);
}

TEST(LimitsTest, Connections) {
  TestDaemon::Options options;
  options.extra_args = {"--max-connections", "3"};
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(daemon->connect());
  auto fourth = Client::connect(daemon->client_options());
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.status().code(), Status::Code::kUnavailable);
  EXPECT_THAT(fourth.status().message(),
              HasSubstr("shelfd has 3 connections, its limit (--max-connections)"));
  // Served again once one leaves.
  clients.pop_back();
  EXPECT_TRUE(eventually([&] { return Client::connect(daemon->client_options()).ok(); }));
}

}  // namespace
}  // namespace shelf::test
