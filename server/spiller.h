// Spiller: moves datasets' buffers between the segment and files of
// shelfd's spill directory (shelfd --spill-dir), on a thread of its own, so
// that the daemon's loop never waits for a disk (docs/design.md,
// "Spilling"). A spill writes a dataset's partitions into a new file and
// makes it durable (fsync, rename, fsync of the directory); a restore reads
// a file back into extents reserved for it and checks every buffer's XXH3
// against the descriptor the restored dataset will have.
//
// A spill file, version 1 (docs/design.md, "Spilling", has the whole
// format and what is durable):
//   SpillFileHeader                      64 bytes
//   uint64_t payload_bytes[partitions]   each partition extent's bytes after its header
//   the descriptor, as the segment holds it at spill time
//   zero padding to a multiple of kSpillAlignment; then each partition's
//   payload, each padded likewise
// The header's xxh3 covers the header (that field zero), the lengths and
// the descriptor; the payloads are covered by the descriptor's checksums.
//
// Thread contract: every member function is the owner's (the daemon's
// loop); the thread runs one job at a time, in the order they were added,
// and hands back an Outcome. A spill reads its ranges of the segment, a
// restore writes its ranges: the owner keeps that memory (neither frees
// nor reuses it) from add() until the job's Outcome is taken.
// Lifetime: the destructor finishes the job that is running, drops the
// others (their files stay as a crash would leave them: the next restart
// removes what no index entry names), and joins the thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "server/verifier.h"
#include "shm/segment.h"

namespace shelf::server {

inline constexpr uint64_t kSpillFileMagic = 0x4c50534646454853ULL;  // "SHELFSPL"
inline constexpr uint32_t kSpillFileVersion = 1;
inline constexpr uint64_t kSpillAlignment = 4096;

struct SpillFileHeader {
  uint64_t magic;  // kSpillFileMagic
  uint32_t version;
  uint32_t reserved0;
  uint64_t publish_id;  // of the entry that was spilled
  uint64_t num_partitions;
  uint64_t descriptor_length;
  uint64_t xxh3;  // see above
  uint64_t reserved[2];
};
static_assert(sizeof(SpillFileHeader) == 64);

// `dir`/<prefix>.<publish id>.spill, where the prefix names the segment
// (Store::spill_prefix: its name and when it was made): the one rule for a
// spill file's name; a restart removes the files of its segment no entry
// names.
std::string spill_file_path(const std::string& dir, const std::string& prefix, uint64_t publish_id);
// The publish id in the name of one of `prefix`'s spill files (or of the
// temporary file a spill writes first: `temporary` says which), or 0 when
// `file` is not one.
uint64_t spill_file_publish_id(const std::string& file, const std::string& prefix, bool* temporary);

class Spiller {
 public:
  struct Range {
    uint64_t offset = 0;  // in the segment
    uint64_t length = 0;
  };
  struct Job {
    enum class Kind { kSpill, kRestore };
    Kind kind = Kind::kSpill;
    uint64_t ticket = 0;
    std::string path;         // the spill file
    std::string what;         // "dataset 'x'": how errors name it
    uint64_t publish_id = 0;  // written (spill) or expected (restore) in the header
    // kSpill: the payloads to write, in partition order, and the descriptor.
    // kRestore: where each partition's payload goes (the lengths must match
    // the file's), and the descriptor the checksums are checked against:
    // the restored dataset's, whose offsets point into those ranges.
    std::vector<Range> ranges;
    std::vector<std::byte> descriptor;
    std::shared_ptr<const Verifier::Descriptor> check;
  };
  struct Outcome {
    uint64_t ticket = 0;
    Job::Kind kind = Job::Kind::kSpill;
    // Corruption when a restore found a checksum or the file's header
    // wrong; else Status::from_errno's (the path and the reason: a full
    // disk is ResourceExhausted) when a file could not be written or read.
    Status status;
    double seconds = 0;
  };

  // `segment` (and the mapping at `base`) must outlive the Spiller.
  // Errors: from dup and eventfd (out of descriptors).
  static Result<std::unique_ptr<Spiller>> start(const shm::ShmObject& segment, std::byte* base);
  ~Spiller();
  Spiller(const Spiller&) = delete;
  Spiller& operator=(const Spiller&) = delete;

  void add(Job job);
  // Readable (for epoll) while take_done() has something to give.
  int ready_fd() const { return event_fd_.get(); }
  std::vector<Outcome> take_done();

  // The bytes of a spill file of a descriptor of `descriptor_length` bytes
  // and partitions with these payloads.
  static uint64_t file_bytes(uint64_t descriptor_length, const std::vector<uint64_t>& payloads);

 private:
  Spiller(const shm::ShmObject& segment, UniqueFd segment_fd, UniqueFd event_fd, std::byte* base);
  void run();
  Outcome spill(const Job& job) const;
  Outcome restore(const Job& job) const;

  const shm::ShmObject& segment_;  // the Store's, which outlives this
  const UniqueFd segment_fd_;
  const UniqueFd event_fd_;
  std::byte* const base_;
  std::mutex mutex_;
  std::condition_variable work_;
  std::deque<Job> jobs_;
  std::vector<Outcome> done_;
  bool stop_ = false;
  std::thread thread_;  // started by the constructor, with every signal blocked
};

}  // namespace shelf::server
