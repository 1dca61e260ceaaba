#include "libclient/src/derived.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <optional>

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
  // Built apart and committed at the end: an allocation that throws leaves
  // the partition unevaluated, for a later call to start again.
  Partition& part = parts_[p];
  const std::vector<size_t>& out = filter_.output_columns();
  std::vector<Column> columns;
  std::vector<std::unique_ptr<std::byte, Buffer>> owned;
  uint64_t kept = 0;
  if (remaining == 0) {
    // Past the limit: the base is not read (a base that is a view is not
    // evaluated for it).
    for (size_t c : out) columns.push_back(empty(filter_.input_schema()[c].type));
  } else {
    const uint64_t rows = base_.num_rows(p);
    std::optional<Selection> sel;
    std::vector<ColumnBuffers> in;
    if (filter_.has_predicate() && rows > 0) {
      for (size_t c = 0; c < base_.schema().size(); ++c) {
        in.push_back(ColumnBuffers::of(base_.column(p, c)));
      }
      // The buffers match the schema the filter was parsed against: no error.
      Result<Selection> evaluated = filter_.evaluate(in, rows, remaining);
      SHELF_CHECK(evaluated.ok());
      sel = std::move(evaluated).value();
      sel->truncate(remaining);
    }
    if (!sel || sel->count() == rows) {
      // Kept whole, or cut at its end: the base's buffers as they are.
      kept = std::min(rows, remaining);
      for (size_t c : out) columns.push_back(in_place(p, c, kept));
    } else {
      kept = sel->count();
      for (size_t c : out) columns.push_back(copied(in[c], *sel, owned));
    }
  }
  part.columns = std::move(columns);
  part.owned = std::move(owned);
  part.rows = kept;
  part.evaluated = true;
}

Derived::Column Derived::empty(Type type) {
  // A string column's one offset, 0, as every string column has rows + 1.
  static constexpr int64_t kNoOffsets[1] = {0};
  Column col;
  col.buffers.type = type;
  if (type == Type::kString) col.buffers.offsets = kNoOffsets;
  return col;
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

std::byte* Derived::allocate(std::vector<std::unique_ptr<std::byte, Buffer>>& owned,
                             uint64_t bytes) {
  // 64-byte aligned, as the segment's buffers are (kBufferAlignment), so
  // that numpy and Arrow see the same alignment either way.
  const uint64_t size = std::max<uint64_t>(64, (bytes + 63) / 64 * 64);
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, size));
  if (p == nullptr) throw std::bad_alloc();
  owned.emplace_back(p);
  return p;
}

Derived::Column Derived::copied(const ColumnBuffers& in, const Selection& sel,
                                std::vector<std::unique_ptr<std::byte, Buffer>>& owned) {
  const uint64_t n = sel.count();
  Column col;
  ColumnBuffers& b = col.buffers;
  b.type = in.type;
  b.rows = n;
  if (in.validity != nullptr) {
    auto* validity = reinterpret_cast<uint8_t*>(allocate(owned, (n + 7) / 8));
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
    std::byte* data = allocate(owned, b.data_bytes);
    if (n > 0) gather_column(in, sel, data);
    b.data = data;
    return col;
  }
  auto* offsets = reinterpret_cast<int64_t*>(allocate(owned, (n + 1) * sizeof(int64_t)));
  uint64_t bytes = 0;
  for_each_kept(sel, [&](uint64_t row, uint64_t) {
    if (is_valid(in, row)) bytes += string_at(in, row).size();
  });
  std::byte* data = allocate(owned, bytes);
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
