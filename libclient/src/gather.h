// The copies of kept rows that write_filtered (into a TableBuilder's shared
// buffers) and a view's evaluation (into the reader's memory) share: each
// walks a Selection's bitmap, one word at a time.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include <shelf/filter.h>
#include <shelf/types.h>

namespace shelf::internal {

// Calls fn(row, output_index) for each kept row, in order.
template <class Fn>
void for_each_kept(const Selection& sel, Fn&& fn) {
  uint64_t out = 0;
  const std::span<const uint64_t> words = sel.words();
  for (size_t k = 0; k < words.size(); ++k) {
    for (uint64_t w = words[k]; w != 0; w &= w - 1) {
      fn(k * 64 + static_cast<uint64_t>(std::countr_zero(w)), out++);
    }
  }
}

template <size_t kWidth>
void gather_fixed(const std::byte* src, const Selection& sel, std::byte* dst) {
  const std::span<const uint64_t> words = sel.words();
  for (size_t k = 0; k < words.size(); ++k) {
    uint64_t w = words[k];
    const std::byte* block = src + k * 64 * kWidth;
    if (w == ~uint64_t{0}) {  // 64 kept rows in a row: one block copy
      std::memcpy(dst, block, 64 * kWidth);
      dst += 64 * kWidth;
      continue;
    }
    for (; w != 0; w &= w - 1) {
      std::memcpy(dst, block + static_cast<size_t>(std::countr_zero(w)) * kWidth, kWidth);
      dst += kWidth;
    }
  }
}

inline void gather_column(const ColumnBuffers& in, const Selection& sel, std::byte* dst) {
  switch (fixed_width(in.type)) {
    case 1:
      return gather_fixed<1>(in.data, sel, dst);
    case 2:
      return gather_fixed<2>(in.data, sel, dst);
    case 4:
      return gather_fixed<4>(in.data, sel, dst);
    default:
      return gather_fixed<8>(in.data, sel, dst);
  }
}

inline bool is_valid(const ColumnBuffers& in, uint64_t row) {
  return in.validity == nullptr || ((in.validity[row / 8] >> (row % 8)) & 1) != 0;
}

// Row `row` of a string column. Bounds are checked against the data, as
// ColumnView::string does: a damaged offset reads as empty, never wild.
inline std::string_view string_at(const ColumnBuffers& in, uint64_t row) {
  const int64_t begin = in.offsets[row], end = in.offsets[row + 1];
  if (begin < 0 || end < begin || static_cast<uint64_t>(end) > in.data_bytes) return {};
  return {reinterpret_cast<const char*>(in.data) + begin, static_cast<size_t>(end - begin)};
}

}  // namespace shelf::internal
