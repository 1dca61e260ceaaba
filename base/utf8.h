// UTF-8 well-formedness, as Arrow's utf8 type requires.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace shelf {

// True when `text` is well-formed UTF-8: no overlong forms, no surrogates,
// nothing past U+10FFFF, no truncated sequence. On false, *bad_offset (if
// given) is the byte offset of the first bad sequence.
bool is_valid_utf8(std::string_view text, size_t* bad_offset = nullptr);

// The byte offset of the first control character in `text` (UTF-8): C0
// (U+0000..U+001F, NUL included), DEL (U+007F) or C1 (U+0080..U+009F, such as
// U+0085 NEXT LINE, which terminals act on). npos when there is none. The one
// rule for names, dataset and column alike: a name prints safely.
size_t find_control_character(std::string_view text);

// `text` safe to print on a terminal: \n, \t, \r, and \xNN for other C0
// bytes, DEL and bytes that are not UTF-8; \u0080..\u009f for C1; a
// backslash stays as it is. Nothing from data reaches a terminal raw.
std::string escape_unprintable(std::string_view text);

}  // namespace shelf
