// Reading CSV files into a shelf table, for `shelf publish`.
//
// Two passes over the bytes keep memory flat whatever their size: the first
// (plan_csv) checks every row, infers the column types and measures each
// partition; the second (write_csv) parses again and writes the values
// straight into the partitions' shared memory. Both passes are parallel:
// the inputs are cut into chunks of CsvOptions::chunk_bytes, parsed by
// CsvOptions::threads threads at once (files in parallel, and a large file
// in pieces). A chunk starts after the first CR or LF at or past its nominal
// offset; the previous chunk, which parsed up to the first record that
// starts at or past that offset, confirms it (a chunk that started inside a
// quoted field with a newline is parsed again from the right place), so the
// result never depends on the chunk size or the number of threads.
// Tokenizing is tools/csv_tokenizer.h (RFC 4180: quoted fields, doubled
// quotes, embedded separators and newlines). Inputs are tools/csv_source.h
// (files read in place; pipes, stdin and gzip/zstd spooled once).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <shelf/limits.h>
#include <shelf/result.h>
#include <shelf/table_builder.h>
#include <shelf/types.h>

namespace shelf::tools {

class CsvSource;
class Progress;

struct CsvOptions {
  // Column name -> type, overriding inference ("--schema balance:int64").
  std::map<std::string, Type> forced_types;
  // 0: one partition per file; else a partition every N rows of each file.
  uint64_t partition_rows = 0;
  // Field delimiter (',' or '\t' for TSV; not '"', CR or LF).
  char delimiter = ',';
  // False: the first record is data, and `names` names the columns.
  bool header = true;
  std::vector<std::string> names;
  // Unquoted field texts that are null besides the empty field (--null).
  std::vector<std::string> null_values;
  // Parsing threads; 0: one per core.
  unsigned threads = 0;
  // Bytes per parsing chunk (tests make it tiny to put splits everywhere).
  uint64_t chunk_bytes = kCsvChunkBytes;  // shelf/limits.h
  // Where to count bytes and rows done; may be null.
  Progress* progress = nullptr;
};

// A piece of one input parsed as a unit: whole records [begin, end).
struct CsvChunk {
  size_t file = 0;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t first_row = 0;  // data row index within the file of its first record
  uint64_t rows = 0;
  uint64_t first_line = 0;  // line of the file on which `begin` lies
  uint64_t xxh3 = 0;        // of its bytes as pass 1 read them
};

struct CsvPartition {
  size_t file = 0;         // index into CsvPlan::files
  uint64_t first_row = 0;  // data row index within the file (0 = first after the header)
  uint64_t rows = 0;
  std::vector<uint64_t> string_bytes;  // per string column, schema order
};

struct CsvPlan {
  CsvPlan();
  ~CsvPlan();
  CsvPlan(CsvPlan&&) noexcept;
  CsvPlan& operator=(CsvPlan&&) noexcept;

  std::vector<std::string> files;  // names for messages ("<stdin>" for "-")
  Schema schema;
  std::vector<CsvPartition> partitions;
  uint64_t total_rows = 0;
  // XXH3 of each file's bytes as pass 1 read them: pass 2 fails unless it
  // reads the same bytes.
  std::vector<uint64_t> file_xxh3;  // of each file's header bytes
  std::vector<CsvChunk> chunks;     // every input's data records, in order
  CsvOptions options;
  std::vector<std::unique_ptr<CsvSource>> sources;
  // What the user should know but that is not an error (a column kept as
  // strings because float64 would lose digits).
  std::vector<std::string> warnings;
};

// Parses a --schema text "name:type,name:type". Errors name the bad part,
// and a column named twice.
Result<std::map<std::string, Type>> parse_schema_option(std::string_view text);

// Pass 1. Every file needs the same header row. Types are inferred per column
// over all files: bool (true/false), else int64, else uint64, else float64,
// else string; an empty unquoted field (or a --null one) is null; a column
// with only nulls is a string. A column that would be float64 although one
// of its integers cannot be held exactly by a double (beyond int64 and
// mixed with negatives or decimals, or beyond uint64) stays a string, with a
// warning in CsvPlan::warnings: never digits lost silently. A UTF-8 BOM
// before the header is skipped. "-" is standard input.
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
// The same, counting bytes and rows into `progress` (may be null).
Status write_csv(const CsvPlan& plan, TableBuilder& table, Progress* progress);
// The same for input `file` of plan.files only: its partitions, in order
// (publish --where loads one file at a time, to filter it).
Status write_csv_file(const CsvPlan& plan, size_t file, TableBuilder& table, Progress* progress);

// Parses one value as `type` ("2024-01-31", "2024-01-31T12:00:00.5Z" and
// integer nanoseconds for timestamps). False when it does not fit. Floating
// point: a number beyond the type's range is +-inf, as "inf" is, and one
// below its smallest is 0 (or a subnormal), like strtod.
bool parse_int64(std::string_view text, int64_t* out);
bool parse_float64(std::string_view text, double* out);
bool parse_bool(std::string_view text, bool* out);
bool parse_timestamp(std::string_view text, int64_t* out_ns);

}  // namespace shelf::tools
