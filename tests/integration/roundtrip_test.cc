// A dataset published by one process and read by another, value by value,
// for every column type; raw-bytes datasets; the read-only mapping.
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <optional>
#include <random>
#include <signal.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

// The "every type" table. Row values are functions of the global row index
// g, so a reader can check each one without being sent the data.
const Schema kAllTypes = {{"id", Type::kInt64},     {"price", Type::kFloat64},
                          {"flag", Type::kBool},    {"label", Type::kString},
                          {"at", Type::kTimestamp}, {"count", Type::kInt32},
                          {"ratio", Type::kFloat32}};
// Uneven partitions, an empty one included.
const std::vector<uint64_t> kPartitionRows = {1000, 0, 1, 4099};

int64_t id_of(uint64_t g) { return static_cast<int64_t>(g) * 1'000'003 - 5'000'000'000'000; }
bool price_is_null(uint64_t g) { return g % 7 == 3; }
double price_of(uint64_t g) { return static_cast<double>(g) * 0.5 - 100.25; }
uint8_t flag_of(uint64_t g) { return g % 3 == 0 ? 1 : 0; }
bool label_is_null(uint64_t g) { return g % 5 == 0; }
// Empty strings (g % 11 == 1) must stay distinct from nulls; some are multi-byte UTF-8.
std::string label_of(uint64_t g) {
  if (g % 11 == 1) return "";
  return (g % 4 == 2 ? "héllo-€-" : "row-") + std::to_string(g);
}
int64_t at_of(uint64_t g) { return 1'700'000'000'000'000'000 + static_cast<int64_t>(g) * 1'000; }
int32_t count_of(uint64_t g) { return static_cast<int32_t>(g * 37) - 1000; }
float ratio_of(uint64_t g) { return static_cast<float>(g) / 4.0f - 3.0f; }

// Builds the table and publishes it under `name`, all in shared memory.
void publish_all_types(Client& client, const std::string& name) {
  auto table = client.create_table(kAllTypes);
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  uint64_t g0 = 0;
  for (uint64_t rows : kPartitionRows) {
    uint64_t label_bytes = 0;
    for (uint64_t g = g0; g < g0 + rows; ++g) {
      if (!label_is_null(g)) label_bytes += label_of(g).size();
    }
    const uint64_t string_bytes[] = {label_bytes};
    auto part = table->add_partition(rows, string_bytes);
    ASSERT_TRUE(part.ok()) << part.status().to_string();
    std::span<int64_t> id = part->values<int64_t>(0);
    std::span<double> price = part->values<double>(1);
    std::span<uint8_t> flag = part->values<uint8_t>(2);
    StringColumnWriter label = part->strings(3);
    std::span<int64_t> at = part->values<int64_t>(4);
    std::span<int32_t> count = part->values<int32_t>(5);
    std::span<float> ratio = part->values<float>(6);
    ASSERT_EQ(id.size(), rows);
    ASSERT_EQ(price.size(), rows);
    ASSERT_EQ(flag.size(), rows);
    ASSERT_EQ(at.size(), rows);
    ASSERT_EQ(count.size(), rows);
    ASSERT_EQ(ratio.size(), rows);
    // A type mismatch gives an empty span rather than a wrong view.
    EXPECT_TRUE(part->values<int32_t>(0).empty() || rows == 0);
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t g = g0 + r;
      id[r] = id_of(g);
      if (price_is_null(g)) {
        price[r] = std::numeric_limits<double>::quiet_NaN();
        part->set_null(1, r);
      } else {
        price[r] = price_of(g);
      }
      flag[r] = flag_of(g);
      Status s = label_is_null(g) ? label.append_null() : label.append(label_of(g));
      ASSERT_TRUE(s.ok()) << s.to_string();
      at[r] = at_of(g);
      count[r] = count_of(g);
      ratio[r] = ratio_of(g);
    }
    EXPECT_EQ(label.rows_written(), rows);
    g0 += rows;
  }
  Status s = client.publish_dataset(name, *table);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

// Checks every value, null and size of the table publish_all_types made.
void expect_all_types(const Dataset& ds) {
  uint64_t total_rows = 0;
  for (uint64_t rows : kPartitionRows) total_rows += rows;
  ASSERT_EQ(ds.schema(), kAllTypes);
  ASSERT_EQ(ds.num_partitions(), kPartitionRows.size());
  ASSERT_EQ(ds.num_rows(), total_rows);
  EXPECT_FALSE(ds.is_bytes());
  EXPECT_EQ(ds.column_index("label"), 3);
  EXPECT_EQ(ds.column_index("missing"), -1);
  uint64_t g0 = 0;
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    const uint64_t rows = kPartitionRows[p];
    ASSERT_EQ(ds.num_rows(p), rows);
    std::span<const int64_t> id = ds.column(p, 0).values<int64_t>();
    ColumnView price_col = ds.column(p, 1);
    std::span<const double> price = price_col.values<double>();
    std::span<const uint8_t> flag = ds.column(p, 2).values<uint8_t>();
    ColumnView label = ds.column(p, 3);
    std::span<const int64_t> at = ds.column(p, 4).values<int64_t>();
    std::span<const int32_t> count = ds.column(p, 5).values<int32_t>();
    std::span<const float> ratio = ds.column(p, 6).values<float>();
    ASSERT_EQ(id.size(), rows);
    ASSERT_EQ(price.size(), rows);
    ASSERT_EQ(flag.size(), rows);
    ASSERT_EQ(at.size(), rows);
    ASSERT_EQ(count.size(), rows);
    ASSERT_EQ(ratio.size(), rows);
    EXPECT_EQ(label.length(), rows);
    EXPECT_EQ(ds.column(p, 0).type(), Type::kInt64);
    EXPECT_EQ(ds.column(p, 4).type(), Type::kTimestamp);
    EXPECT_EQ(ds.column(p, 2).type(), Type::kBool);
    // Views of the wrong C++ type are empty.
    EXPECT_TRUE(ds.column(p, 0).values<double>().empty());
    EXPECT_TRUE(ds.column(p, 5).values<int64_t>().empty());

    uint64_t price_nulls = 0, label_nulls = 0, wrong = 0;
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t g = g0 + r;
      wrong += id[r] != id_of(g);
      if (price_is_null(g)) {
        ++price_nulls;
        wrong += price_col.is_valid(r) || !std::isnan(price[r]);
      } else {
        wrong += !price_col.is_valid(r) || price[r] != price_of(g);
      }
      wrong += flag[r] != flag_of(g);
      if (label_is_null(g)) {
        ++label_nulls;
        wrong += label.is_valid(r) || !label.string(r).empty();
      } else {
        wrong += !label.is_valid(r) || label.string(r) != label_of(g);
      }
      wrong += at[r] != at_of(g);
      wrong += count[r] != count_of(g);
      wrong += ratio[r] != ratio_of(g);
      if (wrong != 0) {
        ADD_FAILURE() << "first wrong value at partition " << p << " row " << r;
        return;
      }
    }
    EXPECT_EQ(price_col.null_count(), price_nulls) << "partition " << p;
    EXPECT_EQ(label.null_count(), label_nulls) << "partition " << p;
    EXPECT_EQ(ds.column(p, 0).null_count(), 0u);
    // No nulls: no bitmap at all, and every row valid.
    EXPECT_TRUE(ds.column(p, 0).validity_bitmap().empty());
    if (rows > 0) {
      EXPECT_EQ(label.string_offsets().size(), rows + 1);
      EXPECT_EQ(label.string_offsets().front(), 0);
    }
    EXPECT_TRUE(label.string(rows).empty()) << "out of range is empty";
    g0 += rows;
  }
  Status v = ds.verify();
  EXPECT_TRUE(v.ok()) << v.to_string();
}

TEST(RoundtripTest, PublisherExitsAndAnotherProcessReadsEveryValue) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);

  Pipe publisher_pid;
  ASSERT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              publish_all_types(c, "all-types");
              const std::string pid = std::to_string(::getpid()) + "\n";
              ASSERT_EQ(::write(publisher_pid.write_fd(), pid.data(), pid.size()),
                        static_cast<ssize_t>(pid.size()));
            }),
            0);
  auto pid_line = publisher_pid.read_line();
  ASSERT_TRUE(pid_line.has_value());
  const uint32_t pid = static_cast<uint32_t>(std::stoul(*pid_line));

  // The publisher is gone; its dataset is not.
  Client client = daemon->connect();
  auto list = client.list_datasets();
  ASSERT_TRUE(list.ok()) << list.status().to_string();
  ASSERT_EQ(list->size(), 1u);
  const DatasetInfo& info = list->front();
  EXPECT_EQ(info.name, "all-types");
  EXPECT_EQ(info.num_columns, kAllTypes.size());
  EXPECT_EQ(info.num_partitions, kPartitionRows.size());
  EXPECT_EQ(info.num_rows, 1000u + 0 + 1 + 4099);
  EXPECT_EQ(info.publisher_pid, pid);
  EXPECT_EQ(info.publisher_uid, ::getuid());
  EXPECT_EQ(info.leases, 0u);
  EXPECT_GT(info.created_ns, 0);
  EXPECT_GE(info.memory_bytes, info.data_bytes);
  const MemoryStats stats = status_of(client);
  EXPECT_EQ(stats.used_bytes, stats.index_bytes + info.memory_bytes);
  EXPECT_EQ(stats.unsealed_bytes, 0u);

  EXPECT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              auto ds = c.get_dataset("all-types");
              ASSERT_TRUE(ds.ok()) << ds.status().to_string();
              expect_all_types(*ds);
              EXPECT_EQ(ds->name(), "all-types");
              EXPECT_EQ(ds->publisher_pid(), pid);
              EXPECT_EQ(ds->publisher_uid(), ::getuid());
              EXPECT_EQ(ds->created_ns(), info.created_ns);
              EXPECT_EQ(ds->data_bytes(), info.data_bytes);
              auto listed = c.list_datasets();
              ASSERT_TRUE(listed.ok());
              ASSERT_EQ(listed->size(), 1u);
              EXPECT_EQ(listed->front().memory_bytes, info.memory_bytes);
              EXPECT_EQ(listed->front().num_rows, info.num_rows);
              // Lease counts come from the daemon: status(), not the segment.
              auto st = c.status();
              ASSERT_TRUE(st.ok());
              ASSERT_EQ(st->datasets.size(), 1u);
              EXPECT_EQ(st->datasets.front().leases, 1u) << "the reader's own lease";
            }),
            0);

  // A client that verifies checksums on every get sees the same bytes.
  ClientOptions verifying = daemon->client_options();
  verifying.verify_checksums = true;
  auto vc = Client::connect(verifying);
  ASSERT_TRUE(vc.ok()) << vc.status().to_string();
  auto ds = vc->get_dataset("all-types");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  expect_all_types(*ds);
  EXPECT_EQ(listed_names(client), std::vector<std::string>{"all-types"});
}

TEST(RoundtripTest, TableWithoutPartitionsPublishesAsEmpty) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  auto table = client.create_table({{"a", Type::kInt64}, {"b", Type::kString}});
  ASSERT_TRUE(table.ok());
  Status s = client.publish_dataset("empty", *table);
  ASSERT_TRUE(s.ok()) << s.to_string();
  auto ds = client.get_dataset("empty");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  EXPECT_EQ(ds->num_partitions(), 0u);
  EXPECT_EQ(ds->num_rows(), 0u);
  EXPECT_EQ(ds->data_bytes(), 0u);
  EXPECT_EQ(ds->schema(), (Schema{{"a", Type::kInt64}, {"b", Type::kString}}));
  EXPECT_TRUE(ds->verify().ok());
}

TEST(RoundtripTest, RawBytesDataset) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  std::mt19937_64 rng(42);
  std::vector<std::vector<std::byte>> payloads = {std::vector<std::byte>(1),
                                                  std::vector<std::byte>(100'003),
                                                  std::vector<std::byte>(4096 - 64)};
  for (auto& payload : payloads) {
    for (std::byte& b : payload) b = static_cast<std::byte>(rng());
  }

  ASSERT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              auto table = c.create_table(bytes_schema());
              ASSERT_TRUE(table.ok()) << table.status().to_string();
              for (const auto& payload : payloads) {
                Status s = table->append_bytes(payload);
                ASSERT_TRUE(s.ok()) << s.to_string();
              }
              // In place too: PartitionBuilder::bytes() is the payload.
              auto part = table->add_partition(3);
              ASSERT_TRUE(part.ok()) << part.status().to_string();
              ASSERT_EQ(part->bytes().size(), 3u);
              std::memcpy(part->bytes().data(), "xyz", 3);
              Status s = c.publish_dataset("blob", *table);
              ASSERT_TRUE(s.ok()) << s.to_string();
            }),
            0);

  Client client = daemon->connect();
  auto ds = client.get_dataset("blob");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  EXPECT_TRUE(ds->is_bytes());
  EXPECT_EQ(ds->schema(), bytes_schema());
  ASSERT_EQ(ds->num_partitions(), payloads.size() + 1);
  uint64_t total = 3;
  for (size_t p = 0; p < payloads.size(); ++p) {
    std::span<const std::byte> got = ds->bytes(p);
    ASSERT_EQ(got.size(), payloads[p].size()) << "partition " << p;
    EXPECT_EQ(std::memcmp(got.data(), payloads[p].data(), got.size()), 0) << "partition " << p;
    EXPECT_EQ(ds->num_rows(p), payloads[p].size());
    total += payloads[p].size();
  }
  std::span<const std::byte> last = ds->bytes(payloads.size());
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(std::memcmp(last.data(), "xyz", 3), 0);
  EXPECT_EQ(ds->num_rows(), total);
  EXPECT_EQ(ds->data_bytes(), total);
  EXPECT_TRUE(ds->verify().ok()) << ds->verify().to_string();

  // append_bytes is only for raw-bytes tables.
  auto typed = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(typed.ok());
  Status s = typed->append_bytes(payloads[0]);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.to_string();
}

TEST(RoundtripTest, DatasetOutlivesItsClient) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  std::optional<Dataset> ds;
  {
    Client client = daemon->connect();
    publish_int64(client, "kept", 50'000, 3);
    auto got = client.get_dataset("kept");
    ASSERT_TRUE(got.ok());
    ds.emplace(std::move(got).value());
  }  // the Client object is gone; the Dataset keeps the connection and the mapping
  expect_int64_dataset(*ds, 50'000, 3);
  Client other = daemon->connect();
  EXPECT_EQ(status_of(other).num_leases, 1u);
  ds.reset();
  EXPECT_TRUE(eventually([&] { return status_of(other).num_connections == 1; }))
      << "the last Dataset of a Client did not close its connection";
  EXPECT_EQ(status_of(other).num_leases, 0u);
}

// Bytes changed behind the daemon's back (a stray writer with access to
// /dev/shm) are caught by the checksums.
TEST(RoundtripTest, CorruptedBytesAreCaughtByVerify) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  constexpr int64_t kSeed = 0x5EED'0000'0000'0000;
  publish_int64(client, "victim", 100'000, kSeed);
  auto ds = client.get_dataset("victim");
  ASSERT_TRUE(ds.ok());
  ASSERT_TRUE(ds->verify().ok());

  // Find the first values in the segment file and change one of them.
  const std::string path = "/dev/shm/" + daemon->segment();
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << path;
  const int64_t pattern[2] = {kSeed, kSeed + 1};
  std::vector<char> chunk(1 << 20);
  off_t found = -1;
  for (off_t at = 0; found < 0; at += static_cast<off_t>(chunk.size())) {
    ssize_t n = ::pread(fd.get(), chunk.data(), chunk.size(), at);
    ASSERT_GT(n, 0) << "the values are not in the segment";
    for (ssize_t i = 0; i + 16 <= n; i += 8) {
      if (std::memcmp(chunk.data() + i, pattern, 16) == 0) {
        found = at + i;
        break;
      }
    }
  }
  const int64_t changed = 42;
  ASSERT_EQ(::pwrite(fd.get(), &changed, sizeof changed, found + 8 * 10), 8);

  // The zero-copy view shows the change; verify() names what changed.
  EXPECT_EQ(ds->column(0, 0).values<int64_t>()[10], 42);
  Status v = ds->verify();
  EXPECT_EQ(v.code(), Status::Code::kCorruption) << v.to_string();
  EXPECT_THAT(v.message(), HasSubstr("'victim'"));
  EXPECT_THAT(v.message(), HasSubstr("partition 0"));
  EXPECT_THAT(v.message(), HasSubstr("'v'"));
  // A client that checks on every get refuses it.
  ClientOptions verifying = daemon->client_options();
  verifying.verify_checksums = true;
  auto vc = Client::connect(verifying);
  ASSERT_TRUE(vc.ok());
  EXPECT_EQ(vc->get_dataset("victim").status().code(), Status::Code::kCorruption);
  // Its refused get gave its lease back.
  EXPECT_TRUE(eventually([&] { return status_of(client).num_leases == 1; }));
}

// Past 64 MiB a publisher hashes its buffers on several threads (one per
// 32 MiB, up to one per core): each checksum must land in its own buffer's
// slot of the descriptor, or the reader's verify() fails.
TEST(RoundtripTest, ATableHashedOnSeveralThreadsVerifiesInAnotherProcess) {
  TestDaemon::Options options;
  options.memory_limit = "160MiB";
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  // Partitions of different lengths and values, so that no two checksums match.
  const std::vector<uint64_t> rows = {4u << 20, 3u << 20, (2u << 20) + 17, 1};
  ASSERT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              TableBuilder table = c.create_table({{"v", Type::kInt64}}).value();
              int64_t next = 0;
              for (uint64_t n : rows) {
                PartitionBuilder part = table.add_partition(n).value();
                for (int64_t& v : part.values<int64_t>(0)) v = next++ * 3 + 1;
              }
              Status s = c.publish_dataset("large", table);
              ASSERT_TRUE(s.ok()) << s.to_string();
            }),
            0);
  ClientOptions verifying = daemon->client_options();
  verifying.verify_checksums = true;
  Client client = Client::connect(verifying).value();
  Result<Dataset> ds = client.get_dataset("large");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  ASSERT_EQ(ds->num_partitions(), rows.size());
  int64_t next = 0;
  for (uint64_t p = 0; p < rows.size(); ++p) {
    std::span<const int64_t> v = ds->column(p, 0).values<int64_t>();
    ASSERT_EQ(v.size(), rows[p]);
    EXPECT_EQ(v.front(), next * 3 + 1) << p;
    next += static_cast<int64_t>(rows[p]);
    EXPECT_EQ(v.back(), (next - 1) * 3 + 1) << p;
  }
}

TEST(RoundtripTest, UnfinishedStringColumnIsRefused) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  const uint64_t baseline = status_of(client).used_bytes;
  {
    auto table = client.create_table({{"s", Type::kString}});
    ASSERT_TRUE(table.ok());
    const uint64_t string_bytes[] = {6};
    auto part = table->add_partition(3, string_bytes);
    ASSERT_TRUE(part.ok());
    StringColumnWriter w = part->strings(0);
    ASSERT_TRUE(w.append("abc").ok());
    EXPECT_EQ(w.append("defg").code(), Status::Code::kInvalidArgument) << "past the reservation";
    ASSERT_TRUE(w.append("de").ok());
    Status s = client.publish_dataset("partial", *table);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr("'s'"));
    EXPECT_TRUE(listed_names(client).empty());
    // Finished, it publishes.
    ASSERT_TRUE(w.append("f").ok());
    EXPECT_EQ(w.append("").code(), Status::Code::kInvalidArgument) << "every row is written";
    s = client.publish_dataset("partial", *table);
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  auto ds = client.get_dataset("partial");
  ASSERT_TRUE(ds.ok());
  ColumnView col = ds->column(0, 0);
  EXPECT_EQ(col.string(0), "abc");
  EXPECT_EQ(col.string(1), "de");
  EXPECT_EQ(col.string(2), "f");
  EXPECT_EQ(col.data().size(), 6u);
  EXPECT_GT(status_of(client).used_bytes, baseline);
}

// Regression: append_null() and an all-empty string column once passed a
// null pointer to memcpy (undefined behaviour that UBSan aborts on).
TEST(StringNullTest, AppendNullAndEmptyView) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              auto table = c.create_table({{"s", Type::kString}});
              ASSERT_TRUE(table.ok());
              const uint64_t string_bytes[] = {3};
              auto part = table->add_partition(4, string_bytes);
              ASSERT_TRUE(part.ok()) << part.status().to_string();
              StringColumnWriter w = part->strings(0);
              ASSERT_TRUE(w.append_null().ok());
              ASSERT_TRUE(w.append("abc").ok());
              ASSERT_TRUE(w.append(std::string_view()).ok());
              ASSERT_TRUE(w.append_null().ok());
              const int64_t offsets[] = {0, 0};
              const ColumnData empty_strings{nullptr, 0, offsets, nullptr};
              ASSERT_TRUE(table->append_partition(1, std::span(&empty_strings, 1)).ok());
              Status s = c.publish_dataset("nulls", *table);
              ASSERT_TRUE(s.ok()) << s.to_string();
            }),
            0);
  Client client = daemon->connect();
  auto ds = client.get_dataset("nulls");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  ColumnView col = ds->column(0, 0);
  EXPECT_EQ(col.null_count(), 2u);
  EXPECT_FALSE(col.is_valid(0));
  EXPECT_EQ(col.string(1), "abc");
  EXPECT_TRUE(col.is_valid(2));
  EXPECT_EQ(col.string(2), "");
  EXPECT_FALSE(col.is_valid(3));
  ASSERT_EQ(ds->num_partitions(), 2u);
  EXPECT_EQ(ds->column(1, 0).string(0), "");
  EXPECT_TRUE(ds->column(1, 0).is_valid(0));
}

// Writes through a Dataset's view. Runs in a death-test child only.
void write_through_view(const Dataset& ds) {
  // ASan installs its own SIGSEGV handler (it would exit 1): restore the
  // default so the kernel's verdict is what the test sees in every build.
  ::signal(SIGSEGV, SIG_DFL);
  const int64_t* value = ds.column(0, 0).values<int64_t>().data();
  *const_cast<volatile int64_t*>(value) = -1;
}

TEST(RoundtripTest, ReadersMappingIsReadOnly) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "ro", 1000, 5);
  auto ds = client.get_dataset("ro");
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();

  // The default "fast" death-test style forks here: "threadsafe" would re-run
  // the test from the start in a new process and start a second daemon.
  EXPECT_EXIT(write_through_view(*ds), ::testing::KilledBySignal(SIGSEGV), "");
  // Also from a reader process of its own (not a fork of the one that got it).
  EXPECT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              auto mine = c.get_dataset("ro");
              if (!mine.ok()) ::_exit(2);
              write_through_view(*mine);
              ::_exit(3);  // the write did not fault
            }),
            128 + SIGSEGV);
  // The bytes are as published, for this reader and for a new one.
  expect_int64_dataset(*ds, 1000, 5);
  expect_int64_published(client, "ro", 1000, 5);
}

}  // namespace
}  // namespace shelf::test

namespace shelf::test {
namespace {

// Not instrumented: under ASan every checked load would also touch shadow
// memory, whose own page faults would drown the ones this test counts.
__attribute__((no_sanitize_address)) int64_t sum_of(std::span<const int64_t> values) {
  int64_t sum = 0;
  for (int64_t v : values) sum += v;
  return sum;
}

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// prefault() maps the pages in advance: a scan afterwards takes (almost) no
// page faults, where the first scan of a fresh mapping takes many.
TEST(PrefaultTest, MapsThePagesSoTheFirstScanDoesNotFault) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  constexpr int64_t kRows = 2 << 20;  // 16 MiB: 4096 pages
  {
    Client publisher = daemon->connect();
    publish_int64(publisher, "big", kRows, 7);
  }
  // A fresh reader process scans the column once; its exit code is the
  // number of page faults the scan took (capped at 200), or 25x on error.
  auto faults_of_first_scan = [&](bool prefault) {
    return run_in_child([&] {
      Client reader = daemon->connect();
      auto ds = reader.get_dataset("big");
      if (!ds.ok()) _exit(250);
      if (prefault && !ds->prefault(2).ok()) _exit(251);
      const long before = minor_faults();
      const int64_t sum = sum_of(ds->column(0, 0).values<int64_t>());
      const long taken = minor_faults() - before;
      if (sum != kRows * 7 + kRows * (kRows - 1) / 2) _exit(252);
      _exit(static_cast<int>(std::min<long>(taken, 200)));
    });
  };
  // 4096 pages; the kernel maps up to 16 per read fault ("fault-around").
  EXPECT_GE(faults_of_first_scan(false), 100);
  EXPECT_LT(faults_of_first_scan(true), 16);
}

}  // namespace
}  // namespace shelf::test

namespace shelf::test {
namespace {

// Publishing unmaps the partitions from the publisher: nothing it still
// holds can change sealed data, or, after an unpublish, memory that another
// dataset reuses.
TEST(PublishedTableTest, IsNoLongerWritableByItsPublisher) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  auto table = client.create_table({{"v", Type::kInt64}, {"s", Type::kString}});
  ASSERT_TRUE(table.ok());
  const uint64_t string_bytes[] = {3};
  auto part = table->add_partition(4, string_bytes);
  ASSERT_TRUE(part.ok());
  std::span<int64_t> kept = part->values<int64_t>(0);
  for (int i = 0; i < 4; ++i) kept[i] = i;
  StringColumnWriter strings = part->strings(1);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(strings.append("x").ok());
  ASSERT_TRUE(strings.append_null().ok());
  ASSERT_TRUE(client.publish_dataset("sealed", *table).ok());

  EXPECT_FALSE(part->writable());
  EXPECT_TRUE(part->values<int64_t>(0).empty());
  EXPECT_EQ(strings.append("y").code(), Status::Code::kInvalidArgument);
  // A span kept from before the publish points at unmapped memory now.
  const int code = run_in_child([&] {
    ::signal(SIGSEGV, SIG_DFL);  // not ASan's handler, which would exit 1
    kept[0] = 666;
  });
  EXPECT_EQ(code, 128 + SIGSEGV);
  Dataset ds = client.get_dataset("sealed").value();
  EXPECT_EQ(ds.column(0, 0).values<int64_t>()[0], 0);
  EXPECT_TRUE(ds.verify().ok());
}

// Release and Abort are sent without waiting for their replies; thousands of
// them in a row must not fill the socket until both sides wait on each other.
TEST(PostedRequestsTest, ThousandsInARowDoNotBlock) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  pid_t child = spawn_child([&] {
    Client client = daemon->connect();
    {
      TableBuilder table = make_int64_table(client, 1, 0, 3000);  // 3000 one-row partitions
    }  // dropped unpublished: 3000 Aborts
    publish_int64(client, "one", 10, 1);
    for (int i = 0; i < 3000; ++i) (void)client.get_dataset("one").value();  // 3000 Releases
    EXPECT_EQ(listed_names(client), std::vector<std::string>{"one"});
    EXPECT_EQ(status_of(client).num_leases, 0u);
  });
  EXPECT_EQ(wait_child(child), 0);  // the child is killed (SIGALRM) if it hangs
}

}  // namespace
}  // namespace shelf::test
