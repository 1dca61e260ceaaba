// Reading CSV files into a shelf table, for `shelf publish`.
//
// Two passes over the files keep memory flat whatever their size: the first
// (plan_csv) checks every row, infers the column types and measures each
// partition; the second (write_csv) parses again and writes the values
// straight into the partitions' shared memory. Parsing is libcsv's (RFC
// 4180: quoted fields, doubled quotes, embedded separators and newlines).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <shelf/result.h>
#include <shelf/table_builder.h>
#include <shelf/types.h>

namespace shelf::tools {

struct CsvOptions {
  // Column name -> type, overriding inference ("--schema balance:int64").
  std::map<std::string, Type> forced_types;
  // 0: one partition per file; else a partition every N rows of each file.
  uint64_t partition_rows = 0;
};

struct CsvPartition {
  size_t file = 0;         // index into CsvPlan::files
  uint64_t first_row = 0;  // data row index within the file (0 = first after the header)
  uint64_t rows = 0;
  std::vector<uint64_t> string_bytes;  // per string column, schema order
};

struct CsvPlan {
  std::vector<std::string> files;
  Schema schema;
  std::vector<CsvPartition> partitions;
  uint64_t total_rows = 0;
  // XXH3 of each file's bytes as pass 1 read them: pass 2 fails unless it
  // reads the same bytes.
  std::vector<uint64_t> file_xxh3;
};

// Parses a --schema text "name:type,name:type". Errors name the bad part.
Result<std::map<std::string, Type>> parse_schema_option(std::string_view text);

// Pass 1. Every file needs the same header row. Types are inferred per column
// over all files: bool (true/false), else int64, else float64, else string;
// an empty unquoted field is null; a column with only nulls is a string.
// Errors (InvalidArgument) say FILE:LINE and what is wrong: a malformed
// quote, a row with the wrong number of fields, invalid UTF-8, a value that
// does not fit a --schema type, an unknown --schema column.
Result<CsvPlan> plan_csv(const std::vector<std::string>& files, const CsvOptions& options);

// Pass 2: adds every partition of `plan` to `table` (whose schema must be
// plan.schema) and fills it. Fails (InvalidArgument, "FILE changed while it
// was read") if a file's bytes are not the ones plan_csv read; a value that
// no longer parses as its column's type fails at once with FILE:LINE, the
// column and the value. Only an empty unquoted field is ever a null. On
// failure `table` holds partial partitions: drop it, do not publish it.
Status write_csv(const CsvPlan& plan, TableBuilder& table);

// Parses one value as `type` ("2024-01-31", "2024-01-31T12:00:00.5Z" and
// integer nanoseconds for timestamps). False when it does not fit.
bool parse_int64(std::string_view text, int64_t* out);
bool parse_float64(std::string_view text, double* out);
bool parse_bool(std::string_view text, bool* out);
bool parse_timestamp(std::string_view text, int64_t* out_ns);

}  // namespace shelf::tools
