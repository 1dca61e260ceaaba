#include "shm/name_index.h"

#include <bit>
#include <cstring>

#include <shelf/limits.h>

#include "base/check.h"
#include "shm/checksum.h"
#include "shm/seqlock.h"

namespace shelf::shm {

namespace {

constexpr uint64_t kBucketSlotMask = 0xFFFFFFFFull;

uint64_t make_bucket(uint64_t hash, uint32_t slot) {
  return (hash & 0xFFFFFFFFull) << 32 | (uint64_t{slot} + 1);
}

// Copies the fields of `e` a reader needs, as relaxed word loads (seqlock.h):
// the first 48 bytes, the name's words if `with_name`, the publish id.
void copy_entry(const IndexEntryLayout& e, IndexEntryLayout& out, bool with_name) {
  load_words(&out, &e, offsetof(IndexEntryLayout, name));
  if (with_name) {
    const uint32_t length = std::min<uint32_t>(out.name_length, kMaxNameBytes);
    load_words(out.name, e.name, align_up(length, 8));
  }
  out.publish_id = load_word(e.publish_id);
}

void fill_snapshot(const IndexEntryLayout& e, uint32_t slot, EntrySnapshot* out) {
  out->slot = slot;
  out->state = static_cast<IndexEntryState>(e.state);
  out->publish_id = e.publish_id;
  out->descriptor_offset = e.descriptor_offset;
  out->descriptor_length = e.descriptor_length;
  out->data_bytes = e.data_bytes;
  out->created_ns = e.created_ns;
}

}  // namespace

uint64_t name_hash(std::string_view name) { return xxh3(name.data(), name.size()); }

uint32_t hash_capacity_for(uint32_t index_capacity) {
  return std::max<uint32_t>(16, std::bit_ceil(index_capacity) * 2);
}

uint64_t hash_offset() { return align_up(index_entry_offset(kMaxIndexCapacity), kPageSize); }

uint64_t index_area_bytes() {
  return align_up(hash_offset() + uint64_t{hash_capacity_for(kMaxIndexCapacity)} * sizeof(uint64_t),
                  kPageSize);
}

IndexPages index_pages(uint32_t index_capacity) {
  IndexPages pages;
  pages.entries_end = align_up(index_entry_offset(index_capacity), kPageSize);
  pages.buckets_end = align_up(
      hash_offset() + uint64_t{hash_capacity_for(index_capacity)} * sizeof(uint64_t), kPageSize);
  return pages;
}

// ------------------------------------------------------------- reader --

std::optional<NameIndexReader> NameIndexReader::open(SegmentView view) {
  const auto* h = view.at<SegmentHeaderLayout>(0);
  if (h == nullptr || h->layout_version != kLayoutVersion || h->index_capacity == 0 ||
      h->index_capacity > kMaxIndexCapacity || h->index_offset != kPageSize ||
      h->index_entry_bytes != sizeof(IndexEntryLayout) ||
      h->hash_capacity != hash_capacity_for(h->index_capacity) || h->hash_offset != hash_offset()) {
    return std::nullopt;
  }
  NameIndexReader r;
  r.view_ = view;
  r.header_ = h;
  r.entries_ = view.at<IndexEntryLayout>(kPageSize, h->index_capacity);
  r.buckets_ = view.at<uint64_t>(h->hash_offset, h->hash_capacity);
  if (r.entries_ == nullptr || r.buckets_ == nullptr) return std::nullopt;
  r.index_capacity_ = h->index_capacity;
  r.mask_ = h->hash_capacity - 1;
  return r;
}

bool NameIndexReader::try_find(std::string_view name, uint64_t hash, EntrySnapshot* out,
                               bool* found) const {
  const uint64_t begun = read_begin(header_->index_seq);
  if (begun % 2 != 0) return false;
  *found = false;
  const uint64_t tag = hash & 0xFFFFFFFFull;
  // At most every bucket: a torn read may show any chain, never an endless one.
  for (uint64_t i = hash & mask_, probes = 0; probes <= mask_; i = (i + 1) & mask_, ++probes) {
    const uint64_t b = load_word(buckets_[i]);
    if (b == 0) break;
    if ((b >> 32) != tag) continue;
    const uint64_t slot = (b & kBucketSlotMask) - 1;
    if (slot >= index_capacity_) break;  // torn: read_end() will say so
    IndexEntryLayout e;
    copy_entry(entries_[slot], e, /*with_name=*/true);
    if (e.name_length != name.size() || std::memcmp(e.name, name.data(), name.size()) != 0) {
      continue;
    }
    fill_snapshot(e, static_cast<uint32_t>(slot), out);
    *found = is_listed(e.state) || e.state == static_cast<uint32_t>(IndexEntryState::kQuarantined);
    break;
  }
  return read_end(header_->index_seq, begun);
}

IndexRead NameIndexReader::find(std::string_view name, EntrySnapshot* out) const {
  const uint64_t hash = name_hash(name);
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    bool found = false;
    if (try_find(name, hash, out, &found)) return found ? IndexRead::kFound : IndexRead::kNotFound;
  }
  return IndexRead::kBusy;
}

IndexRead NameIndexReader::still_published(uint32_t slot, uint64_t publish_id) const {
  if (slot >= index_capacity_) return IndexRead::kNotFound;
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    const uint64_t begun = read_begin(header_->index_seq);
    IndexEntryLayout e;
    copy_entry(entries_[slot], e, /*with_name=*/false);
    if (!read_end(header_->index_seq, begun)) continue;
    const bool same =
        e.state == static_cast<uint32_t>(IndexEntryState::kPublished) && e.publish_id == publish_id;
    return same ? IndexRead::kFound : IndexRead::kNotFound;
  }
  return IndexRead::kBusy;
}

bool NameIndexReader::try_list_summaries(uint64_t begun, bool descriptors,
                                         std::vector<EntrySummary>* out, std::string* names) const {
  out->clear();
  names->clear();
  // Every entry from used_slots_end on is free, so the walk stops there: for
  // 10,000 names it visits ~10,000 entries in address order, not 65,536
  // buckets first. A torn mark is clamped (no read leaves the entries) and
  // thrown away with the rest by read_end().
  const uint64_t end = std::min<uint64_t>(load_word(header_->used_slots_end), index_capacity_);
  out->reserve(std::min(load_word(header_->num_published), end));
  for (uint32_t slot = 0; slot < end; ++slot) {
    // Hints only (name_index.h, kPrefetchAhead): the entry twice as far on,
    // so that its descriptor offset is at hand when its header is asked for.
    if (slot + 2 * kPrefetchAhead < end) __builtin_prefetch(&entries_[slot + 2 * kPrefetchAhead]);
    if (descriptors && slot + kPrefetchAhead < end) prefetch_descriptor(slot + kPrefetchAhead);
    append_summary(slot, descriptors, out, names);
  }
  return read_end(header_->index_seq, begun);
}

void NameIndexReader::prefetch_descriptor(uint32_t slot) const {
  // A hint only: whatever the offset (torn, or 0 in a free entry), nothing
  // is read here, and only an address inside the segment is handed out.
  const uint64_t offset = load_word(entries_[slot].descriptor_offset);
  if (const auto* d = view_.at<DescriptorHeaderLayout>(offset)) __builtin_prefetch(d);
}

void NameIndexReader::append_summary(uint32_t slot, bool descriptors,
                                     std::vector<EntrySummary>* out, std::string* names) const {
  // The first 48 bytes and the name's words; not the publish id, which a
  // list does not report (it lies on another cache line).
  const IndexEntryLayout& entry = entries_[slot];
  IndexEntryLayout e;
  load_words(&e, &entry, offsetof(IndexEntryLayout, name));
  if (!is_listed(e.state)) return;
  const uint32_t length = std::min<uint32_t>(e.name_length, kMaxNameBytes);
  // Straight into the packed buffer: its capacity is kept across calls.
  const size_t at = names->size();
  names->resize(at + align_up(length, 8));
  load_words(names->data() + at, entry.name, align_up(length, 8));
  names->resize(at + length);
  EntrySummary& s = out->emplace_back();
  s.slot = slot;
  s.name_length = length;
  s.name_offset = at;
  s.data_bytes = e.data_bytes;
  s.created_ns = e.created_ns;
  s.spilled = e.state == static_cast<uint32_t>(IndexEntryState::kSpilled);
  s.pinned = (e.flags & kEntryPinned) != 0;
  s.view = (e.flags & kEntryView) != 0;
  if (!descriptors) return;
  // The descriptor is immutable while the dataset is published; if it was
  // freed meanwhile, index_seq changed and this read is thrown away.
  if (s.view) {
    append_view_summary(e, s, names);
  } else if (const auto* d = view_.at<DescriptorHeaderLayout>(e.descriptor_offset)) {
    DescriptorHeaderLayout h;
    load_words(&h, d, sizeof h);
    s.has_descriptor = true;
    s.num_columns = h.num_columns;
    s.num_partitions = h.num_partitions;
    s.num_rows = h.num_rows;
    s.buffer_bytes = h.data_bytes;
    s.publisher_uid = h.publisher_uid;
    s.publisher_pid = h.publisher_pid;
  }
}

void NameIndexReader::append_view_summary(const IndexEntryLayout& e, EntrySummary& s,
                                          std::string* names) const {
  const auto* v = view_.at<ViewHeaderLayout>(e.descriptor_offset);
  if (v == nullptr) return;
  ViewHeaderLayout h;
  load_words(&h, v, sizeof h);
  s.has_descriptor = true;
  s.num_columns = h.num_columns;
  s.publisher_uid = h.publisher_uid;
  s.publisher_pid = h.publisher_pid;
  s.view_of_graph = h.kind == static_cast<uint32_t>(ViewKind::kGraph);
  if (s.view_of_graph || h.num_bases == 0) return;
  // A filter view's base: the body's first field, a u32 length and the
  // name; read as whole words (the body starts 8-aligned, after the header).
  alignas(8) char first[align_up(sizeof(uint32_t) + kMaxNameBytes, 8)];
  const uint64_t words = std::min<uint64_t>(sizeof first, align_up(h.body_length, 8));
  const auto* body = view_.at<char>(e.descriptor_offset + sizeof h, words);
  if (body == nullptr) return;
  load_words(first, body, words);
  uint32_t length;
  std::memcpy(&length, first, sizeof length);
  if (length > kMaxNameBytes || sizeof length + length > words) return;
  s.view_base_offset = names->size();
  s.view_base_length = length;
  names->append(first + sizeof length, length);
}

IndexRead NameIndexReader::list_summaries(std::vector<EntrySummary>* out, std::string* names,
                                          const std::function<void(uint64_t)>& mark_attempt) const {
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    const uint64_t begun = read_begin(header_->index_seq);
    if (begun % 2 != 0) continue;
    if (mark_attempt) mark_attempt(begun);
    if (try_list_summaries(begun, mark_attempt != nullptr, out, names)) return IndexRead::kFound;
  }
  out->clear();
  names->clear();
  return IndexRead::kBusy;
}

uint64_t NameIndexReader::sequence() const { return read_begin(header_->index_seq); }

IndexRead NameIndexReader::count(uint64_t* out) const {
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    const uint64_t begun = read_begin(header_->index_seq);
    const uint64_t n = load_word(header_->num_published);
    if (read_end(header_->index_seq, begun)) {
      *out = n;
      return IndexRead::kFound;
    }
  }
  return IndexRead::kBusy;
}

// ------------------------------------------------------------- writer --

NameIndexWriter::NameIndexWriter(MutableSegmentView view, uint32_t capacity) {
  header_ = view.at<SegmentHeaderLayout>(0);
  entries_ = view.at<IndexEntryLayout>(kPageSize, capacity);
  buckets_ = view.at<uint64_t>(hash_offset(), hash_capacity_for(capacity));
  SHELF_CHECK(header_ != nullptr && entries_ != nullptr && buckets_ != nullptr);
  mask_ = uint64_t{hash_capacity_for(capacity)} - 1;
}

void NameIndexWriter::begin() { begin_write(header_->index_seq); }
void NameIndexWriter::end() { end_write(header_->index_seq); }
uint64_t NameIndexWriter::sequence() const { return load_word(header_->index_seq); }

void NameIndexWriter::reset_seq() {
  if (header_->index_seq % 2 != 0) store_word(header_->index_seq, header_->index_seq + 1);
}

IndexEntryLayout* NameIndexWriter::entry(uint32_t slot) const { return &entries_[slot]; }

bool NameIndexWriter::insert(std::string_view name, uint32_t slot) {
  const uint64_t hash = name_hash(name);
  uint64_t i = hash & mask_;
  for (uint64_t probes = 0; buckets_[i] != 0; ++probes) {
    if (probes > mask_) return false;
    i = (i + 1) & mask_;
  }
  store_word(buckets_[i], make_bucket(hash, slot));
  if (header_->used_slots_end <= slot) store_word(header_->used_slots_end, uint64_t{slot} + 1);
  return true;
}

void NameIndexWriter::erase(std::string_view name, uint32_t slot) {
  uint64_t i = name_hash(name) & mask_;
  for (uint64_t probes = 0; (buckets_[i] & kBucketSlotMask) != uint64_t{slot} + 1; ++probes) {
    if (buckets_[i] == 0 || probes > mask_) return;  // not there
    i = (i + 1) & mask_;
  }
  // Backward-shift deletion: move each later bucket of the run whose home is
  // not in (i, k] into the hole, so no lookup chain is broken.
  // At most one lap: buckets written by someone else may all be full.
  for (uint64_t k = (i + 1) & mask_, steps = 0; buckets_[k] != 0 && steps <= mask_;
       k = (k + 1) & mask_, ++steps) {
    const uint64_t home = (buckets_[k] >> 32) & mask_;
    const bool stays = i <= k ? (home > i && home <= k) : (home > i || home <= k);
    if (stays) continue;
    store_word(buckets_[i], buckets_[k]);
    i = k;
  }
  store_word(buckets_[i], 0);
  if (header_->used_slots_end != uint64_t{slot} + 1) return;
  // The daemon hands out the lowest free slot (Store::free_slots_), so the
  // mark rises by at most one slot per publish, and the lowering here,
  // summed over all unpublishes, is at most that rising.
  uint64_t end = slot;
  while (end > 0 && entries_[end - 1].state == static_cast<uint32_t>(IndexEntryState::kFree)) {
    --end;
  }
  store_word(header_->used_slots_end, end);
}

void NameIndexWriter::clear() {
  for (uint64_t i = 0; i <= mask_; ++i) store_word(buckets_[i], 0);
  store_word(header_->num_published, 0);
  store_word(header_->used_slots_end, 0);
}

uint64_t NameIndexWriter::take_publish_id() {
  const uint64_t id = std::max<uint64_t>(header_->next_publish_id, 1);
  store_word(header_->next_publish_id, id + 1);
  return id;
}

void NameIndexWriter::raise_publish_id(uint64_t id) {
  if (header_->next_publish_id <= id) store_word(header_->next_publish_id, id + 1);
}

void NameIndexWriter::add_published(int64_t delta) {
  store_word(header_->num_published, header_->num_published + static_cast<uint64_t>(delta));
}

}  // namespace shelf::shm
