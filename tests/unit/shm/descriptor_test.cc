// DescriptorBuilder -> DescriptorView::parse, and every way parse must refuse
// a descriptor: InvalidArgument when it came from a client, Corruption when it
// was read from the segment.
#include "shm/descriptor.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/types.h>

#include "shm/layout.h"

namespace shelf::shm {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Descriptor bytes in 8-aligned storage (parse needs the alignment of
// DescriptorHeaderLayout), with typed read-modify-write access to each part.
class Encoded {
 public:
  Encoded(const std::vector<std::byte>& bytes, uint32_t num_columns, uint64_t num_partitions)
      : words_((bytes.size() + 7) / 8 + 1),
        size_(bytes.size()),
        num_columns_(num_columns),
        num_partitions_(num_partitions) {
    std::memcpy(words_.data(), bytes.data(), bytes.size());
  }

  std::span<const std::byte> bytes() const {
    return {reinterpret_cast<const std::byte*>(words_.data()), size_};
  }
  std::span<const std::byte> prefix(size_t n) const { return bytes().first(n); }

  // Calls f on a copy of the T at `offset`, then stores it back.
  template <class T, class F>
  void edit(size_t offset, F f) {
    T v;
    auto* p = reinterpret_cast<std::byte*>(words_.data()) + offset;
    std::memcpy(&v, p, sizeof v);
    f(v);
    std::memcpy(p, &v, sizeof v);
  }
  template <class F>
  void edit_header(F f) {
    edit<DescriptorHeaderLayout>(0, f);
  }
  template <class F>
  void edit_column(uint32_t c, F f) {
    edit<ColumnLayout>(sizeof(DescriptorHeaderLayout) + c * sizeof(ColumnLayout), f);
  }
  template <class F>
  void edit_partition(uint64_t p, F f) {
    edit<PartitionLayout>(partitions_start() + p * sizeof(PartitionLayout), f);
  }
  template <class F>
  void edit_chunk(uint64_t p, uint32_t c, F f) {
    edit<ChunkLayout>(chunks_start() + (p * num_columns_ + c) * sizeof(ChunkLayout), f);
  }

 private:
  size_t partitions_start() const {
    return sizeof(DescriptorHeaderLayout) + num_columns_ * sizeof(ColumnLayout);
  }
  size_t chunks_start() const {
    return partitions_start() + num_partitions_ * sizeof(PartitionLayout);
  }

  std::vector<uint64_t> words_;
  size_t size_;
  uint32_t num_columns_;
  uint64_t num_partitions_;
};

// Places buffers one after the other in the payload of an extent (after its
// 64-byte header), each kBufferAlignment aligned, as a publisher does.
class Placer {
 public:
  explicit Placer(const PartitionLayout& partition)
      : next_(partition.extent_offset + kExtentHeaderBytes) {}
  BufferLayout put(uint64_t length) {
    if (length == 0) return BufferLayout{};
    BufferLayout b{next_, length, 0x1000 + next_};  // some distinct "checksum"
    next_ = align_up(next_ + length, kBufferAlignment);
    return b;
  }

 private:
  uint64_t next_;
};

const Schema kSchema = {
    {"id", Type::kInt64},
    {"score", Type::kFloat64},
    {"flag", Type::kBool},
    {"name", Type::kString},
};
constexpr uint32_t kId = 0, kScore = 1, kFlag = 2, kName = 3;

// Partition p's layout: 10 rows in a 2-page extent at page 16, 5 rows in a
// 1-page extent at page 32. The string column has 2 nulls and a validity bitmap.
PartitionLayout partition_layout(uint64_t p) {
  if (p == 0) return PartitionLayout{10, 16 * kPageSize, 2 * kPageSize, 0};
  return PartitionLayout{5, 32 * kPageSize, kPageSize, 0};
}

std::vector<ChunkLayout> table_chunks(const PartitionLayout& part) {
  const uint64_t n = part.num_rows;
  Placer placer(part);
  std::vector<ChunkLayout> chunks(4);
  chunks[kId].data = placer.put(n * 8);
  chunks[kScore].data = placer.put(n * 8);
  chunks[kFlag].data = placer.put(n);
  chunks[kName].validity = placer.put((n + 7) / 8);
  chunks[kName].null_count = 2;
  chunks[kName].offsets = placer.put((n + 1) * 8);
  chunks[kName].data = placer.put(5 * n + 3);  // UTF-8 bytes; any length is fine
  return chunks;
}

std::vector<std::byte> table_bytes() {
  DescriptorBuilder builder(kSchema);
  for (uint64_t p = 0; p < 2; ++p) {
    const PartitionLayout part = partition_layout(p);
    builder.add_partition(part, table_chunks(part));
  }
  EXPECT_EQ(builder.num_partitions(), 2u);
  return builder.finish();
}

Encoded table() { return Encoded(table_bytes(), 4, 2); }

bool same_buffer(const BufferLayout& a, const BufferLayout& b) {
  return a.offset == b.offset && a.length == b.length && a.xxh3 == b.xxh3;
}

// Expects parse to refuse `bytes` with the code `from_client` calls for, and a
// message containing `why` (so that the intended check is the one that fired).
void expect_refused(std::span<const std::byte> bytes, const std::string& why) {
  Result<DescriptorView> client = DescriptorView::parse(bytes, /*from_client=*/true);
  ASSERT_FALSE(client.ok()) << "accepted; expected: " << why;
  EXPECT_EQ(client.status().code(), Status::Code::kInvalidArgument) << client.status().to_string();
  EXPECT_NE(client.status().message().find("bad dataset descriptor"), std::string::npos);
  EXPECT_NE(client.status().message().find(why), std::string::npos)
      << client.status().message() << "\n  expected to contain: " << why;

  Result<DescriptorView> segment = DescriptorView::parse(bytes, /*from_client=*/false);
  ASSERT_FALSE(segment.ok());
  EXPECT_EQ(segment.status().code(), Status::Code::kCorruption) << segment.status().to_string();
  EXPECT_EQ(segment.status().message(), client.status().message());
}

void expect_refused(const Encoded& e, const std::string& why) { expect_refused(e.bytes(), why); }

constexpr const char* kOutside = "a buffer lies outside its extent or is misaligned";
constexpr const char* kLengths = "buffer lengths do not match the row count";
constexpr const char* kValidity = "validity bitmap does not match its null count";
constexpr const char* kTotals = "row or byte totals do not add up";
constexpr const char* kSize = "its size does not match its counts";
constexpr const char* kBadExtent = "has a bad extent";

TEST(DescriptorTest, RoundTripsATable) {
  const Encoded e = table();
  for (bool from_client : {true, false}) {
    Result<DescriptorView> parsed = DescriptorView::parse(e.bytes(), from_client);
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    const DescriptorView& v = *parsed;

    EXPECT_EQ(v.bytes().data(), e.bytes().data());  // a view, not a copy
    EXPECT_EQ(v.bytes().size(), DescriptorView::encoded_size(4, 2, 2 + 5 + 4 + 4));
    const DescriptorHeaderLayout& h = v.header();
    EXPECT_EQ(h.magic, kDescriptorMagic);
    EXPECT_EQ(h.layout_version, kDescriptorVersion);
    EXPECT_EQ(h.num_rows, 15u);
    EXPECT_EQ(h.names_length, 15u);
    EXPECT_EQ(h.created_ns, 0);  // the daemon fills these in
    EXPECT_EQ(h.publisher_uid, 0u);
    EXPECT_EQ(h.publisher_pid, 0u);

    ASSERT_EQ(v.num_columns(), 4u);
    ASSERT_EQ(v.num_partitions(), 2u);
    EXPECT_EQ(v.schema(), kSchema);
    for (uint32_t c = 0; c < 4; ++c) {
      EXPECT_EQ(v.column_name(c), kSchema[c].name);
      EXPECT_EQ(v.column_type(c), kSchema[c].type);
    }

    uint64_t data_bytes = 0;
    for (uint64_t p = 0; p < 2; ++p) {
      SCOPED_TRACE("partition " + std::to_string(p));
      const PartitionLayout want = partition_layout(p);
      EXPECT_EQ(v.partition(p).num_rows, want.num_rows);
      EXPECT_EQ(v.partition(p).extent_offset, want.extent_offset);
      EXPECT_EQ(v.partition(p).extent_length, want.extent_length);
      const std::vector<ChunkLayout> chunks = table_chunks(want);
      for (uint32_t c = 0; c < 4; ++c) {
        const ChunkLayout& got = v.chunk(p, c);
        EXPECT_TRUE(same_buffer(got.validity, chunks[c].validity)) << "column " << c;
        EXPECT_TRUE(same_buffer(got.offsets, chunks[c].offsets)) << "column " << c;
        EXPECT_TRUE(same_buffer(got.data, chunks[c].data)) << "column " << c;
        EXPECT_EQ(got.null_count, chunks[c].null_count);
        data_bytes += got.validity.length + got.offsets.length + got.data.length;
      }
    }
    EXPECT_EQ(h.data_bytes, data_bytes);
    EXPECT_EQ(v.chunk(1, kName).null_count, 2u);
    EXPECT_EQ(v.chunk(1, kName).offsets.length, 6u * 8);
    EXPECT_EQ(v.chunk(0, kFlag).data.length, 10u);
  }
}

TEST(DescriptorTest, EncodedSizeCountsEveryPart) {
  EXPECT_EQ(DescriptorView::encoded_size(1, 0, 0), sizeof(DescriptorHeaderLayout) + 16);
  EXPECT_EQ(DescriptorView::encoded_size(3, 2, 10), 64u + 3 * 16 + 2 * 32 + 6 * 80 + 10);
  EXPECT_EQ(table_bytes().size(), DescriptorView::encoded_size(4, 2, 15));
}

TEST(DescriptorTest, AcceptsADatasetWithoutPartitions) {
  DescriptorBuilder builder({{"x", Type::kInt32}});
  std::vector<std::byte> bytes = builder.finish();
  Encoded e(bytes, 1, 0);
  Result<DescriptorView> v = DescriptorView::parse(e.bytes(), true);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->num_partitions(), 0u);
  EXPECT_EQ(v->header().num_rows, 0u);
  EXPECT_EQ(v->column_type(0), Type::kInt32);
}

TEST(DescriptorTest, RoundTripsARawBytesDataset) {
  DescriptorBuilder builder(bytes_schema());
  const PartitionLayout part{5000, 0, 2 * kPageSize, 0};  // rows = payload bytes
  ChunkLayout chunk{};
  chunk.data = BufferLayout{kExtentHeaderBytes, 5000, 7};
  builder.add_partition(part, std::span<const ChunkLayout>(&chunk, 1));
  Encoded e(builder.finish(), 1, 1);
  Result<DescriptorView> v = DescriptorView::parse(e.bytes(), false);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_TRUE(is_bytes_schema(v->schema()));
  EXPECT_EQ(v->chunk(0, 0).data.length, 5000u);
  EXPECT_EQ(v->header().data_bytes, 5000u);

  // A bytes chunk has no nulls and exactly num_rows bytes.
  Encoded nulls = e;
  nulls.edit_chunk(0, 0, [](ChunkLayout& c) {
    c.null_count = 1;
    c.validity = BufferLayout{kExtentHeaderBytes + 5056, 625, 0};
  });
  expect_refused(nulls, kLengths);
  Encoded short_data = e;
  short_data.edit_chunk(0, 0, [](ChunkLayout& c) { c.data.length = 4999; });
  expect_refused(short_data, kLengths);
}

TEST(DescriptorTest, RefusesABadMagicNumber) {
  Encoded e = table();
  e.edit_header([](DescriptorHeaderLayout& h) { h.magic = kSegmentMagic; });
  expect_refused(e, "wrong magic number");
}

TEST(DescriptorTest, RefusesAnotherLayoutVersion) {
  for (uint32_t version : {kLayoutVersion + 1, 0u}) {
    Encoded e = table();
    e.edit_header([&](DescriptorHeaderLayout& h) { h.layout_version = version; });
    expect_refused(e, "layout version " + std::to_string(version));
  }
}

TEST(DescriptorTest, RefusesZeroColumns) {
  {
    DescriptorBuilder builder(Schema{});
    Encoded e(builder.finish(), 0, 0);
    expect_refused(e, "columns, not 0");
  }
  Encoded e = table();
  e.edit_header([](DescriptorHeaderLayout& h) { h.num_columns = 0; });
  expect_refused(e, "columns, not 0");
}

TEST(DescriptorTest, RefusesTooManyColumnsOrPartitions) {
  Encoded columns = table();
  columns.edit_header([](DescriptorHeaderLayout& h) { h.num_columns = kMaxColumns + 1; });
  expect_refused(columns, "columns, not " + std::to_string(kMaxColumns + 1));
  Encoded partitions = table();
  partitions.edit_header([](DescriptorHeaderLayout& h) { h.num_partitions = kMaxPartitions + 1; });
  expect_refused(partitions, "partitions");
}

TEST(DescriptorTest, RefusesCountsThatDoNotMatchTheSize) {
  Encoded more_columns = table();
  more_columns.edit_header([](DescriptorHeaderLayout& h) { h.num_columns = 5; });
  expect_refused(more_columns, kSize);
  Encoded fewer_partitions = table();
  fewer_partitions.edit_header([](DescriptorHeaderLayout& h) { h.num_partitions = 1; });
  expect_refused(fewer_partitions, kSize);
  Encoded names = table();
  names.edit_header([](DescriptorHeaderLayout& h) { h.names_length += 1; });
  expect_refused(names, kSize);
  Encoded huge_names = table();
  huge_names.edit_header([](DescriptorHeaderLayout& h) { h.names_length = kMax - 100; });
  expect_refused(huge_names, kSize);
}

TEST(DescriptorTest, RefusesDuplicateColumnNames) {
  DescriptorBuilder builder({{"a", Type::kInt64}, {"b", Type::kInt8}, {"a", Type::kFloat64}});
  Encoded e(builder.finish(), 3, 0);
  expect_refused(e, "column name 'a' appears twice");
}

TEST(DescriptorTest, RefusesABadTypeByte) {
  for (uint8_t type : {uint8_t{0}, uint8_t{15}, uint8_t{255}}) {
    SCOPED_TRACE(static_cast<int>(type));
    Encoded e = table();
    e.edit_column(kScore, [&](ColumnLayout& c) { c.type = type; });
    expect_refused(e, "column 1 has no valid type");
  }
}

TEST(DescriptorTest, RefusesABadColumnName) {
  Encoded empty = table();
  empty.edit_column(kFlag, [](ColumnLayout& c) { c.name_length = 0; });
  expect_refused(empty, "column 2 has a bad name");
  Encoded past_end = table();
  past_end.edit_column(kName, [](ColumnLayout& c) { c.name_offset += 1; });
  expect_refused(past_end, "column 3 has a bad name");
  Encoded wrapping = table();
  wrapping.edit_column(kId, [](ColumnLayout& c) { c.name_offset = kMax; });
  expect_refused(wrapping, "column 0 has a bad name");
}

TEST(DescriptorTest, RefusesTruncatedBytesAtEveryLength) {
  const Encoded e = table();
  ASSERT_TRUE(DescriptorView::parse(e.bytes(), true).ok());
  for (size_t n = 0; n < e.bytes().size(); ++n) {
    SCOPED_TRACE("first " + std::to_string(n) + " bytes");
    expect_refused(e.prefix(n), n < sizeof(DescriptorHeaderLayout) ? "too short" : kSize);
  }
}

TEST(DescriptorTest, RefusesTrailingBytes) {
  std::vector<std::byte> bytes = table_bytes();
  bytes.push_back(std::byte{0});
  Encoded e(bytes, 4, 2);
  expect_refused(e, kSize);
}

TEST(DescriptorTest, RefusesMisalignedBytes) {
  const std::vector<std::byte> bytes = table_bytes();
  std::vector<uint64_t> storage(bytes.size() / 8 + 2);
  auto* shifted = reinterpret_cast<std::byte*>(storage.data()) + 4;
  std::memcpy(shifted, bytes.data(), bytes.size());
  expect_refused(std::span<const std::byte>(shifted, bytes.size()), "misaligned");
}

TEST(DescriptorTest, RefusesABadExtent) {
  Encoded unaligned = table();
  unaligned.edit_partition(1, [](PartitionLayout& p) { p.extent_offset += 64; });
  expect_refused(unaligned, "partition 1 has a bad extent");
  Encoded odd_length = table();
  odd_length.edit_partition(0, [](PartitionLayout& p) { p.extent_length += 1; });
  expect_refused(odd_length, "partition 0 has a bad extent");
  Encoded empty = table();
  empty.edit_partition(0, [](PartitionLayout& p) { p.extent_length = 0; });
  expect_refused(empty, "partition 0 has a bad extent");
  Encoded wrapping = table();
  wrapping.edit_partition(1, [](PartitionLayout& p) { p.extent_offset = kMax - kPageSize + 1; });
  expect_refused(wrapping, kBadExtent);
}

TEST(DescriptorTest, RefusesABufferOutsideItsExtent) {
  struct Case {
    const char* what;
    uint64_t p;
    uint32_t c;
    void (*edit)(ChunkLayout&);
  };
  const Case cases[] = {
      // In the extent's 64-byte header, which belongs to the daemon.
      {"in the extent header", 0, kId, [](ChunkLayout& c) { c.data.offset = 16 * kPageSize; }},
      {"before the extent", 1, kScore, [](ChunkLayout& c) { c.data.offset = 32 * kPageSize - 64; }},
      // Partition 0's extent is pages 16-17; page 18 is someone else's.
      {"past the extent end", 0, kFlag, [](ChunkLayout& c) { c.data.offset = 18 * kPageSize; }},
      // 80 bytes of int64 starting 64 bytes before the end.
      {"running over the extent end", 0, kId,
       [](ChunkLayout& c) { c.data.offset = 18 * kPageSize - 64; }},
      {"in the other partition's extent", 1, kId,
       [](ChunkLayout& c) { c.data.offset = 16 * kPageSize + 64; }},
      {"validity past the end", 0, kName,
       [](ChunkLayout& c) { c.validity.offset = 18 * kPageSize; }},
      {"offsets past the end", 0, kName,
       [](ChunkLayout& c) { c.offsets.offset = 18 * kPageSize - 64; }},
      // offset + length wraps around 2^64.
      {"wrapping", 0, kId, [](ChunkLayout& c) { c.data.offset = kMax - 63; }},
      {"huge length", 0, kName, [](ChunkLayout& c) { c.data.length = kMax - 64; }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    Encoded e = table();
    e.edit_chunk(k.p, k.c, k.edit);
    expect_refused(e, kOutside);
  }
}

TEST(DescriptorTest, RefusesAMisalignedBuffer) {
  for (uint64_t shift : {1u, 8u, 32u, 63u}) {
    SCOPED_TRACE(shift);
    Encoded e = table();
    e.edit_chunk(1, kScore, [&](ChunkLayout& c) { c.data.offset += shift; });
    expect_refused(e, kOutside);
  }
  Encoded validity = table();
  validity.edit_chunk(0, kName, [](ChunkLayout& c) { c.validity.offset += 8; });
  expect_refused(validity, kOutside);
}

TEST(DescriptorTest, RefusesMoreRowsPerPartitionThanTheLimit) {
  // Named by its limit (<shelf/limits.h>), before any buffer length is
  // computed from the row count.
  Encoded e = table();
  e.edit_partition(1, [](PartitionLayout& p) { p.num_rows = kMaxRowsPerPartition + 1; });
  expect_refused(e, "partition 1 has " + std::to_string(kMaxRowsPerPartition + 1) +
                        " rows; the limit is " + std::to_string(kMaxRowsPerPartition));
}

TEST(DescriptorTest, RefusesDataLengthsThatAreNotRowsTimesWidth) {
  struct Case {
    uint32_t column;
    int64_t delta;
  };
  for (const Case& k : {Case{kId, -8}, Case{kId, 8}, Case{kId, -1}, Case{kScore, 1}, Case{kFlag, 1},
                        Case{kFlag, -1}}) {
    SCOPED_TRACE("column " + std::to_string(k.column) + " delta " + std::to_string(k.delta));
    Encoded e = table();
    e.edit_chunk(0, k.column, [&](ChunkLayout& c) {
      c.data.length = static_cast<uint64_t>(static_cast<int64_t>(c.data.length) + k.delta);
    });
    expect_refused(e, kLengths);
  }
  // A fixed-width column has no offsets buffer.
  Encoded offsets = table();
  offsets.edit_chunk(0, kId, [](ChunkLayout& c) {
    c.offsets = BufferLayout{18 * kPageSize - 64, 8, 0};
  });
  expect_refused(offsets, kLengths);
}

TEST(DescriptorTest, RefusesStringOffsetsOfTheWrongLength) {
  for (int64_t delta : {-8, 8, -1}) {
    SCOPED_TRACE(delta);
    Encoded e = table();
    e.edit_chunk(1, kName, [&](ChunkLayout& c) {
      c.offsets.length = static_cast<uint64_t>(static_cast<int64_t>(c.offsets.length) + delta);
    });
    expect_refused(e, kLengths);
  }
  Encoded none = table();
  none.edit_chunk(0, kName, [](ChunkLayout& c) { c.offsets = BufferLayout{}; });
  expect_refused(none, kLengths);
}

TEST(DescriptorTest, RefusesNullsWithoutAValidityBitmap) {
  Encoded e = table();
  e.edit_chunk(0, kName, [](ChunkLayout& c) { c.validity = BufferLayout{}; });
  expect_refused(e, kValidity);
}

TEST(DescriptorTest, RefusesAValidityBitmapThatDoesNotMatchItsNullCount) {
  Encoded no_nulls = table();  // a bitmap but null_count 0
  no_nulls.edit_chunk(0, kName, [](ChunkLayout& c) { c.null_count = 0; });
  expect_refused(no_nulls, kValidity);
  Encoded too_many = table();  // more nulls than rows
  too_many.edit_chunk(1, kName, [](ChunkLayout& c) { c.null_count = 6; });
  expect_refused(too_many, kValidity);
  Encoded short_bitmap = table();  // 10 rows need 2 bytes
  short_bitmap.edit_chunk(0, kName, [](ChunkLayout& c) { c.validity.length = 1; });
  expect_refused(short_bitmap, kValidity);
  Encoded numeric = table();  // the same rules hold for numeric columns
  numeric.edit_chunk(0, kId, [](ChunkLayout& c) { c.null_count = 1; });
  expect_refused(numeric, kValidity);
}

TEST(DescriptorTest, AcceptsAllNullsAndNullsInNumericColumns) {
  Encoded e = table();
  // Partition 1 (5 rows) of "score": every value null; the bitmap goes in free
  // space after the other buffers of the 1-page extent.
  e.edit_chunk(1, kScore, [](ChunkLayout& c) {
    c.null_count = 5;
    c.validity = BufferLayout{33 * kPageSize - 64, 1, 0};
  });
  e.edit_header([](DescriptorHeaderLayout& h) { h.data_bytes += 1; });
  Result<DescriptorView> v = DescriptorView::parse(e.bytes(), true);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->chunk(1, kScore).null_count, 5u);
}

TEST(DescriptorTest, RefusesTotalsThatDoNotAddUp) {
  Encoded rows = table();
  rows.edit_header([](DescriptorHeaderLayout& h) { h.num_rows += 1; });
  expect_refused(rows, kTotals);
  Encoded bytes = table();
  bytes.edit_header([](DescriptorHeaderLayout& h) { h.data_bytes -= 1; });
  expect_refused(bytes, kTotals);
  // A partition's rows changed together with all its buffers, but not the header.
  Encoded partition_rows = table();
  partition_rows.edit_partition(1, [](PartitionLayout& p) { p.num_rows = 0; });
  for (uint32_t c = 0; c < 4; ++c) {
    partition_rows.edit_chunk(1, c, [&](ChunkLayout& ch) {
      ch = ChunkLayout{};
      if (c == kName) ch.offsets = BufferLayout{32 * kPageSize + 64, 8, 0};
    });
  }
  expect_refused(partition_rows, kTotals);
}

TEST(DescriptorTest, RefusesABytesColumnThatIsNotAlone) {
  for (const Schema& schema : {Schema{{"bytes", Type::kBytes}, {"x", Type::kInt64}},
                               Schema{{"x", Type::kInt64}, {"bytes", Type::kBytes}}}) {
    DescriptorBuilder builder(schema);
    Encoded e(builder.finish(), 2, 0);
    expect_refused(e, "a bytes column must be the only column");
  }
}

}  // namespace
}  // namespace shelf::shm
