// Quotas (shelfd --user-quota): what a user's published datasets and the
// partitions it is writing take, refused exactly past its quota, counted
// right through aborts, overrides, unpublishes and a restart; one user over
// its quota leaves the others served. Users other than root are forked
// children that change uid (those tests skip unless root).
#include <cstdint>
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

constexpr uint64_t kRows = 1000;

// What status() says `uid` uses; a uid it does not list uses nothing.
UserUsageInfo usage_of(Client& client, uint32_t uid) {
  for (const UserUsageInfo& u : status_of(client).users) {
    if (u.uid == uid) return u;
  }
  return UserUsageInfo{uid, 0, 0};
}

uint64_t memory_of(Client& client, const std::string& name) {
  for (const DatasetInfo& d : status_of(client).datasets) {
    if (d.name == name) return d.memory_bytes;
  }
  ADD_FAILURE() << name << " is not published";
  return 0;
}

// A dataset's memory is its descriptor's extent and its partitions': what
// its publisher is charged. A partition is charged from the moment it is
// allocated, and a refusal at the boundary changes nothing.
TEST(QuotaTest, AUsersUseIsRefusedExactlyPastItsQuotaAndCountedThroughEveryChange) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  const uint32_t me = ::geteuid();
  uint64_t one = 0, partition = 0;  // a dataset of kRows, and its partition alone
  {
    Client client = daemon->connect();
    publish_int64(client, "a", kRows, 1);
    one = memory_of(client, "a");
    EXPECT_EQ(usage_of(client, me).used_bytes, one) << "charged without a quota too";
    EXPECT_EQ(usage_of(client, me).quota_bytes, 0u);
    {
      TableBuilder table = make_int64_table(client, kRows, 2);
      partition = usage_of(client, me).used_bytes - one;
      EXPECT_GT(partition, 0u);
      EXPECT_LT(partition, one) << "the descriptor is charged at the publish";
    }  // dropped unpublished: its partition is given back
    EXPECT_EQ(usage_of(client, me).used_bytes, one);
  }
  // Room for "a", a second dataset like it, and one more partition.
  const uint64_t quota = 2 * one + partition;
  daemon->stop();
  CommandResult r = daemon->restart({"--user-quota", std::to_string(quota)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  EXPECT_EQ(usage_of(client, me).used_bytes, one) << "a restart charges what it serves again";
  EXPECT_EQ(usage_of(client, me).quota_bytes, quota);

  publish_int64(client, "b", kRows, 3);
  TableBuilder last = make_int64_table(client, kRows, 4);  // exactly the quota: taken
  EXPECT_EQ(usage_of(client, me).used_bytes, quota);
  auto more = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(more.ok());
  const Status refused = more->add_partition(1).status();
  ASSERT_EQ(refused.code(), Status::Code::kResourceExhausted) << refused.to_string();
  const std::string numbers = "(uid=" + std::to_string(me) + " quota=" + std::to_string(quota) +
                              " used=" + std::to_string(quota) + " requested=";
  EXPECT_THAT(refused.message(), HasSubstr("uid " + std::to_string(me) + " is over its quota: "));
  EXPECT_THAT(refused.message(), HasSubstr(numbers));
  EXPECT_THAT(refused.message(), HasSubstr("--user-quota " + std::to_string(me) + "=SIZE"));
  // Its descriptor does not fit either: the publish changes nothing.
  const Status unpublishable = client.publish_dataset("c", last);
  ASSERT_EQ(unpublishable.code(), Status::Code::kResourceExhausted) << unpublishable.to_string();
  EXPECT_THAT(unpublishable.message(), HasSubstr("is over its quota"));
  EXPECT_EQ(usage_of(client, me).used_bytes, quota);
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "b"}));

  // An unpublish gives its bytes back to the user at once, even while a
  // reader holds it (that memory is its reader's, no user's).
  Dataset held = client.get_dataset("a").value();
  ASSERT_TRUE(client.unpublish_dataset("a").ok());
  EXPECT_EQ(usage_of(client, me).used_bytes, quota - one);
  EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  ASSERT_TRUE(client.publish_dataset("c", last).ok());
  EXPECT_EQ(usage_of(client, me).used_bytes, 2 * one);
  expect_int64_published(client, "c", kRows, 4);

  // An override needs room for both until it commits (as the memory limit
  // does), then is charged once.
  TableBuilder again = make_int64_table(client, kRows, 5);  // the last partition that fits
  const Status no_room = client.publish_dataset("b", again, {.override_existing = true});
  ASSERT_EQ(no_room.code(), Status::Code::kResourceExhausted) << no_room.to_string();
  expect_int64_published(client, "b", kRows, 3);
  ASSERT_TRUE(client.unpublish_dataset("c").ok());
  ASSERT_TRUE(client.publish_dataset("b", again, {.override_existing = true}).ok());
  EXPECT_EQ(usage_of(client, me).used_bytes, one);
  expect_int64_published(client, "b", kRows, 5);
}

}  // namespace
}  // namespace shelf::test
