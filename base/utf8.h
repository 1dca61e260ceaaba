// UTF-8 well-formedness, as Arrow's utf8 type requires.
#pragma once

#include <cstddef>
#include <string_view>

namespace shelf {

// True when `text` is well-formed UTF-8: no overlong forms, no surrogates,
// nothing past U+10FFFF, no truncated sequence. On false, *bad_offset (if
// given) is the byte offset of the first bad sequence.
bool is_valid_utf8(std::string_view text, size_t* bad_offset = nullptr);

}  // namespace shelf
