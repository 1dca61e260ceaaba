// Dataset::Impl: a lease and a validated descriptor in the read-only mapping.
#pragma once

#include <memory>
#include <string>

#include <shelf/dataset.h>

#include "libclient/src/client_impl.h"
#include "shm/descriptor.h"

namespace shelf {

class Dataset::Impl {
 public:
  Impl(std::shared_ptr<Client::Impl> client, std::string name, uint64_t lease_id)
      : client_(std::move(client)), name_(std::move(name)), lease_id_(lease_id) {}
  ~Impl() { release(); }

  // Validates the descriptor at [offset, offset+length) of the segment and
  // checks that every partition is sealed. Errors: Corruption.
  Status open(uint64_t descriptor_offset, uint64_t descriptor_length);
  void release();

  std::shared_ptr<Client::Impl> client_;
  std::string name_;
  uint64_t lease_id_ = 0;
  bool leased_ = true;
  shm::DescriptorView descriptor_;
  Schema schema_;
};

}  // namespace shelf
