// Fuzzes the parsers of the values the command line gives shelf and shelfd
// (parse_count: -n, --partition-rows, --max-connections...; parse_seconds:
// --timeout, --watch; parse_size: --memory-limit) and the escaping every
// message and table goes through before it reaches a terminal.
//
// The argument vectors themselves (Boost.Program_options and each command's
// checks, which run the command once they pass) are exercised by the
// property test tests/cli/cli_property_test.cc, against a real shelfd.
//
// Input: one option byte (fuzz/seeds.h), then one value. Beyond "no crash,
// no leak, no undefined behaviour" it checks that an accepted value is in
// its range and is what the text says, that a refusal names the option and
// quotes the text, and that escaping is final: escaped text escapes to itself.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/check.h"
#include "base/units.h"
#include "base/utf8.h"

#include "fuzz/seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shelf;
  if (size < fuzz::kCliValueOptionBytes) return 0;
  const uint64_t min = data[0] & 4 ? 1 : 0;
  const uint64_t max = fuzz::kCliCountMax[data[0] & 3];
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto count = parse_count(text, "--count", min, max);
  if (count.ok()) {
    SHELF_CHECK(*count >= min && *count <= max);
    // Digits only, and the number they write (leading zeros aside).
    const size_t first = text.find_first_not_of('0');
    const std::string_view digits = first == std::string_view::npos ? "0" : text.substr(first);
    SHELF_CHECK(std::to_string(*count) == digits);
  } else {
    const std::string& m = count.status().message();
    SHELF_CHECK(m.rfind("--count must be a whole number ", 0) == 0);
    SHELF_CHECK(m.size() >= text.size() + 8 &&
                m.compare(m.size() - text.size() - 1, text.size(), text) == 0);
  }

  auto seconds = parse_seconds(text, "--seconds", 0.01, 86400);
  if (seconds.ok()) {
    SHELF_CHECK(std::isfinite(*seconds) && *seconds >= 0.01 && *seconds <= 86400);
  } else {
    SHELF_CHECK(seconds.status().message().rfind("--seconds must be ", 0) == 0);
  }

  auto bytes = parse_size(text);
  if (!bytes.ok()) SHELF_CHECK(!bytes.status().message().empty());

  const std::string shown = escape_unprintable(text);
  SHELF_CHECK(escape_unprintable(shown) == shown);
  SHELF_CHECK(is_valid_utf8(shown) && find_control_character(shown) == std::string::npos);
  return 0;
}
