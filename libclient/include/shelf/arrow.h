// Arrow's C Data Interface and C Stream Interface for shelf datasets: hands a
// Dataset's buffers to pyarrow, polars, DuckDB or any other Arrow consumer
// without a copy and without an Arrow dependency.
//
// The three structs below are the spec's, verbatim in meaning and layout
// (https://arrow.apache.org/docs/format/CDataInterface.html and
// .../CStreamInterface.html), under the spec's guard macros so that another
// project's copy of them and this one can be included together.
//
// What an export looks like:
//   - a partition is one struct array ("+s") with one child per column, its
//     length the partition's rows, no nulls of its own;
//   - int8..uint64, float32/64 are "c s i l C S I L f g"; string is large_utf8
//     ("U": shelf's offsets are int64, docs/shm_layout.md); timestamp is "tsn:UTC"
//     (shelf's are int64 nanoseconds since the epoch, UTC);
//   - the validity bitmap, string offsets and data are the buffers in the
//     segment itself: no copy. Exception: bool. shelf stores one byte per bool
//     (so numpy can view it), Arrow one bit: each export of a bool column
//     packs its bits into a buffer of its own (rows / 8 bytes, one pass), freed
//     by that array's release. ArrowExportOptions::bools_as_uint8 exports
//     them as uint8 ("C") instead, without a copy.
//   - every child field is marked nullable; null_count is shelf's own count.
//   - raw-bytes datasets are not tables: exporting one is InvalidArgument.
//
// Lifetime: an exported ArrowArray (and each of its children, which a
// consumer may move out and release on its own, as the spec allows) holds a
// reference to the Dataset, and so its lease: the daemon keeps the memory,
// even after an unpublish, until the last release. A stream holds it until
// the stream and every array it gave out are released. Schemas hold nothing
// of the Dataset.
//
// Threads: an export may be released on any thread (the Dataset's release is
// thread-safe, see dataset.h). A stream, as the spec says, is used by one
// thread at a time.
#pragma once

#include <cstdint>
#include <memory>

#include <shelf/dataset.h>
#include <shelf/status.h>

extern "C" {

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
  // Array type description
  const char* format;
  const char* name;
  const char* metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema** children;
  struct ArrowSchema* dictionary;

  // Release callback
  void (*release)(struct ArrowSchema*);
  // Opaque producer-specific data
  void* private_data;
};

struct ArrowArray {
  // Array data description
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void** buffers;
  struct ArrowArray** children;
  struct ArrowArray* dictionary;

  // Release callback
  void (*release)(struct ArrowArray*);
  // Opaque producer-specific data
  void* private_data;
};

#endif  // ARROW_C_DATA_INTERFACE

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
  // Callbacks providing stream functionality
  int (*get_schema)(struct ArrowArrayStream*, struct ArrowSchema* out);
  int (*get_next)(struct ArrowArrayStream*, struct ArrowArray* out);
  const char* (*get_last_error)(struct ArrowArrayStream*);

  // Release callback
  void (*release)(struct ArrowArrayStream*);

  // Opaque producer-specific data
  void* private_data;
};

#endif  // ARROW_C_STREAM_INTERFACE

}  // extern "C"

namespace shelf {

struct ArrowExportOptions {
  // false: bool columns are Arrow bools ("b"), bit-packed per export (a copy
  // of rows / 8 bytes). true: uint8 ("C"), shelf's own bytes, no copy.
  bool bools_as_uint8 = false;
};

// The dataset's schema: a struct ("+s") with one nullable child per column.
// On success *out is the consumer's to release. Errors: InvalidArgument (a
// raw-bytes dataset). On error *out is untouched.
Status export_schema(const Dataset& dataset, ArrowSchema* out,
                     const ArrowExportOptions& options = {});

// Partition `partition` as a struct array of its columns (see above), which
// holds the dataset's lease until released. Errors: InvalidArgument (a
// raw-bytes dataset, a partition out of range). On error *out is untouched.
Status export_partition(std::shared_ptr<const Dataset> dataset, uint64_t partition, ArrowArray* out,
                        const ArrowExportOptions& options = {});

// The whole dataset as one array: only a dataset of one partition can be one
// without a copy. Errors: InvalidArgument naming the number of partitions
// (use export_stream) and those of export_partition.
Status export_array(std::shared_ptr<const Dataset> dataset, ArrowArray* out,
                    const ArrowExportOptions& options = {});

// A stream of every partition in order, one struct array each; get_schema
// gives export_schema()'s. Holds the lease until the stream and its arrays are
// released. Errors: InvalidArgument (a raw-bytes dataset). On error *out is
// untouched.
Status export_stream(std::shared_ptr<const Dataset> dataset, ArrowArrayStream* out,
                     const ArrowExportOptions& options = {});

}  // namespace shelf
