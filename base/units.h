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
// "1.50 GiB", "512.00 MiB", "100 B": always binary units, two decimals past bytes.
std::string format_bytes(uint64_t bytes);

}  // namespace shelf
