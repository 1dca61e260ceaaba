// write_filtered: the filtered scan of a Dataset (or of a table not yet
// published) into a TableBuilder. The input is read in place; each kept
// value is written once, straight into the new partition's shared buffers (no intermediate copy).
// Runs of 64 kept rows are copied as one block.
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include <shelf/filter.h>

#include "base/parallel.h"
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

// One partition of the scan: its input columns (every input column, schema
// order), the rows kept, the UTF-8 bytes those rows hold in each output
// string column (in order), and the partition they are written into.
struct PartitionJob {
  std::vector<ColumnBuffers> in;
  Selection sel;
  std::vector<uint64_t> string_bytes;
  std::optional<PartitionBuilder> out;
  Status status;
};

// Evaluates the filter over job.in, keeping at most `max_kept` rows (with a
// limit, the evaluation stops where it is reached), and sizes the strings.
Status select(const Filter& filter, uint64_t max_kept, PartitionJob& job) {
  const uint64_t rows = job.in.empty() ? 0 : job.in.front().rows;
  SHELF_ASSIGN_OR_RETURN(job.sel, filter.evaluate(job.in, rows, max_kept));
  job.sel.truncate(max_kept);
  for (size_t in_col : filter.output_columns()) {
    const ColumnBuffers& col = job.in[in_col];
    if (col.type != Type::kString) continue;
    uint64_t bytes = 0;
    for_each_kept(job.sel, [&](uint64_t row, uint64_t) { bytes += string_at(col, row).size(); });
    job.string_bytes.push_back(bytes);
  }
  return Status();
}

// Copies the kept rows of the output columns into job.out.
Status fill(const Filter& filter, PartitionJob& job) {
  const std::vector<size_t>& columns = filter.output_columns();
  const Selection& sel = job.sel;
  PartitionBuilder& part = *job.out;
  for (size_t oc = 0; oc < columns.size(); ++oc) {
    const ColumnBuffers& col = job.in[columns[oc]];
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
    if (dst == nullptr)
      return Status::internal("no writable buffer for column " + std::to_string(oc));
    gather_column(col, sel, dst);
    if (has_nulls) {
      for_each_kept(sel, [&](uint64_t row, uint64_t k) {
        if (!is_valid(col, row)) part.set_null(oc, k);
      });
    }
  }
  return Status();
}

// Partitions are taken in batches: their filters are evaluated on threads,
// their output partitions added on this thread (add_partition is a request
// to shelfd, made on the Client's thread), then their kept rows copied on
// threads. On this 2-core VM that and hashing at seal on threads took a
// 1 GiB `publish --from --where` keeping half from 401-413 to 360-372 ms
// (docs/filter.md). A batch ends once it holds 2^27 rows, so its bitmaps (a
// bit a row) take 16 MiB, plus at most one partition's. With a limit, one
// partition at a time, in order, so the scan stops where the limit is
// reached.
constexpr uint64_t kMaxBatchPartitions = 64;
constexpr uint64_t kMaxBatchRows = uint64_t{1} << 27;
constexpr uint64_t kRowsPerThread = uint64_t{1} << 18;

// The filtered scan over `partitions` partitions, partition p's columns
// given by buffers(p) (a Result<std::vector<ColumnBuffers>>).
template <class BuffersOf>
Status write_partitions(uint64_t partitions, BuffersOf&& buffers, const Filter& filter,
                        TableBuilder& out, uint64_t* rows_written) {
  *rows_written = 0;
  if (out.schema() != filter.output_schema()) {
    return Status::invalid_argument("write_filtered needs a table with the filter's output schema");
  }
  const bool limited = filter.limit().has_value();
  uint64_t remaining = filter.limit().value_or(std::numeric_limits<uint64_t>::max());
  for (uint64_t p = 0; p < partitions && remaining > 0;) {
    std::vector<PartitionJob> jobs;
    uint64_t batch_rows = 0;
    while (p < partitions && jobs.size() < (limited ? 1 : kMaxBatchPartitions) &&
           batch_rows < kMaxBatchRows) {
      SHELF_ASSIGN_OR_RETURN(std::vector<ColumnBuffers> in, buffers(p++));
      batch_rows += in.empty() ? 0 : in.front().rows;
      jobs.emplace_back().in = std::move(in);
    }
    const unsigned threads = threads_for(batch_rows, kRowsPerThread);
    const uint64_t max_kept = limited ? remaining : UINT64_MAX;
    parallel_for(jobs.size(), threads,
                 [&](size_t i) { jobs[i].status = select(filter, max_kept, jobs[i]); });
    for (PartitionJob& job : jobs) {
      SHELF_RETURN_IF_ERROR(job.status);
      if (job.sel.count() == 0) continue;
      SHELF_ASSIGN_OR_RETURN(job.out, out.add_partition(job.sel.count(), job.string_bytes));
      remaining -= job.sel.count();
      *rows_written += job.sel.count();
    }
    parallel_for(jobs.size(), threads, [&](size_t i) {
      if (jobs[i].out) jobs[i].status = fill(filter, jobs[i]);
    });
    for (const PartitionJob& job : jobs) SHELF_RETURN_IF_ERROR(job.status);
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
