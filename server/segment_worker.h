// SegmentWorker: the segment work that holds the file's lock or reads a lot,
// done on a thread of its own so that the daemon's event loop never waits
// for it: giving freed memory back to the OS (fallocate PUNCH_HOLE), and the
// checks of a large publish (SEEK_HOLE over its partitions, and their
// checksums with --verify-on-publish).
//
// Why a thread: tmpfs takes the file's lock for a hole punch and a SEEK_HOLE,
// and other fallocates and SEEK_HOLEs of the same file wait for it. Punched
// on the loop, a big unpublish kept every client waiting in steps, and a
// step that queued behind a publisher's posix_fallocate held the whole loop
// for as long as that took (an unpublish call of 25.8 ms). SEEK_HOLE walks
// the page cache: ~7 ms per GiB published, on the loop.
//
// Checks go before punches: a publisher waits for its check, nobody waits
// for memory coming back (but a request next to the limit: wait_until_idle).
// A range of one step or less goes before the rest of a larger one, so a
// small free handed over during a 1 GiB punch is back within a step.
//
// Thread contract: every member function is the owner's (the daemon's loop);
// the thread only runs what it was handed and hands back what it finished.
// A check runs on the thread: it must touch nothing the loop changes.
// Lifetime: the destructor finishes what was handed over, then joins the
// thread; the worker punches through a descriptor of its own, so it may
// outlive the ShmObject it was made from.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "shm/segment.h"

namespace shelf::server {

class SegmentWorker {
 public:
  struct Range {
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  // Runs on the thread; says what it found through what it captured.
  using Check = std::function<void()>;
  // What the thread finished since the last take_done().
  struct Done {
    std::vector<Range> punched;     // whole: their pages are gone
    std::vector<uint64_t> checked;  // the tickets of the checks run
  };

  // Errors: from dup and eventfd (out of descriptors).
  static Result<std::unique_ptr<SegmentWorker>> start(const shm::ShmObject& segment);
  ~SegmentWorker();
  SegmentWorker(const SegmentWorker&) = delete;
  SegmentWorker& operator=(const SegmentWorker&) = delete;

  // The page size of the segment's tmpfs (Store::probe_page_size), which
  // sets how much one step punches; kPageSize until told.
  void set_page_bytes(uint64_t page_bytes);
  // Hands `range` over to be punched.
  void punch(Range range);
  // Hands `check` over to run, before any punch still waiting; `ticket`
  // comes back from take_done() once it has run.
  void check(uint64_t ticket, Check check);
  // Readable (for epoll) while take_done() has something to give.
  int ready_fd() const { return event_fd_.get(); }
  Done take_done();
  // Blocks until everything handed over is done (take_done() then has it):
  // for a request that needs the memory now.
  void wait_until_idle();
  // True when nothing handed over is waiting or running: the thread holds no
  // lock of the file now, nor will until it is handed something.
  bool idle();

 private:
  SegmentWorker(UniqueFd segment_fd, UniqueFd event_fd);
  void run();
  void punch_step(const Range& step);
  // Nothing handed over is waiting or running; mutex_ held.
  bool nothing_left() const { return checks_.empty() && punches_.empty() && !busy_; }

  // Punching 8 MiB of tmpfs takes ~0.3 ms here (~2 ms with every core
  // busy): about the longest a fallocate or SEEK_HOLE of anyone else waits
  // behind the thread. Between steps it pauses: the file's lock is free then,
  // but a running thread that takes it again at once wins it over a waiter
  // the kernel has woken (for up to ~4 ms, until rwsem hands it over).
  static constexpr uint64_t kPunchStepBytes = 8ull << 20;
  // Huge pages punch ~50 times faster (page_bench: 2.2 ms per GiB against
  // 121 ms): a step of them punches 16 times more for the same wait. With
  // 8 MiB steps the pauses alone held 1 GiB's memory back for 28 ms.
  static constexpr uint64_t kHugePunchStepBytes = 128ull << 20;
  static constexpr std::chrono::microseconds kPauseBetweenSteps{100};

  const UniqueFd segment_fd_;
  const UniqueFd event_fd_;
  std::mutex mutex_;
  std::condition_variable work_;                   // the thread waits for work or stop_
  std::condition_variable idle_;                   // wait_until_idle() waits for nothing to be left
  std::deque<std::pair<uint64_t, Check>> checks_;  // ticket, check
  struct Punch {
    Range range;
    uint64_t done = 0;  // bytes punched so far
  };
  std::deque<Punch> punches_;
  uint64_t step_bytes_ = kPunchStepBytes;  // set_page_bytes()
  bool busy_ = false;                      // the thread is running a check or a punch step
  Done done_;
  bool stop_ = false;
  std::thread thread_;  // started by the constructor, with every signal blocked
};

}  // namespace shelf::server
