// Dataset: a published dataset as a reader sees it: zero-copy views of its
// buffers in the read-only mapping of the segment, kept valid by a lease.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <shelf/result.h>
#include <shelf/types.h>
#include <shelf/view.h>

namespace shelf {

class Client;

// One column of one partition. A view: it holds no lease itself, so it is
// valid only while the Dataset it came from lives.
class ColumnView {
 public:
  Type type() const { return type_; }
  uint64_t length() const { return rows_; }
  uint64_t null_count() const { return null_count_; }
  // True when row `i` holds a value (no validity bitmap: always true).
  bool is_valid(uint64_t i) const {
    return validity_ == nullptr || ((validity_[i / 8] >> (i % 8)) & 1) != 0;
  }
  // The values of a fixed-width column, typed. V must match the column's type
  // (int64_t for int64 and timestamp, uint8_t for bool and uint8, double for
  // float64...); a mismatch returns an empty span. Null slots hold 0 (NaN for floats).
  template <class V>
  std::span<const V> values() const {
    if (!can_view_as<V>(type_)) return {};
    return {reinterpret_cast<const V*>(data_), static_cast<size_t>(rows_)};
  }
  // Row `i` of a string column; empty for a null. Bounds are checked against
  // the data buffer, so a damaged offset yields an empty view, never a wild read.
  std::string_view string(uint64_t i) const;
  // The raw buffers, as Arrow lays them out (empty spans where absent).
  std::span<const uint8_t> validity_bitmap() const {
    return {validity_, validity_ ? static_cast<size_t>((rows_ + 7) / 8) : 0};
  }
  std::span<const int64_t> string_offsets() const {
    return {offsets_, offsets_ ? static_cast<size_t>(rows_ + 1) : 0};
  }
  std::span<const std::byte> data() const { return {data_, static_cast<size_t>(data_bytes_)}; }

 private:
  friend class Dataset;
  Type type_ = Type::kInt64;
  uint64_t rows_ = 0;
  uint64_t null_count_ = 0;
  const uint8_t* validity_ = nullptr;
  const int64_t* offsets_ = nullptr;
  const std::byte* data_ = nullptr;
  uint64_t data_bytes_ = 0;
};

// A published dataset, read-only, zero-copy. Move-only. Holding it holds a
// lease: the daemon keeps its memory even after it is unpublished, until this
// object is destroyed (or release()d) or the process dies.
//
// Writing through its views is impossible: the segment is mapped PROT_READ,
// so a write faults (SIGSEGV).
//
// Threads: the const members may be used by any number of threads at once.
// The destructor and release() may run on any thread, also while another
// thread uses the Client it came from (see "Threads" in client.h); they must
// not race with other uses of this same Dataset.
class Dataset {
 public:
  Dataset(Dataset&&) noexcept;
  Dataset& operator=(Dataset&&) noexcept;
  ~Dataset();

  const std::string& name() const;
  const Schema& schema() const;
  // Index of the column called `name`, or -1.
  int column_index(std::string_view name) const;
  uint64_t num_partitions() const;
  uint64_t num_rows() const;
  uint64_t num_rows(uint64_t partition) const;
  // Sum of the lengths of every buffer.
  uint64_t data_bytes() const;
  int64_t created_ns() const;
  uint32_t publisher_uid() const;
  uint32_t publisher_pid() const;
  // True for a raw-bytes dataset (schema is bytes_schema()).
  bool is_bytes() const;
  // Set when this is a view (shelf/view.h): its definition. Its data is
  // then computed from the base it names (docs/views.md): created_ns() and
  // the publisher are the view's; checksum() is 0; verify() and prefault()
  // act on the base. A view of a Dask graph is a raw-bytes dataset of one
  // partition, the pickle (ViewDefinition::graph).
  const std::optional<ViewDefinition>& view_definition() const;

  // Column `column` of partition `partition`; both must be in range (checked: aborts).
  ColumnView column(uint64_t partition, size_t column) const;
  // The payload of a raw-bytes partition.
  std::span<const std::byte> bytes(uint64_t partition) const;
  // The XXH3-64 recorded for a buffer: 0 validity, 1 offsets, 2 data.
  uint64_t checksum(uint64_t partition, size_t column, int buffer) const;

  // Recomputes the XXH3 of every buffer (one read pass). Corruption names
  // the partition and column whose bytes changed.
  Status verify() const;
  // Maps every page of the dataset into this process now, on `threads`
  // threads (MADV_POPULATE_READ), instead of one page fault per 4 KiB on the
  // first scan. Measured on 2 cores: a first scan of 1 GiB takes ~104 ms;
  // prefault(2) ~38 ms, then the scan runs at the warm speed (~36 ms). Worth it
  // before scanning most of a large dataset once; a no-op on kernels before
  // 5.14. Errors: those of madvise(2) as from_errno maps them (IoError,
  // ResourceExhausted for ENOMEM).
  Status prefault(unsigned threads = 2) const;
  // Ends the lease now (the destructor does it otherwise); the views must not
  // be used afterwards. Sends a Release without waiting for its reply.
  void release();

  // The library's own (libclient/src/dataset_impl.h); users get Datasets
  // from a Client.
  class Impl;
  explicit Dataset(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace shelf
