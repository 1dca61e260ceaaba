#include "libclient/src/derived.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include "base/check.h"
#include "libclient/src/gather.h"

namespace shelf::internal {

namespace {

// Valid rows among the first `rows` of a validity bitmap (LSB first).
uint64_t count_valid(const uint8_t* validity, uint64_t rows) {
  uint64_t valid = 0;
  uint64_t i = 0;
  for (; i + 64 <= rows; i += 64) {
    uint64_t word;
    std::memcpy(&word, validity + i / 8, 8);
    valid += static_cast<uint64_t>(std::popcount(word));
  }
  for (; i < rows; ++i) valid += (validity[i / 8] >> (i % 8)) & 1;
  return valid;
}

}  // namespace

void Derived::Buffer::operator()(std::byte* p) const { std::free(p); }

Derived::Derived(Dataset base, Filter filter)
    : base_(std::move(base)), filter_(std::move(filter)), parts_(base_.num_partitions()) {}

uint64_t Derived::num_rows(uint64_t partition) const { return evaluated(partition).rows; }

uint64_t Derived::num_rows() const {
  uint64_t rows = 0;
  for (uint64_t p = 0; p < num_partitions(); ++p) rows += num_rows(p);
  return rows;
}

uint64_t Derived::data_bytes() const {
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < num_partitions(); ++p) {
    for (const Column& c : evaluated(p).columns) {
      const ColumnBuffers& b = c.buffers;
      bytes += b.data_bytes + (b.validity ? (b.rows + 7) / 8 : 0) +
               (b.offsets ? (b.rows + 1) * sizeof(int64_t) : 0);
    }
  }
  return bytes;
}

const Derived::Column& Derived::column(uint64_t partition, size_t column) const {
  const Partition& part = evaluated(partition);
  SHELF_CHECK(column < part.columns.size());
  return part.columns[column];
}

const Derived::Partition& Derived::evaluated(uint64_t p) const {
  SHELF_CHECK(p < parts_.size());
  if (!filter_.limit()) {
    // Partitions apart: threads reading different ones evaluate at once.
    std::call_once(parts_[p].once, [&] { evaluate(p, UINT64_MAX); });
    return parts_[p];
  }
  // A limit: what partition p keeps depends on what those before it kept.
  std::lock_guard lock(mu_);
  for (; in_order_ <= p; ++in_order_) {
    const uint64_t remaining = *filter_.limit() - std::min(*filter_.limit(), kept_in_order_);
    if (!parts_[in_order_].evaluated) evaluate(in_order_, remaining);
    kept_in_order_ += parts_[in_order_].rows;
  }
  return parts_[p];
}

void Derived::evaluate(uint64_t p, uint64_t remaining) const {
  Partition& part = parts_[p];
  const std::vector<size_t>& out = filter_.output_columns();
  const uint64_t rows = base_.num_rows(p);
  // Kept whole, or cut at its end: the base's buffers as they are.
  auto in_place_rows = [&](uint64_t n) {
    part.rows = n;
    for (size_t c : out) part.columns.push_back(in_place(p, c, n));
    part.evaluated = true;
  };
  if (!filter_.has_predicate() || remaining == 0 || rows == 0) {
    return in_place_rows(std::min(rows, remaining));
  }
  std::vector<ColumnBuffers> in;
  for (size_t c = 0; c < base_.schema().size(); ++c) {
    in.push_back(ColumnBuffers::of(base_.column(p, c)));
  }
  // The buffers match the schema the filter was parsed against: no error.
  Result<Selection> sel = filter_.evaluate(in, rows, remaining);
  SHELF_CHECK(sel.ok());
  sel->truncate(remaining);
  if (sel->count() == rows) return in_place_rows(rows);
  part.rows = sel->count();
  for (size_t c : out) part.columns.push_back(copied(in[c], *sel, part));
  part.evaluated = true;
}

Derived::Column Derived::in_place(uint64_t p, size_t c, uint64_t rows) const {
  const ColumnView view = base_.column(p, c);
  Column col;
  col.buffers = ColumnBuffers::of(view);
  col.null_count = view.null_count();
  if (rows == view.length()) return col;
  ColumnBuffers& b = col.buffers;
  b.rows = rows;
  if (b.validity != nullptr) col.null_count = rows - count_valid(b.validity, rows);
  if (b.type == Type::kString) {
    const int64_t end = b.offsets[rows];
    b.data_bytes = end >= 0 ? std::min<uint64_t>(static_cast<uint64_t>(end), b.data_bytes) : 0;
  } else {
    b.data_bytes = rows * fixed_width(b.type);
  }
  return col;
}

std::byte* Derived::allocate(Partition& part, uint64_t bytes) {
  // 64-byte aligned, as the segment's buffers are (kBufferAlignment), so
  // that numpy and Arrow see the same alignment either way.
  const uint64_t size = std::max<uint64_t>(64, (bytes + 63) / 64 * 64);
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, size));
  if (p == nullptr) throw std::bad_alloc();
  part.owned.emplace_back(p);
  return p;
}

Derived::Column Derived::copied(const ColumnBuffers& in, const Selection& sel, Partition& part) {
  const uint64_t n = sel.count();
  Column col;
  ColumnBuffers& b = col.buffers;
  b.type = in.type;
  b.rows = n;
  if (in.validity != nullptr) {
    auto* validity = reinterpret_cast<uint8_t*>(allocate(part, (n + 7) / 8));
    std::memset(validity, 0, (n + 7) / 8);
    uint64_t valid = 0;
    for_each_kept(sel, [&](uint64_t row, uint64_t k) {
      if (!is_valid(in, row)) return;
      validity[k / 8] = static_cast<uint8_t>(validity[k / 8] | (1u << (k % 8)));
      ++valid;
    });
    col.null_count = n - valid;
    // As a published partition: no bitmap when no row is null.
    if (col.null_count > 0) b.validity = validity;
  }
  if (in.type != Type::kString) {
    b.data_bytes = n * fixed_width(in.type);
    std::byte* data = allocate(part, b.data_bytes);
    if (n > 0) gather_column(in, sel, data);
    b.data = data;
    return col;
  }
  auto* offsets = reinterpret_cast<int64_t*>(allocate(part, (n + 1) * sizeof(int64_t)));
  uint64_t bytes = 0;
  for_each_kept(sel, [&](uint64_t row, uint64_t) {
    if (is_valid(in, row)) bytes += string_at(in, row).size();
  });
  std::byte* data = allocate(part, bytes);
  offsets[0] = 0;
  uint64_t at = 0;
  for_each_kept(sel, [&](uint64_t row, uint64_t k) {
    if (is_valid(in, row)) {
      const std::string_view s = string_at(in, row);
      std::memcpy(data + at, s.data(), s.size());
      at += s.size();
    }
    offsets[k + 1] = static_cast<int64_t>(at);
  });
  b.offsets = offsets;
  b.data = data;
  b.data_bytes = bytes;
  return col;
}

}  // namespace shelf::internal
