// parse_size and format_bytes.
#include "base/units.h"

#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace shelf {
namespace {

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kTiB = uint64_t{1} << 40;

// The parsed value, or a test failure naming the input.
uint64_t parsed(const std::string& text) {
  Result<uint64_t> r = parse_size(text);
  EXPECT_TRUE(r.ok()) << "'" << text << "': " << r.status().to_string();
  return r.ok() ? *r : std::numeric_limits<uint64_t>::max();
}

TEST(ParseSizeTest, BareNumbersAreBytes) {
  EXPECT_EQ(parsed("4096"), 4096u);
  EXPECT_EQ(parsed("0"), 0u);
  EXPECT_EQ(parsed("1"), 1u);
  EXPECT_EQ(parsed("100B"), 100u);
  EXPECT_EQ(parsed("100b"), 100u);
}

TEST(ParseSizeTest, UnitsAreBinaryWithOrWithoutTheI) {
  EXPECT_EQ(parsed("512MiB"), 512 * kMiB);
  EXPECT_EQ(parsed("512MB"), 512 * kMiB);
  EXPECT_EQ(parsed("512M"), 512 * kMiB);
  EXPECT_EQ(parsed("8GiB"), 8 * kGiB);
  EXPECT_EQ(parsed("8G"), 8 * kGiB);
  EXPECT_EQ(parsed("3KiB"), 3 * kKiB);
  EXPECT_EQ(parsed("2TiB"), 2 * kTiB);
  EXPECT_EQ(parsed("2t"), 2 * kTiB);
}

TEST(ParseSizeTest, CaseAndSpacesDoNotMatter) {
  EXPECT_EQ(parsed("10 kb"), 10 * kKiB);
  EXPECT_EQ(parsed("10KB"), 10 * kKiB);
  EXPECT_EQ(parsed("10 KiB"), 10 * kKiB);
  EXPECT_EQ(parsed("1 gib"), kGiB);
}

TEST(ParseSizeTest, Fractions) {
  EXPECT_EQ(parsed("1.5G"), 3 * kGiB / 2);
  EXPECT_EQ(parsed("0.5MiB"), kMiB / 2);
  EXPECT_EQ(parsed("2.25k"), 2304u);
  EXPECT_EQ(parsed("1PiB"), 1024 * kTiB);
  // A fraction of a byte is a mistake, not a size.
  EXPECT_FALSE(parse_size("1.5").ok());
  EXPECT_FALSE(parse_size("0.3KiB").ok());
}

TEST(ParseSizeTest, RefusesWhatIsNotASize) {
  for (const char* text : {"", "abc", "-1", "5XB", "1e3", "MiB", " 5", ".", "1.2.3", "0x10",
                           "5 MiB x", "inf", "nan", "+5", "5 i"}) {
    SCOPED_TRACE(std::string("'") + text + "'");
    Result<uint64_t> r = parse_size(text);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    // The message names the text so the user can find it.
    EXPECT_NE(r.status().message().find(std::string("'") + text + "'"), std::string::npos)
        << r.status().message();
  }
}

TEST(ParseSizeTest, RefusesSizesThatDoNotFitIn64Bits) {
  EXPECT_EQ(parsed("16383T"), 16383 * kTiB);
  EXPECT_FALSE(parse_size("16777216T").ok());  // 2^64
  EXPECT_FALSE(parse_size("99999999999999999999").ok());
  EXPECT_FALSE(parse_size("999999999999999999999999999999G").ok());
}

TEST(FormatBytesTest, BytesBelowOneKiBAreExact) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(100), "100 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
}

TEST(FormatBytesTest, LargerSizesHaveTwoDecimals) {
  EXPECT_EQ(format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(512 * kMiB), "512.00 MiB");
  EXPECT_EQ(format_bytes(3 * kGiB / 2), "1.50 GiB");
  EXPECT_EQ(format_bytes(8 * kGiB), "8.00 GiB");
  EXPECT_EQ(format_bytes(2 * kTiB), "2.00 TiB");
  EXPECT_EQ(format_bytes(kTiB * 1024), "1.00 PiB");
  // PiB is the largest unit: 2^64 - 1 bytes is 16384 PiB.
  EXPECT_EQ(format_bytes(std::numeric_limits<uint64_t>::max()), "16384.00 PiB");
}

TEST(FormatBytesTest, RoundTripsThroughParseSize) {
  for (uint64_t v : {uint64_t{1}, kKiB, 3 * kKiB / 2, 512 * kMiB, 8 * kGiB, 5 * kTiB}) {
    std::string text = format_bytes(v);
    EXPECT_EQ(parsed(text), v) << text;
  }
}

}  // namespace
}  // namespace shelf
