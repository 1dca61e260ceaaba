// TableBuilder: builds a dataset in place in shared memory, partition by
// partition, before it is published (Client::publish_dataset). Every line of
// this example is a line of examples/quickstart.cc, which a test builds and
// runs (cli_test); client_test checks the lines are still there:
//
//   SHELF_ASSIGN_OR_RETURN(
//       shelf::TableBuilder table,
//       client.create_table({{"name", shelf::Type::kString}, {"balance", shelf::Type::kInt64}}));
//   const uint64_t name_bytes[] = {15};  // UTF-8 bytes to reserve per string column
//   SHELF_ASSIGN_OR_RETURN(shelf::PartitionBuilder part, table.add_partition(3, name_bytes));
//   std::span<int64_t> balance = part.values<int64_t>(1);
//   shelf::StringColumnWriter names = part.strings(0);
//   const char* who[] = {"Alice", "Bob", "Charlie"};
//   for (int i = 0; i < 3; ++i) {
//     SHELF_RETURN_IF_ERROR(names.append(who[i]));
//     balance[i] = -100 * (i + 1);
//   }
//   SHELF_RETURN_IF_ERROR(client.publish_dataset("negative_accounts", table));
//
// Threads: a TableBuilder is used on its Client's thread (see client.h),
// but may be destroyed on any thread.
//
// Nobody sees a dataset before it is published. A TableBuilder destroyed
// without a successful publish gives its memory back (Plasma's "sealed or
// aborted", enforced by the destructor), as does a publisher that dies.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <shelf/result.h>
#include <shelf/types.h>

namespace shelf {

class Client;
class Filter;
namespace internal {
struct PartitionState;
struct TableState;
}  // namespace internal

// Appends the strings of one string column of one partition, in row order.
// A view into its PartitionBuilder's memory.
class StringColumnWriter {
 public:
  // Errors: InvalidArgument when every row is written already, or when the
  // bytes would pass what add_partition reserved for this column.
  Status append(std::string_view value);
  Status append_null();
  uint64_t rows_written() const;

 private:
  friend class PartitionBuilder;
  StringColumnWriter(internal::PartitionState* p, size_t column) : p_(p), column_(column) {}
  internal::PartitionState* p_;
  size_t column_;
};

// One partition being written. A view: valid while its TableBuilder lives.
class PartitionBuilder {
 public:
  uint64_t num_rows() const;
  // Writable values of fixed-width column `column` (V as in ColumnView::values:
  // int64_t for int64/timestamp, uint8_t for bool, ...). Empty on a type
  // mismatch, and once the table is published: publishing unmaps the
  // partition from this process, so a span kept from before faults if written.
  // The memory starts zeroed.
  template <class V>
  std::span<V> values(size_t column) {
    if (!writable() || column >= schema_size() || !can_view_as<V>(column_type(column))) return {};
    return {reinterpret_cast<V*>(data(column)), static_cast<size_t>(num_rows())};
  }
  // Writer for string column `column`. Checked: aborts if it is not a string column.
  StringColumnWriter strings(size_t column);
  // False once the table is published (see values()).
  bool writable() const;
  // Marks row `row` of `column` null (its value slot should hold 0, or NaN).
  // Checked (aborts): a row in range, not a bytes column, not yet published.
  void set_null(size_t column, uint64_t row);
  // The payload of a raw-bytes partition, num_rows() bytes.
  std::span<std::byte> bytes();

 private:
  friend class TableBuilder;
  explicit PartitionBuilder(internal::PartitionState* p) : p_(p) {}
  size_t schema_size() const;
  Type column_type(size_t column) const;
  std::byte* data(size_t column);
  internal::PartitionState* p_;
};

// Data to copy into a new partition (the one-copy path), one per column.
struct ColumnData {
  // Fixed-width and bytes columns: the values. String columns: the UTF-8 data.
  const void* data = nullptr;
  uint64_t data_bytes = 0;
  // String columns: rows + 1 offsets into `data`; the first need not be 0.
  const int64_t* offsets = nullptr;
  // Optional Arrow validity bitmap (LSB first, 1 = valid) of rows bits.
  const uint8_t* validity = nullptr;

  template <class V>
  static ColumnData of(std::span<const V> values) {
    return {values.data(), values.size_bytes(), nullptr, nullptr};
  }
};

class TableBuilder {
 public:
  TableBuilder(TableBuilder&&) noexcept;
  TableBuilder& operator=(TableBuilder&&) noexcept;
  // Aborts every partition unless the table was published.
  ~TableBuilder();

  const Schema& schema() const;
  uint64_t num_partitions() const;

  // Reserves a partition of `num_rows` rows in shared memory and maps it
  // writable into this process only, its pages reserved (a partition of
  // 128 MiB or more on several threads, joined before it returns).
  // `string_bytes` gives the UTF-8 bytes to reserve for each string column,
  // in schema order. Errors:
  // ResourceExhausted (over the daemon's limit: says used/limit/requested),
  // InvalidArgument (wrong number of string sizes, table already published).
  Result<PartitionBuilder> add_partition(uint64_t num_rows,
                                         std::span<const uint64_t> string_bytes = {});
  // Copies one partition from existing buffers (one per column, schema order).
  Status append_partition(uint64_t num_rows, std::span<const ColumnData> columns);
  // For a raw-bytes table: one partition holding a copy of `payload`.
  Status append_bytes(std::span<const std::byte> payload);

 private:
  friend class Client;
  // Reads the partitions of a table not yet published (filter.h).
  friend Status write_filtered(const TableBuilder& staged, const Filter& filter, TableBuilder& out,
                               uint64_t* rows_written);
  explicit TableBuilder(std::unique_ptr<internal::TableState> state);
  std::unique_ptr<internal::TableState> state_;
};

}  // namespace shelf
