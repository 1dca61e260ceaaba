// write_filtered: the filtered scan of a Dataset into a TableBuilder. The
// base is read in place; each kept value is written once, straight into the
// new partition's shared buffers (no intermediate copy). Runs of 64 kept
// rows are copied as one block.
#include <bit>
#include <cstring>
#include <limits>

#include <shelf/filter.h>

namespace shelf {
namespace {

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

void gather_column(const ColumnView& in, const Selection& sel, std::byte* dst) {
  switch (fixed_width(in.type())) {
    case 1:
      return gather_fixed<1>(in.data().data(), sel, dst);
    case 2:
      return gather_fixed<2>(in.data().data(), sel, dst);
    case 4:
      return gather_fixed<4>(in.data().data(), sel, dst);
    default:
      return gather_fixed<8>(in.data().data(), sel, dst);
  }
}

template <class V>
std::byte* bytes_of(PartitionBuilder& part, size_t column) {
  return reinterpret_cast<std::byte*>(part.values<V>(column).data());
}

// The writable bytes of fixed-width column `column` of `part`, typed as
// PartitionBuilder::values requires.
std::byte* column_bytes(PartitionBuilder& part, size_t column, Type type) {
  switch (type) {
    case Type::kInt8:
      return bytes_of<int8_t>(part, column);
    case Type::kInt16:
      return bytes_of<int16_t>(part, column);
    case Type::kInt32:
      return bytes_of<int32_t>(part, column);
    case Type::kInt64:
    case Type::kTimestamp:
      return bytes_of<int64_t>(part, column);
    case Type::kUInt8:
    case Type::kBool:
      return bytes_of<uint8_t>(part, column);
    case Type::kUInt16:
      return bytes_of<uint16_t>(part, column);
    case Type::kUInt32:
      return bytes_of<uint32_t>(part, column);
    case Type::kUInt64:
      return bytes_of<uint64_t>(part, column);
    case Type::kFloat32:
      return bytes_of<float>(part, column);
    case Type::kFloat64:
      return bytes_of<double>(part, column);
    case Type::kString:
    case Type::kBytes:
      break;
  }
  return nullptr;
}

Status write_partition(const Dataset& base, uint64_t p, const Filter& filter, const Selection& sel,
                       TableBuilder& out) {
  const std::vector<size_t>& columns = filter.output_columns();
  std::vector<uint64_t> string_bytes;
  for (size_t in_col : columns) {
    const ColumnView view = base.column(p, in_col);
    if (view.type() != Type::kString) continue;
    uint64_t bytes = 0;
    for_each_kept(sel, [&](uint64_t row, uint64_t) { bytes += view.string(row).size(); });
    string_bytes.push_back(bytes);
  }
  SHELF_ASSIGN_OR_RETURN(PartitionBuilder part, out.add_partition(sel.count(), string_bytes));
  for (size_t oc = 0; oc < columns.size(); ++oc) {
    const ColumnView view = base.column(p, columns[oc]);
    const bool has_nulls = view.null_count() > 0;
    if (view.type() == Type::kString) {
      StringColumnWriter writer = part.strings(oc);
      Status s;
      for_each_kept(sel, [&](uint64_t row, uint64_t) {
        if (!s.ok()) return;
        s = has_nulls && !view.is_valid(row) ? writer.append_null()
                                             : writer.append(view.string(row));
      });
      SHELF_RETURN_IF_ERROR(s);
      continue;
    }
    std::byte* dst = column_bytes(part, oc, view.type());
    if (dst == nullptr && sel.count() > 0) {
      return Status::internal("no writable buffer for column " + std::to_string(oc));
    }
    if (sel.count() > 0) gather_column(view, sel, dst);
    if (has_nulls) {
      for_each_kept(sel, [&](uint64_t row, uint64_t k) {
        if (!view.is_valid(row)) part.set_null(oc, k);
      });
    }
  }
  return Status();
}

}  // namespace

Status write_filtered(const Dataset& base, const Filter& filter, TableBuilder& out) {
  if (base.schema() != filter.input_schema()) {
    return Status::invalid_argument("dataset '" + base.name() +
                                    "' does not have the schema the filter was parsed against");
  }
  if (out.schema() != filter.output_schema() || out.num_partitions() != 0) {
    return Status::invalid_argument(
        "write_filtered needs an empty table with the filter's output schema");
  }
  uint64_t remaining = filter.limit().value_or(std::numeric_limits<uint64_t>::max());
  for (uint64_t p = 0; p < base.num_partitions() && remaining > 0; ++p) {
    SHELF_ASSIGN_OR_RETURN(Selection sel, filter.evaluate(base, p));
    sel.truncate(remaining);
    if (sel.count() == 0) continue;
    SHELF_RETURN_IF_ERROR(write_partition(base, p, filter, sel, out));
    remaining -= sel.count();
  }
  return Status();
}

}  // namespace shelf
