// Structs that live in the shared-memory segment. docs/shm_layout.md draws
// the whole segment; the size and every field offset of every *Layout struct
// here is checked by a static_assert (next to the struct), against the
// numbers in that document, so the two cannot drift apart unnoticed.
//
// Shared memory holds offsets from the start of the segment, never pointers.
// Turn an offset into a pointer only through SegmentView::at (segment_view.h).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <shelf/limits.h>

namespace shelf::shm {

inline constexpr uint64_t kPageSize = 4096;
// The x86-64 and arm64 (4 KiB granule) PMD page: a tmpfs mounted huge= hands
// out pages of this size where a file's range allows (docs/design.md, "Huge
// pages"), and the store places large extents on its boundaries.
inline constexpr uint64_t kHugePageSize = uint64_t{2} << 20;
// "SHELFSEG" in little-endian ASCII: identifies a shelf segment.
inline constexpr uint64_t kSegmentMagic = 0x4745534646454853ULL;
// Bump on any change to a *Layout struct or to the meaning of a field.
// 2: the name index (hash table after the entries), publish ids, the
// index's seqlock and counters in the header, quarantined entries.
// 3: the header's used_slots_end (was reserved, 0), which lists rely on.
// 4: the index has room for kMaxIndexCapacity entries, its buckets and the
// extent area start at fixed offsets after that room (name_index.h), so a
// restart may change the index's capacity and keep every dataset.
// 5: the intent record of a publish of several names (PendingPublishLayout
// in page 0, kIntent extents). A version-4 segment is read as one with no
// publish pending (it holds zeros there) and becomes version 5.
// 6: IndexEntryState::kUnverified. Older segments have no such entry and
// become version 6.
// 7: IndexEntryState::kSpilled, and IndexEntryLayout::flags in what were
// the high bytes of name_length (zero in older segments, which
// become version 7).
// 8: views (kEntryView, ViewHeaderLayout in a kDescriptor extent). Older
// segments have none and become version 8.
inline constexpr uint32_t kLayoutVersion = 8;
// DescriptorHeaderLayout::layout_version: the segment's layout version when
// the descriptor format last changed. Kept apart since layout 7, so that a
// segment whose descriptors did not change keeps its datasets across a
// layout bump (before, every descriptor of an older segment was refused).
inline constexpr uint32_t kDescriptorVersion = 6;
inline constexpr uint32_t kOldestReadableLayoutVersion = 4;

// An acquire load of a field that may lie in a read-only mapping.
// std::atomic_ref<const T> is not C++20, so the const is cast away; a load
// never writes (on x86-64 it is a plain aligned mov).
template <class T>
T load_acquire(const T& field) {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_acquire);
}

// Page 0 of the segment. Written by the daemon at start, read-only afterwards
// except for `generation`, which the daemon bumps when it (re)starts, and the
// index's seqlock and counters (index_seq, next_publish_id, num_published,
// used_slots_end), which only the daemon writes, under index_seq
// (shm/name_index.h).
struct alignas(64) SegmentHeaderLayout {
  uint64_t magic;           // kSegmentMagic
  uint32_t layout_version;  // kLayoutVersion
  uint32_t page_size;       // kPageSize
  uint64_t generation;      // bumped at every daemon start
  uint64_t segment_bytes;   // total size of the shm object
  uint64_t index_offset;    // first IndexEntryLayout
  uint32_t index_capacity;  // number of IndexEntryLayout slots
  uint32_t index_entry_bytes;
  uint64_t data_offset;   // first byte of the extent area (page aligned)
  uint64_t data_bytes;    // size of the extent area
  uint64_t memory_limit;  // --memory-limit of the daemon that made the segment
  int64_t created_ns;     // CLOCK_REALTIME when the segment was made
  uint32_t daemon_pid;
  uint32_t hash_capacity;    // buckets of the name index (a power of two)
  uint64_t index_seq;        // seqlock over the entries and the name index: odd while changing
  uint64_t next_publish_id;  // the next publish id; never reused, also across restarts
  uint64_t hash_offset;      // first bucket of the name index (page aligned)
  uint64_t num_published;    // entries in state kPublished
  // One past the highest entry slot not free: every entry from it on is
  // free, so a list walks only the slots below it.
  uint64_t used_slots_end;
};
static_assert(std::is_trivially_copyable_v<SegmentHeaderLayout> &&
              std::is_standard_layout_v<SegmentHeaderLayout>);
static_assert(sizeof(SegmentHeaderLayout) == 128);
static_assert(offsetof(SegmentHeaderLayout, magic) == 0 &&
              offsetof(SegmentHeaderLayout, layout_version) == 8 &&
              offsetof(SegmentHeaderLayout, page_size) == 12 &&
              offsetof(SegmentHeaderLayout, generation) == 16 &&
              offsetof(SegmentHeaderLayout, segment_bytes) == 24 &&
              offsetof(SegmentHeaderLayout, index_offset) == 32 &&
              offsetof(SegmentHeaderLayout, index_capacity) == 40 &&
              offsetof(SegmentHeaderLayout, index_entry_bytes) == 44 &&
              offsetof(SegmentHeaderLayout, data_offset) == 48 &&
              offsetof(SegmentHeaderLayout, data_bytes) == 56 &&
              offsetof(SegmentHeaderLayout, memory_limit) == 64 &&
              offsetof(SegmentHeaderLayout, created_ns) == 72 &&
              offsetof(SegmentHeaderLayout, daemon_pid) == 80 &&
              offsetof(SegmentHeaderLayout, hash_capacity) == 84 &&
              offsetof(SegmentHeaderLayout, index_seq) == 88 &&
              offsetof(SegmentHeaderLayout, next_publish_id) == 96 &&
              offsetof(SegmentHeaderLayout, hash_offset) == 104 &&
              offsetof(SegmentHeaderLayout, num_published) == 112 &&
              offsetof(SegmentHeaderLayout, used_slots_end) == 120);

// One slot of the named-dataset index. Only the daemon writes it, under two
// seqlocks: the header's index_seq, which readers check (a change anywhere in
// the index makes them retry), and the entry's own `seq`, odd while the entry
// is being changed, which tells a restarted daemon that it was torn.
// kQuarantined: found damaged at restart; kept under its name, never served.
// kUnverified: published, but its checksums have not been checked since the
// daemon restarted (that runs in the background): listed and counted as
// published, and read only through the daemon, which answers a get once
// they are (docs/design.md, "Restart").
// kSpilled: published, but its buffers are in a file of shelfd's spill
// directory, not in the segment (docs/design.md, "Spilling"): listed and
// counted as published; its descriptor stays in the segment, its partition
// offsets name nothing. Read only through the daemon, which restores it.
enum class IndexEntryState : uint32_t {
  kFree = 0,
  kPublished = 1,
  kQuarantined = 2,
  kUnverified = 3,
  kSpilled = 4
};
// Published, verified or not, resident or spilled: what lists, counts and
// contains report.
inline bool is_listed(uint32_t state) {
  return state == static_cast<uint32_t>(IndexEntryState::kPublished) ||
         state == static_cast<uint32_t>(IndexEntryState::kUnverified) ||
         state == static_cast<uint32_t>(IndexEntryState::kSpilled);
}
// IndexEntryLayout::flags.
// kEntryPinned: never spilled (shelf pin); kept across restarts.
// kEntryInSpillFile: the dataset's buffers are in its spill file, with
// state kSpilled, or kQuarantined when a restart or a restore could not
// read the file (a later restart with the file checks it again).
// kEntryView: the dataset is a view, its descriptor a ViewHeaderLayout
// (a definition evaluated by readers; no partitions).
inline constexpr uint16_t kEntryPinned = 1;
inline constexpr uint16_t kEntryInSpillFile = 2;
inline constexpr uint16_t kEntryView = 4;
struct alignas(64) IndexEntryLayout {
  uint64_t seq;
  uint32_t state;  // IndexEntryState
  uint16_t name_length;
  uint16_t flags;              // kEntryPinned, kEntryInSpillFile
  uint64_t descriptor_offset;  // DescriptorHeaderLayout of the dataset
  uint64_t descriptor_length;
  uint64_t data_bytes;  // bytes the dataset holds, extents included
  int64_t created_ns;
  char name[kMaxNameBytes];  // not NUL-terminated: name_length bytes
  // Unique to this publish of the name (never reused, also across restarts,
  // from SegmentHeaderLayout::next_publish_id); 0 in a free entry.
  uint64_t publish_id;
};
static_assert(std::is_trivially_copyable_v<IndexEntryLayout> &&
              std::is_standard_layout_v<IndexEntryLayout>);
static_assert(sizeof(IndexEntryLayout) == 256);
static_assert(offsetof(IndexEntryLayout, seq) == 0 && offsetof(IndexEntryLayout, state) == 8 &&
              offsetof(IndexEntryLayout, name_length) == 12 &&
              offsetof(IndexEntryLayout, flags) == 14 &&
              offsetof(IndexEntryLayout, descriptor_offset) == 16 &&
              offsetof(IndexEntryLayout, descriptor_length) == 24 &&
              offsetof(IndexEntryLayout, data_bytes) == 32 &&
              offsetof(IndexEntryLayout, created_ns) == 40 &&
              offsetof(IndexEntryLayout, name) == 48 &&
              offsetof(IndexEntryLayout, publish_id) == 248);

// Page 0 after the header: where the intent record of a publish of several
// names lies while the daemon writes their index entries (docs/shm_layout.md,
// "Publishing several names"). Only the daemon writes it; nothing else
// reads it.
struct alignas(64) PendingPublishLayout {
  // Segment offset of the kIntent extent (its header), stored with release
  // once the record is whole: the publish's commit point. 0: none pending.
  uint64_t intent_offset;
  uint64_t reserved[7];
};
static_assert(std::is_trivially_copyable_v<PendingPublishLayout> &&
              std::is_standard_layout_v<PendingPublishLayout>);
static_assert(sizeof(PendingPublishLayout) == 64);
static_assert(offsetof(PendingPublishLayout, intent_offset) == 0);
inline constexpr uint64_t kPendingPublishOffset = sizeof(SegmentHeaderLayout);
static_assert(kPendingPublishOffset == 128);

// The most index entries a segment may have (--max-datasets): 2^20 slots
// of 256 bytes, a 256 MiB index. Every segment leaves address space for
// that many (name_index.h): sparse, so it costs no memory, but every Client
// maps it. 2^24 (a 4 GiB room) was measured too large: 1,500 Clients in one
// process are 6.4 TB of mappings, past what ThreadSanitizer's address space
// takes (mmap failed with ENOMEM), and a scan of the file through a mapping
// (a tool's, a test's) allocates the room it reads.
inline constexpr uint32_t kMaxIndexCapacity = uint32_t{1} << 20;

// The index starts at page 1: the segment offset of index slot `slot`.
constexpr uint64_t index_entry_offset(uint64_t slot) {
  return kPageSize + slot * sizeof(IndexEntryLayout);
}

// The first 64 bytes of every extent. `state` is the seal protocol:
//   kAllocated: the daemon reserved the extent for a publisher (fresh, zeroed).
//   kWritten:   the publisher finished writing and stored this with release.
//   kSealed:    the daemon saw kWritten with acquire and published the extent
//               (stored with release); readers check it with acquire.
enum class ExtentState : uint32_t { kAllocated = 1, kWritten = 2, kSealed = 3 };
// kIntent: an intent record (IntentHeaderLayout), the daemon's own; it stays
// kAllocated, and no client reads it.
enum class ExtentKind : uint32_t { kPartition = 1, kDescriptor = 2, kIntent = 3 };
// "SHELFEXT" in little-endian ASCII.
inline constexpr uint64_t kExtentMagic = 0x5458454646454853ULL;
struct alignas(64) ExtentHeaderLayout {
  uint64_t magic;   // kExtentMagic
  uint32_t state;   // ExtentState; accessed only through std::atomic_ref
  uint32_t kind;    // ExtentKind
  uint64_t length;  // of the whole extent, header included (page multiple)
  uint32_t owner_pid;
  uint32_t reserved0;
  uint64_t reserved[4];
};
static_assert(std::is_trivially_copyable_v<ExtentHeaderLayout> &&
              std::is_standard_layout_v<ExtentHeaderLayout>);
static_assert(sizeof(ExtentHeaderLayout) == 64);
static_assert(offsetof(ExtentHeaderLayout, magic) == 0 &&
              offsetof(ExtentHeaderLayout, state) == 8 &&
              offsetof(ExtentHeaderLayout, kind) == 12 &&
              offsetof(ExtentHeaderLayout, length) == 16 &&
              offsetof(ExtentHeaderLayout, owner_pid) == 24 &&
              offsetof(ExtentHeaderLayout, reserved0) == 28 &&
              offsetof(ExtentHeaderLayout, reserved) == 32);
inline constexpr uint64_t kExtentHeaderBytes = sizeof(ExtentHeaderLayout);

// An intent record, after its extent's header: the index entries a publish
// of several names is about to write, so that a daemon killed while writing
// them lets the next one write the rest (all names, or none: the record is
// pointed at only once it is whole).
//   IntentHeaderLayout
//   IntentItemLayout [num_items]
// "SHELFINT" in little-endian ASCII.
inline constexpr uint64_t kIntentMagic = 0x544e494646454853ULL;
struct IntentHeaderLayout {
  uint64_t magic;       // kIntentMagic
  uint64_t num_items;   // 2..kMaxPublishItems
  uint64_t items_xxh3;  // XXH3-64 of the items
  uint64_t reserved[5];
};
static_assert(std::is_trivially_copyable_v<IntentHeaderLayout> &&
              std::is_standard_layout_v<IntentHeaderLayout>);
static_assert(sizeof(IntentHeaderLayout) == 64);
static_assert(offsetof(IntentHeaderLayout, magic) == 0 &&
              offsetof(IntentHeaderLayout, num_items) == 8 &&
              offsetof(IntentHeaderLayout, items_xxh3) == 16);
struct IntentItemLayout {
  uint64_t slot;  // the index slot the entry goes to
  uint64_t reserved[7];
  IndexEntryLayout entry;  // as it is to be stored there (its seq unused)
};
static_assert(std::is_trivially_copyable_v<IntentItemLayout> &&
              std::is_standard_layout_v<IntentItemLayout>);
static_assert(sizeof(IntentItemLayout) == 320);
static_assert(offsetof(IntentItemLayout, slot) == 0 && offsetof(IntentItemLayout, entry) == 64);

// A dataset descriptor: the schema and where every buffer of every partition
// lies. Written once by the daemon into a kDescriptor extent at publish,
// immutable afterwards. Byte layout, all offsets from the descriptor start:
//   DescriptorHeaderLayout
//   ColumnLayout      [num_columns]
//   PartitionLayout   [num_partitions]
//   ChunkLayout       [num_partitions * num_columns]   (partition-major)
//   names             (column names, UTF-8, packed)
// "SHELFDSC" in little-endian ASCII.
inline constexpr uint64_t kDescriptorMagic = 0x4353444646454853ULL;
struct DescriptorHeaderLayout {
  uint64_t magic;           // kDescriptorMagic
  uint32_t layout_version;  // kDescriptorVersion
  uint32_t num_columns;
  uint64_t num_partitions;
  uint64_t num_rows;    // sum over partitions
  uint64_t data_bytes;  // sum of the buffers' lengths
  int64_t created_ns;   // CLOCK_REALTIME at publish
  uint32_t publisher_uid;
  uint32_t publisher_pid;
  uint64_t names_length;
};
static_assert(std::is_trivially_copyable_v<DescriptorHeaderLayout> &&
              std::is_standard_layout_v<DescriptorHeaderLayout>);
static_assert(sizeof(DescriptorHeaderLayout) == 64);
static_assert(offsetof(DescriptorHeaderLayout, magic) == 0 &&
              offsetof(DescriptorHeaderLayout, layout_version) == 8 &&
              offsetof(DescriptorHeaderLayout, num_columns) == 12 &&
              offsetof(DescriptorHeaderLayout, num_partitions) == 16 &&
              offsetof(DescriptorHeaderLayout, num_rows) == 24 &&
              offsetof(DescriptorHeaderLayout, data_bytes) == 32 &&
              offsetof(DescriptorHeaderLayout, created_ns) == 40 &&
              offsetof(DescriptorHeaderLayout, publisher_uid) == 48 &&
              offsetof(DescriptorHeaderLayout, publisher_pid) == 52 &&
              offsetof(DescriptorHeaderLayout, names_length) == 56);

struct ColumnLayout {
  uint8_t type;  // shelf::Type
  uint8_t reserved[3];
  uint32_t name_length;
  uint64_t name_offset;  // into the names area
};
static_assert(std::is_trivially_copyable_v<ColumnLayout> &&
              std::is_standard_layout_v<ColumnLayout>);
static_assert(sizeof(ColumnLayout) == 16);
static_assert(offsetof(ColumnLayout, type) == 0 && offsetof(ColumnLayout, reserved) == 1 &&
              offsetof(ColumnLayout, name_length) == 4 && offsetof(ColumnLayout, name_offset) == 8);

struct PartitionLayout {
  uint64_t num_rows;
  uint64_t extent_offset;  // segment offset of the partition's extent (its header)
  uint64_t extent_length;
  uint64_t reserved;
};
static_assert(std::is_trivially_copyable_v<PartitionLayout> &&
              std::is_standard_layout_v<PartitionLayout>);
static_assert(sizeof(PartitionLayout) == 32);
static_assert(offsetof(PartitionLayout, num_rows) == 0 &&
              offsetof(PartitionLayout, extent_offset) == 8 &&
              offsetof(PartitionLayout, extent_length) == 16 &&
              offsetof(PartitionLayout, reserved) == 24);

// A buffer: where it lies in the segment and the XXH3-64 of its bytes.
// An absent buffer (no validity bitmap) has length 0.
struct BufferLayout {
  uint64_t offset;  // segment offset, kBufferAlignment aligned
  uint64_t length;
  uint64_t xxh3;
};
static_assert(std::is_trivially_copyable_v<BufferLayout> &&
              std::is_standard_layout_v<BufferLayout>);
static_assert(sizeof(BufferLayout) == 24);
static_assert(offsetof(BufferLayout, offset) == 0 && offsetof(BufferLayout, length) == 8 &&
              offsetof(BufferLayout, xxh3) == 16);

// One column of one partition.
struct ChunkLayout {
  BufferLayout validity;  // LSB-first bitmap, 1 = valid; length 0 when null_count == 0
  BufferLayout offsets;   // kString: (rows + 1) int64 offsets into data; else length 0
  BufferLayout data;      // values; kBytes: the opaque payload (rows = its length)
  uint64_t null_count;
};
static_assert(std::is_trivially_copyable_v<ChunkLayout> && std::is_standard_layout_v<ChunkLayout>);
static_assert(sizeof(ChunkLayout) == 80);
static_assert(offsetof(ChunkLayout, validity) == 0 && offsetof(ChunkLayout, offsets) == 24 &&
              offsetof(ChunkLayout, data) == 48 && offsetof(ChunkLayout, null_count) == 72);

// A view's definition (docs/views.md): what a reader evaluates instead of
// reading buffers. Written once by the daemon into a kDescriptor extent at
// publish (the entry says kEntryView), immutable afterwards. Two kinds:
//   kViewFilter: one base, a filter, a column list and a row limit;
//   kViewGraph:  a pickled Dask collection only Python evaluates (a reader
//                gets the pickle), and the shelf datasets its graph reads.
// Byte layout, from the header's start (u32/u64 little-endian, unaligned):
//   ViewHeaderLayout
//   bases      num_bases times: u32 length, then the name
//   where      u32 length, then the expression (UTF-8)
//   columns    num_columns times: u32 length, then the name
//   graph      u64 length, then the bytes
// "SHELFVEW" in little-endian ASCII.
inline constexpr uint64_t kViewMagic = 0x5745564646454853ULL;
inline constexpr uint32_t kViewVersion = 1;
inline constexpr uint64_t kViewNoLimit = ~uint64_t{0};
enum class ViewKind : uint32_t { kFilter = 1, kGraph = 2 };
struct ViewHeaderLayout {
  uint64_t magic;      // kViewMagic
  uint32_t version;    // kViewVersion
  uint32_t kind;       // ViewKind
  uint64_t limit;      // rows kept at most; kViewNoLimit: no limit
  int64_t created_ns;  // CLOCK_REALTIME at publish
  uint32_t publisher_uid;
  uint32_t publisher_pid;
  uint32_t num_bases;    // kFilter: 1
  uint32_t num_columns;  // 0: every column of the base
  uint64_t body_length;  // bytes after this header
  uint64_t body_xxh3;    // XXH3-64 of them: a restart checks it
};
static_assert(std::is_trivially_copyable_v<ViewHeaderLayout> &&
              std::is_standard_layout_v<ViewHeaderLayout>);
static_assert(sizeof(ViewHeaderLayout) == 64);
static_assert(offsetof(ViewHeaderLayout, magic) == 0 && offsetof(ViewHeaderLayout, version) == 8 &&
              offsetof(ViewHeaderLayout, kind) == 12 && offsetof(ViewHeaderLayout, limit) == 16 &&
              offsetof(ViewHeaderLayout, created_ns) == 24 &&
              offsetof(ViewHeaderLayout, publisher_uid) == 32 &&
              offsetof(ViewHeaderLayout, publisher_pid) == 36 &&
              offsetof(ViewHeaderLayout, num_bases) == 40 &&
              offsetof(ViewHeaderLayout, num_columns) == 44 &&
              offsetof(ViewHeaderLayout, body_length) == 48 &&
              offsetof(ViewHeaderLayout, body_xxh3) == 56);

}  // namespace shelf::shm
