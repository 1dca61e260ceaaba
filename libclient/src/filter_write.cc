// write_filtered: the filtered scan of a Dataset (or of a table not yet
// published) into a TableBuilder. The input is read in place; each kept
// value is written once, straight into the new partition's shared buffers (no intermediate copy).
// Runs of 64 kept rows are copied as one block.
#include <bit>
#include <cstring>
#include <limits>

#include <shelf/filter.h>

#include "libclient/src/gather.h"
#include "libclient/src/table_state.h"

namespace shelf {
namespace {

using internal::for_each_kept;
using internal::gather_column;
using internal::is_valid;
using internal::string_at;

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

// Adds one partition to `out`: the rows `sel` keeps of `in` (every input
// column of one partition, schema order), output columns only.
Status write_partition(std::span<const ColumnBuffers> in, const Filter& filter,
                       const Selection& sel, TableBuilder& out) {
  const std::vector<size_t>& columns = filter.output_columns();
  std::vector<uint64_t> string_bytes;
  for (size_t in_col : columns) {
    const ColumnBuffers& col = in[in_col];
    if (col.type != Type::kString) continue;
    uint64_t bytes = 0;
    for_each_kept(sel, [&](uint64_t row, uint64_t) { bytes += string_at(col, row).size(); });
    string_bytes.push_back(bytes);
  }
  SHELF_ASSIGN_OR_RETURN(PartitionBuilder part, out.add_partition(sel.count(), string_bytes));
  for (size_t oc = 0; oc < columns.size(); ++oc) {
    const ColumnBuffers& col = in[columns[oc]];
    const bool has_nulls = col.validity != nullptr;
    if (col.type == Type::kString) {
      StringColumnWriter writer = part.strings(oc);
      Status s;
      for_each_kept(sel, [&](uint64_t row, uint64_t) {
        if (!s.ok()) return;
        s = has_nulls && !is_valid(col, row) ? writer.append_null()
                                             : writer.append(string_at(col, row));
      });
      SHELF_RETURN_IF_ERROR(s);
      continue;
    }
    std::byte* dst = column_bytes(part, oc, col.type);
    if (dst == nullptr && sel.count() > 0) {
      return Status::internal("no writable buffer for column " + std::to_string(oc));
    }
    if (sel.count() > 0) gather_column(col, sel, dst);
    if (has_nulls) {
      for_each_kept(sel, [&](uint64_t row, uint64_t k) {
        if (!is_valid(col, row)) part.set_null(oc, k);
      });
    }
  }
  return Status();
}

// The filtered scan over `partitions` partitions, partition p's columns
// given by buffers(p) (a Result<std::vector<ColumnBuffers>>).
template <class BuffersOf>
Status write_partitions(uint64_t partitions, BuffersOf&& buffers, const Filter& filter,
                        TableBuilder& out, uint64_t* rows_written) {
  *rows_written = 0;
  if (out.schema() != filter.output_schema()) {
    return Status::invalid_argument("write_filtered needs a table with the filter's output schema");
  }
  uint64_t remaining = filter.limit().value_or(std::numeric_limits<uint64_t>::max());
  for (uint64_t p = 0; p < partitions && remaining > 0; ++p) {
    SHELF_ASSIGN_OR_RETURN(std::vector<ColumnBuffers> in, buffers(p));
    const uint64_t rows = in.empty() ? 0 : in.front().rows;
    // With a limit, the evaluation stops where it is reached.
    SHELF_ASSIGN_OR_RETURN(Selection sel,
                           filter.evaluate(in, rows, filter.limit() ? remaining : UINT64_MAX));
    sel.truncate(remaining);
    if (sel.count() == 0) continue;
    SHELF_RETURN_IF_ERROR(write_partition(in, filter, sel, out));
    remaining -= sel.count();
    *rows_written += sel.count();
  }
  return Status();
}

}  // namespace

Status write_filtered(const Dataset& base, const Filter& filter, TableBuilder& out) {
  if (base.schema() != filter.input_schema()) {
    return Status::invalid_argument("dataset '" + base.name() +
                                    "' does not have the schema the filter was parsed against");
  }
  auto buffers = [&](uint64_t p) -> Result<std::vector<ColumnBuffers>> {
    std::vector<ColumnBuffers> in;
    for (size_t c = 0; c < base.schema().size(); ++c) {
      in.push_back(ColumnBuffers::of(base.column(p, c)));
    }
    return in;
  };
  uint64_t rows_written;
  return write_partitions(base.num_partitions(), buffers, filter, out, &rows_written);
}

Status write_filtered(const TableBuilder& staged, const Filter& filter, TableBuilder& out,
                      uint64_t* rows_written) {
  const internal::TableState& t = *staged.state_;
  if (t.schema != filter.input_schema()) {
    return Status::invalid_argument(
        "the staged table does not have the schema the filter was parsed against");
  }
  if (t.sealed || t.published) {
    return Status::invalid_argument("write_filtered reads a table that is not yet published");
  }
  auto buffers = [&](uint64_t p) -> Result<std::vector<ColumnBuffers>> {
    const internal::PartitionState& part = *t.partitions[p];
    std::vector<ColumnBuffers> in;
    for (size_t c = 0; c < t.schema.size(); ++c) {
      const internal::PartitionState::Column& col = part.columns[c];
      ColumnBuffers b;
      b.type = t.schema[c].type;
      b.rows = part.rows;
      b.validity =
          col.has_validity ? reinterpret_cast<const uint8_t*>(part.at(col.validity)) : nullptr;
      b.data = part.at(col.data);
      b.data_bytes = col.data_capacity;
      if (b.type == Type::kString) {
        if (col.strings_written != part.rows) {
          return Status::invalid_argument("partition " + std::to_string(p) + " column '" +
                                          t.schema[c].name + "' has " +
                                          std::to_string(col.strings_written) + " of its " +
                                          std::to_string(part.rows) + " strings written");
        }
        b.offsets = reinterpret_cast<const int64_t*>(part.at(col.offsets));
      }
      in.push_back(b);
    }
    return in;
  };
  uint64_t rows;
  SHELF_RETURN_IF_ERROR(write_partitions(t.partitions.size(), buffers, filter, out, &rows));
  if (rows_written != nullptr) *rows_written = rows;
  return Status();
}

}  // namespace shelf
