// Filter: a row filter, a column list and a row limit over a dataset, parsed
// once against its schema and then evaluated column-at-a-time, partition by
// partition, in the reading process. Used by `shelf publish --from BASE
// --where EXPR --columns a,b --limit N` and by write_filtered() below.
//
// The expression language (keywords are case-insensitive):
//
//   expr       := or_expr
//   or_expr    := and_expr ('or' and_expr)*
//   and_expr   := not_expr ('and' not_expr)*
//   not_expr   := 'not' not_expr | '(' expr ')' | predicate
//   predicate  := column op value              op: < <= == = != <> > >=
//              |  column ['not'] 'in' '(' value (',' value)* ')'
//              |  column 'is' ['not'] 'null'
//   column     := identifier ([A-Za-z_][A-Za-z0-9_]*) | "any name in double quotes"
//   value      := integer | float | true | false | 'string'  ('' is a quote)
//
// A value must suit its column: integers for integer columns; integers or
// floats for float columns; true/false for bool; a 'string' for string; for
// timestamp an integer (nanoseconds since the epoch, UTC) or a 'string' as
// the CSV reader takes it ('2024-01-31', '2024-01-31T12:00:00.5Z'). Integer
// values outside a column's range compare as SQL would (uint8 < 300 is true).
// Floats compare as float64 (IEEE: NaN equals nothing). Strings compare by
// their UTF-8 bytes.
//
// Nulls follow SQL's three-valued logic: a comparison or `in` with a null
// row is unknown; `not` of unknown is unknown; `false and unknown` is false,
// `true or unknown` is true; a row is kept only when the expression is true.
// `== null` is refused: write `is null`.
//
// Errors are InvalidArgument statuses naming the position as "column N", N
// being the number of characters of the expression before the point of the
// error ("balance < " -> "expected a value after '<' at column 10"); unknown
// columns and type mismatches name the column and its type.
//
// Threads and lifetime: a Filter is an immutable value once parsed; its const
// members may be called from any number of threads at once. It holds no
// reference to the schema it was parsed against, nor to any dataset.
// evaluate() reads the buffers it is given only during the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <shelf/dataset.h>
#include <shelf/limits.h>
#include <shelf/result.h>
#include <shelf/table_builder.h>
#include <shelf/types.h>

namespace shelf {

// The raw buffers of one column of one partition, as docs/shm_layout.md lays
// them out (Arrow's: LSB-first validity bitmap, int64 string offsets). A
// view: it owns nothing.
struct ColumnBuffers {
  Type type = Type::kInt64;
  uint64_t rows = 0;
  const uint8_t* validity = nullptr;  // null: every row valid
  const int64_t* offsets = nullptr;   // string columns: rows + 1 offsets into data
  const std::byte* data = nullptr;
  uint64_t data_bytes = 0;

  static ColumnBuffers of(const ColumnView& view);
};

// The rows of one partition a filter keeps: an LSB-first bitmap of rows()
// bits (1 = kept), as Arrow lays out validity. words() may end before
// rows() / 64 when an evaluation stopped early (max_kept): the rows past
// it are not kept.
class Selection {
 public:
  uint64_t rows() const { return rows_; }
  uint64_t count() const { return count_; }
  bool contains(uint64_t row) const {
    return row / 64 < words_.size() && ((words_[row / 64] >> (row % 64)) & 1) != 0;
  }
  std::span<const uint64_t> words() const { return words_; }
  // Keeps only the first `n` kept rows (no-op when count() <= n).
  void truncate(uint64_t n);

 private:
  friend class Filter;
  uint64_t rows_ = 0;
  uint64_t count_ = 0;
  std::vector<uint64_t> words_;
};

class Filter {
 public:
  // Parses `where` (empty or blank: every row) against `schema`. `columns`
  // names the output columns in order (empty: all of them); `limit` caps the
  // rows kept over the whole dataset (nullopt: no cap). Errors:
  // InvalidArgument (syntax, unknown or repeated column, type mismatch, a
  // raw-bytes schema, over kMaxFilterBytes or kMaxFilterNesting,
  // shelf/limits.h).
  static Result<Filter> parse(const Schema& schema, std::string_view where,
                              std::span<const std::string> columns = {},
                              std::optional<uint64_t> limit = std::nullopt);

  Filter(Filter&&) noexcept;
  Filter& operator=(Filter&&) noexcept;
  ~Filter();

  // The schema that was parsed against, and the output's (the column list).
  const Schema& input_schema() const;
  const Schema& output_schema() const;
  // For each output column, its index in the input schema.
  const std::vector<size_t>& output_columns() const;
  std::optional<uint64_t> limit() const;
  // True when there is a predicate (a non-blank `where`).
  bool has_predicate() const;

  // Evaluates the predicate over one partition: `columns` holds every input
  // column, in schema order, each of `rows` rows. Ignores the limit. Cost:
  // one pass over the columns the predicate names, in cache-sized chunks;
  // no allocation but the result's bitmap. With `max_kept`, it stops after
  // the chunk (4096 rows) in which that many rows are kept: later rows are
  // left out unevaluated (what `shelf head` of a view needs). Errors:
  // InvalidArgument when `columns` does not match the input schema (count,
  // types or rows).
  Result<Selection> evaluate(std::span<const ColumnBuffers> columns, uint64_t rows,
                             uint64_t max_kept = UINT64_MAX) const;
  // The same over partition `partition` of `dataset` (its schema must equal
  // input_schema()).
  Result<Selection> evaluate(const Dataset& dataset, uint64_t partition) const;

 private:
  struct Impl;
  explicit Filter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The filtered scan: adds to `out` one partition per partition of `base`
// that keeps a row, holding the kept rows of the output columns (nulls
// included), written straight into `out`'s shared buffers: the base is read
// in place, each kept value is written once. Stops once `filter.limit()`
// rows are written. `out` must have been created with filter.output_schema()
// (partitions it holds already stay first); `filter` must have been parsed against
// base.schema(). Without a limit, partitions are evaluated and copied on up
// to one thread per core, started and joined inside the call; the requests
// to shelfd stay on the calling thread, which must be out's Client's.
// Errors: InvalidArgument (schemas), those of add_partition
// (ResourceExhausted over the daemon's limit). On error `out` holds partial
// partitions: drop it, do not publish it.
Status write_filtered(const Dataset& base, const Filter& filter, TableBuilder& out);
// The same over the partitions of `staged`, a table built but not published
// (a CSV file loaded to be filtered: `shelf publish NAME FILE.csv --where`),
// read in place; drop `staged` afterwards and its memory is given back.
// Its schema must be filter.input_schema(), every string of it written.
// Errors as above, and InvalidArgument for a table already published.
// `rows_written`, if not null, gets the number of rows added to `out`.
Status write_filtered(const TableBuilder& staged, const Filter& filter, TableBuilder& out,
                      uint64_t* rows_written = nullptr);

}  // namespace shelf
