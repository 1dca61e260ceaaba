// Restart: a shelfd killed with SIGKILL (or stopped) and started again on the
// same segment serves every sealed dataset again, byte for byte; damaged
// datasets are quarantined, half-written ones dropped, incompatible segments
// refused untouched; clients never hang on a dead or hung daemon.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <limits>
#include <signal.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "shm/checksum.h"
#include "shm/descriptor.h"
#include "shm/intent.h"
#include "shm/layout.h"
#include "shm/name_index.h"
#include "shm/segment.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ------------------------------------------------------------ helpers --

// Every buffer of every partition and column, with its type and null count:
// two datasets with equal fingerprints are equal byte for byte.
std::string fingerprint(const Dataset& ds) {
  std::string out;
  auto add = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  for (const Field& f : ds.schema()) out += f.name + ":" + std::to_string(int(f.type)) + ";";
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    out += "|p" + std::to_string(ds.num_rows(p));
    for (size_t c = 0; c < ds.schema().size(); ++c) {
      const ColumnView col = ds.column(p, c);
      out += "|c" + std::to_string(col.null_count());
      add(col.validity_bitmap().data(), col.validity_bitmap().size_bytes());
      add(col.string_offsets().data(), col.string_offsets().size_bytes());
      add(col.data().data(), col.data().size_bytes());
    }
  }
  return out;
}

std::string fingerprint_of(Client& client, const std::string& name) {
  auto ds = client.get_dataset(name);
  if (!ds.ok()) {
    ADD_FAILURE() << "get " << name << ": " << ds.status().to_string();
    throw TestFailure("get failed");
  }
  EXPECT_TRUE(ds->verify().ok()) << name;
  return fingerprint(*ds);
}

const Schema kMixed = {{"id", Type::kInt64},
                       {"price", Type::kFloat64},
                       {"flag", Type::kBool},
                       {"label", Type::kString},
                       {"at", Type::kTimestamp}};

std::string label_of(uint64_t g) { return g % 4 == 2 ? "héllo-" + std::to_string(g) : ""; }

// Two partitions of every kind of column, with nulls in price and label.
void publish_mixed(Client& client, const std::string& name, uint64_t rows) {
  auto table = client.create_table(kMixed);
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  for (uint64_t g0 : {uint64_t{0}, rows}) {
    uint64_t label_bytes = 0;
    for (uint64_t g = g0; g < g0 + rows; ++g) label_bytes += label_of(g).size();
    const uint64_t string_bytes[] = {label_bytes};
    auto part = table->add_partition(rows, string_bytes);
    ASSERT_TRUE(part.ok()) << part.status().to_string();
    std::span<int64_t> id = part->values<int64_t>(0);
    std::span<double> price = part->values<double>(1);
    std::span<uint8_t> flag = part->values<uint8_t>(2);
    StringColumnWriter label = part->strings(3);
    std::span<int64_t> at = part->values<int64_t>(4);
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t g = g0 + r;
      id[r] = static_cast<int64_t>(g) * 7 - 3;
      if (g % 5 == 1) {
        price[r] = std::numeric_limits<double>::quiet_NaN();
        part->set_null(1, r);
      } else {
        price[r] = static_cast<double>(g) * 0.25;
      }
      flag[r] = g % 3 == 0;
      ASSERT_TRUE((g % 9 == 4 ? label.append_null() : label.append(label_of(g))).ok());
      at[r] = 1'700'000'000'000'000'000 + static_cast<int64_t>(g);
    }
  }
  Status s = client.publish_dataset(name, *table);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

// Checks the values publish_mixed wrote, independently of any fingerprint.
void expect_mixed(Client& client, const std::string& name, uint64_t rows) {
  auto ds = client.get_dataset(name);
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  ASSERT_EQ(ds->schema(), kMixed);
  ASSERT_EQ(ds->num_partitions(), 2u);
  uint64_t wrong = 0;
  for (uint64_t p = 0; p < 2; ++p) {
    std::span<const int64_t> id = ds->column(p, 0).values<int64_t>();
    const ColumnView price = ds->column(p, 1);
    std::span<const uint8_t> flag = ds->column(p, 2).values<uint8_t>();
    const ColumnView label = ds->column(p, 3);
    std::span<const int64_t> at = ds->column(p, 4).values<int64_t>();
    ASSERT_EQ(id.size(), rows);
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t g = p * rows + r;
      wrong += id[r] != static_cast<int64_t>(g) * 7 - 3;
      wrong += price.is_valid(r) != (g % 5 != 1);
      if (g % 5 != 1) wrong += price.values<double>()[r] != static_cast<double>(g) * 0.25;
      wrong += flag[r] != (g % 3 == 0);
      wrong += label.is_valid(r) != (g % 9 != 4);
      if (g % 9 != 4) wrong += label.string(r) != label_of(g);
      wrong += at[r] != 1'700'000'000'000'000'000 + static_cast<int64_t>(g);
    }
  }
  EXPECT_EQ(wrong, 0u) << name;
}

std::vector<std::byte> payload_of(size_t n) {
  std::vector<std::byte> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = std::byte(static_cast<uint8_t>(i * 131 + 7));
  return bytes;
}

void publish_bytes(Client& client, const std::string& name, size_t n) {
  auto table = client.create_table(bytes_schema());
  ASSERT_TRUE(table.ok());
  ASSERT_TRUE(table->append_bytes(payload_of(n)).ok());
  ASSERT_TRUE(client.publish_dataset(name, *table).ok());
}

// Everything a client can see of the daemon's datasets: names, sizes, bytes.
struct Snapshot {
  std::vector<std::string> names;
  std::vector<std::string> fingerprints;
  uint64_t used = 0;
  uint64_t datasets_memory = 0;
  uint64_t index = 0;
};

Snapshot snapshot_of(Client& client) {
  Snapshot s;
  const MemoryStats st = status_once_freed(client);
  s.used = st.used_bytes;
  s.index = st.index_bytes;
  for (const DatasetInfo& d : st.datasets) {
    s.names.push_back(d.name);
    s.datasets_memory += d.memory_bytes;
    s.fingerprints.push_back(fingerprint_of(client, d.name));
  }
  return s;
}

// The segment of `daemon`, mapped read-write by the test itself: the bytes
// a stray writer (or a bit flip) could change behind shelfd's back.
struct RawSegment {
  shm::ShmObject object;
  shm::Mapping mapping;
  std::byte* at(uint64_t offset) const { return mapping.data() + offset; }
  const shm::SegmentHeaderLayout& header() const {
    return *reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping.data());
  }
};

RawSegment open_raw(const TestDaemon& daemon) {
  auto object = shm::ShmObject::open(shm::kDefaultShmDir, daemon.segment(), /*writable=*/true);
  if (!object.ok()) throw TestFailure("open segment: " + object.status().to_string());
  auto size = object->size();
  auto mapping = shm::Mapping::map(*object, 0, *size, /*writable=*/true);
  if (!mapping.ok()) throw TestFailure("map segment: " + mapping.status().to_string());
  return RawSegment{std::move(object).value(), std::move(mapping).value()};
}

// The index entry of the published dataset `name`, found as a reader would.
shm::IndexEntryLayout* find_entry(const RawSegment& seg, const std::string& name) {
  const shm::SegmentHeaderLayout& h = seg.header();
  for (uint32_t slot = 0; slot < h.index_capacity; ++slot) {
    auto* e = reinterpret_cast<shm::IndexEntryLayout*>(
        seg.at(h.index_offset + uint64_t{slot} * h.index_entry_bytes));
    if (shm::is_listed(e->state) && std::string(e->name, e->name_length) == name) return e;
  }
  throw TestFailure(name + " is not in the index");
}

shm::DescriptorView descriptor_of(const RawSegment& seg, const std::string& name) {
  const shm::IndexEntryLayout* e = find_entry(seg, name);
  auto view = shm::DescriptorView::parse(
      std::span<const std::byte>(seg.at(e->descriptor_offset), e->descriptor_length), false);
  if (!view.ok()) throw TestFailure("descriptor of " + name + ": " + view.status().to_string());
  return std::move(view).value();
}

// The data buffer of (partition, column) of the published dataset `name`.
shm::BufferLayout data_buffer(const RawSegment& seg, const std::string& name, uint64_t partition,
                              uint32_t column) {
  return descriptor_of(seg, name).chunk(partition, column).data;
}

// A hash of the whole segment file and how much of it is resident: equal
// before and after means nobody changed a byte.
std::pair<uint64_t, uint64_t> file_state(const TestDaemon& daemon) {
  const std::string path = "/dev/shm/" + daemon.segment();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw TestFailure("open " + path);
  // The bytes, as fixed blocks that are not all zero, with where they are:
  // read only around data (SEEK_DATA), since the segment is sparse (256 MiB
  // of index room). Where the file has holes or zero pages does not
  // count (a reserved page reads as data once touched), only its bytes.
  constexpr off_t kBlock = 64 << 10;
  std::vector<char> buf(kBlock);
  const std::vector<char> zeros(kBlock, 0);
  uint64_t hash = 0;
  off_t next_block = 0;  // blocks below it are hashed already
  for (off_t at = 0;;) {
    const off_t data = ::lseek(fd.get(), at, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data past `at`
    const off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    for (off_t block = std::max(next_block, data / kBlock * kBlock); block < hole;
         block += kBlock) {
      const ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), block);
      if (n <= 0) break;
      if (std::memcmp(buf.data(), zeros.data(), static_cast<size_t>(n)) != 0) {
        hash = (hash * 31 + static_cast<uint64_t>(block)) * 31 +
               shm::xxh3(buf.data(), static_cast<size_t>(n));
      }
      next_block = block + kBlock;
    }
    at = std::max(hole, next_block);
  }
  struct stat st;
  const uint64_t size = ::fstat(fd.get(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return {hash * 31 + size, daemon.resident_bytes()};
}

// Publishes the datasets most tests restart with: several types, several
// partitions, a raw-bytes one.
void publish_several(Client& client) {
  publish_int64(client, "ints", 300'000, 11);
  TableBuilder multi = make_int64_table(client, 50'000, -5, 3);
  ASSERT_TRUE(client.publish_dataset("ints-3-partitions", multi).ok());
  publish_mixed(client, "mixed", 20'000);
  publish_bytes(client, "blob", 123'457);
}

void expect_several(Client& client) {
  expect_int64_published(client, "ints", 300'000, 11);
  auto multi = client.get_dataset("ints-3-partitions");
  ASSERT_TRUE(multi.ok()) << multi.status().to_string();
  expect_int64_dataset(*multi, 50'000, -5, 3);
  expect_mixed(client, "mixed", 20'000);
  auto blob = client.get_dataset("blob");
  ASSERT_TRUE(blob.ok()) << blob.status().to_string();
  const std::vector<std::byte> expected = payload_of(123'457);
  ASSERT_EQ(blob->bytes(0).size(), expected.size());
  EXPECT_EQ(std::memcmp(blob->bytes(0).data(), expected.data(), expected.size()), 0);
}

void expect_same(const Snapshot& before, const Snapshot& after) {
  EXPECT_EQ(after.names, before.names);
  ASSERT_EQ(after.fingerprints.size(), before.fingerprints.size());
  for (size_t i = 0; i < before.fingerprints.size(); ++i) {
    EXPECT_TRUE(after.fingerprints[i] == before.fingerprints[i])
        << before.names[i] << " changed across the restart";
  }
  EXPECT_EQ(after.used, before.used);
  // Nothing leaks: used is exactly the index plus the datasets.
  EXPECT_EQ(after.used, after.index + after.datasets_memory);
}

// ------------------------------------------------------------- tests --

TEST(RestartTest, KilledDaemonRestartsServingEveryDatasetByteForByte) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  uint64_t generation = 0;
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    before = snapshot_of(client);
    generation = status_of(client).generation;
  }
  ASSERT_EQ(before.names.size(), 4u);
  daemon->kill9();

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("4 datasets served again, 0 quarantined"));
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_several(client);
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.generation, generation + 1) << "each attach bumps the generation";
  EXPECT_EQ(st.num_leases, 0u);
  EXPECT_EQ(st.unsealed_bytes, 0u);
}

TEST(RestartTest, CleanStopKeepsTheDatasetsForTheNextDaemon) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    before = snapshot_of(client);
  }
  daemon->stop();
  struct stat st;
  EXPECT_EQ(::stat(("/dev/shm/" + daemon->segment()).c_str(), &st), 0)
      << "a stopped shelfd removed its segment";

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_several(client);
  // And it goes on working: publish, unpublish, memory back to the index.
  publish_int64(client, "after", 1000, 1);
  for (const std::string& name : listed_names(client)) {
    ASSERT_TRUE(client.unpublish_dataset(name).ok()) << name;
  }
  const MemoryStats empty = status_once_freed(client);
  EXPECT_EQ(empty.used_bytes, empty.index_bytes);
  EXPECT_EQ(daemon->resident_bytes(), empty.index_bytes) << "pages not given back";
}

TEST(RestartTest, DiscardStartsEmpty) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_several(client);
  }
  daemon->kill9();
  CommandResult r = daemon->restart({"--discard"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("re-attached")));
  Client client = daemon->connect();
  EXPECT_TRUE(listed_names(client).empty());
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.used_bytes, st.index_bytes);
  EXPECT_EQ(st.generation, 1u) << "a new segment";
  EXPECT_EQ(daemon->resident_bytes(), st.index_bytes);
  expect_daemon_serves(*daemon);
}

// A publisher was writing (or had written, not published) when shelfd died.
// After the restart nothing of it is listed, and its memory comes back: at
// once if it is gone, when it exits if it still lives (it could still write
// into its mapping, so its pages cannot go to anyone else before).
class MidWriteTest : public ::testing::TestWithParam<bool> {};

TEST_P(MidWriteTest, HalfWrittenDatasetIsDroppedAndItsMemoryComesBack) {
  const bool publisher_survives = GetParam();
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "published", 100'000, 2);
  const Snapshot before = snapshot_of(client);
  const uint64_t resident_before = daemon->resident_bytes();

  Pipe written, go, result;
  pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder t = make_int64_table(c, 256 * 1024, 0, 3);  // written, not published
    auto more = t.add_partition(1000);                       // and one still being written
    ASSERT_TRUE(more.ok());
    ASSERT_TRUE(written.signal());
    ASSERT_TRUE(go.wait());
    // Its connection died with the daemon: publishing fails, clearly.
    Status s = c.publish_dataset("half-made", t);
    EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr("connect again"));
    ASSERT_TRUE(result.signal());
    for (;;) ::pause();
  });
  ASSERT_TRUE(written.wait());
  EXPECT_GT(status_of(client).unsealed_bytes, 3u * 256 * 1024 * 8);
  daemon->kill9();
  if (!publisher_survives) {
    EXPECT_EQ(kill_child(publisher), 128 + SIGKILL);
  }

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client after = daemon->connect();
  EXPECT_EQ(listed_names(after), before.names);
  EXPECT_EQ(after.get_dataset("half-made").status().code(), Status::Code::kNotFound);
  if (publisher_survives) {
    const MemoryStats held = status_of(after);
    EXPECT_GT(held.unsealed_bytes, 3u * 256 * 1024 * 8) << "freed under a live writer";
    EXPECT_EQ(held.used_bytes, before.used + held.unsealed_bytes);
    ASSERT_TRUE(go.signal());
    EXPECT_TRUE(result.wait()) << "the publisher hung";
    EXPECT_EQ(kill_child(publisher), 128 + SIGKILL);
    EXPECT_TRUE(eventually([&] { return status_of(after).unsealed_bytes == 0; }))
        << "the dead publisher's extents were not freed";
  }
  const MemoryStats st = status_once_freed(after);
  EXPECT_EQ(st.unsealed_bytes, 0u);
  EXPECT_EQ(st.used_bytes, before.used) << "used must equal the published total";
  EXPECT_EQ(daemon->resident_bytes(), resident_before) << "the pages were not given back";
  expect_same(before, snapshot_of(after));
  expect_daemon_serves(*daemon);
}

INSTANTIATE_TEST_SUITE_P(Publisher, MidWriteTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("Survives") : std::string("Killed");
                         });

// An unsealed extent whose owner pid names a live process that does not map
// the segment (a reused pid, or a header a hostile client forged) is not
// held for it: nobody can write into it, so the restart frees it at once.
TEST(RestartTest, AnExtentOfAPidThatDoesNotMapTheSegmentIsFreed) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  uint64_t used_before = 0;
  {
    Client client = daemon->connect();
    publish_int64(client, "published", 100'000, 2);
    used_before = status_of(client).used_bytes;
  }
  const uint64_t resident_before = daemon->resident_bytes();
  daemon->kill9();
  // Alive, and mapping nothing of ours once it has exec'ed.
  pid_t stranger = spawn_child([] {
    ::execlp("sleep", "sleep", "60", static_cast<char*>(nullptr));
    ::_exit(127);
  });
  EXPECT_TRUE(eventually([&] {
    std::ifstream comm("/proc/" + std::to_string(stranger) + "/comm");
    std::string name;
    return std::getline(comm, name) && name == "sleep";
  }));
  {
    RawSegment seg = open_raw(*daemon);
    const uint64_t at = seg.header().data_offset + seg.header().data_bytes / 2;
    shm::ExtentHeaderLayout forged{};
    forged.magic = shm::kExtentMagic;
    forged.state = static_cast<uint32_t>(shm::ExtentState::kAllocated);
    forged.kind = static_cast<uint32_t>(shm::ExtentKind::kPartition);
    forged.length = 2 * shm::kPageSize;
    forged.owner_pid = static_cast<uint32_t>(stranger);
    std::memcpy(seg.at(at), &forged, sizeof forged);
    std::memset(seg.at(at + shm::kPageSize), 0x77, shm::kPageSize);
  }
  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.unsealed_bytes, 0u) << "held for a process that cannot write into it";
  EXPECT_EQ(st.used_bytes, used_before);
  EXPECT_EQ(daemon->resident_bytes(), resident_before) << "its pages were not given back";
  expect_int64_published(client, "published", 100'000, 2);
  EXPECT_EQ(kill_child(stranger), 128 + SIGKILL);
}

// A reader that outlives the daemon keeps reading the Datasets it got from
// it. Their leases died with the daemon, so the new one holds everything
// that existed at the restart while such a process maps the segment: the
// dataset unpublished while leased, and one unpublished after the restart.
// When the reader exits, all of it is given back.
TEST(RestartTest, ReaderThatOutlivesTheDaemonKeepsReadingUntilItExits) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  uint64_t index_bytes = 0, used_with_both = 0;
  Pipe published, holding, go, checked;
  pid_t reader = spawn_child([&] {
    ASSERT_TRUE(published.wait());
    Client c = daemon->connect();
    auto kept = c.get_dataset("kept");
    auto dropped = c.get_dataset("dropped");
    ASSERT_TRUE(kept.ok() && dropped.ok());
    ASSERT_TRUE(holding.signal());
    ASSERT_TRUE(go.wait());
    // The daemon was killed and restarted, and both were unpublished.
    expect_int64_dataset(*kept, 10'000, 1);
    expect_int64_dataset(*dropped, 200'000, 2);
    ASSERT_TRUE(checked.signal());
    for (;;) ::pause();
  });
  {
    Client client = daemon->connect();
    publish_int64(client, "kept", 10'000, 1);
    publish_int64(client, "dropped", 200'000, 2);
    used_with_both = status_of(client).used_bytes;
    index_bytes = status_of(client).index_bytes;
    ASSERT_TRUE(published.signal());
    ASSERT_TRUE(holding.wait());
    ASSERT_TRUE(client.unpublish_dataset("dropped").ok());
    EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  }
  daemon->kill9();

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 processes still map the segment")) << r.err;
  Client client = daemon->connect();
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"kept"});
  MemoryStats st = status_of(client);
  EXPECT_EQ(st.used_bytes, used_with_both) << "the reader's dataset was freed under it";
  EXPECT_GT(st.pending_free_bytes, 200'000u * 8);
  ASSERT_TRUE(client.unpublish_dataset("kept").ok());
  st = status_of(client);
  EXPECT_EQ(st.used_bytes, used_with_both) << "unpublished under a reader of the old daemon";
  EXPECT_EQ(st.used_bytes, st.index_bytes + st.pending_free_bytes);
  ASSERT_TRUE(go.signal());
  EXPECT_TRUE(checked.wait()) << "the reader could not read what it held";
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);

  EXPECT_TRUE(eventually([&] { return status_of(client).pending_free_bytes == 0; }))
      << "the reader exited but its datasets were not freed";
  st = status_of(client);
  EXPECT_EQ(st.used_bytes, index_bytes);
  EXPECT_EQ(daemon->resident_bytes(), index_bytes) << "the pages were not given back";
  expect_daemon_serves(*daemon);
}

// A reader of the old daemon that lets go of the segment (drops its Client
// and Datasets) without exiting: the next unpublish notices and frees.
TEST(RestartTest, ReaderThatUnmapsReleasesTheRestartHold) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Pipe published, holding, go, dropped;
  pid_t reader = spawn_child([&] {
    ASSERT_TRUE(published.wait());
    {
      Client c = daemon->connect();
      auto ds = c.get_dataset("data");
      ASSERT_TRUE(ds.ok());
      ASSERT_TRUE(holding.signal());
      ASSERT_TRUE(go.wait());
    }  // unmapped here
    ASSERT_TRUE(dropped.signal());
    for (;;) ::pause();
  });
  uint64_t index_bytes = 0;
  {
    Client client = daemon->connect();
    publish_int64(client, "data", 100'000, 5);
    index_bytes = status_of(client).index_bytes;
    ASSERT_TRUE(published.signal());
    ASSERT_TRUE(holding.wait());
  }
  daemon->kill9();
  ASSERT_EQ(daemon->restart().exit_code, 0);
  ASSERT_TRUE(go.signal());
  ASSERT_TRUE(dropped.wait());
  Client client = daemon->connect();
  ASSERT_TRUE(client.unpublish_dataset("data").ok());
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.pending_free_bytes, 0u) << "held for a process that no longer maps the segment";
  EXPECT_EQ(st.used_bytes, index_bytes);
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);
}

// Unpublished while leased, with no reader left at the restart: freed by it.
TEST(RestartTest, UnpublishedButLeasedDatasetIsFreedByTheRestart) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Snapshot kept_only;
  Pipe published, holding;
  pid_t reader = spawn_child([&] {
    ASSERT_TRUE(published.wait());
    Client c = daemon->connect();
    auto held = c.get_dataset("dropped");
    ASSERT_TRUE(held.ok());
    ASSERT_TRUE(holding.signal());
    for (;;) ::pause();
  });
  {
    Client client = daemon->connect();
    publish_int64(client, "kept", 10'000, 1);
    kept_only = snapshot_of(client);
    publish_int64(client, "dropped", 200'000, 2);
    ASSERT_TRUE(published.signal());
    ASSERT_TRUE(holding.wait());
    ASSERT_TRUE(client.unpublish_dataset("dropped").ok());
    EXPECT_GT(status_of(client).pending_free_bytes, 0u);
  }
  daemon->kill9();
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);

  ASSERT_EQ(daemon->restart().exit_code, 0);
  Client after = daemon->connect();
  const MemoryStats st = status_of(after);
  EXPECT_EQ(st.pending_free_bytes, 0u);
  EXPECT_EQ(st.used_bytes, kept_only.used);
  EXPECT_EQ(daemon->resident_bytes(), kept_only.used) << "its pages were not given back";
  expect_same(kept_only, snapshot_of(after));
}

TEST(RestartTest, CorruptedPartitionIsQuarantinedAndOthersAreServed) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    TableBuilder victim = make_int64_table(client, 100'000, 77, 3);
    ASSERT_TRUE(client.publish_dataset("victim", victim).ok());
    before = snapshot_of(client);
  }
  daemon->kill9();
  {
    // One byte of partition 1, as a stray writer or a bit flip would.
    RawSegment seg = open_raw(*daemon);
    const shm::BufferLayout b = data_buffer(seg, "victim", 1, 0);
    ASSERT_GT(b.length, 1000u);
    *seg.at(b.offset + 999) ^= std::byte{0x01};
  }

  // Its checksums are checked once shelfd serves again: it starts with
  // every dataset served, and says that it checks them.
  CommandResult r = daemon->restart_serving();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("5 datasets served again, 0 quarantined"));
  EXPECT_THAT(r.out, HasSubstr("checking the checksums of 5"));
  Client client = daemon->connect();
  // Never served: a get right after the restart waits for the check, and
  // says why it refuses.
  auto got = client.get_dataset("victim");
  EXPECT_EQ(got.status().code(), Status::Code::kCorruption);
  EXPECT_THAT(got.status().message(), HasSubstr("quarantined"));
  EXPECT_THAT(got.status().message(), HasSubstr("checksum mismatch in partition 1 column 'v'"));
  // Then no longer listed.
  std::vector<std::string> served = before.names;
  std::erase(served, "victim");
  EXPECT_EQ(listed_names(client), served);
  expect_several(client);
  // The daemon's log says it, for whoever looks later.
  EXPECT_TRUE(eventually([&] { return status_of(client).verifying.datasets_left == 0; }));
  std::ifstream log_file(daemon->socket() + ".log");
  const std::string log((std::istreambuf_iterator<char>(log_file)), {});
  EXPECT_THAT(log,
              HasSubstr("'victim' is quarantined, not served: checksum mismatch in partition 1"));
  EXPECT_THAT(log, HasSubstr("1 datasets quarantined"));
  // Reported by status, its memory still accounted until it is unpublished.
  MemoryStats st = status_of(client);
  ASSERT_EQ(st.quarantined.size(), 1u);
  EXPECT_EQ(st.quarantined[0].name, "victim");
  EXPECT_THAT(st.quarantined[0].reason, HasSubstr("checksum mismatch"));
  EXPECT_GT(st.quarantined[0].memory_bytes, 3u * 100'000 * 8);
  EXPECT_EQ(st.used_bytes, before.used);
  const uint64_t victim_bytes = st.quarantined[0].memory_bytes;
  // The CLI shows it too.
  CommandResult cli = run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status"});
  EXPECT_THAT(cli.out, HasSubstr("quarantined: 1"));
  EXPECT_THAT(cli.out, HasSubstr("victim"));
  EXPECT_THAT(cli.out, Not(HasSubstr("checking:"))) << "nothing left to check";
  CommandResult json =
      run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status", "--json"});
  EXPECT_THAT(json.out,
              HasSubstr("\"verifying\":{\"datasets_left\":0,\"bytes_left\":0,\"bytes_done\":0}"));
  // A publish without override does not silently replace it.
  TableBuilder again = make_int64_table(client, 10, 1);
  EXPECT_EQ(client.publish_dataset("victim", again).code(), Status::Code::kAlreadyExists);
  ASSERT_TRUE(client.unpublish_dataset("victim").ok());
  st = status_once_freed(client);
  EXPECT_TRUE(st.quarantined.empty());
  // `again` holds an unsealed extent of its own.
  EXPECT_EQ(st.used_bytes - st.unsealed_bytes, before.used - victim_bytes);
  EXPECT_EQ(
      st.used_bytes - st.unsealed_bytes, st.index_bytes + [&] {
        uint64_t sum = 0;
        for (const DatasetInfo& d : st.datasets) sum += d.memory_bytes;
        return sum;
      }());
  ASSERT_TRUE(client.publish_dataset("victim", again).ok());
  expect_int64_published(client, "victim", 10, 1);
}

// The index and extents as a crash (or a stray writer) can leave them: an
// entry caught mid-rewrite is dropped, a dataset whose partition is not
// sealed is quarantined, and whatever no dataset claims is given back.
TEST(RestartTest, TornEntryIsDroppedAndUnsealedPartitionQuarantined) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_int64(client, "torn", 10'000, 1);
    TableBuilder two = make_int64_table(client, 100'000, 2, 2);
    ASSERT_TRUE(client.publish_dataset("unsealed", two).ok());
    publish_int64(client, "fine", 10'000, 3);
  }
  daemon->kill9();
  {
    RawSegment seg = open_raw(*daemon);
    find_entry(seg, "torn")->seq += 1;  // odd: the daemon died inside its seqlock
    const uint64_t extent = descriptor_of(seg, "unsealed").partition(0).extent_offset;
    // Not a state a live publisher could be writing in (kAllocated/kWritten
    // of this live process would be held for it): garbage.
    reinterpret_cast<shm::ExtentHeaderLayout*>(seg.at(extent))->state = 7;
  }

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("1 datasets served again, 1 quarantined"));
  EXPECT_THAT(r.err, HasSubstr("was being rewritten when the previous shelfd died; dropped it"));
  Client client = daemon->connect();
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"fine"});
  expect_int64_published(client, "fine", 10'000, 3);
  EXPECT_EQ(client.get_dataset("torn").status().code(), Status::Code::kNotFound);
  auto got = client.get_dataset("unsealed");
  EXPECT_EQ(got.status().code(), Status::Code::kCorruption);
  EXPECT_THAT(got.status().message(), HasSubstr("partition 0: its extent is not sealed"));
  const MemoryStats st = status_of(client);
  ASSERT_EQ(st.quarantined.size(), 1u);
  // It keeps what it could claim (descriptor, partition 1); partition 0 and
  // all of "torn" went back to the OS.
  EXPECT_GT(st.quarantined[0].memory_bytes, 100'000u * 8);
  EXPECT_LT(st.quarantined[0].memory_bytes, 2 * 100'000u * 8);
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.unsealed_bytes, 0u);
  EXPECT_EQ(st.used_bytes,
            st.index_bytes + st.datasets[0].memory_bytes + st.quarantined[0].memory_bytes);
  EXPECT_EQ(daemon->resident_bytes(), st.used_bytes) << "unclaimed pages were not given back";
  // The torn name is free again.
  publish_int64(client, "torn", 100, 4);
  expect_int64_published(client, "torn", 100, 4);
}

// used_slots_end, the mark below which lists walk the entries, is
// recomputed by the restart from the entries it kept, whatever the killed
// daemon left in it; the daemon then keeps it as before.
TEST(RestartTest, ARestartRecomputesTheMarkListsWalkTo) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    for (const char* name : {"a", "b", "c", "d"}) publish_int64(client, name, 100, 1);
    ASSERT_TRUE(client.unpublish_dataset("d").ok());  // the highest slot: the mark drops
    ASSERT_TRUE(client.unpublish_dataset("b").ok());  // a hole below c: it stays
    EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "c"}));
    EXPECT_EQ(open_raw(*daemon).header().used_slots_end, 3u);
  }
  daemon->kill9();
  {
    // A mark that would hide every entry, as a damaged one could.
    RawSegment seg = open_raw(*daemon);
    reinterpret_cast<shm::SegmentHeaderLayout*>(seg.at(0))->used_slots_end = 0;
  }

  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 datasets served again, 0 quarantined"));
  Client client = daemon->connect();
  EXPECT_EQ(open_raw(*daemon).header().used_slots_end, 3u) << "one past c's slot";
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "c"}));
  auto keys = client.datasets().keys();
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  EXPECT_EQ(*keys, (std::vector<std::string>{"a", "c"}));
  // The lowest free slot (b's) is handed out first: the mark stays.
  publish_int64(client, "e", 100, 2);
  EXPECT_EQ(open_raw(*daemon).header().used_slots_end, 3u);
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "c", "e"}));
  ASSERT_TRUE(client.unpublish_dataset("c").ok());
  EXPECT_EQ(open_raw(*daemon).header().used_slots_end, 2u);
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "e"}));
  expect_int64_published(client, "e", 100, 2);
}

// A daemon that died while making its segment left a header of zeros and
// nothing else: that is replaced, not refused.
TEST(RestartTest, NeverFinishedSegmentIsReplaced) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  daemon->stop();
  {
    RawSegment seg = open_raw(*daemon);
    std::memset(seg.at(0), 0, shm::kPageSize);
  }
  CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("was never finished"));
  EXPECT_THAT(r.out, Not(HasSubstr("re-attached")));
  Client client = daemon->connect();
  EXPECT_EQ(status_of(client).generation, 1u);
  expect_daemon_serves(*daemon);
}

// A segment this shelfd cannot read is refused with a message that names it
// and says what to do, and not a byte of it changes.
struct BadHeader {
  const char* name;
  void (*damage)(shm::SegmentHeaderLayout&);
  const char* message;
};

class IncompatibleSegmentTest : public ::testing::TestWithParam<BadHeader> {};

TEST_P(IncompatibleSegmentTest, IsRefusedAndLeftUntouched) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_int64(client, "precious", 10'000, 3);
  }
  daemon->kill9();
  {
    RawSegment seg = open_raw(*daemon);
    GetParam().damage(*reinterpret_cast<shm::SegmentHeaderLayout*>(seg.at(0)));
  }
  const auto state = file_state(*daemon);

  CommandResult r = daemon->restart();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/dev/shm/" + daemon->segment()));
  EXPECT_THAT(r.err, HasSubstr(GetParam().message));
  EXPECT_THAT(r.err, HasSubstr("left untouched"));
  EXPECT_THAT(r.err, HasSubstr("--discard"));
  EXPECT_FALSE(daemon->alive());
  EXPECT_EQ(Client::connect(daemon->client_options()).status().code(), Status::Code::kUnavailable);
  EXPECT_EQ(file_state(*daemon), state) << "the refused segment was changed";

  // --discard is the way forward it named.
  CommandResult fresh = daemon->restart({"--discard"});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  Client client = daemon->connect();
  EXPECT_TRUE(listed_names(client).empty());
  expect_daemon_serves(*daemon);
}

INSTANTIATE_TEST_SUITE_P(
    Headers, IncompatibleSegmentTest,
    ::testing::Values(
        BadHeader{"Garbage", [](shm::SegmentHeaderLayout& h) { std::memset(&h, 0x5a, sizeof h); },
                  "is not a shelf segment"},
        BadHeader{"NewerLayoutVersion",
                  [](shm::SegmentHeaderLayout& h) { h.layout_version = shm::kLayoutVersion + 1; },
                  "has layout version 9, and this shelfd reads versions 4 to 8"},
        // A segment of the release before the index's room: refused untouched too.
        BadHeader{"OlderLayoutVersion",
                  [](shm::SegmentHeaderLayout& h) {
                    h.layout_version = shm::kOldestReadableLayoutVersion - 1;
                  },
                  "has layout version 3, and this shelfd reads versions 4 to 8"},
        BadHeader{"SizeDisagreesWithFile",
                  [](shm::SegmentHeaderLayout& h) { h.segment_bytes += shm::kPageSize; },
                  "inconsistent header"},
        BadHeader{"ExtentAreaBelowTwiceTheLimit",
                  [](shm::SegmentHeaderLayout& h) { h.data_bytes -= shm::kPageSize; },
                  "inconsistent header"},
        BadHeader{"IndexOffsetMoved",
                  [](shm::SegmentHeaderLayout& h) { h.index_offset = 2 * shm::kPageSize; },
                  "inconsistent header"}),
    [](const ::testing::TestParamInfo<BadHeader>& p) { return std::string(p.param.name); });

// ------------------------------------- changing the limit at a restart --

// The argv of a shelfd started by hand on `daemon`'s socket and segment.
std::vector<std::string> shelfd_args(const TestDaemon& daemon, std::vector<std::string> extra) {
  std::vector<std::string> argv = {SHELFD_PATH, "--socket", daemon.socket(), "--segment",
                                   daemon.segment()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

uint64_t file_size_of(const TestDaemon& daemon) {
  struct stat st;
  if (::stat(("/dev/shm/" + daemon.segment()).c_str(), &st) != 0) throw TestFailure("stat");
  return static_cast<uint64_t>(st.st_size);
}

// The segment's size for a limit: the header and the index's room, then
// twice the limit.
uint64_t segment_size_for(uint64_t limit) { return shm::index_area_bytes() + 2 * limit; }

// What reserving one int64 partition of `rows` rows answers: the limit is
// checked there, before anything is written.
Status reserve_int64(Client& client, uint64_t rows) {
  auto table = client.create_table({{"v", Type::kInt64}});
  if (!table.ok()) return table.status();
  return table->add_partition(rows).status();
}

// How the old daemon went away before the restart with another limit.
class LimitRestartTest : public ::testing::TestWithParam<bool> {
 protected:
  void stop(TestDaemon& daemon) const { GetParam() ? daemon.kill9() : daemon.stop(); }
};

TEST_P(LimitRestartTest, LargerMemoryLimitKeepsEveryDatasetAndFitsMore) {
  TestDaemon::Options options;
  options.memory_limit = "8MiB";
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);  // about 4 MiB
    before = snapshot_of(client);
    Status s = reserve_int64(client, 750'000);  // 6 MB: over the limit
    ASSERT_EQ(s.code(), Status::Code::kResourceExhausted) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr("start it again with a larger --memory-limit: the "
                                       "restart keeps every dataset"));
  }
  stop(*daemon);

  CommandResult r = daemon->restart_with_memory_limit("32MiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out + r.err, HasSubstr("--memory-limit 8.00 MiB -> 32.00 MiB"));
  EXPECT_THAT(r.out, HasSubstr("4 datasets served again, 0 quarantined"));
  {
    Client client = daemon->connect();
    expect_same(before, snapshot_of(client));
    expect_several(client);
    EXPECT_EQ(status_of(client).memory_limit, 32u << 20);
    EXPECT_EQ(file_size_of(*daemon), segment_size_for(32u << 20));
    publish_int64(client, "big", 750'000, 5);  // fits now
    before = snapshot_of(client);
  }
  // The grown segment is an ordinary one: the next restart takes it as it is.
  stop(*daemon);
  r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_int64_published(client, "big", 750'000, 5);
  expect_several(client);
  EXPECT_EQ(status_of(client).memory_limit, 32u << 20);
  expect_daemon_serves(*daemon);
}

TEST_P(LimitRestartTest, SmallerMemoryLimitThatFitsIsAccepted) {
  auto daemon = TestDaemon::start();  // 64 MiB
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    before = snapshot_of(client);
  }
  stop(*daemon);
  CommandResult r = daemon->restart_with_memory_limit("16MiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out + r.err, HasSubstr("--memory-limit 64.00 MiB -> 16.00 MiB"));
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_several(client);
  EXPECT_EQ(status_of(client).memory_limit, 16u << 20);
  EXPECT_EQ(file_size_of(*daemon), segment_size_for(16u << 20));
  // The new limit holds: 16 MB more does not fit, and changes nothing.
  EXPECT_EQ(reserve_int64(client, 2'000'000).code(), Status::Code::kResourceExhausted);
  expect_same(before, snapshot_of(client));
  expect_daemon_serves(*daemon);
}

// More than the new limit is stored: refused, nothing changes, and the
// old limit still serves everything.
TEST_P(LimitRestartTest, SmallerMemoryLimitThatDoesNotFitIsRefusedUntouched) {
  auto daemon = TestDaemon::start();  // 64 MiB
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    publish_int64(client, "ten-mb", 1'250'000, 9);
    before = snapshot_of(client);
  }
  stop(*daemon);
  const auto state = file_state(*daemon);
  CommandResult r = daemon->restart_with_memory_limit("8MiB");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(daemon->alive());
  EXPECT_THAT(r.err, HasSubstr("/dev/shm/" + daemon->segment() +
                               " cannot shrink to --memory-limit 8.00 MiB: it holds"));
  EXPECT_THAT(r.err, HasSubstr("more than --memory-limit 8.00 MiB (8388608 bytes)"));
  EXPECT_THAT(r.err, HasSubstr("it was left untouched"));
  EXPECT_THAT(r.err, HasSubstr("or without --memory-limit to keep its 64.00 MiB"));
  EXPECT_THAT(r.err, Not(HasSubstr("--discard")));
  EXPECT_EQ(file_state(*daemon), state) << "the refused start changed the segment";

  r = daemon->restart();  // the old limit
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_several(client);
  expect_int64_published(client, "ten-mb", 1'250'000, 9);
  EXPECT_EQ(status_of(client).memory_limit, 64u << 20);
}

// What is stored fits under the new limit, but one dataset lies past the
// smaller extent area: refused, and the least limit it names works.
TEST_P(LimitRestartTest, DataPastTheSmallerExtentAreaIsRefusedWithTheLimitThatWorks) {
  auto daemon = TestDaemon::start();  // 64 MiB
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_int64(client, "low", 1'500'000, 1);  // 12 MB at the start of the area
    publish_int64(client, "high", 500'000, 2);   // 4 MB after it
    ASSERT_TRUE(client.unpublish_dataset("low").ok());
    EXPECT_TRUE(eventually([&] { return status_of(client).pending_free_bytes == 0; }));
  }
  stop(*daemon);
  const auto state = file_state(*daemon);
  CommandResult r = daemon->restart_with_memory_limit("6MiB");  // 12 MiB of extent area
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot shrink to --memory-limit 6.00 MiB: it holds data up to "
                               "offset"));
  EXPECT_THAT(r.err, Not(HasSubstr("more than --memory-limit")));
  EXPECT_EQ(file_state(*daemon), state) << "the refused start changed the segment";
  const std::string lead = "Start shelfd with --memory-limit ";
  const size_t at = r.err.find(lead);
  ASSERT_NE(at, std::string::npos) << r.err;
  const std::string least =
      r.err.substr(at + lead.size(), r.err.find(' ', at + lead.size()) - (at + lead.size()));
  EXPECT_GT(std::stoull(least), 6u << 20);
  EXPECT_LT(std::stoull(least), 12u << 20);

  r = daemon->restart_with_memory_limit(least);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"high"});
  expect_int64_published(client, "high", 500'000, 2);
  EXPECT_EQ(status_of(client).memory_limit, std::stoull(least));
  expect_daemon_serves(*daemon);
}

INSTANTIATE_TEST_SUITE_P(OldDaemon, LimitRestartTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("Killed") : std::string("Stopped");
                         });

// A reader of the old daemon keeps its smaller mapping across the grow:
// nothing it can see moved. A new connection maps the grown segment.
TEST(RestartTest, ReaderOfTheOldDaemonKeepsReadingAcrossTheGrow) {
  TestDaemon::Options options;
  options.memory_limit = "8MiB";
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Pipe published, holding, go, checked;
  pid_t reader = spawn_child([&] {
    ASSERT_TRUE(published.wait());
    Client old = daemon->connect();
    auto kept = old.get_dataset("kept");
    ASSERT_TRUE(kept.ok());
    ASSERT_TRUE(holding.signal());
    ASSERT_TRUE(go.wait());
    expect_int64_dataset(*kept, 500'000, 4);  // through the old, smaller mapping
    Client fresh = daemon->connect();
    expect_int64_published(fresh, "big", 2'500'000, 6);
    ASSERT_TRUE(checked.signal());
    for (;;) ::pause();
  });
  {
    Client client = daemon->connect();
    publish_int64(client, "kept", 500'000, 4);
    ASSERT_TRUE(published.signal());
    ASSERT_TRUE(holding.wait());
  }
  daemon->kill9();
  CommandResult r = daemon->restart_with_memory_limit("64MiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 processes still map the segment"));
  {
    Client client = daemon->connect();
    publish_int64(client, "big", 2'500'000, 6);  // 20 MB: past the old 16 MiB extent area
  }
  ASSERT_TRUE(go.signal());
  EXPECT_TRUE(checked.wait()) << "the reader could not read across the grow";
  EXPECT_EQ(kill_child(reader), 128 + SIGKILL);
  Client client = daemon->connect();
  expect_int64_published(client, "kept", 500'000, 4);
}

// A shelfd killed in the middle of a resize: the file grown, the header
// only partly rewritten. The next start accepts it, serves every dataset
// and finishes the resize.
TEST(RestartTest, ResizeCutShortIsFinishedByTheNextStart) {
  auto daemon = TestDaemon::start();  // 64 MiB
  ASSERT_NE(daemon, nullptr);
  Snapshot before;
  {
    Client client = daemon->connect();
    publish_several(client);
    before = snapshot_of(client);
  }
  daemon->kill9();
  uint64_t grown = 0;
  {
    RawSegment seg = open_raw(*daemon);
    grown = seg.header().data_offset + 2 * (128u << 20);
    ASSERT_EQ(::ftruncate(seg.object.fd(), static_cast<off_t>(grown)), 0);
    reinterpret_cast<shm::SegmentHeaderLayout*>(seg.at(0))->segment_bytes = grown;
  }
  CommandResult r = daemon->restart();  // --memory-limit 64MiB, as made
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_same(before, snapshot_of(client));
  expect_several(client);
  EXPECT_EQ(status_of(client).memory_limit, 64u << 20);
  EXPECT_EQ(file_size_of(*daemon), segment_size_for(64u << 20)) << "not finished";
  RawSegment seg = open_raw(*daemon);
  EXPECT_EQ(seg.header().segment_bytes, file_size_of(*daemon));
  EXPECT_EQ(seg.header().data_bytes, 2 * (64u << 20));
}

// Publishes "d0".."d{n-1}", 1,000 int64 rows each, seeded by their number.
void publish_numbered(Client& client, int n) {
  for (int i = 0; i < n; ++i) publish_int64(client, "d" + std::to_string(i), 1'000, i);
}
void expect_numbered(Client& client, int n) {
  for (int i = 0; i < n; ++i) expect_int64_published(client, "d" + std::to_string(i), 1'000, i);
}

TEST_P(LimitRestartTest, MoreIndexSlotsKeepEveryDatasetAndFitMore) {
  TestDaemon::Options options;
  options.max_datasets = 4;
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  uint64_t index_bytes = 0;
  {
    Client client = daemon->connect();
    publish_numbered(client, 4);
    index_bytes = status_of(client).index_bytes;
    TableBuilder one_more = make_int64_table(client, 10, 9);
    Status s = client.publish_dataset("one-more", one_more);
    ASSERT_EQ(s.code(), Status::Code::kResourceExhausted) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr("start it again with a larger --max-datasets: the "
                                       "restart keeps every dataset"));
  }
  stop(*daemon);
  const uint64_t file_bytes = file_size_of(*daemon);
  CommandResult r = run_command(shelfd_args(*daemon, {"--max-datasets", "20000"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("4 datasets served again, 0 quarantined"));
  Client client = daemon->connect();
  expect_numbered(client, 4);
  const MemoryStats st = status_of(client);
  EXPECT_GT(st.index_bytes, index_bytes) << "the larger index is charged";
  EXPECT_EQ(file_size_of(*daemon), file_bytes) << "nothing moved: the room was there";
  for (int i = 4; i < 40; ++i) publish_int64(client, "d" + std::to_string(i), 1'000, i);
  expect_numbered(client, 40);
}

TEST_P(LimitRestartTest, FewerIndexSlotsAreAcceptedWhenTheDatasetsFit) {
  auto daemon = TestDaemon::start();  // 256 slots
  ASSERT_NE(daemon, nullptr);
  uint64_t used = 0;
  {
    Client client = daemon->connect();
    publish_numbered(client, 3);
    used = status_of(client).used_bytes;
  }
  stop(*daemon);
  const uint64_t resident = daemon->resident_bytes();
  CommandResult r = run_command(shelfd_args(*daemon, {"--max-datasets", "3"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_numbered(client, 3);
  const MemoryStats st = status_of(client);
  EXPECT_LT(st.used_bytes, used) << "the smaller index is charged less";
  EXPECT_LT(daemon->resident_bytes(), resident) << "the pages it no longer uses are given back";
  TableBuilder one_more = make_int64_table(client, 10, 9);
  EXPECT_EQ(client.publish_dataset("d3", one_more).code(), Status::Code::kResourceExhausted);
}

TEST_P(LimitRestartTest, FewerSlotsThanAUsedOneIsRefusedWithTheLeastThatWorks) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_numbered(client, 8);  // slots 0..7
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(client.unpublish_dataset("d" + std::to_string(i)).ok());
  }
  stop(*daemon);
  const auto state = file_state(*daemon);
  CommandResult r = run_command(shelfd_args(*daemon, {"--max-datasets", "4"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot shrink to --max-datasets 4: index slot 7 holds a "
                               "dataset; it was left untouched. Start shelfd with "
                               "--max-datasets 8 or more, or without --max-datasets to keep "
                               "its 256"));
  EXPECT_EQ(file_state(*daemon), state) << "a refused start changed the segment";
  r = run_command(shelfd_args(*daemon, {"--max-datasets", "8"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  expect_int64_published(client, "d7", 1'000, 7);
}

// Runs shelfd with `args` in the foreground, in a child whose stderr goes
// to `err`: a process stopped at a fault point is then the test's own.
pid_t spawn_foreground_shelfd(std::vector<std::string> args, Pipe& err) {
  args.push_back("--foreground");
  return spawn_child([&] {
    ::dup2(err.write_fd(), STDERR_FILENO);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  });
}

// Reads lines from `err` until one holds `text`; false at EOF or the timeout.
bool said(Pipe& err, const std::string& text) {
  while (auto line = err.read_line()) {
    if (line->find(text) != std::string::npos) return true;
  }
  return false;
}

// A segment a shelfd died making holds no data: empty (killed before its
// size was set) or its header half written (the magic, stored last, not
// there). The next start replaces it without --discard. The same file owned
// by another user is not shelf's to replace: refused, untouched.
TEST(RestartTest, ASegmentLeftHalfMadeIsReplacedWithoutDiscard) {
  for (const char* variant : {"empty", "header half written", "empty, of another user"}) {
    SCOPED_TRACE(variant);
    auto daemon = TestDaemon::unstarted();
    const std::string path = "/dev/shm/" + daemon->segment();
    const bool foreign = std::string(variant).find("another") != std::string::npos;
    {
      UniqueFd fd(::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
      ASSERT_TRUE(fd.valid());
      if (std::string(variant) == "header half written") {
        ASSERT_EQ(::ftruncate(fd.get(), 1 << 20), 0);
        shm::SegmentHeaderLayout h{};
        h.layout_version = shm::kLayoutVersion;
        h.page_size = shm::kPageSize;
        h.generation = 1;
        ASSERT_EQ(::pwrite(fd.get(), &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
      }
      if (foreign) {
        ASSERT_EQ(::fchown(fd.get(), 65534, 65534), 0);
      }
    }
    CommandResult r = daemon->restart();
    if (foreign) {
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_THAT(r.err, HasSubstr("is 0 bytes, too small to be a shelf segment"));
      struct stat st;
      ASSERT_EQ(::stat(path.c_str(), &st), 0) << "it removed a file that was not its own";
      EXPECT_EQ(st.st_uid, 65534u);
      continue;
    }
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("was never finished by the shelfd that made it; replacing it"));
    Client client = daemon->connect();
    publish_int64(client, "fresh", 100, 1);
    expect_int64_published(client, "fresh", 100, 1);
  }
}

// Two shelfds on different sockets making the same segment at once. The
// first has made the file and not yet locked it (stopped there); the second
// takes it for one a crashed daemon left half made, replaces it and serves.
// Let go, the first must see that it lost: it exits, and neither serves
// the file it made nor removes the other's.
TEST(RestartTest, TwoDaemonsMakingOneSegmentCannotBothWin) {
  auto first = TestDaemon::unstarted();
  auto second = TestDaemon::unstarted();
  const std::vector<std::string> common = {"--segment", first->segment(), "--memory-limit",
                                           "64MiB"};
  auto args_for = [&](const TestDaemon& d) {
    std::vector<std::string> args = {SHELFD_PATH, "--socket", d.socket()};
    args.insert(args.end(), common.begin(), common.end());
    return args;
  };
  Pipe notify(/*cloexec=*/false), err;
  pid_t loser = 0;
  {
    ScopedFaultPoint fault("daemon.create.before_lock", notify);
    loser = spawn_foreground_shelfd(args_for(*first), err);
  }
  err.close_write();
  ASSERT_TRUE(notify.read_line().has_value()) << "the first shelfd never made the file";
  CommandResult r = run_command(args_for(*second));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("was never finished by the shelfd that made it; replacing it"));
  ASSERT_EQ(::kill(loser, SIGCONT), 0);
  EXPECT_TRUE(said(
      err, "another shelfd took /dev/shm/" + first->segment() + " while this one was making it"));
  EXPECT_EQ(wait_child(loser), 1);
  // The winner's segment is the one at the name, and it serves it.
  Client client = second->connect();
  publish_int64(client, "won", 1'000, 3);
  pid_t winner = 0;
  std::ifstream(second->socket() + ".lock") >> winner;
  EXPECT_EQ(open_raw(*first).header().daemon_pid, static_cast<uint32_t>(winner));
  expect_int64_published(client, "won", 1'000, 3);
}

// A shelfd killed while it changes the index's capacity, at each step: the
// next start, with or without the new value, serves every dataset.
TEST(RestartTest, AnIndexCapacityChangeCutShortIsFinishedByTheNextStart) {
  for (const char* point :
       {"daemon.index_capacity.before_header", "daemon.index_capacity.mid_header"}) {
    for (bool again_with_the_value : {true, false}) {
      SCOPED_TRACE(std::string(point) + (again_with_the_value ? ", again with" : ", without"));
      auto daemon = TestDaemon::start();
      ASSERT_NE(daemon, nullptr);
      {
        Client client = daemon->connect();
        publish_numbered(client, 5);
      }
      daemon->kill9();
      {
        // In the foreground, so that the process stopped at the point is ours to kill.
        Pipe notify(/*cloexec=*/false);
        ScopedFaultPoint fault(point, notify);
        pid_t shelfd = spawn_child([&] {
          std::vector<std::string> args =
              shelfd_args(*daemon, {"--max-datasets", "1000", "--foreground"});
          std::vector<char*> argv;
          for (std::string& a : args) argv.push_back(a.data());
          argv.push_back(nullptr);
          ::execv(argv[0], argv.data());
          ::_exit(127);
        });
        EXPECT_TRUE(notify.read_line().has_value()) << "shelfd never reached " << point;
        EXPECT_EQ(kill_child(shelfd), 128 + SIGKILL);
      }
      CommandResult r = run_command(shelfd_args(
          *daemon, again_with_the_value ? std::vector<std::string>{"--max-datasets", "1000"}
                                        : std::vector<std::string>{}));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      Client client = daemon->connect();
      expect_numbered(client, 5);
      // Killed before the header said so, the old capacity stands; after
      // its first field, the new one.
      const bool header_changed = std::string(point) != "daemon.index_capacity.before_header";
      const uint32_t want = again_with_the_value || header_changed ? 1000u : 256u;
      EXPECT_EQ(open_raw(*daemon).header().index_capacity, want);
      EXPECT_EQ(status_of(client).index_bytes, shm::index_pages(want).bytes());
      publish_int64(client, "after", 10, 1);
    }
  }
}

// shelfd killed in the middle of an override, after the new index entry is
// written and before the replaced dataset is freed: the restart serves the
// new version and frees the old one's memory. (It used to free first: a kill
// there left the name pointing at punched memory, and neither version.)
TEST(RestartTest, DaemonKilledMidOverrideServesTheNewVersion) {
  Pipe notify(/*cloexec=*/false);
  auto daemon = start_daemon_stopping_at("daemon.publish.before_freeing_replaced", notify);
  ASSERT_NE(daemon, nullptr);
  uint64_t index_bytes = 0;
  {
    Client client = daemon->connect();
    index_bytes = status_of(client).index_bytes;
    publish_int64(client, "x", 20'000, 1);  // no entry replaced: no stop
  }
  pid_t publisher = spawn_child([&] {
    Client c = daemon->connect();
    TableBuilder t = make_int64_table(c, 30'000, 2);
    (void)c.publish_dataset("x", t, PublishOptions{.override_existing = true});
  });
  auto reached = notify.read_line();
  ASSERT_TRUE(reached.has_value()) << "shelfd never reached its fault point";
  daemon->kill9();
  kill_child(publisher);
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  EXPECT_THAT(restarted.out, HasSubstr("1 datasets served again, 0 quarantined"));
  Client client = daemon->connect();
  expect_int64_published(client, "x", 30'000, 2);
  const MemoryStats st = status_of(client);
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.used_bytes, index_bytes + st.datasets[0].memory_bytes)
      << "the replaced version's memory was not given back";
  EXPECT_EQ(daemon->resident_bytes(), st.used_bytes);
}

// Publishes "a" (20,000 rows, seed 1), restarts shelfd armed to stop at
// `point`, and kills it there (kill -9) while it commits one publish of
// three names: an override of "a" (30,000 rows, seed 2) and the new "b"
// (1,000, seed 3) and "d" (2,000, seed 4). The publisher is
// killed too. Returns what the header and the index are charged.
uint64_t kill_while_committing_three_names(TestDaemon& daemon, const std::string& point) {
  uint64_t index_bytes = 0;
  {
    Client client = daemon.connect();
    index_bytes = status_of(client).index_bytes;
    publish_int64(client, "a", 20'000, 1);
  }
  daemon.stop();
  Pipe notify(/*cloexec=*/false);
  {
    ScopedFaultPoint armed(point, notify);
    const CommandResult started = daemon.restart();
    if (started.exit_code != 0) throw TestFailure("restart: " + started.err);
  }
  const pid_t publisher = spawn_child([&] {
    Client c = daemon.connect();
    TableBuilder a = make_int64_table(c, 30'000, 2), b = make_int64_table(c, 1'000, 3),
                 d = make_int64_table(c, 2'000, 4);
    const NamedTable tables[] = {{"a", &a}, {"b", &b}, {"d", &d}};
    (void)c.publish_datasets(tables, PublishOptions{.override_existing = true});
  });
  auto reached = notify.read_line();
  if (reached != point) throw TestFailure("shelfd never reached " + point);
  daemon.kill9();
  kill_child(publisher);
  return index_bytes;
}

// What a restart after kill_while_committing_three_names() must find when
// none of the three names was published, and no byte left that no dataset
// holds.
void expect_only_the_old_a(TestDaemon& daemon, uint64_t index_bytes) {
  Client client = daemon.connect();
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"a"});
  expect_int64_published(client, "a", 20'000, 1);
  const MemoryStats st = status_of(client);
  ASSERT_EQ(st.datasets.size(), 1u);
  EXPECT_EQ(st.used_bytes, index_bytes + st.datasets[0].memory_bytes);
  EXPECT_EQ(daemon.resident_bytes(), st.used_bytes) << "memory no dataset holds stayed";
}

// A publish of several names is all or nothing across a kill -9 of shelfd
// too. shelfd is killed at each step of committing one: before its intent
// record is pointed at, the restart serves none of the names (and the old
// "a"); once it is, all three, also when the kill came after some of their
// entries were written. Either way every byte no dataset holds is given
// back, the record's too, and the next restart has nothing to finish.
struct CommitStep {
  const char* name;
  const char* point;
  bool all_published;  // else none
};
class MultiPublishKillTest : public ::testing::TestWithParam<CommitStep> {};

TEST_P(MultiPublishKillTest, RestartServesAllOrNoneOfTheNames) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  const uint64_t index_bytes = kill_while_committing_three_names(*daemon, GetParam().point);
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  if (GetParam().all_published) {
    EXPECT_THAT(restarted.err, HasSubstr("died committing a publish of 3 names; wrote the rest"));
    Client client = daemon->connect();
    EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "b", "d"}));
    expect_int64_published(client, "a", 30'000, 2);
    expect_int64_published(client, "b", 1'000, 3);
    expect_int64_published(client, "d", 2'000, 4);
    const MemoryStats st = status_of(client);
    uint64_t held = 0;
    for (const auto& d : st.datasets) held += d.memory_bytes;
    EXPECT_EQ(st.used_bytes, index_bytes + held) << restarted.out;
    EXPECT_EQ(daemon->resident_bytes(), st.used_bytes) << "memory no dataset holds stayed";
  } else {
    EXPECT_THAT(restarted.err, Not(HasSubstr("committing a publish")));
    expect_only_the_old_a(*daemon, index_bytes);
  }
  daemon->stop();
  const CommandResult again = daemon->restart();
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.err, Not(HasSubstr("committing a publish")));
  EXPECT_THAT(again.out, HasSubstr(GetParam().all_published ? "3 datasets served again"
                                                            : "1 datasets served again"));
}

INSTANTIATE_TEST_SUITE_P(
    Steps, MultiPublishKillTest,
    ::testing::Values(CommitStep{"BeforeTheRecord", "daemon.publish.before_commit", false},
                      CommitStep{"OnceTheRecordIsWhole", "daemon.publish.intent_written", true},
                      CommitStep{"AfterTheFirstEntry", "daemon.index.mid_change", true}),
    [](const ::testing::TestParamInfo<CommitStep>& step) { return step.param.name; });

// An intent record changed while no daemon ran (its checksum no longer
// matches) is not trusted: the restart says so, writes none of it, serves
// what the entries say (here: none of the three names) and frees the
// record. Nothing else is lost.
TEST(RestartTest, ADamagedIntentRecordIsLetGo) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  const uint64_t index_bytes =
      kill_while_committing_three_names(*daemon, "daemon.publish.intent_written");
  {
    RawSegment seg = open_raw(*daemon);
    const uint64_t record =
        reinterpret_cast<const shm::PendingPublishLayout*>(seg.at(shm::kPendingPublishOffset))
            ->intent_offset;
    ASSERT_NE(record, 0u) << "no intent record pointed at";
    auto* item = reinterpret_cast<shm::IntentItemLayout*>(
        seg.at(record + shm::kExtentHeaderBytes + sizeof(shm::IntentHeaderLayout)));
    item->entry.name[0] = 'z';
  }
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  EXPECT_THAT(restarted.err,
              HasSubstr("the intent record of a publish cut short is damaged (its checksum "
                        "does not match)"));
  expect_only_the_old_a(*daemon, index_bytes);
}

// The slots an intent record names count as taken when a restart asks for
// a smaller index: "d" goes to slot 2, so --max-datasets 2 is refused
// untouched, and the start without it finishes the publish.
TEST(RestartTest, AnIndexShrinkKeepsTheSlotsOfAPublishCutShort) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  kill_while_committing_three_names(*daemon, "daemon.publish.intent_written");
  const auto state = file_state(*daemon);
  const CommandResult refused = run_command(shelfd_args(*daemon, {"--max-datasets", "2"}));
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.err, HasSubstr("cannot shrink to --max-datasets 2: index slot 2"));
  EXPECT_EQ(file_state(*daemon), state) << "the refused segment was changed";
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  Client client = daemon->connect();
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"a", "b", "d"}));
}

// A segment of layout version 4 (made before intent records: it holds
// zeros where the pointer is, so no publish is pending) is served, and
// becomes the current version (5 and 6 add what older ones never hold).
TEST(RestartTest, ASegmentOfLayoutVersion4IsServedAndBecomesTheCurrentOne) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_int64(client, "kept", 5'000, 7);
  }
  daemon->stop();
  reinterpret_cast<shm::SegmentHeaderLayout*>(open_raw(*daemon).at(0))->layout_version = 4;
  const CommandResult restarted = daemon->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  Client client = daemon->connect();
  expect_int64_published(client, "kept", 5'000, 7);
  EXPECT_EQ(open_raw(*daemon).header().layout_version, shm::kLayoutVersion);
}

// ---------------------------------------- checksums after the restart --
// A restart serves first and hashes what it found afterwards, on threads of
// its own (server/verifier.h); a get of a dataset waits for its own check.

constexpr uint64_t kBigRows = 500'000;  // 4 MiB a partition: 32 MiB to hash in all

// shelfd killed after it served the restarted segment and before it took
// in any check: the entries say "not verified yet", and the next restart
// checks everything again and serves it all.
TEST(RestartTest, AShelfdKilledWhileCheckingChecksumsChecksThemAllAgain) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_several(client);
  }
  daemon->kill9();
  Pipe notify(/*cloexec=*/false);
  {
    ScopedFaultPoint armed("daemon.verify.before_outcome", notify);
    const CommandResult r = daemon->restart_serving();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("4 datasets served again, 0 quarantined"));
    EXPECT_THAT(r.out, HasSubstr("checking the checksums of 4"));
  }
  ASSERT_EQ(notify.read_line(), "daemon.verify.before_outcome");
  for (const char* name : {"ints", "ints-3-partitions", "mixed", "blob"}) {
    EXPECT_EQ(find_entry(open_raw(*daemon), name)->state,
              static_cast<uint32_t>(shm::IndexEntryState::kUnverified))
        << name;
  }
  daemon->kill9();
  const CommandResult again = daemon->restart();
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("4 datasets served again, 0 quarantined"));
  Client client = daemon->connect();
  expect_several(client);
  EXPECT_TRUE(eventually([&] { return status_of(client).verifying.datasets_left == 0; }));
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.verifying.bytes_left, 0u);
  EXPECT_TRUE(st.quarantined.empty());
  for (const char* name : {"ints", "ints-3-partitions", "mixed", "blob"}) {
    EXPECT_EQ(find_entry(open_raw(*daemon), name)->state,
              static_cast<uint32_t>(shm::IndexEntryState::kPublished))
        << name;
  }
}

// Readers in other processes get every dataset the moment the restarted
// shelfd serves, on one checking thread: each get waits for its own
// dataset (and only for it), and reads it whole.
TEST(RestartTest, GetsRacingTheChecksOfARestartReadWholeDatasets) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    for (int i = 0; i < 4; ++i) {
      TableBuilder t = make_int64_table(client, kBigRows, 100 + i, 2);
      ASSERT_TRUE(client.publish_dataset("big-" + std::to_string(i), t).ok());
    }
  }
  daemon->kill9();
  const CommandResult r = daemon->restart_serving({"--verify-threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<pid_t> readers;
  for (int reader = 0; reader < 3; ++reader) {
    readers.push_back(spawn_child([&, reader] {
      Client c = daemon->connect();
      // Each starts with another dataset: the last one first for one of them.
      for (int k = 0; k < 4; ++k) {
        const int i = (3 - reader + k) % 4;
        auto ds = c.get_dataset("big-" + std::to_string(i));
        ASSERT_TRUE(ds.ok()) << ds.status().to_string();
        expect_int64_dataset(*ds, kBigRows, 100 + i, 2);
      }
    }));
  }
  for (pid_t reader : readers) EXPECT_EQ(wait_child(reader), 0);
  Client client = daemon->connect();
  EXPECT_TRUE(eventually([&] { return status_of(client).verifying.datasets_left == 0; }));
  const MemoryStats st = status_of(client);
  EXPECT_EQ(st.verifying.bytes_done, 0u) << "all 0 once done";
  EXPECT_EQ(st.datasets.size(), 4u);
  std::ifstream log_file(daemon->socket() + ".log");
  const std::string log((std::istreambuf_iterator<char>(log_file)), {});
  EXPECT_THAT(log, HasSubstr("restart: checked the checksums of 30.52 MiB in "));
  EXPECT_THAT(log, HasSubstr("on 1 threads); 0 datasets quarantined"));
}

// A small dataset a get asks for is checked on shelfd's loop at once,
// rather than after the large partition the one thread is hashing: its get
// returns while the large dataset is still being checked. (Waiting, it
// returned only once both were checked.) The thread may win the race on a
// loaded machine, so a few restarts are tried.
TEST(RestartTest, ASmallDatasetIsServedWithoutWaitingForTheChecksOfALargeOne) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  constexpr uint64_t kLargeRows = 6'000'000;  // 48 MB in one partition
  {
    Client client = daemon->connect();
    publish_int64(client, "large", kLargeRows, 5);
    publish_int64(client, "small", 1000, 7);
  }
  bool served_first = false;
  for (int attempt = 0; attempt < 5 && !served_first; ++attempt) {
    daemon->kill9();
    const CommandResult r = daemon->restart_serving({"--verify-threads", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Client client = daemon->connect();
    auto small = client.get_dataset("small");
    ASSERT_TRUE(small.ok()) << small.status().to_string();
    served_first = status_of(client).verifying.datasets_left == 1;
    expect_int64_dataset(*small, 1000, 7);
    ASSERT_TRUE(eventually([&] { return status_of(client).verifying.datasets_left == 0; }));
  }
  EXPECT_TRUE(served_first) << "the small dataset's get waited for the large one's check";
  Client client = daemon->connect();
  expect_int64_published(client, "large", kLargeRows, 5);
}

// A dataset unpublished, or replaced, while it waits to be checked (or is
// being checked) is never served again, and its memory comes back once
// the checking thread lets go of it.
TEST(RestartTest, DatasetsUnpublishedWhileTheyAreCheckedAreFreed) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  uint64_t empty_used = 0;
  {
    Client client = daemon->connect();
    empty_used = status_of(client).used_bytes;
    for (int i = 0; i < 4; ++i) {
      TableBuilder t = make_int64_table(client, kBigRows, 200 + i, 2);
      ASSERT_TRUE(client.publish_dataset("big-" + std::to_string(i), t).ok());
    }
  }
  daemon->kill9();
  ASSERT_EQ(daemon->restart_serving({"--verify-threads", "1"}).exit_code, 0);
  Client client = daemon->connect();
  ASSERT_TRUE(client.unpublish_dataset("big-0").ok());
  ASSERT_TRUE(client.unpublish_dataset("big-3").ok());
  TableBuilder small = make_int64_table(client, 1'000, 7);
  ASSERT_TRUE(client.publish_dataset("big-1", small, PublishOptions{true}).ok());
  EXPECT_EQ(client.get_dataset("big-0").status().code(), Status::Code::kNotFound);
  expect_int64_published(client, "big-1", 1'000, 7);
  {
    auto kept = client.get_dataset("big-2");
    ASSERT_TRUE(kept.ok()) << kept.status().to_string();
    expect_int64_dataset(*kept, kBigRows, 202, 2);
  }
  EXPECT_TRUE(eventually([&] { return status_of(client).verifying.datasets_left == 0; }));
  const MemoryStats st = status_once_freed(client);
  uint64_t datasets = 0;
  for (const DatasetInfo& d : st.datasets) datasets += d.memory_bytes;
  EXPECT_EQ(st.used_bytes, empty_used + datasets);
  EXPECT_EQ(daemon->resident_bytes(), st.used_bytes) << "memory was not given back";
  EXPECT_EQ(listed_names(client), (std::vector<std::string>{"big-1", "big-2"}));
}

// A client whose daemon dies fails at once with a clear error, never hangs;
// it connects again once a daemon runs, and finds the same datasets.
TEST(RestartTest, ClientsFailFastAndConnectAgainAfterTheRestart) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "data", 50'000, 9);
  auto held = client.get_dataset("data");
  ASSERT_TRUE(held.ok());
  daemon->kill9();

  const auto start = std::chrono::steady_clock::now();
  auto listed = client.list_datasets();
  EXPECT_EQ(listed.status().code(), Status::Code::kUnavailable);
  EXPECT_THAT(listed.status().message(),
              HasSubstr("lost the connection to shelfd at " + daemon->socket()));
  EXPECT_THAT(listed.status().message(), HasSubstr("connect again"));
  EXPECT_EQ(client.get_dataset("data").status().code(), Status::Code::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  expect_int64_dataset(*held, 50'000, 9);  // its mapping is this process's own

  ASSERT_EQ(daemon->restart().exit_code, 0);
  // The old Client stays broken (its leases died with the old daemon)...
  EXPECT_EQ(client.list_datasets().status().code(), Status::Code::kUnavailable);
  // ...a new one is served the same data; the old Dataset still reads.
  Client again = daemon->connect();
  expect_int64_published(again, "data", 50'000, 9);
  expect_int64_dataset(*held, 50'000, 9);
  held = Result<Dataset>(Status::unavailable("dropped"));  // its release goes nowhere
  EXPECT_EQ(status_of(again).num_leases, 0u);
}

// A daemon that is alive but does not answer (stopped here) cannot block a
// client past ClientOptions::request_timeout.
TEST(RestartTest, HungDaemonTimesOutInsteadOfBlocking) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  ClientOptions options = daemon->client_options();
  options.request_timeout = 300ms;
  auto client = Client::connect(options);
  ASSERT_TRUE(client.ok());
  publish_int64(*client, "held", 1000, 2);
  auto held = client->get_dataset("held");
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(::kill(daemon->pid(), SIGSTOP), 0);
  // Lookups read the segment's name index: a stopped daemon does not hold
  // them up (docs/shm_layout.md, "Reading the index without the daemon").
  auto from_segment = client->list_datasets();
  ASSERT_TRUE(from_segment.ok()) << from_segment.status().to_string();
  ASSERT_EQ(from_segment->size(), 1u);
  EXPECT_EQ(from_segment->front().name, "held");
  const auto start = std::chrono::steady_clock::now();
  auto listed = client->status();  // a request: it needs the daemon
  const auto waited = std::chrono::steady_clock::now() - start;
  auto connected = Client::connect(options);
  ::kill(daemon->pid(), SIGCONT);
  EXPECT_EQ(listed.status().code(), Status::Code::kUnavailable);
  EXPECT_THAT(listed.status().message(),
              HasSubstr("did not answer in 0.3 s and is still running, but stopped"));
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 5s);
  EXPECT_EQ(connected.status().code(), Status::Code::kUnavailable);
  // Once it runs again it serves new clients.
  expect_daemon_serves(*daemon);
  // The timed-out connection stays open while its Dataset lives: the lease
  // holds, so an unpublish cannot free (and a publish reuse) what it reads.
  Client other = daemon->connect();
  EXPECT_EQ(status_of(other).num_leases, 1u);
  ASSERT_TRUE(other.unpublish_dataset("held").ok());
  publish_int64(other, "after", 1000, 7);
  expect_int64_dataset(*held, 1000, 2);
  EXPECT_EQ(client->list_datasets().status().code(), Status::Code::kUnavailable);
}

}  // namespace
}  // namespace shelf::test
