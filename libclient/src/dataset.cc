#include <algorithm>
#include <atomic>
#include <cerrno>
#include <string>
#include <sys/mman.h>
#include <vector>

#include <shelf/dataset.h>
#include <shelf/filter.h>

#include "base/check.h"
#include "libclient/src/dataset_impl.h"
#include "shm/checksum.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace shelf {

Status Dataset::Impl::open(uint64_t descriptor_offset, uint64_t descriptor_length) {
  shm::SegmentView view = client_->view();
  auto corrupt = [&](const std::string& what) {
    return Status::corruption("dataset '" + name_ + "': " + what);
  };
  const auto* bytes = view.at<std::byte>(descriptor_offset, descriptor_length);
  if (bytes == nullptr) return corrupt("its descriptor lies outside the segment");
  SHELF_ASSIGN_OR_RETURN(descriptor_, shm::DescriptorView::parse({bytes, descriptor_length},
                                                                 /*from_client=*/false));
  for (uint64_t p = 0; p < descriptor_.num_partitions(); ++p) {
    const shm::PartitionLayout& part = descriptor_.partition(p);
    if (!view.contains(part.extent_offset, part.extent_length)) {
      return corrupt("partition " + std::to_string(p) + " lies outside the segment");
    }
    const auto* header = view.at<shm::ExtentHeaderLayout>(part.extent_offset);
    if (header == nullptr) return corrupt("partition " + std::to_string(p) + " has a bad extent");
    // Acquire: pairs with the daemon's release store of kSealed in
    // Store::publish(), so the partition's bytes are visible to this reader.
    const uint32_t state = shm::load_acquire(header->state);
    if (header->magic != shm::kExtentMagic ||
        state != static_cast<uint32_t>(shm::ExtentState::kSealed)) {
      return corrupt("partition " + std::to_string(p) + " is not sealed");
    }
  }
  schema_ = descriptor_.schema();
  return Status();
}

void Dataset::Impl::release() {
  if (derived_) derived_->base().release();
  if (!leased_) return;
  leased_ = false;
  if (table_lease_) {
    client_->end_table_lease(table_lease_->slot, table_lease_->index_slot,
                             table_lease_->publish_id);
    return;
  }
  // post() is safe on any thread, and drops the frame if the connection is
  // lost (the daemon ended the lease with it).
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::ReleaseRequest{lease_id_});
  client_->post(frame);
}

Dataset::Dataset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Dataset::Dataset(Dataset&&) noexcept = default;
Dataset& Dataset::operator=(Dataset&&) noexcept = default;
Dataset::~Dataset() = default;

const std::string& Dataset::name() const { return impl_->name_; }
const Schema& Dataset::schema() const { return impl_->schema_; }
int Dataset::column_index(std::string_view name) const {
  for (size_t i = 0; i < impl_->schema_.size(); ++i) {
    if (impl_->schema_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}
uint64_t Dataset::num_partitions() const {
  if (impl_->is_graph()) return 1;
  if (impl_->derived_) return impl_->derived_->num_partitions();
  return impl_->descriptor_.num_partitions();
}
uint64_t Dataset::num_rows() const {
  if (impl_->is_graph()) return impl_->definition_->graph.size();
  if (impl_->derived_) return impl_->derived_->num_rows();
  return impl_->descriptor_.header().num_rows;
}
uint64_t Dataset::num_rows(uint64_t partition) const {
  SHELF_CHECK(partition < num_partitions());
  if (impl_->is_graph()) return num_rows();
  if (impl_->derived_) return impl_->derived_->num_rows(partition);
  return impl_->descriptor_.partition(partition).num_rows;
}
uint64_t Dataset::data_bytes() const {
  if (impl_->is_graph()) return num_rows();
  if (impl_->derived_) return impl_->derived_->data_bytes();
  return impl_->descriptor_.header().data_bytes;
}
int64_t Dataset::created_ns() const {
  if (impl_->definition_) return impl_->origin_.created_ns;
  return impl_->descriptor_.header().created_ns;
}
uint32_t Dataset::publisher_uid() const {
  if (impl_->definition_) return impl_->origin_.publisher_uid;
  return impl_->descriptor_.header().publisher_uid;
}
uint32_t Dataset::publisher_pid() const {
  if (impl_->definition_) return impl_->origin_.publisher_pid;
  return impl_->descriptor_.header().publisher_pid;
}
bool Dataset::is_bytes() const { return is_bytes_schema(impl_->schema_); }
const std::optional<ViewDefinition>& Dataset::view_definition() const { return impl_->definition_; }

ColumnView Dataset::column(uint64_t partition, size_t column) const {
  SHELF_CHECK(partition < num_partitions() && column < impl_->schema_.size());
  if (impl_->is_graph()) {
    const std::string& graph = impl_->definition_->graph;
    ColumnView v;
    v.type_ = Type::kBytes;
    v.rows_ = graph.size();
    v.data_ = reinterpret_cast<const std::byte*>(graph.data());
    v.data_bytes_ = graph.size();
    return v;
  }
  if (impl_->derived_) {
    const internal::Derived::Column& c = impl_->derived_->column(partition, column);
    ColumnView v;
    v.type_ = c.buffers.type;
    v.rows_ = c.buffers.rows;
    v.null_count_ = c.null_count;
    v.validity_ = c.buffers.validity;
    v.offsets_ = c.buffers.offsets;
    v.data_ = c.buffers.data;
    v.data_bytes_ = c.buffers.data_bytes;
    return v;
  }
  const shm::ChunkLayout& chunk =
      impl_->descriptor_.chunk(partition, static_cast<uint32_t>(column));
  const std::byte* base = impl_->client_->view().base();
  ColumnView v;
  v.type_ = impl_->schema_[column].type;
  v.rows_ = impl_->descriptor_.partition(partition).num_rows;
  v.null_count_ = chunk.null_count;
  // The descriptor was validated: every buffer lies inside its extent.
  if (chunk.validity.length > 0) {
    v.validity_ = reinterpret_cast<const uint8_t*>(base + chunk.validity.offset);
  }
  if (chunk.offsets.length > 0) {
    v.offsets_ = reinterpret_cast<const int64_t*>(base + chunk.offsets.offset);
  }
  v.data_ = base + chunk.data.offset;
  v.data_bytes_ = chunk.data.length;
  return v;
}

std::span<const std::byte> Dataset::bytes(uint64_t partition) const {
  if (!is_bytes()) return {};
  return column(partition, 0).data();
}

uint64_t Dataset::checksum(uint64_t partition, size_t column, int buffer) const {
  SHELF_CHECK(partition < num_partitions() && column < impl_->schema_.size());
  if (impl_->definition_) return 0;  // a view's: no checksum recorded
  const shm::ChunkLayout& c = impl_->descriptor_.chunk(partition, static_cast<uint32_t>(column));
  return buffer == 0 ? c.validity.xxh3 : buffer == 1 ? c.offsets.xxh3 : c.data.xxh3;
}

Status Dataset::verify() const {
  if (impl_->is_graph()) return Status();  // parse_view checked the definition's XXH3
  if (impl_->derived_) return impl_->derived_->base().verify();
  const std::byte* base = impl_->client_->view().base();
  if (auto bad = shm::first_checksum_mismatch(impl_->descriptor_, base)) {
    return Status::corruption("dataset '" + name() + "' partition " +
                              std::to_string(bad->partition) + " column '" +
                              impl_->schema_[bad->column].name +
                              "': checksum mismatch; its bytes changed after publishing");
  }
  return Status();
}

Status Dataset::prefault(unsigned threads) const {
  if (impl_->is_graph()) return Status();  // in this process's memory already
  if (impl_->derived_) return impl_->derived_->base().prefault(threads);
  std::vector<shm::MappedRange> extents;
  // The mapping is read-only; madvise only reads through it.
  auto* base = const_cast<std::byte*>(impl_->client_->view().base());
  for (uint64_t p = 0; p < num_partitions(); ++p) {
    const shm::PartitionLayout& part = impl_->descriptor_.partition(p);
    extents.push_back({base + part.extent_offset, part.extent_length});
  }
  const int err =
      shm::madvise_in_parallel(extents, MADV_POPULATE_READ, std::max(1u, std::min(threads, 64u)));
  if (err == EINVAL) return Status();  // kernel without MADV_POPULATE_READ: nothing to gain
  if (err != 0) return Status::from_errno("prefault dataset '" + name() + "'", err);
  return Status();
}

void Dataset::release() { impl_->release(); }

std::string_view ColumnView::string(uint64_t i) const {
  if (offsets_ == nullptr || i >= rows_ || !is_valid(i)) return {};
  const int64_t begin = offsets_[i], end = offsets_[i + 1];
  if (begin < 0 || end < begin || static_cast<uint64_t>(end) > data_bytes_) return {};
  return {reinterpret_cast<const char*>(data_) + begin, static_cast<size_t>(end - begin)};
}

}  // namespace shelf
