// SegmentView::at<T>: the one place where an offset becomes a pointer. Every
// offset it is given may come from a corrupt or hostile segment.
#include "shm/segment_view.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <gtest/gtest.h>

#include "shm/layout.h"

namespace shelf::shm {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kBytes = 256;

class SegmentViewTest : public ::testing::Test {
 protected:
  alignas(64) std::byte memory_[kBytes] = {};
  SegmentView view_{memory_, kBytes};
  MutableSegmentView mutable_view_{memory_, kBytes};
};

TEST_F(SegmentViewTest, PointsAtTheOffset) {
  EXPECT_EQ(view_.base(), memory_);
  EXPECT_EQ(view_.size(), kBytes);
  EXPECT_EQ(reinterpret_cast<const std::byte*>(view_.at<uint64_t>(0)), memory_);
  EXPECT_EQ(reinterpret_cast<const std::byte*>(view_.at<uint64_t>(64)), memory_ + 64);
  EXPECT_EQ(reinterpret_cast<const std::byte*>(view_.at<uint8_t>(255)), memory_ + 255);
  EXPECT_EQ(reinterpret_cast<const std::byte*>(view_.at<ExtentHeaderLayout>(128)), memory_ + 128);
}

TEST_F(SegmentViewTest, ConstnessFollowsTheView) {
  static_assert(std::is_same_v<decltype(view_.at<uint64_t>(0)), const uint64_t*>);
  static_assert(std::is_same_v<decltype(mutable_view_.at<uint64_t>(0)), uint64_t*>);
  uint64_t* p = mutable_view_.at<uint64_t>(8);
  ASSERT_NE(p, nullptr);
  *p = 0x1122334455667788ULL;
  const uint64_t* q = view_.at<uint64_t>(8);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(*q, 0x1122334455667788ULL);
}

TEST_F(SegmentViewTest, LastObjectThatFitsIsAllowed) {
  EXPECT_NE(view_.at<uint64_t>(kBytes - 8), nullptr);
  EXPECT_NE(view_.at<uint64_t>(0, kBytes / 8), nullptr);  // the whole view
  EXPECT_NE(view_.at<uint64_t>(kBytes - 16, 2), nullptr);
  EXPECT_NE(view_.at<ExtentHeaderLayout>(kBytes - 64), nullptr);
  EXPECT_NE(view_.at<uint8_t>(kBytes - 1), nullptr);
}

TEST_F(SegmentViewTest, RefusesObjectsThatRunPastTheEnd) {
  EXPECT_EQ(view_.at<uint64_t>(kBytes), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(kBytes - 8, 2), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(0, kBytes / 8 + 1), nullptr);
  EXPECT_EQ(view_.at<uint8_t>(kBytes), nullptr);
  EXPECT_EQ(view_.at<ExtentHeaderLayout>(kBytes - 64 + 64), nullptr);
  EXPECT_EQ(view_.at<SegmentHeaderLayout>(kBytes - 64), nullptr);  // 128 bytes in 64
  EXPECT_EQ(view_.at<uint64_t>(kBytes + 8), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(4096), nullptr);
}

TEST_F(SegmentViewTest, RefusesMisalignedOffsets) {
  for (uint64_t offset = 1; offset < 8; ++offset) {
    EXPECT_EQ(view_.at<uint64_t>(offset), nullptr) << offset;
  }
  EXPECT_EQ(view_.at<uint32_t>(2), nullptr);
  EXPECT_EQ(view_.at<uint16_t>(1), nullptr);
  EXPECT_NE(view_.at<uint32_t>(4), nullptr);
  EXPECT_NE(view_.at<uint16_t>(2), nullptr);
  EXPECT_EQ(view_.at<ExtentHeaderLayout>(8), nullptr);  // alignas(64)
  EXPECT_EQ(view_.at<ExtentHeaderLayout>(32), nullptr);
  EXPECT_NE(view_.at<ExtentHeaderLayout>(64), nullptr);
  EXPECT_EQ(view_.at<IndexEntryLayout>(kBytes - 256 + 8), nullptr);
}

TEST_F(SegmentViewTest, RefusesOffsetPlusCountThatOverflows) {
  // Offsets near 2^64, where offset + sizeof(T) wraps to a small number.
  EXPECT_EQ(view_.at<uint64_t>(kMax - 7), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(kMax & ~uint64_t{7}), nullptr);
  EXPECT_EQ(view_.at<uint8_t>(kMax), nullptr);
  EXPECT_EQ(view_.at<ExtentHeaderLayout>(kMax - 63), nullptr);
  // Counts whose byte size wraps: 2^61 + 1 uint64s are 8 bytes mod 2^64.
  EXPECT_EQ(view_.at<uint64_t>(0, (uint64_t{1} << 61) + 1), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(8, kMax), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(8, kMax / 8), nullptr);
  EXPECT_EQ(view_.at<uint8_t>(1, kMax), nullptr);
  EXPECT_EQ(view_.at<ExtentHeaderLayout>(64, (kMax / 64) + 2), nullptr);
  // ... and both at once.
  EXPECT_EQ(view_.at<uint64_t>(kMax - 7, kMax), nullptr);
}

TEST_F(SegmentViewTest, ZeroCountMayPointAtTheEnd) {
  // No object lies outside the view, so this is not refused; nothing may be
  // read through it.
  EXPECT_NE(view_.at<uint64_t>(kBytes, 0), nullptr);
  EXPECT_EQ(view_.at<uint64_t>(kBytes + 8, 0), nullptr);
}

TEST_F(SegmentViewTest, EmptyViewRefusesEverything) {
  SegmentView empty;
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.at<uint8_t>(0), nullptr);
  EXPECT_EQ(empty.at<uint64_t>(0), nullptr);
  EXPECT_FALSE(empty.contains(0, 1));
  EXPECT_TRUE(empty.contains(0, 0));
}

TEST_F(SegmentViewTest, Contains) {
  EXPECT_TRUE(view_.contains(0, kBytes));
  EXPECT_TRUE(view_.contains(kBytes - 1, 1));
  EXPECT_TRUE(view_.contains(kBytes, 0));
  EXPECT_FALSE(view_.contains(0, kBytes + 1));
  EXPECT_FALSE(view_.contains(kBytes, 1));
  EXPECT_FALSE(view_.contains(kBytes + 1, 0));
  EXPECT_FALSE(view_.contains(8, kMax));      // 8 + length wraps
  EXPECT_FALSE(view_.contains(kMax, 2));      // offset + 2 wraps to 1
  EXPECT_FALSE(view_.contains(kMax - 7, 8));  // wraps to 0
}

}  // namespace
}  // namespace shelf::shm
