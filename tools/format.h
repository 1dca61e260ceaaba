// Text and JSON output of the shelf CLI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <shelf/dataset.h>

namespace shelf::tools {

// Row `row` of `column` as a person reads it: "null", "3.25", "true",
// "2024-01-31 12:00:00", strings with control characters escaped.
std::string format_value(const ColumnView& column, uint64_t row);
// The same value as a JSON value (strings quoted, null as null, NaN as null).
std::string json_value(const ColumnView& column, uint64_t row);
// "2026-11-25T16:40:39Z" (with .fraction when not whole seconds).
std::string format_time(int64_t ns_since_epoch, bool iso_t = true);
// A JSON string literal, quotes included.
std::string json_string(std::string_view text);

// A text table: a header row, then rows; columns padded to their widest
// cell, right-aligned where `right[i]`, separated by two spaces.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right);

}  // namespace shelf::tools
