// Verifier: the checksums of the datasets a restart found, checked on
// threads of their own while shelfd already serves (docs/design.md,
// "Restart"). A restart used to hash every buffer on one thread before it
// opened its socket: ~25 s per 100 GiB here, minutes of downtime on a TiB.
// Now the socket opens after the structural checks (bounded by metadata),
// and the hashing runs on every core, a partition at a time.
//
// A dataset is handed over whole and comes back whole (an Outcome), once
// every partition is hashed or it was cancelled. prioritise() moves a
// dataset to the front: a get waits for its own dataset only.
//
// Thread contract: every member function is the owner's (the daemon's
// loop); the threads hash what they were handed and hand back what they
// finished. They read the segment through `base` and nothing else the loop
// changes, so the owner must keep a dataset's memory (neither free nor
// reuse it) from add() until its Outcome is taken.
// Lifetime: the destructor drops what was not started, waits for the
// partitions being hashed, and joins the threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "shm/descriptor.h"

namespace shelf::server {

class Verifier {
 public:
  // A dataset's descriptor, parsed from a private copy (a process that maps
  // the segment read-write could change the bytes in place): `view` points
  // into `bytes`, whose buffer never moves.
  struct Descriptor {
    Descriptor(std::vector<std::byte> b, shm::DescriptorView v)
        : bytes(std::move(b)), view(std::move(v)) {}
    std::vector<std::byte> bytes;
    shm::DescriptorView view;
  };
  // What one dataset's verification found.
  struct Outcome {
    uint64_t dataset = 0;
    bool cancelled = false;
    // Empty: every checksum matched. Else the quarantine reason
    // ("checksum mismatch in partition 1 column 'v', ...").
    std::string problem;
  };
  struct Progress {
    uint64_t datasets_left = 0;  // handed over, no Outcome taken yet
    uint64_t bytes_left = 0;     // of their buffers, not hashed yet
    uint64_t bytes_done = 0;     // hashed since start()
  };

  // `threads` threads (at least 1) hashing the buffers of the segment
  // mapped at `base`. Errors: from eventfd (out of descriptors).
  static Result<std::unique_ptr<Verifier>> start(const std::byte* base, unsigned threads);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Hands over every partition of `dataset` (an id of the owner's, not
  // handed over already), in the order datasets are added.
  void add(uint64_t dataset, std::shared_ptr<const Descriptor> descriptor);
  // Its partitions not started yet go before everyone else's.
  void prioritise(uint64_t dataset);
  // Its partitions not started yet are dropped. True when none was being
  // hashed: it is let go now, and no Outcome comes. Else its Outcome comes
  // (cancelled, or what it found if it had finished already).
  bool cancel(uint64_t dataset);
  // Checks `dataset` on the caller's thread, now, if no thread has started
  // on it: for a small dataset a get waits for, which would otherwise wait
  // until a thread is done with the large partition it is hashing. Returns
  // its Outcome (take_done() will not give it), or nullopt when a thread has
  // started on it or it is finished already: its Outcome comes from
  // take_done() then.
  std::optional<Outcome> check_now(uint64_t dataset);
  // Readable (for epoll) while take_done() has something to give.
  int ready_fd() const { return event_fd_.get(); }
  std::vector<Outcome> take_done();
  Progress progress() const;
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }

 private:
  Verifier(const std::byte* base, UniqueFd event_fd, unsigned threads);
  void run();
  // One partition of `dataset`: its checksums, then the bookkeeping.
  void verify_partition(std::unique_lock<std::mutex>& lock, uint64_t dataset, uint64_t partition);
  // Called with mutex_ held when `dataset` has nothing left to hash.
  void finish(uint64_t dataset);

  struct Job {
    std::shared_ptr<const Descriptor> descriptor;
    uint64_t next_partition = 0;  // the next one to hand to a thread
    uint32_t running = 0;         // partitions being hashed now
    uint64_t bytes_left = 0;
    bool cancelled = false;
    // Partitions found wrong: (partition, column), in any order.
    std::vector<std::pair<uint64_t, uint32_t>> mismatches;
  };

  // What one MADV_POPULATE_READ of a partition maps (verify_partition).
  static constexpr uint64_t kPopulateStepBytes = 32ull << 20;
  const std::byte* const base_;
  const UniqueFd event_fd_;
  mutable std::mutex mutex_;
  std::condition_variable work_;     // threads wait for a partition or stop_
  std::condition_variable drained_;  // the destructor waits for running partitions
  std::unordered_map<uint64_t, Job> jobs_;
  std::deque<uint64_t> order_;  // datasets with partitions not handed out, front first
  std::vector<Outcome> done_;
  uint64_t bytes_done_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;  // started by the constructor, every signal blocked
};

// Bytes of the buffers of `view` that verification hashes.
uint64_t checksummed_bytes(const shm::DescriptorView& view);

}  // namespace shelf::server
