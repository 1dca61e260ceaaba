// Dataset::Impl: a lease and a validated descriptor in the read-only mapping,
// or, for a view, the Derived data computed from a base Dataset, which holds
// the lease.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <shelf/dataset.h>

#include "libclient/src/client_impl.h"
#include "libclient/src/derived.h"
#include "shm/descriptor.h"

namespace shelf {

class Dataset::Impl {
 public:
  // A lease in the connection's lease table (docs/leases.md).
  struct TableLease {
    uint32_t slot = 0;        // in the table
    uint32_t index_slot = 0;  // the dataset's index entry
    uint64_t publish_id = 0;
  };
  // A lease the daemon took (Get): lease_id is its.
  Impl(std::shared_ptr<Client::Impl> client, std::string name, uint64_t lease_id)
      : client_(std::move(client)), name_(std::move(name)), lease_id_(lease_id) {}
  Impl(std::shared_ptr<Client::Impl> client, std::string name, TableLease lease)
      : client_(std::move(client)), name_(std::move(name)), table_lease_(lease) {}
  // A view: derived data, no lease of its own.
  struct Origin {
    int64_t created_ns = 0;
    uint32_t publisher_uid = 0;
    uint32_t publisher_pid = 0;
  };
  Impl(std::shared_ptr<Client::Impl> client, std::string name,
       std::unique_ptr<internal::Derived> derived, Origin origin,
       std::optional<ViewDefinition> definition)
      : client_(std::move(client)),
        name_(std::move(name)),
        leased_(false),
        derived_(std::move(derived)),
        origin_(origin),
        definition_(std::move(definition)) {
    schema_ = derived_->schema();
  }
  // A view of a Dask graph: its pickle, copied from the definition, as one
  // raw-bytes partition; no lease.
  Impl(std::shared_ptr<Client::Impl> client, std::string name, Origin origin,
       ViewDefinition definition)
      : client_(std::move(client)),
        name_(std::move(name)),
        leased_(false),
        origin_(origin),
        definition_(std::move(definition)) {
    schema_ = bytes_schema();
  }
  ~Impl() { release(); }

  // Validates the descriptor at [offset, offset+length) of the segment and
  // checks that every partition is sealed. Errors: Corruption.
  Status open(uint64_t descriptor_offset, uint64_t descriptor_length);
  void release();

  std::shared_ptr<Client::Impl> client_;
  std::string name_;
  uint64_t lease_id_ = 0;                  // a round trip's lease, or
  std::optional<TableLease> table_lease_;  // one in the lease table
  bool leased_ = true;
  shm::DescriptorView descriptor_;
  Schema schema_;
  std::unique_ptr<internal::Derived> derived_;  // set: the data is computed, not the segment's
  Origin origin_;                               // with derived_
  std::optional<ViewDefinition> definition_;

  // A view of a Dask graph: definition_->graph is the data.
  bool is_graph() const { return definition_ && !definition_->graph.empty(); }
};

}  // namespace shelf
