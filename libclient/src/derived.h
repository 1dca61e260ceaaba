// Derived: the data of a Dataset computed from another, the base: the rows
// and columns a Filter keeps of it (a view, docs/views.md). Partitions are evaluated when first
// used: a partition the filter keeps whole, or cuts only at its end, is a zero-copy view of the
// base's buffers; one it thins is copied into memory of this process. With a limit, partition p
// needs the kept rows of those before it, so they are evaluated first, in order.
//
// Threads: every member may be called from any number of threads at once
// (each partition is evaluated once, under a once_flag, or with a limit
// under a mutex); what a partition holds never changes once evaluated. Lifetime: holds the base
// Dataset, and with it its lease.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <shelf/dataset.h>
#include <shelf/filter.h>
#include <shelf/view.h>

namespace shelf::internal {

class Derived {
 public:
  // `filter` must have been parsed against base.schema().
  Derived(Dataset base, Filter filter);

  const Schema& schema() const { return filter_.output_schema(); }
  uint64_t num_partitions() const { return base_.num_partitions(); }
  uint64_t num_rows(uint64_t partition) const;
  uint64_t num_rows() const;  // evaluates every partition
  uint64_t data_bytes() const;
  struct Column {
    ColumnBuffers buffers;
    uint64_t null_count = 0;
  };
  const Column& column(uint64_t partition, size_t column) const;
  const Dataset& base() const { return base_; }
  Dataset& base() { return base_; }

 private:
  struct Buffer {
    void operator()(std::byte* p) const;
  };
  struct Partition {
    std::once_flag once;     // without a limit
    bool evaluated = false;  // with one, under mu_
    uint64_t rows = 0;
    std::vector<Column> columns;
    std::vector<std::unique_ptr<std::byte, Buffer>> owned;  // what `columns` point into
  };
  const Partition& evaluated(uint64_t p) const;
  // Fills parts_[p]; `remaining` is how many rows the limit still allows.
  void evaluate(uint64_t p, uint64_t remaining) const;
  // Output column `c` of base partition `p`, its first `rows` rows, in place.
  Column in_place(uint64_t p, size_t c, uint64_t rows) const;
  // A column of no rows, of `type`, that reads nothing.
  static Column empty(Type type);
  // The rows `sel` keeps of input column `in`, copied into memory `owned` keeps.
  static Column copied(const ColumnBuffers& in, const Selection& sel,
                       std::vector<std::unique_ptr<std::byte, Buffer>>& owned);
  static std::byte* allocate(std::vector<std::unique_ptr<std::byte, Buffer>>& owned,
                             uint64_t bytes);

  Dataset base_;
  Filter filter_;
  mutable std::mutex mu_;
  mutable std::vector<Partition> parts_;  // one per base partition, sized once
  mutable uint64_t in_order_ = 0;         // with a limit: parts_[0, in_order_) are evaluated
  mutable uint64_t kept_in_order_ = 0;    // and keep this many rows
};

}  // namespace shelf::internal
