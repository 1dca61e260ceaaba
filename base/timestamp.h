// Timestamps as people write them: "2024-01-31", "2024-01-31T12:00:00.5Z".
// The one parser of that text, shared by the CSV reader (tools/csv_values.cc)
// and the filter language (libclient/src/filter.cc), so a value that loads
// from a CSV file can be written in a `--where` and means the same instant.
//
// Thread-safe: a pure function.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace shelf {

// Nanoseconds since 1970-01-01T00:00:00 UTC of
//   YYYY-MM-DD[(T| )HH:MM[:SS[.F]]][Z|+00:00]
// where F is 1 to 9 digits and the only zones are UTC's. Dates are
// proleptic Gregorian and checked (no 2023-02-29, no 04-31); seconds may be
// 60 (a leap second, counted as the next second). Nothing else is accepted:
// no surrounding spaces, no other zone. nullopt when the text is not of that
// form or its instant falls outside int64 nanoseconds (1677-09-21 to
// 2262-04-11).
std::optional<int64_t> parse_timestamp_text(std::string_view text);

}  // namespace shelf
