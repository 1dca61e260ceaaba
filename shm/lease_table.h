// A lease table: the slots in which one client records the datasets it is
// reading (by publish id), so that it takes and ends a lease with no message
// to the daemon. docs/leases.md states the protocol and why no reader can
// read freed memory; the functions here are its steps.
//
// One table per connection, in a memfd that shelfd makes and sends to that
// client alone (SCM_RIGHTS): no other process can read or change it. The
// memfd is sealed against resizing, so a client cannot make the daemon's
// scan fault by shrinking it, and it is not inherited by a forked child
// (MADV_DONTFORK), which must never touch its parent's leases.
//
// Writers: the client's threads; a slot is written only by the thread that
// was handed it (the client's allocator, under its lock, also raises the
// high-water mark). Reader: the daemon's thread, which trusts nothing in it:
// it reads words within the table it made, and a garbage id can only keep a
// dataset from being freed, as a lease taken by a round trip would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/types.h>
#include <type_traits>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "shm/layout.h"

namespace shelf::shm {

// "SHELFLSE" in little-endian ASCII.
inline constexpr uint64_t kLeaseTableMagic = 0x45534c464c454853ULL;
// Bump on any change to LeaseTableHeaderLayout or to the meaning of a slot.
// 2: a slot may hold a listing mark (kListingMark).
inline constexpr uint32_t kLeaseTableVersion = 2;

// A slot holds 0 (free), a publish id (a lease of that dataset), or
// kListingMark | seq: a list of the index as of its index_seq `seq` is
// reading the descriptors that index names (docs/leases.md, "Lists").
// Publish ids count up from 1 and never reach this bit.
inline constexpr uint64_t kListingMark = uint64_t{1} << 63;

// The first 64 bytes of a table; the slots (u64 publish ids, 0 = free)
// follow. Written by the daemon at creation, then only high_water changes.
struct alignas(64) LeaseTableHeaderLayout {
  uint64_t magic;      // kLeaseTableMagic
  uint32_t version;    // kLeaseTableVersion
  uint32_t slots;      // number of slots after the header
  uint32_t owner_pid;  // the client process the table was made for
  uint32_t reserved0;
  // The client's: slots at or above it have never been used. Only grows.
  uint64_t high_water;
  uint64_t reserved[4];
};
static_assert(std::is_trivially_copyable_v<LeaseTableHeaderLayout> &&
              sizeof(LeaseTableHeaderLayout) == 64);

// A mapping of one lease table. Move-only; unmaps itself.
class LeaseTable {
 public:
  // The daemon's: a new table of `slots` slots for the client `owner_pid`,
  // in a sealed memfd, mapped read-write. fd() is the memfd to send.
  // Errors: ResourceExhausted (out of descriptors or memory).
  static Result<LeaseTable> create(uint32_t slots, uint32_t owner_pid);
  // The client's: maps the table in `fd` (taken over, closed once mapped),
  // which must be one create() made: its size, magic and version are
  // checked. Errors: Corruption naming what is wrong.
  static Result<LeaseTable> attach(UniqueFd fd);

  LeaseTable(LeaseTable&& other) noexcept;
  LeaseTable& operator=(LeaseTable&& other) noexcept;
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;
  ~LeaseTable();

  // The memfd (the daemon's table, once): the daemon sends it to the client
  // and then closes it; the mapping stays.
  UniqueFd take_fd() { return std::move(fd_); }
  // As made (the daemon's) or as checked at attach (the client's); never
  // read again from the shared header, which the client can write.
  uint32_t slots() const { return slots_; }

  // ---- The client's side ----
  // Lets the daemon's scans cover slots [0, n). Called by the one thread
  // that hands slots out, under its lock, before the slot is set.
  void raise_high_water(uint32_t n);
  // Step 1 of taking a lease: `slot` (< slots()) names `publish_id`. The
  // caller's seq_cst fence orders it before the re-check (docs/leases.md);
  // release, so that a daemon that reads the new id also sees what the
  // slot's previous holder did before its clear() (slots are reused).
  void set(uint32_t slot, uint64_t publish_id);
  // Step 1 of a list that reads descriptors: `slot` marks a list of the
  // index as of `index_seq`. As set(); the caller fences before it reads.
  void mark_listing(uint32_t slot, uint64_t index_seq);
  // Ends the lease or the list in `slot`. Release: every read of the
  // dataset made before it happens before a daemon scan that finds the
  // slot empty.
  void clear(uint32_t slot);

  // ---- The daemon's side ----
  // True when a slot below the high-water mark names `publish_id` (> 0),
  // or marks a list of an index older than `retired_seq`: what keeps a
  // dataset that left the index at `retired_seq`. One pass; acquire loads,
  // pairing with clear(); the caller fences first.
  bool keeps(uint64_t publish_id, uint64_t retired_seq) const;
  // keeps() of a lease alone.
  bool holds(uint64_t publish_id) const { return keeps(publish_id, 0); }
  // The lowest index_seq a slot below the high-water mark marks a list of,
  // or UINT64_MAX when none does. Loads as holds().
  uint64_t oldest_listing() const;
  // Calls visit(publish_id) for each slot that holds a lease, for status.
  template <class Visit>
  void for_each_held(Visit visit) const {
    const uint64_t* words = slot_words();
    for (uint32_t i = 0, end = scan_end(); i < end; ++i) {
      const uint64_t id = load_acquire(words[i]);
      if (id != 0 && (id & kListingMark) == 0) visit(id);
    }
  }

 private:
  LeaseTable(UniqueFd fd, std::byte* base, size_t bytes);
  uint64_t* slot_words() const { return reinterpret_cast<uint64_t*>(base_ + sizeof *header_); }
  // The client's high-water mark, bounded by the table's own size.
  uint32_t scan_end() const;
  // Unmaps, unless this is a forked child (which has no such mapping).
  void unmap();

  UniqueFd fd_;
  std::byte* base_ = nullptr;
  size_t bytes_ = 0;
  LeaseTableHeaderLayout* header_ = nullptr;
  uint32_t slots_ = 0;
  pid_t mapped_by_ = 0;  // the process that made the mapping
};

// Bytes of a table of `slots` slots: the header and the slots, in pages.
size_t lease_table_bytes(uint32_t slots);

}  // namespace shelf::shm
