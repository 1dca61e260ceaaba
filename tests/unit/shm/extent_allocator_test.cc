// ExtentAllocator on ordinary heap memory (as iceoryx tests MemPool on a stack
// array): offsets index a private buffer, and every allocation is filled with
// a pattern that must survive until it is freed (leveldb arena_test.cc).
#include "shm/extent_allocator.h"

#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "shm/layout.h"

namespace shelf::shm {
namespace {

constexpr uint64_t kPage = kPageSize;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

class ExtentAllocatorTest : public ::testing::Test {
 protected:
  // The data area does not start at 0 in a real segment (header and index
  // come first), so neither does it here.
  static constexpr uint64_t kBase = 16 * kPage;
  static constexpr uint64_t kPages = 64;
  static constexpr uint64_t kSize = kPages * kPage;

  ExtentAllocator alloc_{kBase, kSize};

  // Offset of page `i` of the area.
  static uint64_t page(uint64_t i) { return kBase + i * kPage; }

  // Allocates and expects success.
  uint64_t must_allocate(uint64_t length) {
    std::optional<uint64_t> offset = alloc_.allocate(length);
    EXPECT_TRUE(offset.has_value()) << "allocate(" << length << ")";
    return offset.value_or(kMax);
  }
};

TEST_F(ExtentAllocatorTest, StartsWithOneFreeRange) {
  EXPECT_EQ(alloc_.capacity(), kSize);
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(alloc_.largest_free(), kSize);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
}

TEST_F(ExtentAllocatorTest, EmptyAreaHasNothingToGive) {
  ExtentAllocator empty(kBase, 0);
  EXPECT_EQ(empty.free_ranges(), 0u);
  EXPECT_EQ(empty.largest_free(), 0u);
  EXPECT_EQ(empty.allocate(1), std::nullopt);
}

TEST_F(ExtentAllocatorTest, RoundsLengthsUpToPages) {
  EXPECT_EQ(must_allocate(1), page(0));
  EXPECT_EQ(alloc_.free_bytes(), kSize - kPage);
  EXPECT_EQ(must_allocate(kPage), page(1));
  EXPECT_EQ(alloc_.free_bytes(), kSize - 2 * kPage);
  EXPECT_EQ(must_allocate(kPage + 1), page(2));  // takes pages 2 and 3
  EXPECT_EQ(alloc_.free_bytes(), kSize - 4 * kPage);
  EXPECT_EQ(must_allocate(3 * kPage - 1), page(4));  // pages 4..6
  EXPECT_EQ(must_allocate(1), page(7));
  EXPECT_EQ(alloc_.free_bytes(), kSize - 8 * kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize - 8 * kPage);
}

TEST_F(ExtentAllocatorTest, ZeroLengthIsRefused) {
  EXPECT_EQ(alloc_.allocate(0), std::nullopt);
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
}

TEST_F(ExtentAllocatorTest, FreeRoundsLikeAllocate) {
  const uint64_t a = must_allocate(kPage + 10);
  EXPECT_EQ(alloc_.free_bytes(), kSize - 2 * kPage);
  alloc_.free(a, kPage + 10);  // the same length the caller asked for
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize);
}

TEST_F(ExtentAllocatorTest, FirstFitTakesTheLowestHoleThatIsLargeEnough) {
  // Pages: [0..2] a, [3] b, [4] c, [5] d, rest e.
  const uint64_t a = must_allocate(3 * kPage);
  must_allocate(kPage);  // b
  const uint64_t c = must_allocate(kPage);
  must_allocate(kPage);              // d
  must_allocate(kSize - 6 * kPage);  // the rest
  EXPECT_EQ(alloc_.free_bytes(), 0u);
  alloc_.free(a, 3 * kPage);  // a 3-page hole at 0
  alloc_.free(c, kPage);      // a 1-page hole at 4
  EXPECT_EQ(alloc_.free_ranges(), 2u);

  // Best fit would take the 1-page hole at page 4; first fit takes page 0.
  EXPECT_EQ(must_allocate(kPage), page(0));
  // Now holes are pages [1..2] and [4]. Two pages only fit at page 1.
  EXPECT_EQ(must_allocate(2 * kPage), page(1));
  EXPECT_EQ(must_allocate(kPage), page(4));
  EXPECT_EQ(alloc_.free_ranges(), 0u);
  EXPECT_EQ(alloc_.allocate(1), std::nullopt);
}

TEST_F(ExtentAllocatorTest, SkipsHolesThatAreTooSmall) {
  const uint64_t a = must_allocate(kPage);
  must_allocate(kPage);
  const uint64_t c = must_allocate(2 * kPage);
  must_allocate(kPage);
  must_allocate(kSize - 5 * kPage);
  alloc_.free(a, kPage);
  alloc_.free(c, 2 * kPage);
  EXPECT_EQ(must_allocate(2 * kPage), page(2));
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kPage);
}

TEST_F(ExtentAllocatorTest, ExhaustionReturnsNullopt) {
  EXPECT_EQ(alloc_.allocate(kSize + 1), std::nullopt);
  EXPECT_EQ(alloc_.allocate(kMax), std::nullopt);  // must not overflow while rounding
  EXPECT_EQ(alloc_.allocate(kMax - kPage + 2), std::nullopt);
  EXPECT_EQ(alloc_.free_bytes(), kSize);

  EXPECT_EQ(must_allocate(kSize), page(0));
  EXPECT_EQ(alloc_.free_bytes(), 0u);
  EXPECT_EQ(alloc_.largest_free(), 0u);
  EXPECT_EQ(alloc_.free_ranges(), 0u);
  EXPECT_EQ(alloc_.allocate(1), std::nullopt);
  EXPECT_EQ(alloc_.free_bytes(), 0u);
}

TEST_F(ExtentAllocatorTest, FragmentedFreeBytesDoNotMakeAContiguousRange) {
  // Allocate every page, then free every other one: half the area is free
  // but no two free pages touch.
  std::vector<uint64_t> pages;
  for (uint64_t i = 0; i < kPages; ++i) pages.push_back(must_allocate(kPage));
  for (uint64_t i = 0; i < kPages; i += 2) alloc_.free(pages[i], kPage);
  EXPECT_EQ(alloc_.free_bytes(), kSize / 2);
  EXPECT_EQ(alloc_.free_ranges(), kPages / 2);
  EXPECT_EQ(alloc_.largest_free(), kPage);
  EXPECT_EQ(alloc_.allocate(2 * kPage), std::nullopt);
  EXPECT_EQ(alloc_.free_bytes(), kSize / 2);
  EXPECT_EQ(must_allocate(kPage), page(0));
}

TEST_F(ExtentAllocatorTest, FreeCoalescesWithBothNeighbours) {
  const uint64_t a = must_allocate(kPage);
  const uint64_t b = must_allocate(2 * kPage);
  const uint64_t c = must_allocate(kPage);
  const uint64_t d = must_allocate(kSize - 4 * kPage);
  EXPECT_EQ(alloc_.free_ranges(), 0u);

  alloc_.free(a, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kPage);
  alloc_.free(c, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 2u);  // a and c are not adjacent
  EXPECT_EQ(alloc_.largest_free(), kPage);

  alloc_.free(b, 2 * kPage);  // joins a (before) and c (after)
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), 4 * kPage);
  EXPECT_EQ(alloc_.free_bytes(), 4 * kPage);

  alloc_.free(d, kSize - 4 * kPage);  // joins the range before it
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize);
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(must_allocate(kSize), page(0));
}

TEST_F(ExtentAllocatorTest, FreeCoalescesWithTheNextRangeOnly) {
  const uint64_t a = must_allocate(kPage);
  const uint64_t b = must_allocate(kPage);
  // c: the rest stays free, directly after b.
  alloc_.free(b, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize - kPage);
  alloc_.free(a, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize);
}

TEST_F(ExtentAllocatorTest, FreeCoalescesWithThePreviousRangeOnly) {
  const uint64_t a = must_allocate(kPage);
  const uint64_t b = must_allocate(kPage);
  must_allocate(kSize - 2 * kPage);
  alloc_.free(a, kPage);
  alloc_.free(b, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), 2 * kPage);
  EXPECT_EQ(must_allocate(2 * kPage), page(0));
}

TEST_F(ExtentAllocatorTest, FreeAtTheEndsOfTheArea) {
  const uint64_t first = must_allocate(kPage);
  must_allocate(kSize - 2 * kPage);
  const uint64_t last = must_allocate(kPage);
  EXPECT_EQ(first, page(0));
  EXPECT_EQ(last, page(kPages - 1));
  alloc_.free(last, kPage);
  alloc_.free(first, kPage);
  EXPECT_EQ(alloc_.free_ranges(), 2u);
  EXPECT_EQ(alloc_.free_bytes(), 2 * kPage);
}

TEST_F(ExtentAllocatorTest, MarkAllocatedSplitsAFreeRange) {
  ASSERT_TRUE(alloc_.mark_allocated(page(2), kPage));
  EXPECT_EQ(alloc_.free_bytes(), kSize - kPage);
  EXPECT_EQ(alloc_.free_ranges(), 2u);
  EXPECT_EQ(alloc_.largest_free(), kSize - 3 * kPage);
  // The pages before it are handed out first, and never page 2.
  EXPECT_EQ(must_allocate(2 * kPage), page(0));
  EXPECT_EQ(must_allocate(kPage), page(3));
}

TEST_F(ExtentAllocatorTest, MarkAllocatedRoundsAndTakesWholeRanges) {
  ASSERT_TRUE(alloc_.mark_allocated(page(0), 1));  // one page
  EXPECT_EQ(alloc_.free_bytes(), kSize - kPage);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  ASSERT_TRUE(alloc_.mark_allocated(page(kPages - 2), 2 * kPage));  // the tail
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  ASSERT_TRUE(alloc_.mark_allocated(page(1), kSize - 3 * kPage));  // all that is left
  EXPECT_EQ(alloc_.free_ranges(), 0u);
  EXPECT_EQ(alloc_.free_bytes(), 0u);
  EXPECT_EQ(alloc_.allocate(1), std::nullopt);
}

TEST_F(ExtentAllocatorTest, MarkAllocatedRefusesRangesThatAreNotFree) {
  ASSERT_TRUE(alloc_.mark_allocated(page(4), 2 * kPage));
  const uint64_t before = alloc_.free_bytes();
  EXPECT_FALSE(alloc_.mark_allocated(page(4), 2 * kPage));           // the same again
  EXPECT_FALSE(alloc_.mark_allocated(page(5), kPage));               // inside it
  EXPECT_FALSE(alloc_.mark_allocated(page(3), 2 * kPage));           // overlaps its start
  EXPECT_FALSE(alloc_.mark_allocated(page(5), 2 * kPage));           // overlaps its end
  EXPECT_FALSE(alloc_.mark_allocated(page(2), 6 * kPage));           // spans it and two free ranges
  EXPECT_FALSE(alloc_.mark_allocated(page(0), 0));                   // empty
  EXPECT_FALSE(alloc_.mark_allocated(kBase - kPage, kPage));         // before the area
  EXPECT_FALSE(alloc_.mark_allocated(page(kPages), kPage));          // after it
  EXPECT_FALSE(alloc_.mark_allocated(page(kPages - 1), 2 * kPage));  // past its end
  EXPECT_EQ(alloc_.free_bytes(), before);
  EXPECT_EQ(alloc_.free_ranges(), 2u);
}

TEST_F(ExtentAllocatorTest, RebuildFromAnIndexThenFreeEverything) {
  // What the daemon does after a restart: mark every extent the index names,
  // then allocate around them and finally free them all.
  const std::map<uint64_t, uint64_t> extents = {
      {page(1), kPage}, {page(3), 3 * kPage}, {page(10), kPage + 1}, {page(kPages - 1), 10}};
  for (const auto& [offset, length] : extents) ASSERT_TRUE(alloc_.mark_allocated(offset, length));
  EXPECT_EQ(alloc_.free_bytes(), kSize - 7 * kPage);
  EXPECT_EQ(must_allocate(kPage), page(0));
  EXPECT_EQ(must_allocate(2 * kPage), page(6));
  alloc_.free(page(0), kPage);
  alloc_.free(page(6), 2 * kPage);
  for (const auto& [offset, length] : extents) alloc_.free(offset, length);
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
  EXPECT_EQ(alloc_.largest_free(), kSize);
}

// Regression: mark_allocated once accepted an offset that is not a page
// multiple and split the free list there, so allocate() afterwards returned
// misaligned offsets.
TEST_F(ExtentAllocatorTest, MarkAllocatedRefusesAMisalignedOffset) {
  EXPECT_FALSE(alloc_.mark_allocated(page(0) + 1, kPage));
  std::optional<uint64_t> next = alloc_.allocate(kPage);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next % kPage, 0u);
}

// Regression: mark_allocated once computed offset + length without checking
// for wrap-around, so a huge length from a corrupt index was accepted and
// free_bytes() underflowed.
TEST_F(ExtentAllocatorTest, MarkAllocatedRefusesALengthThatWrapsAround) {
  const uint64_t length = kMax - page(1) - kPage + 2;  // page(1) + round_up(length) == 2^64
  EXPECT_FALSE(alloc_.mark_allocated(page(1), length));
  EXPECT_EQ(alloc_.free_bytes(), kSize);
  EXPECT_EQ(alloc_.free_ranges(), 1u);
}

// Random allocations and frees against a model (std::map of live extents):
// no two live extents overlap, every extent stays inside the area and page
// aligned, free_bytes() always equals capacity minus what is live, a failed
// allocation really had no room, and the bytes of every allocation, filled
// with its own pattern, are intact when it is freed.
TEST_F(ExtentAllocatorTest, RandomizedAllocateFreeKeepsExtentsDisjointAndIntact) {
  constexpr uint64_t kAreaPages = 1024;
  constexpr uint64_t kAreaBytes = kAreaPages * kPage;
  ExtentAllocator alloc(kBase, kAreaBytes);
  std::vector<uint8_t> memory(kAreaBytes);  // memory[offset - kBase]

  struct Live {
    uint64_t rounded;    // what the extent takes
    uint64_t requested;  // what the caller may write
    uint8_t pattern;
  };
  std::map<uint64_t, Live> live;
  uint64_t live_bytes = 0;
  std::mt19937_64 rng(20261125);  // fixed: failures must reproduce
  uint64_t failed_allocations = 0;
  uint64_t frees = 0;

  auto fill = [&](uint64_t offset, const Live& l) {
    uint8_t* p = memory.data() + (offset - kBase);
    for (uint64_t i = 0; i < l.requested; ++i) p[i] = static_cast<uint8_t>(l.pattern + i % 7);
  };
  auto intact = [&](uint64_t offset, const Live& l) {
    const uint8_t* p = memory.data() + (offset - kBase);
    for (uint64_t i = 0; i < l.requested; ++i) {
      if (p[i] != static_cast<uint8_t>(l.pattern + i % 7)) return false;
    }
    return true;
  };
  auto free_one = [&](std::map<uint64_t, Live>::iterator it) {
    ASSERT_TRUE(intact(it->first, it->second)) << "extent at " << it->first << " was overwritten";
    alloc.free(it->first, it->second.requested);
    live_bytes -= it->second.rounded;
    live.erase(it);
    ++frees;
  };

  for (int step = 0; step < 20000; ++step) {
    const bool do_allocate = live.empty() || rng() % 100 < 55;
    if (do_allocate) {
      // Mostly small extents, sometimes large ones, so that the area fills up.
      const uint64_t max_bytes = rng() % 10 == 0 ? 64 * kPage : 4 * kPage;
      const uint64_t requested = 1 + rng() % max_bytes;
      const uint64_t rounded = align_up(requested, kPage);
      std::optional<uint64_t> offset = alloc.allocate(requested);
      if (!offset) {
        ++failed_allocations;
        EXPECT_LT(alloc.largest_free(), rounded) << "refused although a range was large enough";
        continue;
      }
      ASSERT_EQ(*offset % kPage, 0u);
      ASSERT_GE(*offset, kBase);
      ASSERT_LE(*offset + rounded, kBase + kAreaBytes);
      auto next = live.lower_bound(*offset);
      if (next != live.end()) {
        ASSERT_LE(*offset + rounded, next->first) << "overlaps the extent after it";
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second.rounded, *offset) << "overlaps the extent before it";
      }
      Live l{rounded, requested, static_cast<uint8_t>(rng())};
      fill(*offset, l);
      live.emplace(*offset, l);
      live_bytes += rounded;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      free_one(it);
    }
    ASSERT_EQ(alloc.free_bytes(), kAreaBytes - live_bytes) << "at step " << step;
    ASSERT_LE(alloc.largest_free(), alloc.free_bytes());
  }
  // The run must have exercised both the full and the fragmented cases.
  EXPECT_GT(failed_allocations, 0u);
  EXPECT_GT(frees, 1000u);

  while (!live.empty()) free_one(live.begin());
  EXPECT_EQ(alloc.free_bytes(), kAreaBytes);
  EXPECT_EQ(alloc.free_ranges(), 1u);  // everything coalesced back
  EXPECT_EQ(alloc.largest_free(), kAreaBytes);
}

using ExtentAllocatorDeathTest = ExtentAllocatorTest;

TEST_F(ExtentAllocatorDeathTest, DoubleFreeAborts) {
  const uint64_t a = must_allocate(kPage);
  must_allocate(kPage);
  alloc_.free(a, kPage);
  EXPECT_DEATH(alloc_.free(a, kPage), "check failed");
}

// Huge-page alignment: the area starts a page past a 2 MiB boundary, as a
// real segment's does (its index room ends a page past one).
TEST(ExtentAllocatorAlignmentTest, AlignedAllocationsSkipToABoundaryAndLeaveTheGapFree) {
  constexpr uint64_t kHuge = kHugePageSize;
  constexpr uint64_t kBase = 4 * kHuge + kPage;
  ExtentAllocator alloc(kBase, 16 * kHuge);
  const std::optional<uint64_t> small = alloc.allocate(kPage);
  ASSERT_EQ(small, kBase);
  const std::optional<uint64_t> big = alloc.allocate(2 * kHuge, kHuge);
  ASSERT_EQ(big, 5 * kHuge);  // the next boundary
  // The gap before it stays free, and small allocations fill it first.
  EXPECT_EQ(alloc.allocate(kPage), kBase + kPage);
  EXPECT_EQ(alloc.free_bytes(), 16 * kHuge - 2 * kHuge - 2 * kPage);
  // Freed, the gap and the aligned range merge again.
  alloc.free(*big, 2 * kHuge);
  EXPECT_EQ(alloc.allocate(2 * kHuge, kHuge), 5 * kHuge);
  // No aligned room: refused, and nothing changes.
  const uint64_t before = alloc.free_bytes();
  EXPECT_FALSE(alloc.allocate(14 * kHuge, kHuge).has_value());
  EXPECT_EQ(alloc.free_bytes(), before);
}

TEST(ExtentAllocatorAlignmentTest, AllocatedInWholeBlocksCountsOnlyBlocksNothingFreeSharesWith) {
  constexpr uint64_t kHuge = kHugePageSize;
  constexpr uint64_t kBase = 4 * kHuge + kPage;
  ExtentAllocator alloc(kBase, 16 * kHuge);
  EXPECT_EQ(alloc.allocated_in_whole_blocks(kHuge), 0u);
  // Packed small extents that fill a block make it whole.
  ASSERT_EQ(alloc.allocate(kHuge - kPage), kBase);  // the rest of block 4
  EXPECT_EQ(alloc.allocated_in_whole_blocks(kHuge), 0u);
  ASSERT_EQ(alloc.allocate(kHuge), 5 * kHuge);  // block 5, whole
  EXPECT_EQ(alloc.allocated_in_whole_blocks(kHuge), kHuge);
  ASSERT_EQ(alloc.allocate(kHuge / 2), 6 * kHuge);  // half of block 6
  EXPECT_EQ(alloc.allocated_in_whole_blocks(kHuge), kHuge);
  // The area's end bounds the last range.
  ASSERT_TRUE(alloc.mark_allocated(19 * kHuge, kHuge + kPage));
  EXPECT_EQ(alloc.allocated_in_whole_blocks(kHuge), 2 * kHuge);
}

TEST_F(ExtentAllocatorDeathTest, FreeOverlappingAFreeRangeAborts) {
  const uint64_t a = must_allocate(2 * kPage);
  must_allocate(kPage);
  alloc_.free(a, 2 * kPage);
  EXPECT_DEATH(alloc_.free(a + kPage, kPage), "check failed");  // inside the free range before
  must_allocate(kPage);  // page 0 allocated again, page 1 still free
  EXPECT_DEATH(alloc_.free(a, 2 * kPage), "check failed");  // runs into the free page 1
}

TEST_F(ExtentAllocatorDeathTest, FreeOutsideTheAreaAborts) {
  EXPECT_DEATH(alloc_.free(kBase - kPage, kPage), "check failed");
  EXPECT_DEATH(alloc_.free(page(kPages - 1), 2 * kPage), "check failed");
  EXPECT_DEATH(alloc_.free(page(0), 0), "check failed");
}

// Regression: free()'s range check once computed offset + length, which
// wrapped around for a huge length, so the bad free was not caught.
TEST_F(ExtentAllocatorDeathTest, FreeOfALengthThatWrapsAroundAborts) {
  must_allocate(kSize);
  EXPECT_DEATH(alloc_.free(page(1), kMax - page(1) + 1), "check failed");
}

TEST_F(ExtentAllocatorDeathTest, AreaThatIsNotPageAlignedAborts) {
  EXPECT_DEATH({ ExtentAllocator bad(kPage + 1, kPage); }, "check failed");
  EXPECT_DEATH({ ExtentAllocator bad(kPage, kPage - 1); }, "check failed");
}

}  // namespace
}  // namespace shelf::shm
