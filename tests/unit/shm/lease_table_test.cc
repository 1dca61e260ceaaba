// LeaseTable on real memfds: what the daemon makes, what a client attaches,
// and what neither side may trust of the other.
#include "shm/lease_table.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace shelf::shm {
namespace {

// A client's view of `table`, through a duplicate of its memfd.
LeaseTable attach_copy(UniqueFd& fd) {
  auto client = LeaseTable::attach(UniqueFd(::dup(fd.get())));
  EXPECT_TRUE(client.ok()) << client.status().to_string();
  return std::move(client).value();
}

TEST(LeaseTableTest, TheDaemonSeesWhatTheClientSetsBelowItsHighWaterMark) {
  auto made = LeaseTable::create(64, 1234);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  UniqueFd fd = made->take_fd();
  LeaseTable client = attach_copy(fd);
  EXPECT_EQ(client.slots(), 64u);
  EXPECT_FALSE(made->holds(42));
  client.raise_high_water(3);
  client.set(2, 42);
  EXPECT_TRUE(made->holds(42));
  EXPECT_FALSE(made->holds(43));
  std::vector<uint64_t> held;
  made->for_each_held([&](uint64_t id) { held.push_back(id); });
  EXPECT_EQ(held, std::vector<uint64_t>{42});
  client.clear(2);
  EXPECT_FALSE(made->holds(42));
  // A slot above the mark is not scanned: the client raises it first.
  client.set(10, 7);
  EXPECT_FALSE(made->holds(7));
  client.raise_high_water(11);
  EXPECT_TRUE(made->holds(7));
}

TEST(LeaseTableTest, AListingMarkIsSeenAsTheOldestListAndNeverAsALease) {
  auto made = LeaseTable::create(64, 1234);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  UniqueFd fd = made->take_fd();
  LeaseTable client = attach_copy(fd);
  EXPECT_EQ(made->oldest_listing(), UINT64_MAX);
  client.raise_high_water(3);
  client.mark_listing(0, 40);
  client.set(1, 42);
  client.mark_listing(2, 38);
  EXPECT_EQ(made->oldest_listing(), 38u);
  // A mark is no lease: not of the id it carries, and not in status.
  EXPECT_FALSE(made->holds(38));
  // What left the index after the oldest mark's index_seq is kept; what
  // left it before, or at it, is not (that list read the index without it).
  EXPECT_TRUE(made->keeps(5, 39));
  EXPECT_FALSE(made->keeps(5, 38));
  EXPECT_TRUE(made->keeps(42, 0));
  std::vector<uint64_t> held;
  made->for_each_held([&](uint64_t id) { held.push_back(id); });
  EXPECT_EQ(held, std::vector<uint64_t>{42});
  client.clear(2);
  EXPECT_EQ(made->oldest_listing(), 40u);
  client.clear(0);
  EXPECT_EQ(made->oldest_listing(), UINT64_MAX);
}

TEST(LeaseTableTest, ADaemonScanStaysInsideItsOwnTableWhateverTheHeaderSays) {
  auto made = LeaseTable::create(16, 1);
  ASSERT_TRUE(made.ok());
  UniqueFd fd = made->take_fd();
  LeaseTable client = attach_copy(fd);
  client.raise_high_water(16);
  client.set(15, 99);
  // A hostile client writes garbage into the header: a huge mark and slot
  // count. The daemon keeps its own count and reads nothing past it.
  void* raw =
      ::mmap(nullptr, lease_table_bytes(16), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(raw, MAP_FAILED);
  auto* header = static_cast<LeaseTableHeaderLayout*>(raw);
  header->high_water = ~uint64_t{0};
  header->slots = ~uint32_t{0};
  EXPECT_EQ(made->slots(), 16u);
  EXPECT_TRUE(made->holds(99));
  EXPECT_FALSE(made->holds(100));
  ::munmap(raw, lease_table_bytes(16));
}

TEST(LeaseTableTest, TheMemfdCannotBeResizedByTheClient) {
  auto made = LeaseTable::create(16, 1);
  ASSERT_TRUE(made.ok());
  UniqueFd fd = made->take_fd();
  EXPECT_NE(::ftruncate(fd.get(), 0), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(fd.get(), 1 << 20), 0);
  EXPECT_FALSE(made->holds(1));  // still mapped and readable
}

TEST(LeaseTableTest, AttachRefusesWhatIsNotATable) {
  // Unsealed.
  UniqueFd plain(::memfd_create("not-a-table", MFD_CLOEXEC));
  ASSERT_TRUE(plain.valid());
  ASSERT_EQ(::ftruncate(plain.get(), 4096), 0);
  auto unsealed = LeaseTable::attach(std::move(plain));
  EXPECT_EQ(unsealed.status().code(), Status::Code::kCorruption);
  // Sealed, but no table inside.
  UniqueFd sealed(::memfd_create("zeros", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_TRUE(sealed.valid());
  ASSERT_EQ(::ftruncate(sealed.get(), 4096), 0);
  ASSERT_EQ(::fcntl(sealed.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
  auto zeros = LeaseTable::attach(std::move(sealed));
  EXPECT_EQ(zeros.status().code(), Status::Code::kCorruption);
}

}  // namespace
}  // namespace shelf::shm
