// Puncher: gives freed memory back to the OS (fallocate PUNCH_HOLE on the
// segment) on a thread of its own, so that the daemon's event loop never
// waits for it.
//
// Why a thread: punching takes ~40-125 ms per GiB, and tmpfs serialises it
// with every other fallocate and SEEK_HOLE on the same file (the inode's
// lock). Punched on the loop, a big unpublish kept every client waiting in
// steps, and a step that queued behind a publisher's posix_fallocate held
// the whole loop for as long as that took. The thread punches in steps of
// kPunchStepBytes, so a publisher's or the daemon's own fallocate waits at
// most one step behind it.
//
// Thread contract: every member function is the owner's (the daemon's loop);
// the thread only punches and hands back what it finished. Lifetime: the
// destructor finishes what was handed over, then joins the thread; the
// Puncher punches through a descriptor of its own, so it may outlive the
// ShmObject it was made from.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "shm/segment.h"

namespace shelf::server {

class Puncher {
 public:
  struct Range {
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  // Errors: from dup and eventfd (out of descriptors).
  static Result<std::unique_ptr<Puncher>> start(const shm::ShmObject& segment);
  ~Puncher();
  Puncher(const Puncher&) = delete;
  Puncher& operator=(const Puncher&) = delete;

  // Hands `range` over to be punched; it comes back from take_done().
  void punch(Range range);
  // Readable (for epoll) while take_done() has ranges to give.
  int ready_fd() const { return event_fd_.get(); }
  // The ranges punched since the last call, whole: their pages are gone.
  std::vector<Range> take_done();
  // Blocks until every range handed over is punched (take_done() then has
  // them): for a request that needs the memory now.
  void wait_until_idle();

 private:
  Puncher(UniqueFd segment_fd, UniqueFd event_fd);
  void run();

  // Punching 8 MiB of tmpfs takes ~1 ms: the longest a fallocate of anyone
  // else waits behind the thread.
  static constexpr uint64_t kPunchStepBytes = 8ull << 20;
  static constexpr std::chrono::microseconds kPauseBetweenSteps{100};

  const UniqueFd segment_fd_;
  const UniqueFd event_fd_;
  std::mutex mutex_;
  std::condition_variable work_;  // the thread waits for todo_ or stop_
  std::condition_variable idle_;  // wait_until_idle() waits for todo_ and busy_ to empty
  std::deque<Range> todo_;
  bool busy_ = false;  // the thread is punching a range it took from todo_
  std::vector<Range> done_;
  bool stop_ = false;
  std::thread thread_;  // started by the constructor, with every signal blocked
};

}  // namespace shelf::server
