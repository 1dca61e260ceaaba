// Byte sizes as people write them: "512MiB", "8GiB", "1.5G", "4096".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <shelf/result.h>

namespace shelf {

// Parses a size. Units are binary whether or not the "i" is written
// (K/KB/KiB = 1024); a bare number is bytes. Errors: InvalidArgument naming the text.
Result<uint64_t> parse_size(std::string_view text);
// Parses a whole number from `min` to `max` given for `option` (as the user
// typed it, e.g. "-n" or "--max-connections"). Digits only: no sign, no
// spaces, no fraction. Errors: InvalidArgument naming the option, the range
// and the text, e.g. "-n must be a whole number from 0 to 1000000, not '-1'".
Result<uint64_t> parse_count(std::string_view text, std::string_view option, uint64_t min,
                             uint64_t max);
// Parses a number of seconds from `min` to `max` for `option`. Errors:
// InvalidArgument naming the option, the range and the text.
Result<double> parse_seconds(std::string_view text, std::string_view option, double min,
                             double max);
// "1.50 GiB", "512.00 MiB", "100 B": always binary units, two decimals past bytes.
std::string format_bytes(uint64_t bytes);

}  // namespace shelf
