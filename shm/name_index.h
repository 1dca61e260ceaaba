// The name index: a hash table over the published names, in the segment
// beside the fixed index entries, so that clients look names up, count and
// list them without a round trip to the daemon (docs/shm_layout.md, "The
// name index" and "Reading the index without the daemon").
//
// Open addressing with linear probing over XXH3-64 of the name. A bucket is a
// u64: 0 when empty, else (low 32 bits of the hash) << 32 | (entry slot + 1).
// Deletion shifts the following buckets back (no tombstones), so probe
// chains stay short however many names come and go.
//
// Writer: only the daemon, through NameIndexWriter, one thread. Every change
// to the entries or the buckets is made between begin() and end(), which
// make the header's index_seq odd and then even again.
// Readers: any process, through NameIndexReader. A read that overlaps a
// change (index_seq odd, or different before and after) is thrown away and
// retried; after kMaxReadAttempts it answers kBusy and the caller asks the
// daemon instead (which also covers a daemon that died mid-change).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shm/layout.h"
#include "shm/segment_view.h"

namespace shelf::shm {

// XXH3-64 of a name: where it hashes to.
uint64_t name_hash(std::string_view name);
// Buckets for `index_capacity` entries: the power of two at least twice it
// (load factor <= 1/2), at least 16.
uint32_t hash_capacity_for(uint32_t index_capacity);
// Where the buckets start: the first page after room for kMaxIndexCapacity
// entries, whatever the capacity, so that a restart may change it.
uint64_t hash_offset();
// The header, room for the largest index and its buckets, rounded up to a
// page: where the extent area starts, in every segment.
uint64_t index_area_bytes();
// The pages an index of `index_capacity` entries uses in that area, all but
// the rest of the room: the header and the entries, then the buckets. They
// are what the index is charged and what is allocated for it.
struct IndexPages {
  uint64_t entries_end = 0;  // [0, entries_end): the header and the entries
  uint64_t buckets_end = 0;  // [hash_offset(), buckets_end): the buckets
  uint64_t bytes() const { return entries_end + (buckets_end - hash_offset()); }
};
IndexPages index_pages(uint32_t index_capacity);

// What a reader copied of one entry, consistent (one state of the index).
struct EntrySnapshot {
  uint32_t slot = 0;
  IndexEntryState state = IndexEntryState::kFree;
  uint64_t publish_id = 0;
  uint64_t descriptor_offset = 0;
  uint64_t descriptor_length = 0;
  uint64_t data_bytes = 0;
  int64_t created_ns = 0;
};

// What list_summaries() copies of one published entry: compact (no name
// inside, no descriptor copy), so that a list of 10,000 touches little
// fresh memory. The name is names[name_offset, +name_length) of the buffer
// handed to list_summaries().
struct EntrySummary {
  uint32_t slot = 0;
  uint32_t name_length = 0;
  uint64_t name_offset = 0;
  uint64_t data_bytes = 0;  // the entry's: what it takes from the memory limit
  int64_t created_ns = 0;
  bool spilled = false;        // state kSpilled: its buffers are in shelfd's spill directory
  bool pinned = false;         // kEntryPinned: never spilled
  bool view = false;           // kEntryView: a view, whose definition is its descriptor
  bool view_of_graph = false;  // a view of a Dask graph (ViewKind::kGraph)
  // From the dataset's descriptor header (has_descriptor: it lay inside the
  // segment).
  bool has_descriptor = false;
  uint32_t num_columns = 0;
  uint64_t num_partitions = 0;
  uint64_t num_rows = 0;
  uint64_t buffer_bytes = 0;  // the descriptor's data_bytes: the sum of the buffers
  uint32_t publisher_uid = 0;
  uint32_t publisher_pid = 0;
  // A filter view's base: its name in the names buffer (has_descriptor only).
  uint64_t view_base_offset = 0;
  uint32_t view_base_length = 0;
};

enum class IndexRead { kFound, kNotFound, kBusy };

// Lock-free reads of the index of a mapped segment. Copyable, holds no
// resources: valid while the mapping is. Thread-safe (reads only).
class NameIndexReader {
 public:
  // Checks the header's geometry (capacities, offsets inside the view), so
  // that no probe can leave the view. nullopt if it is not that of a segment
  // of this layout version.
  static std::optional<NameIndexReader> open(SegmentView view);

  // The entry named `name` (published or quarantined). kBusy: the daemon kept
  // changing the index (or died while changing it); ask it instead.
  IndexRead find(std::string_view name, EntrySnapshot* out) const;
  // True when slot `slot` still holds publish `publish_id` (published):
  // one consistent read of that entry alone. kBusy as find().
  IndexRead still_published(uint32_t slot, uint64_t publish_id) const;
  // Every published (not quarantined) entry as a summary, in slot order,
  // the names packed one after another into `names`. Walks only the slots
  // below the header's used_slots_end. Both outputs are cleared first and
  // keep their capacity, so a caller that hands in the same ones each time
  // allocates only when a list outgrows every earlier one. kBusy as find(),
  // with both outputs empty.
  //
  // With `mark_attempt`, each summary also has its descriptor's figures.
  // A descriptor of a dataset unpublished meanwhile may be freed memory,
  // and a read of a hole the daemon punched faults a page into it, which
  // nothing would give back; so the daemon must be kept from freeing what
  // the attempt may read. mark_attempt(seq) is called before each attempt
  // with the (even) index_seq that attempt reads, and must record it where
  // the daemon looks before it frees, then fence seq_cst (the lease table:
  // docs/leases.md, "Lists").
  IndexRead list_summaries(std::vector<EntrySummary>* out, std::string* names,
                           const std::function<void(uint64_t)>& mark_attempt = nullptr) const;
  // The header's index_seq (acquire): even between changes, and it only
  // grows.
  uint64_t sequence() const;
  // The number of published entries. kBusy as find().
  IndexRead count(uint64_t* out) const;

  static constexpr int kMaxReadAttempts = 1000;

 private:
  NameIndexReader() = default;
  // One attempt of find(): false when the read overlapped a change.
  bool try_find(std::string_view name, uint64_t hash, EntrySnapshot* out, bool* found) const;
  // One attempt of list_summaries(), of the index as of `begun` (even):
  // false when the read overlapped a change.
  bool try_list_summaries(uint64_t begun, bool descriptors, std::vector<EntrySummary>* out,
                          std::string* names) const;
  // A list's reads are cache misses: each entry (256 bytes apart, so a new
  // page every 16), and each dataset's descriptor header, which lies on a
  // page of its own (perf, 10,000 names: ~70% of a list). So a list asks
  // for the entry 2 * kPrefetchAhead slots on and the descriptor header of
  // the one kPrefetchAhead on, and those misses overlap instead of queueing.
  static constexpr uint32_t kPrefetchAhead = 16;
  void prefetch_descriptor(uint32_t slot) const;
  // Appends the summary of entry `slot` if it is published (inside a read
  // of try_list_summaries(), which decides whether the copy holds).
  void append_summary(uint32_t slot, bool descriptors, std::vector<EntrySummary>* out,
                      std::string* names) const;
  // append_summary()'s part for a view: its header and base name.
  void append_view_summary(const IndexEntryLayout& e, EntrySummary& s, std::string* names) const;

  SegmentView view_;
  const SegmentHeaderLayout* header_ = nullptr;
  const IndexEntryLayout* entries_ = nullptr;
  const uint64_t* buckets_ = nullptr;
  uint32_t index_capacity_ = 0;
  uint64_t mask_ = 0;
};

// The daemon's side. Not thread-safe: the daemon's one thread.
class NameIndexWriter {
 public:
  NameIndexWriter() = default;
  // Over the segment `view`, for an index of `capacity` entries. The
  // geometry is computed from it, never read back from the header, which any
  // process that maps the segment read-write could change; the daemon
  // writes the header's copy, for readers.
  NameIndexWriter(MutableSegmentView view, uint32_t capacity);

  // Brackets every change to entries and buckets (index_seq odd in between).
  void begin();
  void end();
  // The header's index_seq: even after end().
  uint64_t sequence() const;
  // Adds `name` (absent) for entry `slot`, and raises the header's
  // used_slots_end past `slot`. False, changing nothing, when no bucket is
  // free: the table has twice as many buckets as entries, so only buckets
  // written by someone else can be full; the daemon then rebuilds them.
  bool insert(std::string_view name, uint32_t slot);
  // Removes the bucket of entry `slot`, found from `name`'s hash. If `slot`
  // was the highest in use, lowers used_slots_end past it and past the free
  // entries below it (their state: what the daemon stored last).
  void erase(std::string_view name, uint32_t slot);
  // Empties every bucket and sets used_slots_end to 0 (recovery rebuilds
  // them with insert()). Between begin() and end().
  void clear();
  // A new publish id, persisted in the header; never returns one twice.
  uint64_t take_publish_id();
  // Makes later ids larger than `id` (recovery: ids found in entries).
  void raise_publish_id(uint64_t id);
  // Adds `delta` to the header's count of published entries.
  void add_published(int64_t delta);
  // An even index_seq (a daemon that died mid-change left it odd). Recovery.
  void reset_seq();
  IndexEntryLayout* entry(uint32_t slot) const;

 private:
  SegmentHeaderLayout* header_ = nullptr;
  IndexEntryLayout* entries_ = nullptr;
  uint64_t* buckets_ = nullptr;
  uint64_t mask_ = 0;
};

}  // namespace shelf::shm
