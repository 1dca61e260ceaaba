// parse_timestamp_text (base/timestamp.h): the one timestamp text parser of
// the CSV reader and the filter language.
#include "base/timestamp.h"

#include <cstdint>
#include <optional>

#include <gtest/gtest.h>

namespace shelf {
namespace {

constexpr int64_t kSecond = 1000000000;
constexpr int64_t kDay = 86400 * kSecond;

TEST(Timestamp, ReadsEveryAcceptedForm) {
  EXPECT_EQ(parse_timestamp_text("1970-01-01"), 0);
  EXPECT_EQ(parse_timestamp_text("1970-01-02"), kDay);
  EXPECT_EQ(parse_timestamp_text("1969-12-31"), -kDay);
  EXPECT_EQ(parse_timestamp_text("1970-01-01T00:01"), 60 * kSecond);
  EXPECT_EQ(parse_timestamp_text("1970-01-01 00:00:02"), 2 * kSecond);
  EXPECT_EQ(parse_timestamp_text("1970-01-01T00:00:00.5Z"), kSecond / 2);
  EXPECT_EQ(parse_timestamp_text("1970-01-01T00:00:00.000000001+00:00"), 1);
  EXPECT_EQ(parse_timestamp_text("2000-03-01T00:00:01.25Z"), 951868801250000000);
  EXPECT_EQ(parse_timestamp_text("2024-02-29"), 19782 * kDay);
  EXPECT_EQ(parse_timestamp_text("2000-02-29"), 11016 * kDay);   // divisible by 400: leap
  EXPECT_EQ(parse_timestamp_text("1970-01-01T23:59:60"), kDay);  // a leap second
}

TEST(Timestamp, RefusesWhatIsNotAValidDate) {
  for (const char* bad : {"",
                          "1970",
                          "1970-1-01",
                          "1970-01-1",
                          "1970/01/01",
                          "x970-01-01",
                          "2023-02-29",
                          "1900-02-29",
                          "2024-04-31",
                          "2024-02-30",
                          "2024-13-01",
                          "2024-00-10",
                          "2024-01-00",
                          "2024-01-01T24:00",
                          "2024-01-01T10:60",
                          "2024-01-01T10:00:61",
                          "2024-01-01T10",
                          "2024-01-01T10:0",
                          "2024-01-01T",
                          "2024-01-01T10:00:00.",
                          "2024-01-01T10:00:00.1234567890",
                          "2024-01-01T10:00+02:00",
                          "2024-01-01Z ",
                          " 2024-01-01",
                          "2024-01-01x"}) {
    EXPECT_EQ(parse_timestamp_text(bad), std::nullopt) << bad;
  }
}

TEST(Timestamp, RefusesWhatInt64NanosecondsCannotHold) {
  EXPECT_NE(parse_timestamp_text("2262-04-11"), std::nullopt);
  EXPECT_NE(parse_timestamp_text("1677-09-22"), std::nullopt);
  EXPECT_EQ(parse_timestamp_text("2262-04-12"), std::nullopt);
  EXPECT_EQ(parse_timestamp_text("1677-09-20"), std::nullopt);
  EXPECT_EQ(parse_timestamp_text("9999-12-31T23:59:59.999999999Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp_text("0000-01-01"), std::nullopt);
}

}  // namespace
}  // namespace shelf
