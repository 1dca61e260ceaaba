// Property tests over the command-line number parsers (parse_count,
// parse_seconds) and the one rule for names (find_control_character,
// escape_unprintable): random inputs, each checked against a plain model.
#include <cstdint>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "base/units.h"
#include "base/utf8.h"

namespace shelf {
namespace {

// The model: digits only, 1 to 20 of them, the value within [min, max].
bool model_accepts(const std::string& text, uint64_t min, uint64_t max, uint64_t* value) {
  if (text.empty() || text.size() > 20) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno == ERANGE) return false;
  *value = v;
  return v >= min && v <= max;
}

TEST(ArgumentsTest, ParseCountAcceptsExactlyWholeNumbersInRange) {
  std::mt19937_64 rng(16);
  const std::string alphabet = "0123456789-+ .e\tx";
  for (int i = 0; i < 200000; ++i) {
    std::string text(rng() % 24, ' ');
    for (char& c : text) c = alphabet[rng() % alphabet.size()];
    const uint64_t min = rng() % 3, max = (rng() % 2) ? UINT64_MAX : rng() % 100000;
    uint64_t want = 0;
    const bool accepted = model_accepts(text, min, max, &want);
    Result<uint64_t> got = parse_count(text, "-n", min, max);
    ASSERT_EQ(got.ok(), accepted) << "'" << text << "' in [" << min << ", " << max << "]";
    if (accepted) {
      ASSERT_EQ(*got, want) << text;
    } else {
      const std::string range = max != UINT64_MAX
                                    ? "from " + std::to_string(min) + " to " + std::to_string(max)
                                : min == 0 ? "(0 or more)"
                                           : "(at least " + std::to_string(min) + ")";
      ASSERT_EQ(got.status().message(),
                "-n must be a whole number " + range + ", not '" + text + "'");
    }
  }
  EXPECT_TRUE(parse_count("18446744073709551615", "-n", 0, UINT64_MAX).ok());
  EXPECT_FALSE(parse_count("18446744073709551616", "-n", 0, UINT64_MAX).ok());
  EXPECT_FALSE(parse_count("-1", "--max-connections", 1, 10).ok());
}

TEST(ArgumentsTest, ParseSecondsRefusesWhatIsNotAFiniteNumberInRange) {
  for (const char* bad : {"", "0", "-1", "1e-9", "nan", "inf", "1s", " 1", "1 ", "86401", "0x"}) {
    EXPECT_FALSE(parse_seconds(bad, "--watch", 0.01, 86400).ok()) << bad;
  }
  for (const char* good : {"0.01", "1", "2.5", "86400", "1e2"}) {
    EXPECT_TRUE(parse_seconds(good, "--watch", 0.01, 86400).ok()) << good;
  }
  EXPECT_EQ(parse_seconds("0", "--watch", 0.01, 86400).status().message(),
            "--watch must be a number of seconds from 0.01 to 86400, not '0'");
}

TEST(ArgumentsTest, EscapedTextHasNoControlCharacterAndValidUtf8) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    std::string text(rng() % 16, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    if (rng() % 4 == 0) text += "\xc2\x85";  // NEXT LINE (C1)
    const std::string shown = escape_unprintable(text);
    ASSERT_EQ(find_control_character(shown), std::string::npos) << shown;
    ASSERT_TRUE(is_valid_utf8(shown)) << shown;
    // Text that needs no escape is left as it is.
    if (find_control_character(text) == std::string::npos && is_valid_utf8(text)) {
      ASSERT_EQ(shown, text);
    }
  }
  EXPECT_EQ(escape_unprintable("a\x1b[2Jb\xc2\x85\xff\n"), "a\\x1b[2Jb\\u0085\\xff\\n");
  EXPECT_EQ(find_control_character("ok\xc2\x9f"), 2u);
  EXPECT_EQ(find_control_character(std::string("a\0b", 3)), 1u);
  EXPECT_EQ(find_control_character("caf\xc3\xa9"), std::string::npos);
}

}  // namespace
}  // namespace shelf
