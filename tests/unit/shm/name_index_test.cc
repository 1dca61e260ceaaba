// The name index (shm/name_index.h) on plain shared memory: a MAP_SHARED
// anonymous mapping laid out as a segment's header, entries and buckets,
// written the way the daemon writes it (Store::commit_item, unpublish) and
// read by this process and by forked reader processes racing the writer.
#include "shm/name_index.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "shm/layout.h"
#include "shm/seqlock.h"

namespace shelf::shm {
namespace {

// A segment of `capacity` entries with no extent area; the writer side does
// what the Store does: one index change per publish or unpublish.
class IndexBed {
 public:
  explicit IndexBed(uint32_t capacity) : capacity_(capacity) {
    bytes_ = index_area_bytes() + kPageSize;  // + a page for "descriptors"
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
    auto* h = reinterpret_cast<SegmentHeaderLayout*>(base_);
    h->layout_version = kLayoutVersion;
    h->index_offset = kPageSize;
    h->index_capacity = capacity;
    h->index_entry_bytes = sizeof(IndexEntryLayout);
    h->hash_capacity = hash_capacity_for(capacity);
    h->hash_offset = hash_offset();
    h->next_publish_id = 1;
    writer_ = NameIndexWriter(MutableSegmentView(base_, bytes_), capacity);
    for (uint32_t s = capacity; s > 0; --s) free_.push_back(s - 1);
  }
  ~IndexBed() { ::munmap(base_, bytes_); }

  SegmentView view() const { return {base_, bytes_}; }
  NameIndexReader reader() const { return *NameIndexReader::open(view()); }

  // Publishes (or overrides) `name`; returns its slot and sets its publish id.
  uint32_t publish(const std::string& name, uint64_t* id = nullptr) {
    writer_.begin();
    uint32_t slot;
    if (auto it = slots_.find(name); it != slots_.end()) {
      slot = it->second;
    } else {
      slot = free_.back();
      free_.pop_back();
      slots_[name] = slot;
      writer_.insert(name, slot);
      writer_.add_published(1);
    }
    IndexEntryLayout e{};
    e.state = static_cast<uint32_t>(IndexEntryState::kPublished);
    e.name_length = static_cast<uint32_t>(name.size());
    std::memcpy(e.name, name.data(), name.size());
    e.publish_id = writer_.take_publish_id();
    e.descriptor_offset = e.publish_id;  // lets a reader check the entry is whole
    e.data_bytes = e.publish_id * 3;
    store_entry(slot, e);
    writer_.end();
    if (id != nullptr) *id = e.publish_id;
    return slot;
  }
  void unpublish(const std::string& name) {
    const uint32_t slot = slots_.at(name);
    writer_.begin();
    store_entry(slot, IndexEntryLayout{});
    writer_.erase(name, slot);
    writer_.add_published(-1);
    writer_.end();
    slots_.erase(name);
    free_.push_back(slot);
  }
  const std::map<std::string, uint32_t>& slots() const { return slots_; }
  SegmentHeaderLayout& header() { return *reinterpret_cast<SegmentHeaderLayout*>(base_); }
  NameIndexWriter& writer() { return writer_; }
  uint64_t* buckets() { return reinterpret_cast<uint64_t*>(base_ + hash_offset()); }

 private:
  void store_entry(uint32_t slot, const IndexEntryLayout& e) {
    IndexEntryLayout* entry = writer_.entry(slot);
    begin_write(entry->seq);
    store_words(reinterpret_cast<std::byte*>(entry) + 8, reinterpret_cast<const std::byte*>(&e) + 8,
                sizeof e - 8);
    end_write(entry->seq);
  }

  uint32_t capacity_;
  uint64_t bytes_ = 0;
  std::byte* base_ = nullptr;
  NameIndexWriter writer_;
  std::vector<uint32_t> free_;
  std::map<std::string, uint32_t> slots_;
};

std::string name_of(int i) { return "dataset-" + std::to_string(i); }

// Names that all hash to the same home bucket of a table of `buckets`.
std::vector<std::string> colliding_names(uint32_t buckets, size_t n) {
  std::vector<std::string> out;
  const uint64_t home = name_hash("collide-0") & (buckets - 1);
  for (int i = 0; out.size() < n; ++i) {
    std::string name = "collide-" + std::to_string(i);
    if ((name_hash(name) & (buckets - 1)) == home) out.push_back(name);
  }
  return out;
}

// The names a list of `r` reports.
std::set<std::string> listed_names(const NameIndexReader& r) {
  std::vector<EntrySummary> summaries;
  std::string packed;
  EXPECT_EQ(r.list_summaries(&summaries, &packed), IndexRead::kFound);
  std::set<std::string> names;
  for (const EntrySummary& s : summaries) names.insert(packed.substr(s.name_offset, s.name_length));
  return names;
}

// Every name of the model is found in its slot, list/count agree with it,
// and used_slots_end is one past its highest slot.
void expect_matches(IndexBed& bed) {
  const NameIndexReader r = bed.reader();
  uint64_t slots_end = 0;
  for (const auto& [name, slot] : bed.slots()) {
    EntrySnapshot e;
    ASSERT_EQ(r.find(name, &e), IndexRead::kFound) << name;
    EXPECT_EQ(e.slot, slot) << name;
    EXPECT_EQ(e.state, IndexEntryState::kPublished);
    slots_end = std::max<uint64_t>(slots_end, slot + 1);
  }
  EXPECT_EQ(bed.header().used_slots_end, slots_end);
  std::set<std::string> want;
  for (const auto& [name, slot] : bed.slots()) want.insert(name);
  uint64_t n = 0;
  ASSERT_EQ(r.count(&n), IndexRead::kFound);
  EXPECT_EQ(n, bed.slots().size());
  // The summaries say the same, names packed into one buffer, each with its
  // own entry's fields.
  std::vector<EntrySummary> summaries;
  std::string packed = "left over from an earlier call";
  ASSERT_EQ(r.list_summaries(&summaries, &packed), IndexRead::kFound);
  std::set<std::string> summarised;
  size_t name_bytes = 0;
  for (const EntrySummary& s : summaries) {
    const std::string name = packed.substr(s.name_offset, s.name_length);
    summarised.insert(name);
    name_bytes += s.name_length;
    EXPECT_EQ(s.slot, bed.slots().at(name)) << name;
    EntrySnapshot e;
    ASSERT_EQ(r.find(name, &e), IndexRead::kFound) << name;
    EXPECT_EQ(s.data_bytes, e.data_bytes) << name;
    EXPECT_FALSE(s.has_descriptor);
  }
  EXPECT_EQ(summarised, want);
  EXPECT_EQ(packed.size(), name_bytes);
}

TEST(NameIndexTest, TenThousandNamesDeletesAndReinserts) {
  IndexBed bed(10000);
  for (int i = 0; i < 10000; ++i) bed.publish(name_of(i));
  expect_matches(bed);
  EntrySnapshot e;
  EXPECT_EQ(bed.reader().find("dataset-10000", &e), IndexRead::kNotFound);
  EXPECT_EQ(bed.reader().find("", &e), IndexRead::kNotFound);
  // Delete every third, then put half of them back: chains shift back and
  // nothing else moves out of reach.
  for (int i = 0; i < 10000; i += 3) bed.unpublish(name_of(i));
  expect_matches(bed);
  for (int i = 0; i < 10000; i += 6) bed.publish(name_of(i));
  expect_matches(bed);
  for (int i = 3; i < 10000; i += 6) {
    EXPECT_EQ(bed.reader().find(name_of(i), &e), IndexRead::kNotFound) << i;
  }
}

TEST(NameIndexTest, CollidingNamesSurviveDeletesAnywhereInTheirChain) {
  IndexBed bed(64);
  const std::vector<std::string> names = colliding_names(hash_capacity_for(64), 12);
  for (const auto& n : names) bed.publish(n);
  expect_matches(bed);
  // Delete from the middle, the front and the back of the chain.
  for (size_t k : {5u, 0u, 11u, 6u}) {
    bed.unpublish(names[k]);
    expect_matches(bed);
    EntrySnapshot e;
    EXPECT_EQ(bed.reader().find(names[k], &e), IndexRead::kNotFound);
  }
  for (size_t k : {0u, 5u}) bed.publish(names[k]);
  expect_matches(bed);
}

// used_slots_end is one past the highest slot in use; unpublishing that one
// lowers it past the free slots below, to the next one in use.
TEST(NameIndexTest, UsedSlotsEndFollowsTheHighestSlotInUse) {
  IndexBed bed(16);
  EXPECT_EQ(bed.header().used_slots_end, 0u);
  for (const char* name : {"a", "b", "c", "d"}) bed.publish(name);  // slots 0..3
  expect_matches(bed);
  EXPECT_EQ(bed.header().used_slots_end, 4u);
  bed.unpublish("b");  // a hole below the highest: the mark stays
  EXPECT_EQ(bed.header().used_slots_end, 4u);
  bed.unpublish("d");  // the highest: down to c's slot
  EXPECT_EQ(bed.header().used_slots_end, 3u);
  bed.unpublish("c");  // the highest again: past b's free slot, down to a's
  EXPECT_EQ(bed.header().used_slots_end, 1u);
  EXPECT_EQ(listed_names(bed.reader()), (std::set<std::string>{"a"}));
  bed.publish("e");  // the bed hands out the slot freed last (2): up again
  EXPECT_EQ(bed.slots().at("e"), 2u);
  expect_matches(bed);
  EXPECT_EQ(listed_names(bed.reader()), (std::set<std::string>{"a", "e"}));
  bed.unpublish("a");
  bed.unpublish("e");
  EXPECT_EQ(bed.header().used_slots_end, 0u);
  EXPECT_TRUE(listed_names(bed.reader()).empty());
}

// A mark past the entries (damaged; a torn one is thrown away anyway) takes
// no read out of them.
TEST(NameIndexTest, AUsedSlotsEndPastTheEntriesIsClamped) {
  IndexBed bed(16);
  bed.publish("a");
  bed.publish("b");
  bed.header().used_slots_end = ~uint64_t{0};
  EXPECT_EQ(listed_names(bed.reader()), (std::set<std::string>{"a", "b"}));
}

TEST(NameIndexTest, PublishIdsAreNeverReusedAndOverrideKeepsTheSlot) {
  IndexBed bed(8);
  uint64_t first = 0, second = 0, third = 0;
  const uint32_t slot = bed.publish("a", &first);
  EXPECT_EQ(bed.publish("a", &second), slot);  // override
  EXPECT_GT(second, first);
  EXPECT_EQ(bed.reader().still_published(slot, first), IndexRead::kNotFound);
  EXPECT_EQ(bed.reader().still_published(slot, second), IndexRead::kFound);
  bed.unpublish("a");
  EXPECT_EQ(bed.reader().still_published(slot, second), IndexRead::kNotFound);
  bed.publish("a", &third);
  EXPECT_GT(third, second);
}

TEST(NameIndexTest, AListMarksEachAttemptWithTheIndexSeqItReads) {
  IndexBed bed(8);
  bed.publish("x");
  std::vector<uint64_t> marked;
  std::vector<EntrySummary> summaries;
  std::string packed;
  // The first attempt is overtaken by a publish after its mark: it is
  // thrown away, and the next one is marked with the newer index_seq.
  auto mark = [&](uint64_t seq) {
    marked.push_back(seq);
    if (marked.size() == 1) bed.publish("y");
  };
  ASSERT_EQ(bed.reader().list_summaries(&summaries, &packed, mark), IndexRead::kFound);
  ASSERT_EQ(marked.size(), 2u);
  EXPECT_EQ(marked[0] % 2, 0u);
  EXPECT_GT(marked[1], marked[0]);
  EXPECT_EQ(marked[1], bed.reader().sequence());
  EXPECT_EQ(summaries.size(), 2u);
}

TEST(NameIndexTest, AReaderGivesUpWhileTheIndexStaysOddAndRecoversWhenEven) {
  IndexBed bed(8);
  bed.publish("x");
  bed.header().index_seq += 1;  // a daemon that died mid-change
  EntrySnapshot e;
  EXPECT_EQ(bed.reader().find("x", &e), IndexRead::kBusy);
  std::vector<EntrySummary> summaries(3);
  std::string packed = "stale";
  int marks = 0;
  EXPECT_EQ(bed.reader().list_summaries(&summaries, &packed, [&](uint64_t) { ++marks; }),
            IndexRead::kBusy);
  EXPECT_EQ(marks, 0) << "an attempt was marked at an odd index_seq";
  EXPECT_TRUE(summaries.empty());
  EXPECT_TRUE(packed.empty());
  NameIndexWriter(
      MutableSegmentView(reinterpret_cast<std::byte*>(&bed.header()), index_area_bytes()), 8)
      .reset_seq();
  EXPECT_EQ(bed.reader().find("x", &e), IndexRead::kFound);
}

// Buckets a hostile process that maps the segment filled: the writer neither
// probes for ever nor leaves the table, and says so (the daemon rebuilds).
TEST(NameIndexTest, BucketsAllTakenFromOutsideNeitherHangTheWriterNorLetItOverrun) {
  IndexBed bed(8);
  for (uint32_t b = 0; b < hash_capacity_for(8); ++b) bed.buckets()[b] = ~uint64_t{0} - b;
  bed.writer().begin();
  EXPECT_FALSE(bed.writer().insert("x", 0));
  bed.writer().erase("x", 0);      // not there: returns
  bed.buckets()[3] = uint64_t{1};  // "slot 0", found at once: the shift loop runs one lap at most
  bed.writer().erase("y", 0);
  bed.writer().end();
  EXPECT_EQ(bed.buckets()[hash_capacity_for(8)], 0u) << "wrote past the buckets";
}

TEST(NameIndexTest, ABadGeometryIsRefused) {
  IndexBed bed(8);
  bed.header().hash_capacity = 3;
  EXPECT_FALSE(NameIndexReader::open(bed.view()).has_value());
}

// A reader process racing the writer: every fifth name of 0..kNames-1
// stays published (and is overridden); the others come and go, the highest
// slots among them, so used_slots_end keeps moving above stable names. Every
// answer must be one the writer could have given at some moment: a stable
// name is always found, whole (its fields agree with its publish id), and
// listed; a toggling name is found whole or not at all. The child exits
// non-zero at the first wrong answer.
TEST(NameIndexTest, ReaderProcessesRacingTheWriterSeeOnlyWholeStates) {
  constexpr int kNames = 250, kStable = kNames / 5, kMaxRounds = 50'000'000;
  auto stable = [](int i) { return i % 5 == 0; };
  IndexBed bed(512);
  for (int i = 0; i < kNames; ++i) bed.publish(name_of(i));
  std::vector<int> toggling;
  for (int i = 0; i < kNames; ++i) {
    if (!stable(i)) toggling.push_back(i);
  }
  std::vector<pid_t> readers;
  for (int r = 0; r < 2; ++r) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const NameIndexReader reader = bed.reader();
      uint64_t busy = 0;
      std::vector<EntrySummary> summaries;
      std::string packed;
      for (int i = 0; i < 100000; ++i) {
        const std::string name = name_of(i % kNames);
        EntrySnapshot e;
        const IndexRead got = reader.find(name, &e);
        if (got == IndexRead::kBusy) {
          ++busy;
          continue;
        }
        if (stable(i % kNames) && got != IndexRead::kFound) ::_exit(10);
        if (got == IndexRead::kFound &&
            (e.descriptor_offset != e.publish_id || e.data_bytes != 3 * e.publish_id)) {
          ::_exit(11);
        }
        if (i % 500 != 0) continue;
        // The same buffers every time, as the client's list does.
        if (reader.list_summaries(&summaries, &packed) != IndexRead::kFound) continue;
        int stable_listed = 0;
        for (const auto& x : summaries) {
          const std::string_view n = std::string_view(packed).substr(x.name_offset, x.name_length);
          if (n.rfind("dataset-", 0) != 0 || x.data_bytes == 0 || x.data_bytes % 3 != 0) {
            ::_exit(12);
          }
          if (stable(std::stoi(std::string(n.substr(8))))) ++stable_listed;
        }
        if (stable_listed != kStable) ::_exit(13);
      }
      ::_exit(busy > 50000 ? 14 : 0);
    }
    readers.push_back(pid);
  }
  // The writer changes the index for as long as the readers read.
  std::map<pid_t, int> exited;
  for (int round = 0; exited.size() < readers.size(); ++round) {
    bed.publish(name_of(5 * (round % kStable)));  // override a stable name
    // From the highest down: each unpublish of the highest slot in use
    // lowers used_slots_end, each publish raises it again.
    const std::string t = name_of(toggling[toggling.size() - 1 - round % toggling.size()]);
    if (bed.slots().count(t)) {
      bed.unpublish(t);
    } else {
      bed.publish(t);
    }
    if (round % 64 != 0) continue;
    for (pid_t pid : readers) {
      int status = 0;
      if (!exited.count(pid) && ::waitpid(pid, &status, WNOHANG) == pid) exited[pid] = status;
    }
    ASSERT_LT(round, kMaxRounds) << "the readers did not finish";
  }
  for (const auto& [pid, status] : exited) {
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "10: a stable name missed, 11: a torn entry, "
                                         "12: a torn list, 13: a stable name not listed, "
                                         "14: mostly busy";
  }
  expect_matches(bed);
}

}  // namespace
}  // namespace shelf::shm
