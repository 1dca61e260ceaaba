#include "shm/lease_table.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace shelf::shm {

namespace {

// The seals a table must carry: it can neither shrink (the daemon's scan
// would fault) nor grow, and no one can lift them.
constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

Status exhausted(std::string_view what, int err) {
  return Status::resource_exhausted("cannot make a lease table (" + std::string(what) + ": " +
                                    std::strerror(err) + ")");
}

}  // namespace

size_t lease_table_bytes(uint32_t slots) {
  return align_up(sizeof(LeaseTableHeaderLayout) + uint64_t{slots} * sizeof(uint64_t), kPageSize);
}

LeaseTable::LeaseTable(UniqueFd fd, std::byte* base, size_t bytes)
    : fd_(std::move(fd)),
      base_(base),
      bytes_(bytes),
      header_(reinterpret_cast<LeaseTableHeaderLayout*>(base)),
      slots_(header_->slots),
      mapped_by_(::getpid()) {}

LeaseTable::LeaseTable(LeaseTable&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      header_(std::exchange(other.header_, nullptr)),
      slots_(std::exchange(other.slots_, 0)),
      mapped_by_(other.mapped_by_) {}

LeaseTable& LeaseTable::operator=(LeaseTable&& other) noexcept {
  if (this != &other) {
    unmap();
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    header_ = std::exchange(other.header_, nullptr);
    slots_ = std::exchange(other.slots_, 0);
    mapped_by_ = other.mapped_by_;
  }
  return *this;
}

LeaseTable::~LeaseTable() { unmap(); }

void LeaseTable::unmap() {
  // In a forked child the range is not mapped (MADV_DONTFORK) and may hold
  // a mapping of the child's own by now, such as its own lease table.
  if (base_ != nullptr && ::getpid() == mapped_by_) ::munmap(base_, bytes_);
  base_ = nullptr;
}

Result<LeaseTable> LeaseTable::create(uint32_t slots, uint32_t owner_pid) {
  const size_t bytes = lease_table_bytes(slots);
  UniqueFd fd(::memfd_create("shelf-leases", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return exhausted("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return exhausted("ftruncate", errno);
  if (::fcntl(fd.get(), F_ADD_SEALS, kSeals) != 0) return exhausted("seal", errno);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return exhausted("mmap", errno);
  auto* header = static_cast<LeaseTableHeaderLayout*>(base);
  header->version = kLeaseTableVersion;
  header->slots = slots;
  header->owner_pid = owner_pid;
  // Release: the fields before the magic, for a client that checks it.
  std::atomic_ref<uint64_t>(header->magic).store(kLeaseTableMagic, std::memory_order_release);
  return LeaseTable(std::move(fd), static_cast<std::byte*>(base), bytes);
}

Result<LeaseTable> LeaseTable::attach(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::from_errno("fstat of the lease table", errno);
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  const auto bytes = static_cast<size_t>(st.st_size);
  if (seals < 0 || (seals & kSeals) != kSeals || bytes < lease_table_bytes(0) ||
      bytes % kPageSize != 0) {
    return Status::corruption("shelfd sent a lease table that is not sealed or of a bad size");
  }
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return Status::from_errno("mmap of the lease table", errno);
  // A forked child must never write into its parent's leases: it does not
  // get the mapping at all.
  (void)::madvise(base, bytes, MADV_DONTFORK);
  const auto* header = static_cast<const LeaseTableHeaderLayout*>(base);
  if (load_acquire(header->magic) != kLeaseTableMagic || header->version != kLeaseTableVersion ||
      lease_table_bytes(header->slots) != bytes) {
    ::munmap(base, bytes);
    return Status::corruption("shelfd sent a lease table of another version or size");
  }
  LeaseTable table(UniqueFd(), static_cast<std::byte*>(base), bytes);
  return table;  // fd closes here: the mapping keeps the memfd alive
}

void LeaseTable::raise_high_water(uint32_t n) {
  std::atomic_ref<uint64_t> hw(header_->high_water);
  if (hw.load(std::memory_order_relaxed) < n) hw.store(n, std::memory_order_relaxed);
}

void LeaseTable::set(uint32_t slot, uint64_t publish_id) {
  std::atomic_ref<uint64_t>(slot_words()[slot]).store(publish_id, std::memory_order_release);
}

void LeaseTable::mark_listing(uint32_t slot, uint64_t index_seq) {
  set(slot, kListingMark | index_seq);
}

void LeaseTable::clear(uint32_t slot) {
  std::atomic_ref<uint64_t>(slot_words()[slot]).store(0, std::memory_order_release);
}

uint32_t LeaseTable::scan_end() const {
  const uint64_t hw = load_acquire(header_->high_water);
  return hw < slots_ ? static_cast<uint32_t>(hw) : slots_;
}

bool LeaseTable::keeps(uint64_t publish_id, uint64_t retired_seq) const {
  const uint64_t* words = slot_words();
  for (uint32_t i = 0, end = scan_end(); i < end; ++i) {
    const uint64_t word = load_acquire(words[i]);
    if (word == publish_id) return true;
    if ((word & kListingMark) != 0 && (word & ~kListingMark) < retired_seq) return true;
  }
  return false;
}

uint64_t LeaseTable::oldest_listing() const {
  const uint64_t* words = slot_words();
  uint64_t oldest = UINT64_MAX;
  for (uint32_t i = 0, end = scan_end(); i < end; ++i) {
    const uint64_t word = load_acquire(words[i]);
    if ((word & kListingMark) != 0) oldest = std::min(oldest, word & ~kListingMark);
  }
  return oldest;
}

}  // namespace shelf::shm
