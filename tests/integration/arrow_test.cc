// <shelf/arrow.h> read by a consumer written to the Arrow C Data and Stream
// Interface specs: every format, buffer count, offset, length and null count
// checked against the Dataset; each release called exactly once, children
// included; buffers inside the segment (no copy, bools aside); the lease held
// until the last release, and an unpublished dataset's memory back after it.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/arrow.h>
#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

// Every table type, and the Arrow format each exports as.
const Schema kSchema = {{"i8", Type::kInt8},     {"i16", Type::kInt16},  {"i32", Type::kInt32},
                        {"i64", Type::kInt64},   {"u8", Type::kUInt8},   {"u16", Type::kUInt16},
                        {"u32", Type::kUInt32},  {"u64", Type::kUInt64}, {"f32", Type::kFloat32},
                        {"f64", Type::kFloat64}, {"flag", Type::kBool},  {"label", Type::kString},
                        {"at", Type::kTimestamp}};
const char* const kFormats[] = {"c", "s", "i", "l", "C", "S",      "I",
                                "L", "f", "g", "b", "U", "tsn:UTC"};
const std::vector<uint64_t> kRows = {37, 0, 1000};

bool is_null(size_t column, uint64_t row) { return column % 3 == 1 && row % 4 == 2; }
std::string label_of(uint64_t row) { return row % 5 == 0 ? "" : "row-" + std::to_string(row); }

template <class V>
void fill(PartitionBuilder& part, size_t c, uint64_t p) {
  std::span<V> values = part.values<V>(c);
  ASSERT_EQ(values.size(), part.num_rows());
  for (uint64_t r = 0; r < values.size(); ++r) values[r] = static_cast<V>(r * 3 + p + c);
}

void publish_every_type(Client& client, const std::string& name) {
  auto table = client.create_table(kSchema);
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  for (uint64_t p = 0; p < kRows.size(); ++p) {
    uint64_t label_bytes = 0;
    for (uint64_t r = 0; r < kRows[p]; ++r) label_bytes += label_of(r).size();
    const uint64_t string_bytes[] = {label_bytes};
    auto part = table->add_partition(kRows[p], string_bytes);
    ASSERT_TRUE(part.ok()) << part.status().to_string();
    fill<int8_t>(*part, 0, p);
    fill<int16_t>(*part, 1, p);
    fill<int32_t>(*part, 2, p);
    fill<int64_t>(*part, 3, p);
    fill<uint8_t>(*part, 4, p);
    fill<uint16_t>(*part, 5, p);
    fill<uint32_t>(*part, 6, p);
    fill<uint64_t>(*part, 7, p);
    fill<float>(*part, 8, p);
    fill<double>(*part, 9, p);
    std::span<uint8_t> flags = part->values<uint8_t>(10);
    for (uint64_t r = 0; r < flags.size(); ++r) flags[r] = r % 3 == 0 ? 1 : 0;
    StringColumnWriter labels = part->strings(11);
    for (uint64_t r = 0; r < kRows[p]; ++r) ASSERT_TRUE(labels.append(label_of(r)).ok());
    fill<int64_t>(*part, 12, p);
    for (size_t c = 0; c < kSchema.size(); ++c) {
      for (uint64_t r = 0; r < kRows[p]; ++r) {
        if (is_null(c, r)) part->set_null(c, r);
      }
    }
  }
  ASSERT_TRUE(client.publish_dataset(name, *table).ok());
}

// The address range of this process's mapping of /dev/shm/<segment>.
struct Range {
  uintptr_t begin = 0, end = 0;
  bool contains(const void* p, size_t n) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    return a >= begin && a + n <= end;
  }
};
Range segment_mapping(const std::string& segment) {
  std::ifstream maps("/proc/self/maps");
  Range r;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/dev/shm/" + segment) == std::string::npos) continue;
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
    if (r.begin == 0 || begin < r.begin) r.begin = begin;
    r.end = std::max<uintptr_t>(r.end, end);
  }
  EXPECT_NE(r.begin, 0u) << "no mapping of " << segment;
  return r;
}

// Counts the release calls of every struct it wraps: each must be called
// exactly once. A trampoline per struct type, the original callback kept by
// address.
std::map<const void*, int> g_released;
std::map<const void*, void (*)(ArrowArray*)> g_array_release;
std::map<const void*, void (*)(ArrowSchema*)> g_schema_release;

void counting_array_release(ArrowArray* a) {
  ++g_released[a];
  g_array_release.at(a)(a);
  EXPECT_EQ(a->release, nullptr) << "a released array must be marked released";
}
void counting_schema_release(ArrowSchema* s) {
  ++g_released[s];
  g_schema_release.at(s)(s);
  EXPECT_EQ(s->release, nullptr);
}
void wrap(ArrowArray* a) {
  ASSERT_NE(a->release, nullptr);
  g_array_release[a] = a->release;
  a->release = &counting_array_release;
  for (int64_t i = 0; i < a->n_children; ++i) wrap(a->children[i]);
}
void wrap(ArrowSchema* s) {
  ASSERT_NE(s->release, nullptr);
  g_schema_release[s] = s->release;
  s->release = &counting_schema_release;
  for (int64_t i = 0; i < s->n_children; ++i) wrap(s->children[i]);
}
// Every wrapped struct was released exactly once.
void expect_each_released_once(size_t structs) {
  EXPECT_EQ(g_released.size(), structs);
  for (const auto& [p, n] : g_released) EXPECT_EQ(n, 1) << p;
  g_released.clear();
  g_array_release.clear();
  g_schema_release.clear();
}

void check_schema(const ArrowSchema& s, bool bools_as_uint8) {
  EXPECT_STREQ(s.format, "+s");
  EXPECT_EQ(s.flags, 0);
  EXPECT_EQ(s.dictionary, nullptr);
  ASSERT_EQ(s.n_children, static_cast<int64_t>(kSchema.size()));
  for (size_t c = 0; c < kSchema.size(); ++c) {
    const ArrowSchema& child = *s.children[c];
    EXPECT_STREQ(child.format,
                 kSchema[c].type == Type::kBool && bools_as_uint8 ? "C" : kFormats[c]);
    EXPECT_STREQ(child.name, kSchema[c].name.c_str());
    EXPECT_EQ(child.metadata, nullptr);
    EXPECT_EQ(child.flags, ARROW_FLAG_NULLABLE);
    EXPECT_EQ(child.n_children, 0);
    EXPECT_EQ(child.dictionary, nullptr);
    EXPECT_NE(child.release, nullptr);
  }
}

// One column array against the Dataset's own view of it.
void check_column(const ArrowArray& a, const ColumnView& v, const Range& seg, bool bools_as_uint8) {
  EXPECT_EQ(a.length, static_cast<int64_t>(v.length()));
  EXPECT_EQ(a.offset, 0);
  EXPECT_EQ(a.null_count, static_cast<int64_t>(v.null_count()));
  EXPECT_EQ(a.n_children, 0);
  EXPECT_EQ(a.dictionary, nullptr);
  ASSERT_EQ(a.n_buffers, v.type() == Type::kString ? 3 : 2);
  if (v.null_count() == 0) {
    EXPECT_TRUE(a.buffers[0] == nullptr || v.validity_bitmap().data() == a.buffers[0]);
  } else {
    ASSERT_EQ(a.buffers[0], v.validity_bitmap().data());
    EXPECT_TRUE(seg.contains(a.buffers[0], v.validity_bitmap().size()));
  }
  if (v.type() == Type::kString) {
    const auto* offsets = static_cast<const int64_t*>(a.buffers[1]);
    const auto* data = static_cast<const char*>(a.buffers[2]);
    EXPECT_EQ(offsets, v.string_offsets().data());
    EXPECT_TRUE(seg.contains(offsets, (v.length() + 1) * 8));
    EXPECT_TRUE(seg.contains(data, v.data().size()));
    for (uint64_t r = 0; r < v.length(); ++r) {
      const std::string_view got(data + offsets[r],
                                 static_cast<size_t>(offsets[r + 1] - offsets[r]));
      if (v.is_valid(r)) {
        EXPECT_EQ(got, v.string(r)) << r;
      }
    }
  } else if (v.type() == Type::kBool && !bools_as_uint8) {
    // Bits packed for this export: a buffer of its own, outside the segment.
    const auto* bits = static_cast<const uint8_t*>(a.buffers[1]);
    ASSERT_NE(bits, nullptr);
    EXPECT_FALSE(seg.contains(bits, 1));
    for (uint64_t r = 0; r < v.length(); ++r) {
      EXPECT_EQ((bits[r / 8] >> (r % 8)) & 1, v.values<uint8_t>()[r]) << r;
    }
  } else {
    EXPECT_EQ(a.buffers[1], v.data().data()) << "a copy, not the segment's buffer";
    EXPECT_TRUE(seg.contains(a.buffers[1], v.data().size()));
  }
}

void check_partition(const ArrowArray& a, const Dataset& ds, uint64_t p, const Range& seg,
                     bool bools_as_uint8 = false) {
  EXPECT_EQ(a.length, static_cast<int64_t>(ds.num_rows(p)));
  EXPECT_EQ(a.offset, 0);
  EXPECT_EQ(a.null_count, 0);
  ASSERT_EQ(a.n_buffers, 1);
  EXPECT_EQ(a.buffers[0], nullptr);
  EXPECT_EQ(a.dictionary, nullptr);
  ASSERT_EQ(a.n_children, static_cast<int64_t>(kSchema.size()));
  for (size_t c = 0; c < kSchema.size(); ++c) {
    check_column(*a.children[c], ds.column(p, c), seg, bools_as_uint8);
  }
}

uint32_t leases_of(Client& client, const std::string& name) {
  for (const DatasetInfo& d : status_of(client).datasets) {
    if (d.name == name) return d.leases;
  }
  return 0;
}

class ArrowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
    client_.emplace(daemon_->connect());
    publish_every_type(*client_, "t");
    auto ds = client_->get_dataset("t");
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    dataset_ = std::make_shared<Dataset>(std::move(ds).value());
    seg_ = segment_mapping(daemon_->segment());
  }
  std::unique_ptr<TestDaemon> daemon_;
  std::optional<Client> client_;
  std::shared_ptr<const Dataset> dataset_;
  Range seg_;
};

TEST_F(ArrowTest, SchemaHasEveryFormatAndReleasesEachStructOnce) {
  ArrowSchema schema;
  ASSERT_TRUE(export_schema(*dataset_, &schema).ok());
  check_schema(schema, false);
  wrap(&schema);
  schema.release(&schema);
  expect_each_released_once(1 + kSchema.size());

  ASSERT_TRUE(export_schema(*dataset_, &schema, {.bools_as_uint8 = true}).ok());
  check_schema(schema, true);
  schema.release(&schema);
}

TEST_F(ArrowTest, EveryPartitionIsTheSegmentsOwnBuffersBoolsAside) {
  for (uint64_t p = 0; p < dataset_->num_partitions(); ++p) {
    for (bool as_uint8 : {false, true}) {
      ArrowArray array;
      ASSERT_TRUE(export_partition(dataset_, p, &array, {.bools_as_uint8 = as_uint8}).ok());
      check_partition(array, *dataset_, p, seg_, as_uint8);
      wrap(&array);
      array.release(&array);
      expect_each_released_once(1 + kSchema.size());
    }
  }
  ArrowArray array;
  Status s = export_partition(dataset_, 3, &array);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("3 partitions"), std::string::npos) << s.message();
  s = export_array(dataset_, &array);
  EXPECT_NE(s.message().find("as a stream"), std::string::npos) << s.message();
}

TEST_F(ArrowTest, AnUnpublishedDatasetsMemoryComesBackAtTheLastRelease) {
  ArrowArray array;
  ASSERT_TRUE(export_partition(dataset_, 2, &array).ok());
  // A consumer moves one child out (the spec allows it) and releases the parent.
  ArrowArray moved = *array.children[11];
  array.children[11]->release = nullptr;
  dataset_.reset();  // only the export holds the lease now
  const uint64_t used_before = status_of(*client_).used_bytes;
  ASSERT_TRUE(client_->unpublish_dataset("t").ok());
  EXPECT_GT(status_of(*client_).pending_free_bytes, 0u);
  array.release(&array);
  // The moved child still holds the lease, and its strings are readable.
  EXPECT_EQ(status_of(*client_).num_leases, 1u);
  const auto* offsets = static_cast<const int64_t*>(moved.buffers[1]);
  const auto* data = static_cast<const char*>(moved.buffers[2]);
  EXPECT_EQ(std::string(data + offsets[7], static_cast<size_t>(offsets[8] - offsets[7])),
            label_of(7));
  moved.release(&moved);
  EXPECT_EQ(moved.release, nullptr);
  EXPECT_TRUE(eventually([&] {
    MemoryStats m = status_of(*client_);
    return m.num_leases == 0 && m.pending_free_bytes == 0 && m.used_bytes < used_before;
  })) << "the lease outlived the last release";
}

TEST_F(ArrowTest, StreamGivesEachPartitionThenTheEndAndHoldsTheLeaseUntilAllAreReleased) {
  ArrowArrayStream stream;
  ASSERT_TRUE(export_stream(dataset_, &stream).ok());
  ArrowSchema schema;
  ASSERT_EQ(stream.get_schema(&stream, &schema), 0);
  check_schema(schema, false);
  schema.release(&schema);
  std::vector<ArrowArray> arrays;
  for (;;) {
    ArrowArray a;
    ASSERT_EQ(stream.get_next(&stream, &a), 0) << stream.get_last_error(&stream);
    if (a.release == nullptr) break;  // the end of the stream
    arrays.push_back(a);
  }
  ASSERT_EQ(arrays.size(), kRows.size());
  for (uint64_t p = 0; p < arrays.size(); ++p) check_partition(arrays[p], *dataset_, p, seg_);
  EXPECT_EQ(stream.get_last_error(&stream), nullptr);
  ArrowArray after_end;
  ASSERT_EQ(stream.get_next(&stream, &after_end), 0);
  EXPECT_EQ(after_end.release, nullptr);

  dataset_.reset();
  stream.release(&stream);
  EXPECT_EQ(stream.release, nullptr);
  EXPECT_EQ(leases_of(*client_, "t"), 1u) << "the arrays hold the lease";
  for (ArrowArray& a : arrays) {
    wrap(&a);
    a.release(&a);
  }
  expect_each_released_once(arrays.size() * (1 + kSchema.size()));
  EXPECT_TRUE(eventually([&] { return leases_of(*client_, "t") == 0; }));
}

TEST_F(ArrowTest, RawBytesDatasetsAreRefused) {
  auto table = client_->create_table(bytes_schema());
  ASSERT_TRUE(table.ok());
  const std::byte payload[3] = {};
  ASSERT_TRUE(table->append_bytes(payload).ok());
  ASSERT_TRUE(client_->publish_dataset("raw", *table).ok());
  auto raw = std::make_shared<Dataset>(client_->get_dataset("raw").value());
  ArrowSchema schema;
  schema.release = nullptr;
  Status s = export_schema(*raw, &schema);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(schema.release, nullptr) << "untouched on error";
  ArrowArrayStream stream;
  EXPECT_EQ(export_stream(raw, &stream).code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace shelf::test
