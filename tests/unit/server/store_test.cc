// The Store's accounting rules, driven directly (no socket, no daemon
// process): each test makes a Store on its own small segment and acts as
// its sessions do, with the publisher's side done the way libclient does it
// (server/publisher_for_tests.h).
#include "server/store.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/limits.h>

#include "server/publisher_for_tests.h"
#include "shm/layout.h"
#include "shm/name_index.h"
#include "shm/segment.h"
#include "shm/view.h"

namespace shelf::server {
namespace {

using for_tests::Int64Partition;
using shm::kPageSize;

constexpr uint64_t kMiB = 1 << 20;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { make_store(4 * kMiB); }

  void TearDown() override {
    mapping_.reset();
    object_.reset();
    store_.reset();
    (void)shm::ShmObject::unlink(shm::kDefaultShmDir,
                                 name_);  // gone already unless a test failed midway
  }

  // A fresh Store with `limit` bytes on a segment no other test uses, and
  // the publisher's read-write mapping of it.
  void make_store(uint64_t limit, bool verify_on_publish = false, uint64_t user_quota = 0) {
    store_.reset();  // removes its segment before the name changes
    static int counter = 0;
    name_ = "shelf-test-" + std::to_string(::getpid()) + "-store-" + std::to_string(counter++);
    StoreOptions options = lasting_options();
    options.memory_limit = limit;
    options.remove_on_exit = true;
    options.verify_on_publish = verify_on_publish;
    options.user_quota = user_quota;
    reopen(options);
  }

  // What a store whose segment outlives it (as a daemon's does) is made
  // with, so that a test can re-attach it as a restart would.
  StoreOptions lasting_options() const {
    StoreOptions options;
    options.segment_name = name_;
    options.memory_limit = 4 * kMiB;
    options.max_datasets = 4;
    return options;
  }
  // Replaces the store with one made, or re-attached, with `options`.
  void reopen(const StoreOptions& options) {
    mapping_.reset();
    object_.reset();
    store_.reset();
    auto made = Store::create(options);
    ASSERT_TRUE(made.ok()) << made.status().to_string();
    store_ = std::move(made).value();
    map_segment();
  }

  // The publisher's read-write mapping of the store's segment.
  void map_segment() {
    mapping_.reset();
    object_.reset();
    auto object = shm::ShmObject::open(shm::kDefaultShmDir, name_, /*writable=*/true);
    ASSERT_TRUE(object.ok()) << object.status().to_string();
    object_ = std::make_unique<shm::ShmObject>(std::move(object).value());
    auto mapped = shm::Mapping::map(*object_, 0, store_->segment_bytes(), /*writable=*/true);
    ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
    mapping_ = std::make_unique<shm::Mapping>(std::move(mapped).value());
    index_bytes_ = store_->status().index_bytes;
  }

  // Allocates an extent for `rows` int64 values and writes them as a
  // publisher does.
  Int64Partition written(Store::SessionId session, uint64_t rows) {
    auto r = store_->allocate(session, rows * 8);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return {};
    auto extent = for_tests::reserve_extent(*object_, r->offset, r->length);
    EXPECT_TRUE(extent.ok()) << extent.status().to_string();
    if (!extent.ok()) return {};
    for (uint64_t i = 0; i < rows; ++i) {
      const int64_t v = static_cast<int64_t>(i * 3);
      std::memcpy(extent->data() + shm::kExtentHeaderBytes + 8 * i, &v, sizeof v);
    }
    for_tests::mark_written(*extent);
    return Int64Partition{r->offset, r->length, rows};
  }

  protocol::PublishItem item(const std::string& name, std::vector<Int64Partition> parts) {
    return {name, for_tests::int64_descriptor(parts, mapping_->data())};
  }

  Status publish(Store::SessionId session, std::vector<protocol::PublishItem> items,
                 bool override_existing = false) {
    protocol::PublishRequest request;
    request.override_existing = override_existing;
    request.items = std::move(items);
    return store_->publish(session, request);
  }

  uint32_t extent_state(uint64_t offset) const {
    const auto* h = reinterpret_cast<const shm::ExtentHeaderLayout*>(mapping_->data() + offset);
    return shm::load_acquire(h->state);
  }

  std::string name_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<shm::ShmObject> object_;
  std::unique_ptr<shm::Mapping> mapping_;
  uint64_t index_bytes_ = 0;
};

TEST_F(StoreTest, HeaderAndIndexAreChargedFromTheStart) {
  // A header page, 4 index entries of 256 bytes (a page) and the name
  // index's 16 buckets of 8 bytes (a page): three pages.
  EXPECT_EQ(index_bytes_, 3 * kPageSize);
  EXPECT_EQ(store_->used_bytes(), index_bytes_);
  EXPECT_EQ(store_->memory_limit(), 4 * kMiB);
}

TEST_F(StoreTest, AllocateChargesWholePagesAndAbortGivesThemBack) {
  const Store::SessionId s = store_->open_session(100, 1000);
  auto a = store_->allocate(s, 100);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->length, kPageSize);  // 64-byte header + 100 bytes, rounded up to a page
  auto b = store_->allocate(s, kPageSize);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->length, 2 * kPageSize);  // the header pushes it past one page
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 3 * kPageSize);
  EXPECT_EQ(store_->status().unsealed_bytes, 3 * kPageSize);

  ASSERT_TRUE(store_->abort(s, a->offset).ok());
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 2 * kPageSize);
  Status again = store_->abort(s, a->offset);
  EXPECT_EQ(again.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 2 * kPageSize);

  // Another session may not abort it.
  const Store::SessionId other = store_->open_session(101, 1000);
  EXPECT_FALSE(store_->abort(other, b->offset).ok());
  ASSERT_TRUE(store_->abort(s, b->offset).ok());
  EXPECT_EQ(store_->used_bytes(), index_bytes_);
  EXPECT_EQ(store_->status().unsealed_bytes, 0u);
  EXPECT_EQ(store_->allocate(s, 0).status().code(), Status::Code::kInvalidArgument);
}

TEST_F(StoreTest, AllocationOverTheLimitNamesUsedLimitRequestedAndChangesNothing) {
  const Store::SessionId s = store_->open_session(100, 1000);
  const uint64_t room = store_->memory_limit() - index_bytes_;
  auto big = store_->allocate(s, room - kPageSize - shm::kExtentHeaderBytes);
  ASSERT_TRUE(big.ok());
  const uint64_t used = store_->used_bytes();
  EXPECT_EQ(used, store_->memory_limit() - kPageSize);

  auto refused = store_->allocate(s, kPageSize);  // two pages; one is left
  ASSERT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  const std::string& msg = refused.status().message();
  EXPECT_NE(msg.find("used=" + std::to_string(used)), std::string::npos) << msg;
  EXPECT_NE(msg.find("limit=" + std::to_string(store_->memory_limit())), std::string::npos) << msg;
  EXPECT_NE(msg.find("requested=" + std::to_string(2 * kPageSize)), std::string::npos) << msg;
  EXPECT_EQ(store_->used_bytes(), used);
  EXPECT_EQ(store_->status().unsealed_bytes, used - index_bytes_);

  // Exactly what is left still fits.
  EXPECT_TRUE(store_->allocate(s, kPageSize - shm::kExtentHeaderBytes).ok());
  EXPECT_EQ(store_->used_bytes(), store_->memory_limit());
}

// A quota is each uid's own; a closed session gives its unsealed bytes back
// to its user.
TEST_F(StoreTest, AQuotaHoldsPerUidAndAClosedSessionGivesItsBytesBack) {
  make_store(4 * kMiB, false, /*user_quota=*/4 * kPageSize);
  const Store::SessionId a = store_->open_session(100, 1000), b = store_->open_session(101, 1001);
  const uint64_t two_pages = 2 * kPageSize - shm::kExtentHeaderBytes;  // with its header
  ASSERT_TRUE(store_->allocate(a, two_pages).ok());
  ASSERT_TRUE(store_->allocate(a, two_pages).ok());  // exactly the quota
  auto refused = store_->allocate(a, 1);
  ASSERT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("uid=1000 quota=16384 used=16384 requested=4096"),
            std::string::npos)
      << refused.status().message();
  EXPECT_TRUE(store_->allocate(b, 1).ok()) << "another uid has a quota of its own";
  auto users = store_->status().users;
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0].uid, 1000u);
  EXPECT_EQ(users[0].used_bytes, 4 * kPageSize);
  EXPECT_EQ(users[0].quota_bytes, 4 * kPageSize);
  store_->close_session(a);
  users = store_->status().users;
  ASSERT_EQ(users.size(), 1u);
  EXPECT_EQ(users[0].uid, 1001u);
  EXPECT_EQ(users[0].used_bytes, kPageSize);
}

TEST_F(StoreTest, PublishSealsTheExtentsAndChargesTheDescriptor) {
  const Store::SessionId s = store_->open_session(100, 1000);
  const Int64Partition p = written(s, 100);
  ASSERT_EQ(p.extent_length, kPageSize);
  ASSERT_TRUE(publish(s, {item("x", {p})}).ok());
  EXPECT_EQ(extent_state(p.extent_offset), static_cast<uint32_t>(shm::ExtentState::kSealed));
  protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.unsealed_bytes, 0u);
  EXPECT_EQ(st.used_bytes, index_bytes_ + 2 * kPageSize);  // partition + descriptor
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.datasets[0].name, "x");
  EXPECT_EQ(st.datasets[0].num_rows, 100u);
  EXPECT_EQ(st.datasets[0].memory_bytes, 2 * kPageSize);
  EXPECT_EQ(st.datasets[0].publisher_pid, 100u);

  // The sealed extent is no longer the session's: it cannot be aborted or
  // published again.
  EXPECT_FALSE(store_->abort(s, p.extent_offset).ok());
  EXPECT_EQ(publish(s, {item("y", {p})}).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 2 * kPageSize);
}

TEST_F(StoreTest, PublishRefusesAnExtentThatWasNotWritten) {
  const Store::SessionId s = store_->open_session(100, 1000);
  auto a = store_->allocate(s, 800);
  ASSERT_TRUE(a.ok());
  Status st = publish(s, {item("x", {Int64Partition{a->offset, a->length, 100}})});
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->status().unsealed_bytes, kPageSize);
  EXPECT_TRUE(store_->list().datasets.empty());
}

// A large publish is checked by the worker first; publish() then uses what
// it found: a whole partition goes through, one with a hole is refused.
TEST_F(StoreTest, ALargePublishIsCheckedOffTheLoopFirst) {
  make_store(256 * kMiB);
  const Store::SessionId s = store_->open_session(100, 1000);
  constexpr uint64_t kRows = 4 << 20;  // 32 MiB: past kCheckAtOnceBytes
  protocol::PublishRequest good;
  good.items = {item("whole", {written(s, kRows)})};
  EXPECT_FALSE(store_->start_publish_checks(s, {}).has_value()) << "nothing to check";
  std::optional<uint64_t> ticket = store_->start_publish_checks(s, good);
  ASSERT_TRUE(ticket.has_value());
  store_->wait_for_background();
  EXPECT_EQ(store_->take_finished_checks(), std::vector<uint64_t>{*ticket});
  EXPECT_FALSE(store_->start_publish_checks(s, good).has_value()) << "checked already";
  EXPECT_TRUE(store_->publish(s, good).ok());

  // Allocated and marked written, but never reserved: a hole.
  auto a = store_->allocate(s, kRows * 8);
  ASSERT_TRUE(a.ok());
  {
    auto header = shm::Mapping::map(*object_, a->offset, kPageSize, /*writable=*/true);
    ASSERT_TRUE(header.ok());
    for_tests::mark_written(*header);
  }
  protocol::PublishRequest holed;
  // No checksums: computing them would read the holes, and a read fault on
  // tmpfs fills one.
  const std::vector<Int64Partition> hole = {Int64Partition{a->offset, a->length, kRows}};
  holed.items.push_back({"holed", for_tests::int64_descriptor(hole, nullptr)});
  ticket = store_->start_publish_checks(s, holed);
  ASSERT_TRUE(ticket.has_value());
  store_->wait_for_background();
  EXPECT_EQ(store_->take_finished_checks(), std::vector<uint64_t>{*ticket});
  const Status refused = store_->publish(s, holed);
  EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(refused.message().find("dataset 'holed' partition 0: its extent was not reserved"),
            std::string::npos)
      << refused.message();
  EXPECT_EQ(store_->list().datasets.size(), 1u);
  // A session that closes while its check runs leaves nothing behind.
  const Store::SessionId t = store_->open_session(101, 1000);
  protocol::PublishRequest other;
  other.items = {item("other", {written(t, kRows)})};
  ticket = store_->start_publish_checks(t, other);
  ASSERT_TRUE(ticket.has_value());
  store_->close_session(t);
  store_->wait_for_background();
  EXPECT_EQ(store_->take_finished_checks(), std::vector<uint64_t>{*ticket});
  EXPECT_EQ(store_->status().unsealed_bytes, a->length) << "only s's holed extent is left";
}

TEST_F(StoreTest, DescriptorOverTheLimitRefusesThePublishAndChangesNothing) {
  const Store::SessionId s = store_->open_session(100, 1000);
  const uint64_t room = store_->memory_limit() - index_bytes_;
  auto filler = store_->allocate(s, room - kPageSize - shm::kExtentHeaderBytes);
  ASSERT_TRUE(filler.ok());
  // The last page goes to the partition: none is left for the descriptor.
  auto a = store_->allocate(s, 800);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(for_tests::write_extent(*object_, a->offset, a->length).ok());
  const uint64_t used = store_->used_bytes();
  ASSERT_EQ(used, store_->memory_limit());
  Status st = publish(s, {item("x", {Int64Partition{a->offset, a->length, 100}})});
  ASSERT_EQ(st.code(), Status::Code::kResourceExhausted);
  EXPECT_NE(st.message().find("requested=" + std::to_string(kPageSize)), std::string::npos)
      << st.message();
  EXPECT_EQ(store_->used_bytes(), used);
  EXPECT_EQ(extent_state(a->offset), static_cast<uint32_t>(shm::ExtentState::kWritten));
  EXPECT_TRUE(store_->list().datasets.empty());
  // Once room is made, the same request succeeds.
  ASSERT_TRUE(store_->abort(s, filler->offset).ok());
  EXPECT_TRUE(publish(s, {item("x", {Int64Partition{a->offset, a->length, 100}})}).ok());
}

TEST_F(StoreTest, ALeaseKeepsTheMemoryOfAnUnpublishedDataset) {
  const Store::SessionId writer = store_->open_session(100, 1000);
  const Store::SessionId reader = store_->open_session(200, 1000);
  ASSERT_TRUE(publish(writer, {item("x", {written(writer, 100)})}).ok());
  auto lease = store_->get(reader, "x");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(store_->status().num_leases, 1u);

  ASSERT_TRUE(store_->unpublish("x", false).ok());
  EXPECT_EQ(store_->get(reader, "x").status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(store_->list().datasets.empty());
  protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_ + 2 * kPageSize);
  EXPECT_EQ(st.pending_free_bytes, 2 * kPageSize);
  // The reader's bytes are still there.
  EXPECT_EQ(extent_state(lease->descriptor_offset - shm::kExtentHeaderBytes),
            static_cast<uint32_t>(shm::ExtentState::kSealed));

  ASSERT_TRUE(store_->release(reader, lease->lease_id).ok());
  EXPECT_EQ(store_->release(reader, lease->lease_id).code(), Status::Code::kInvalidArgument);
  st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.num_leases, 0u);
}

TEST_F(StoreTest, CloseSessionFreesItsUnsealedExtentsAndEndsItsLeases) {
  const Store::SessionId writer = store_->open_session(100, 1000);
  const Store::SessionId reader = store_->open_session(200, 1000);
  ASSERT_TRUE(publish(writer, {item("x", {written(writer, 100)})}).ok());
  ASSERT_TRUE(store_->allocate(writer, 3 * kPageSize).ok());
  (void)written(writer, 10);
  ASSERT_TRUE(store_->get(reader, "x").ok());
  ASSERT_TRUE(store_->get(reader, "x").ok());  // two leases on one dataset
  ASSERT_TRUE(store_->unpublish("x", false).ok());
  EXPECT_EQ(store_->status().num_connections, 2u);

  store_->close_session(writer);
  protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.unsealed_bytes, 0u);
  EXPECT_EQ(st.used_bytes, index_bytes_ + 2 * kPageSize);  // the leased dataset
  EXPECT_EQ(st.num_connections, 1u);

  store_->close_session(reader);
  st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_);
  EXPECT_EQ(st.num_leases, 0u);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.num_connections, 0u);
}

// A view's definition as a client sends it.
protocol::PublishItem view_item(const std::string& name, std::vector<std::string> bases,
                                bool graph = false) {
  shm::ViewDefinition v;
  v.kind = graph ? shm::ViewKind::kGraph : shm::ViewKind::kFilter;
  v.bases = std::move(bases);
  if (graph) v.graph = "a pickle";
  return {name, shm::encode_view(v)};
}

// The rules for views hold for a publish of several names at once, and
// for the views above a name a publish replaces (shelfd checks the graph
// as it will be, not item by item against the graph as it is).
TEST_F(StoreTest, ViewsThatWouldReadThemselvesOrNestTooDeepAreRefusedWhateverTheRequest) {
  StoreOptions options = lasting_options();
  options.max_datasets = 64;
  options.remove_on_exit = true;
  reopen(options);
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("a", {written(s, 10)}), item("b", {written(s, 10)})}).ok());
  // a = view of b and b = view of a, in one request: each alone looks fine.
  Status cycle = publish(s, {view_item("a", {"b"}), view_item("b", {"a"})}, true);
  EXPECT_EQ(cycle.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(cycle.message().find("would read itself (a -> b -> a)"), std::string::npos)
      << cycle.message();
  EXPECT_EQ(store_->list().datasets.size(), 2u);
  // A chain of kMaxViewDepth views over b, then b replaced by a view of a:
  // the chain above b would grow past the limit.
  std::string base = "b";
  for (uint32_t i = 0; i < kMaxViewDepth; ++i) {
    const std::string name = "v" + std::to_string(i);
    ASSERT_TRUE(publish(s, {view_item(name, {base})}).ok()) << name;
    base = name;
  }
  Status deep = publish(s, {view_item("b", {"a"})}, true);
  EXPECT_EQ(deep.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(deep.message().find("views nest at most 16 deep"), std::string::npos) << deep.message();
  // Replacing b by a dataset shortens chains: allowed.
  ASSERT_TRUE(publish(s, {item("b", {written(s, 10)})}, true).ok());
  // A graph view may name a base once only, and reads many views at once
  // without the check walking every path (each name once).
  Status twice = publish(s, {view_item("g", {"a", "a"}, true)});
  EXPECT_NE(twice.message().find("base 'a' is named twice"), std::string::npos) << twice.message();
  std::vector<std::string> every;  // v0..v14: g makes a chain of 16 over v14
  for (uint32_t i = 0; i + 1 < kMaxViewDepth; ++i) every.push_back("v" + std::to_string(i));
  ASSERT_TRUE(publish(s, {view_item("g", every, true)}).ok());
  every.push_back("v" + std::to_string(kMaxViewDepth - 1));
  EXPECT_EQ(publish(s, {view_item("g", every, true)}, true).code(),
            Status::Code::kInvalidArgument);  // over v15: 17
  // A cascade from b takes every view once, each after those that read it.
  auto removed = store_->unpublish("b", /*cascade=*/true);
  ASSERT_TRUE(removed.ok()) << removed.status().to_string();
  ASSERT_EQ(removed->size(), kMaxViewDepth + 2);
  std::map<std::string, size_t> at;
  for (size_t i = 0; i < removed->size(); ++i) at[(*removed)[i].name] = i;
  EXPECT_EQ(at.size(), removed->size());  // each once
  EXPECT_EQ(removed->back().name, "b");
  for (uint32_t i = 0; i + 1 < kMaxViewDepth; ++i) {
    const std::string v = "v" + std::to_string(i);
    EXPECT_LT(at["v" + std::to_string(i + 1)], at[v]) << v;
    EXPECT_LT(at["g"], at[v]) << v;
  }
  EXPECT_EQ(store_->list().datasets.size(), 1u);  // a
}

TEST_F(StoreTest, OverrideReplacesADatasetAndFreesTheOldOne) {
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("x", {written(s, 100)})}).ok());
  const Int64Partition bigger = written(s, 1000);  // two pages
  const uint64_t used = store_->used_bytes();

  Status taken = publish(s, {item("x", {bigger})});
  EXPECT_EQ(taken.code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(store_->used_bytes(), used);
  EXPECT_EQ(extent_state(bigger.extent_offset), static_cast<uint32_t>(shm::ExtentState::kWritten));

  ASSERT_TRUE(publish(s, {item("x", {bigger})}, /*override_existing=*/true).ok());
  protocol::ListResponse list = store_->list();
  ASSERT_EQ(list.datasets.size(), 1u);
  EXPECT_EQ(list.datasets[0].num_rows, 1000u);
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 3 * kPageSize);  // old one's 2 pages are gone
}

TEST_F(StoreTest, OverrideOfALeasedDatasetKeepsItUntilTheLeaseEnds) {
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("x", {written(s, 100)})}).ok());
  auto lease = store_->get(s, "x");
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(publish(s, {item("x", {written(s, 100)})}, true).ok());
  EXPECT_EQ(store_->status().pending_free_bytes, 2 * kPageSize);
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 4 * kPageSize);
  ASSERT_TRUE(store_->release(s, lease->lease_id).ok());
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + 2 * kPageSize);
  EXPECT_EQ(store_->status().pending_free_bytes, 0u);
}

TEST_F(StoreTest, APublishOfSeveralNamesIsAllOrNothing) {
  const Store::SessionId s = store_->open_session(100, 1000);
  const Store::SessionId other = store_->open_session(200, 1000);
  const Int64Partition mine = written(s, 100);
  const Int64Partition theirs = written(other, 100);
  const uint64_t used = store_->used_bytes();

  // The second item names another connection's extent.
  Status st = publish(s, {item("a", {mine}), item("b", {theirs})});
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("'b'"), std::string::npos) << st.message();
  // The same name twice.
  EXPECT_EQ(publish(s, {item("a", {mine}), item("a", {written(s, 10)})}).code(),
            Status::Code::kInvalidArgument);
  // A bad second name.
  EXPECT_FALSE(publish(s, {item("a", {mine}), item(std::string(kMaxNameBytes + 1, 'n'), {})}).ok());
  EXPECT_TRUE(store_->list().datasets.empty());
  EXPECT_EQ(extent_state(mine.extent_offset), static_cast<uint32_t>(shm::ExtentState::kWritten));
  EXPECT_EQ(store_->used_bytes(), used + kPageSize);  // only the extra extent written above

  // One of the names is taken: neither is published.
  ASSERT_TRUE(publish(other, {item("b", {theirs})}).ok());
  const Int64Partition second = written(s, 100);
  EXPECT_EQ(publish(s, {item("a", {mine}), item("b", {second})}).code(),
            Status::Code::kAlreadyExists);
  EXPECT_EQ(store_->list().datasets.size(), 1u);
  EXPECT_EQ(store_->get(s, "a").status().code(), Status::Code::kNotFound);

  // The index holds 4 names: 1 is taken, so 4 new ones do not fit.
  std::vector<protocol::PublishItem> four;
  for (const char* n : {"c", "d", "e", "f"}) four.push_back(item(n, {written(s, 10)}));
  Status full = publish(s, four);
  EXPECT_EQ(full.code(), Status::Code::kResourceExhausted);
  EXPECT_NE(full.message().find("index is full"), std::string::npos) << full.message();
  // The advice is one that keeps the datasets.
  EXPECT_NE(full.message().find("start it again with a larger --max-datasets: the restart keeps "
                                "every dataset"),
            std::string::npos)
      << full.message();
  EXPECT_EQ(store_->list().datasets.size(), 1u);

  ASSERT_TRUE(publish(s, {item("a", {mine}), item("c", {second})}).ok());
  EXPECT_EQ(store_->list().datasets.size(), 3u);
}

TEST_F(StoreTest, VerifyOnPublishRefusesChangedBytes) {
  make_store(4 * kMiB, /*verify_on_publish=*/true);
  const Store::SessionId s = store_->open_session(100, 1000);
  const Int64Partition p = written(s, 100);
  protocol::PublishItem x = item("x", {p});
  mapping_->data()[p.extent_offset + shm::kExtentHeaderBytes + 17] ^= std::byte{1};
  Status st = publish(s, {x});
  EXPECT_EQ(st.code(), Status::Code::kCorruption);
  EXPECT_NE(st.message().find("partition 0 column 'v'"), std::string::npos) << st.message();
  EXPECT_EQ(store_->status().unsealed_bytes, kPageSize);
  EXPECT_TRUE(publish(s, {item("x", {p})}).ok());  // checksums of the bytes as they are now
}

// A large free is punched by the segment worker: the call returns at once,
// and the memory counts as used (pending free) until the thread hands it back.
TEST_F(StoreTest, LargeFreesArePunchedOffTheLoopAndCountAsUsedUntilBack) {
  make_store(256 * kMiB);
  const Store::SessionId s = store_->open_session(100, 1000);
  auto a = store_->allocate(s, 80 * kMiB - shm::kExtentHeaderBytes);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->length, 80 * kMiB);
  ASSERT_TRUE(for_tests::write_extent(*object_, a->offset, a->length).ok());
  const uint64_t resident = store_->status().resident_bytes;
  ASSERT_GE(resident, 80 * kMiB);

  ASSERT_TRUE(store_->abort(s, a->offset).ok());
  protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_ + 80 * kMiB) << "counted until the thread says it is back";
  EXPECT_EQ(st.pending_free_bytes, 80 * kMiB);
  EXPECT_EQ(st.unsealed_bytes, 0u);

  store_->wait_for_background();
  st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.resident_bytes, resident - 80 * kMiB);
  // The extent is free again, whole.
  auto again = store_->allocate(s, 80 * kMiB - shm::kExtentHeaderBytes);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->offset, a->offset);
}

// Small frees are punched at once, before the call returns, when the
// segment worker is idle.
TEST_F(StoreTest, SmallFreesAreBackBeforeTheCallReturns) {
  const Store::SessionId s = store_->open_session(100, 1000);
  auto a = store_->allocate(s, kMiB - shm::kExtentHeaderBytes);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(for_tests::write_extent(*object_, a->offset, a->length).ok());
  const uint64_t resident = store_->status().resident_bytes;
  ASSERT_TRUE(store_->abort(s, a->offset).ok());
  const protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.used_bytes, index_bytes_);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.resident_bytes, resident - kMiB);
}

// While the worker punches a large free, a small one goes to it too (on the
// loop it would wait for the file's lock), and comes back between the large
// one's steps, long before the large one is done.
TEST_F(StoreTest, ASmallFreeWhileTheWorkerPunchesALargeOneGoesToItAndComesBackFirst) {
  make_store(160 * kMiB);
  const Store::SessionId s = store_->open_session(100, 1000);
  auto large = store_->allocate(s, 128 * kMiB - shm::kExtentHeaderBytes);
  auto small = store_->allocate(s, kMiB - shm::kExtentHeaderBytes);
  ASSERT_TRUE(large.ok() && small.ok());
  ASSERT_TRUE(for_tests::write_extent(*object_, large->offset, large->length).ok());
  ASSERT_TRUE(for_tests::write_extent(*object_, small->offset, small->length).ok());
  const uint64_t used = store_->used_bytes();
  ASSERT_TRUE(store_->abort(s, large->offset).ok());  // to the worker: 16 steps of 8 MiB
  ASSERT_TRUE(store_->abort(s, small->offset).ok());
  // Not punched on the loop: still counted, and pending.
  EXPECT_EQ(store_->used_bytes(), used);
  EXPECT_EQ(store_->status().pending_free_bytes, 129 * kMiB);
  // A range comes back whole: the first to come back is the small one (it
  // went after the large one's first step; 15 more were left).
  for (int waited = 0; store_->used_bytes() == used; ++waited) {
    ASSERT_LT(waited, 200'000) << "nothing came back";
    ::usleep(50);
    store_->collect_background();
  }
  EXPECT_EQ(store_->used_bytes(), used - kMiB) << "the large free came back first";
  store_->wait_for_background();
  EXPECT_EQ(store_->used_bytes(), used - 129 * kMiB);
  EXPECT_EQ(store_->status().pending_free_bytes, 0u);
}

// The request parks (the daemon's loop goes on) until the punch has ended.
TEST_F(StoreTest, ARequestThatNeedsMemoryBeingPunchedParksUntilItIsBack) {
  make_store(128 * kMiB);
  const Store::SessionId s = store_->open_session(100, 1000);
  const uint64_t room = store_->memory_limit() - index_bytes_;
  auto a = store_->allocate(s, room - shm::kExtentHeaderBytes);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(for_tests::write_extent(*object_, a->offset, a->length).ok());
  ASSERT_TRUE(store_->abort(s, a->offset).ok());
  ASSERT_EQ(store_->used_bytes(), store_->memory_limit());

  const std::optional<uint64_t> ticket = store_->await_room(s, kMiB);  // needs what is coming back
  ASSERT_TRUE(ticket.has_value());
  EXPECT_EQ(store_->allocate(s, kMiB).status().code(), Status::Code::kResourceExhausted);
  EXPECT_EQ(store_->await_room(s, kMiB), ticket) << "one ticket for every waiting request";
  store_->wait_for_background();
  const std::vector<uint64_t> finished = store_->take_finished_checks();
  EXPECT_NE(std::find(finished.begin(), finished.end(), *ticket), finished.end());
  EXPECT_FALSE(store_->await_room(s, kMiB).has_value());
  auto b = store_->allocate(s, kMiB);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(store_->status().pending_free_bytes, 0u);
  EXPECT_EQ(store_->used_bytes(), index_bytes_ + kMiB + kPageSize);
}

TEST_F(StoreTest, AConnectionHoldsAtMostkMaxLeasesPerConnection) {
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("x", {written(s, 100)})}).ok());
  const Store::SessionId reader = store_->open_session(200, 1000);
  uint64_t first_lease = 0;
  for (size_t i = 0; i < kMaxLeasesPerConnection; ++i) {
    auto lease = store_->get(reader, "x");
    ASSERT_TRUE(lease.ok()) << i << ": " << lease.status().to_string();
    if (i == 0) first_lease = lease->lease_id;
  }
  auto refused = store_->get(reader, "x");
  ASSERT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(refused.status().message().find(std::to_string(kMaxLeasesPerConnection) + " leases"),
            std::string::npos)
      << refused.status().message();
  EXPECT_EQ(store_->status().num_leases, kMaxLeasesPerConnection);
  // The limit is per connection, and ending one lease makes room for one.
  EXPECT_TRUE(store_->get(s, "x").ok());
  ASSERT_TRUE(store_->release(reader, first_lease).ok());
  EXPECT_TRUE(store_->get(reader, "x").ok());
  EXPECT_FALSE(store_->get(reader, "x").ok());
  store_->close_session(reader);
  EXPECT_EQ(store_->status().num_leases, 1u);
}

// What a client reads of the segment's name index, without the daemon.
shm::NameIndexReader index_reader(const shm::Mapping& m) {
  return *shm::NameIndexReader::open({m.data(), m.size()});
}

TEST_F(StoreTest, PublishOverrideAndUnpublishKeepTheNameIndexReadersSee) {
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("a", {written(s, 10)}), item("b", {written(s, 10)})}).ok());
  const shm::NameIndexReader r = index_reader(*mapping_);
  shm::EntrySnapshot a, b;
  ASSERT_EQ(r.find("a", &a), shm::IndexRead::kFound);
  ASSERT_EQ(r.find("b", &b), shm::IndexRead::kFound);
  EXPECT_NE(a.publish_id, b.publish_id);
  EXPECT_EQ(a.data_bytes, store_->status().datasets[0].memory_bytes);
  uint64_t n = 0;
  ASSERT_EQ(r.count(&n), shm::IndexRead::kFound);
  EXPECT_EQ(n, 2u);

  ASSERT_TRUE(publish(s, {item("a", {written(s, 10)})}, /*override_existing=*/true).ok());
  shm::EntrySnapshot a2;
  ASSERT_EQ(r.find("a", &a2), shm::IndexRead::kFound);
  EXPECT_EQ(a2.slot, a.slot);
  EXPECT_GT(a2.publish_id, b.publish_id) << "a new publish id, never an old one";
  EXPECT_EQ(r.still_published(a.slot, a.publish_id), shm::IndexRead::kNotFound);

  ASSERT_TRUE(store_->unpublish("b", false).ok());
  EXPECT_EQ(r.find("b", &b), shm::IndexRead::kNotFound);
  std::vector<shm::EntrySummary> listed;
  std::string names;
  // Nothing is unpublished under this list (one thread): no mark is needed.
  ASSERT_EQ(r.list_summaries(&listed, &names, [](uint64_t) {}), shm::IndexRead::kFound);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(names.substr(listed[0].name_offset, listed[0].name_length), "a");
  ASSERT_TRUE(listed[0].has_descriptor);
  EXPECT_EQ(listed[0].num_rows, 10u);
  ASSERT_EQ(r.count(&n), shm::IndexRead::kFound);
  EXPECT_EQ(n, 1u);
}

TEST_F(StoreTest, ARestartRebuildsTheNameIndexAndNeverReusesAPublishId) {
  StoreOptions options = lasting_options();
  store_.reset();  // the fixture's store removes its segment: make one that stays
  (void)shm::ShmObject::unlink(shm::kDefaultShmDir, name_);
  reopen(options);
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("kept", {written(s, 10)}), item("gone", {written(s, 10)})}).ok());
  ASSERT_TRUE(store_->unpublish("gone", false).ok());
  shm::EntrySnapshot kept;
  ASSERT_EQ(index_reader(*mapping_).find("kept", &kept), shm::IndexRead::kFound);
  // A daemon that dies mid-change leaves index_seq odd and a bucket missing.
  auto* header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_->data());
  header->index_seq += 1;
  std::memset(mapping_->data() + header->hash_offset, 0, 8 * header->hash_capacity);
  store_.reset();

  options.remove_on_exit = true;
  reopen(options);
  ASSERT_EQ(store_->recovery().datasets, 1u);
  const shm::NameIndexReader r = index_reader(*mapping_);
  shm::EntrySnapshot again;
  ASSERT_EQ(r.find("kept", &again), shm::IndexRead::kFound) << "buckets rebuilt, seq even";
  EXPECT_EQ(again.publish_id, kept.publish_id);
  EXPECT_EQ(r.find("gone", &again), shm::IndexRead::kNotFound);
  const Store::SessionId s2 = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s2, {item("new", {written(s2, 10)})}).ok());
  shm::EntrySnapshot fresh;
  ASSERT_EQ(r.find("new", &fresh), shm::IndexRead::kFound);
  // "gone" took kept.publish_id + 1 before the restart.
  EXPECT_GT(fresh.publish_id, kept.publish_id + 1) << "ids persist in the header";
}

// The names a list of the segment's index reports, in slot order.
std::vector<std::string> listed_names(const shm::Mapping& m) {
  std::vector<shm::EntrySummary> listed;
  std::string names;
  EXPECT_EQ(index_reader(m).list_summaries(&listed, &names), shm::IndexRead::kFound);
  std::vector<std::string> out;
  for (const auto& e : listed) out.push_back(names.substr(e.name_offset, e.name_length));
  return out;
}

// After a restart a dataset is served once its checksums are checked on
// the verifier's threads. The loop takes in what they found only when it
// collects: here, one step at a time.
TEST_F(StoreTest, ARestartServesADatasetOnlyOnceItsChecksumsAreChecked) {
  StoreOptions options = lasting_options();
  store_.reset();  // the fixture's store removes its segment: make one that stays
  (void)shm::ShmObject::unlink(shm::kDefaultShmDir, name_);
  // Past kCheckOnLoopBytes: their gets wait for the verifier's thread.
  options.memory_limit = 16 * kMiB;
  reopen(options);
  const Store::SessionId s = store_->open_session(100, 1000);
  constexpr uint64_t kRows = 150'000;  // 1.2 MB
  const Int64Partition b = written(s, kRows);
  ASSERT_TRUE(
      publish(s, {item("a", {written(s, kRows)}), item("b", {b}), item("c", {written(s, kRows)})})
          .ok());
  mapping_->data()[b.extent_offset + shm::kExtentHeaderBytes + 8] ^= std::byte{1};
  store_.reset();

  options.remove_on_exit = true;
  options.verify_threads = 1;
  reopen(options);
  EXPECT_EQ(store_->recovery().unverified, 3u);
  EXPECT_EQ(store_->recovery().quarantined, 0u);
  const shm::NameIndexReader index = index_reader(*mapping_);
  shm::EntrySnapshot e;
  ASSERT_EQ(index.find("a", &e), shm::IndexRead::kFound);
  EXPECT_EQ(e.state, shm::IndexEntryState::kUnverified) << "clients must ask the daemon";
  EXPECT_EQ(listed_names(*mapping_).size(), 3u) << "listed as published";

  // Gets wait for their own dataset's ticket; until it is collected, the
  // store answers none of them.
  const Store::SessionId reader = store_->open_session(101, 1000);
  const std::optional<uint64_t> a_ticket = store_->await_verification("a");
  const std::optional<uint64_t> b_ticket = store_->await_verification("b");
  const std::optional<uint64_t> c_ticket = store_->await_verification("c");
  ASSERT_TRUE(a_ticket && b_ticket && c_ticket);
  EXPECT_NE(*a_ticket, *b_ticket);
  EXPECT_FALSE(store_->await_verification("none"));
  EXPECT_EQ(store_->get(reader, "a").status().code(), Status::Code::kUnavailable);
  // Unpublished while it waits to be checked (or is): gone at once, its
  // memory back once no thread hashes it, and its Gets answered.
  ASSERT_TRUE(store_->unpublish("c", false).ok());
  EXPECT_FALSE(store_->await_verification("c"));

  std::set<uint64_t> finished;
  for (int i = 0; i < 100 && finished.size() < 3; ++i) {
    pollfd ready{store_->verifier_ready_fd(), POLLIN, 0};
    ASSERT_GE(::poll(&ready, 1, 1000), 0);
    store_->collect_background();
    for (uint64_t ticket : store_->take_finished_checks()) finished.insert(ticket);
  }
  EXPECT_EQ(finished.size(), 3u);
  EXPECT_TRUE(finished.count(*a_ticket) && finished.count(*b_ticket) && finished.count(*c_ticket));
  EXPECT_EQ(store_->verifier_ready_fd(), -1) << "the threads are gone once all is checked";
  EXPECT_FALSE(store_->await_verification("a"));
  EXPECT_TRUE(store_->get(reader, "a").ok());
  auto damaged = store_->get(reader, "b");
  EXPECT_EQ(damaged.status().code(), Status::Code::kCorruption);
  EXPECT_NE(damaged.status().message().find("checksum mismatch in partition 0 column"),
            std::string::npos)
      << damaged.status().to_string();
  const std::vector<protocol::QuarantinedDataset> found = store_->take_new_quarantines();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].name, "b");
  ASSERT_EQ(index.find("a", &e), shm::IndexRead::kFound);
  EXPECT_EQ(e.state, shm::IndexEntryState::kPublished);
  ASSERT_EQ(index.find("b", &e), shm::IndexRead::kFound);
  EXPECT_EQ(e.state, shm::IndexEntryState::kQuarantined);
  EXPECT_EQ(listed_names(*mapping_), std::vector<std::string>{"a"});
  const protocol::StatusResponse st = store_->status();
  EXPECT_EQ(st.pending_free_bytes, 0u) << "c was freed once the verifier let go";
  EXPECT_EQ(st.verify_datasets_left, 0u);
}

TEST_F(StoreTest, UsedSlotsEndFollowsPublishesAndTheLowestFreeSlotIsTakenFirst) {
  const Store::SessionId s = store_->open_session(100, 1000);
  const auto* header = reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping_->data());
  EXPECT_EQ(header->used_slots_end, 0u);
  ASSERT_TRUE(publish(s, {item("a", {written(s, 10)}), item("b", {written(s, 10)}),
                          item("c", {written(s, 10)})})
                  .ok());
  EXPECT_EQ(header->used_slots_end, 3u);
  ASSERT_TRUE(store_->unpublish("a", false).ok());  // slot 0: a hole, the mark stays
  EXPECT_EQ(header->used_slots_end, 3u);
  ASSERT_TRUE(store_->unpublish("c", false).ok());  // the highest: down to b's
  EXPECT_EQ(header->used_slots_end, 2u);
  EXPECT_EQ(listed_names(*mapping_), (std::vector<std::string>{"b"}));
  // The lowest free slot (a's) first, not the one freed last (c's).
  ASSERT_TRUE(publish(s, {item("d", {written(s, 10)})}).ok());
  shm::EntrySnapshot d;
  ASSERT_EQ(index_reader(*mapping_).find("d", &d), shm::IndexRead::kFound);
  EXPECT_EQ(d.slot, 0u);
  EXPECT_EQ(header->used_slots_end, 2u);
  EXPECT_EQ(listed_names(*mapping_), (std::vector<std::string>{"d", "b"}));
}

TEST_F(StoreTest, ARestartRecomputesUsedSlotsEnd) {
  StoreOptions options = lasting_options();
  options.max_datasets = 8;
  store_.reset();  // the fixture's store removes its segment: make one that stays
  (void)shm::ShmObject::unlink(shm::kDefaultShmDir, name_);
  reopen(options);
  const Store::SessionId s = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s, {item("a", {written(s, 10)}), item("b", {written(s, 10)}),
                          item("c", {written(s, 10)}), item("d", {written(s, 10)})})
                  .ok());
  ASSERT_TRUE(store_->unpublish("b", false).ok());
  // The daemon dies while rewriting d's entry (slot 3: the restart drops it)
  // and leaves a mark that would hide every entry.
  auto* header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_->data());
  auto* d_entry =
      reinterpret_cast<shm::IndexEntryLayout*>(mapping_->data() + shm::index_entry_offset(3));
  d_entry->seq += 1;
  header->used_slots_end = 0;
  store_.reset();

  options.remove_on_exit = true;
  reopen(options);
  header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_->data());  // the new mapping's
  EXPECT_EQ(store_->recovery().datasets, 2u);
  EXPECT_EQ(store_->recovery().dropped, 1u);
  EXPECT_EQ(header->used_slots_end, 3u) << "one past c's slot, the highest kept";
  EXPECT_EQ(listed_names(*mapping_), (std::vector<std::string>{"a", "c"}));
  // Unpublishing the highest lowers it past b's free slot, to a's.
  ASSERT_TRUE(store_->unpublish("c", false).ok());
  EXPECT_EQ(header->used_slots_end, 1u);
  EXPECT_EQ(listed_names(*mapping_), (std::vector<std::string>{"a"}));
  // And b's slot is the first handed out again.
  const Store::SessionId s2 = store_->open_session(100, 1000);
  ASSERT_TRUE(publish(s2, {item("e", {written(s2, 10)})}).ok());
  EXPECT_EQ(header->used_slots_end, 2u);
  EXPECT_EQ(listed_names(*mapping_), (std::vector<std::string>{"a", "e"}));
}

}  // namespace
}  // namespace shelf::server
