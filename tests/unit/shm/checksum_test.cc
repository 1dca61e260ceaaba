// first_checksum_mismatch: the one check of a dataset's buffers against the
// checksums in its descriptor (used by publish --verify-on-publish, restart
// recovery and Dataset::verify), run here on heap memory.
#include "shm/checksum.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/limits.h>

#include "shm/descriptor.h"
#include "shm/layout.h"

namespace shelf::shm {
namespace {

// A heap "segment" of 8 pages; partition 0 lives in pages 2-3, partition 1 in
// pages 5-6. Columns: "a" int64, "s" string with a validity bitmap.
class ChecksumTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kRows = 10;

  void SetUp() override {
    memory_.resize(8 * kPageSize / sizeof(uint64_t));
    for (size_t i = 0; i < memory_.size(); ++i) memory_[i] = i * 0x9E3779B97F4A7C15ull;
    DescriptorBuilder builder({{"a", Type::kInt64}, {"s", Type::kString}});
    for (uint64_t p = 0; p < 2; ++p) {
      const PartitionLayout part{kRows, (2 + 3 * p) * kPageSize, 2 * kPageSize, 0};
      uint64_t next = part.extent_offset + kExtentHeaderBytes;
      auto put = [&](uint64_t length) {
        BufferLayout b{next, length, xxh3(base() + next, length)};
        next = align_up(next + length, kBufferAlignment);
        return b;
      };
      std::vector<ChunkLayout> chunks(2);
      chunks[0].data = put(kRows * 8);
      chunks[1].validity = put((kRows + 7) / 8);
      chunks[1].null_count = 1;
      chunks[1].offsets = put((kRows + 1) * 8);
      chunks[1].data = put(37);
      builder.add_partition(part, chunks);
    }
    encoded_ = builder.finish();
    auto view = DescriptorView::parse(encoded_, /*from_client=*/true);
    ASSERT_TRUE(view.ok()) << view.status().to_string();
    view_.emplace(*view);
  }

  std::byte* base() { return reinterpret_cast<std::byte*>(memory_.data()); }
  void flip(const BufferLayout& b) { base()[b.offset + b.length - 1] ^= std::byte{1}; }
  const DescriptorView& view() const { return *view_; }

  std::vector<uint64_t> memory_;
  std::vector<std::byte> encoded_;
  std::optional<DescriptorView> view_;
};

TEST_F(ChecksumTest, IntactBuffersMatchAndEveryBufferIsHashed) {
  EXPECT_FALSE(first_checksum_mismatch(view(), base()).has_value());
  uint64_t hashed = 0;
  EXPECT_FALSE(first_checksum_mismatch(view(), base(), 1, &hashed).has_value());
  EXPECT_EQ(hashed, kRows * 8 + (kRows + 7) / 8 + (kRows + 1) * 8 + 37);
}

TEST_F(ChecksumTest, NamesThePartitionColumnAndBufferThatChanged) {
  flip(view().chunk(1, 1).offsets);
  auto bad = first_checksum_mismatch(view(), base());
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->partition, 1u);
  EXPECT_EQ(bad->column, 1u);
  EXPECT_EQ(bad->buffer, BufferKind::kOffsets);
  EXPECT_FALSE(first_checksum_mismatch(view(), base(), 0).has_value());
}

TEST_F(ChecksumTest, ReportsTheFirstMismatchInPartitionColumnBufferOrder) {
  flip(view().chunk(1, 0).data);
  flip(view().chunk(0, 1).data);
  flip(view().chunk(0, 1).validity);
  auto bad = first_checksum_mismatch(view(), base());
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->partition, 0u);
  EXPECT_EQ(bad->column, 1u);
  EXPECT_EQ(bad->buffer, BufferKind::kValidity);
  auto in_one = first_checksum_mismatch(view(), base(), 1);
  ASSERT_TRUE(in_one.has_value());
  EXPECT_EQ(in_one->column, 0u);
  EXPECT_EQ(in_one->buffer, BufferKind::kData);
}

TEST_F(ChecksumTest, EmptyBuffersAreSkipped) {
  // Column "a" has no validity bitmap: the stored checksum of an absent
  // buffer is never looked at, whatever it is. (The view points into
  // encoded_, so this edits the descriptor bytes.)
  ASSERT_EQ(view().chunk(0, 0).validity.length, 0u);
  const_cast<ChunkLayout&>(view().chunk(0, 0)).validity.xxh3 = 12345;
  uint64_t hashed = 0;
  EXPECT_FALSE(first_checksum_mismatch(view(), base(), 0, &hashed).has_value());
  EXPECT_EQ(hashed, kRows * 8 + (kRows + 7) / 8 + (kRows + 1) * 8 + 37);
}

}  // namespace
}  // namespace shelf::shm
