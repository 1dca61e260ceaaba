#include "server/segment_worker.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <utility>

#include "base/check.h"
#include "shm/layout.h"

namespace shelf::server {

Result<std::unique_ptr<SegmentWorker>> SegmentWorker::start(const shm::ShmObject& segment) {
  UniqueFd segment_fd(::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0));
  if (!segment_fd.valid()) return Status::from_errno("dup " + segment.path(), errno);
  UniqueFd event_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event_fd.valid()) return Status::from_errno("eventfd", errno);
  return std::unique_ptr<SegmentWorker>(
      new SegmentWorker(std::move(segment_fd), std::move(event_fd)));
}

SegmentWorker::SegmentWorker(UniqueFd segment_fd, UniqueFd event_fd)
    : segment_fd_(std::move(segment_fd)), event_fd_(std::move(event_fd)) {
  // The thread takes no signals: SIGTERM and SIGINT are the event loop's
  // (its signalfd), and one delivered here would kill shelfd uncleaned.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

SegmentWorker::~SegmentWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_one();
  thread_.join();
}

void SegmentWorker::set_page_bytes(uint64_t page_bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  step_bytes_ = page_bytes > shm::kPageSize ? kHugePunchStepBytes : kPunchStepBytes;
}

void SegmentWorker::punch(Range range) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    punches_.push_back(Punch{range, 0});
  }
  work_.notify_one();
}

void SegmentWorker::check(uint64_t ticket, Check check) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    checks_.emplace_back(ticket, std::move(check));
  }
  work_.notify_one();
}

SegmentWorker::Done SegmentWorker::take_done() {
  uint64_t count = 0;
  (void)::read(event_fd_.get(), &count, sizeof count);  // EAGAIN when nothing was signalled
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(done_, {});
}

void SegmentWorker::wait_until_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return nothing_left(); });
}

bool SegmentWorker::idle() {
  std::lock_guard<std::mutex> lock(mutex_);
  return nothing_left();
}

void SegmentWorker::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // Whatever was handed over is done before stopping: a stop leaves no
    // freed memory behind in /dev/shm.
    work_.wait(lock, [this] { return stop_ || !checks_.empty() || !punches_.empty(); });
    busy_ = true;
    if (!checks_.empty()) {
      auto [ticket, check] = std::move(checks_.front());
      checks_.pop_front();
      lock.unlock();
      check();
      lock.lock();
      done_.checked.push_back(ticket);
    } else if (!punches_.empty()) {
      // One step at a time, so that a check handed over meanwhile goes next,
      // and a range of one step or less goes before the rest of a large one.
      size_t next = 0;
      for (size_t i = 0; i < punches_.size(); ++i) {
        if (punches_[i].range.length - punches_[i].done <= step_bytes_) {
          next = i;
          break;
        }
      }
      const Punch& chosen = punches_[next];
      const Range step{chosen.range.offset + chosen.done,
                       std::min(step_bytes_, chosen.range.length - chosen.done)};
      lock.unlock();
      punch_step(step);
      lock.lock();
      // The same element: the loop only appends, and only this thread erases.
      Punch& same = punches_[next];
      same.done += step.length;
      if (same.done < same.range.length) {
        busy_ = false;
        lock.unlock();
        std::this_thread::sleep_for(kPauseBetweenSteps);
        lock.lock();
        continue;
      }
      done_.punched.push_back(same.range);
      punches_.erase(punches_.begin() + static_cast<std::ptrdiff_t>(next));
    } else {
      return;  // stop_, and nothing left
    }
    busy_ = false;
    const uint64_t one = 1;
    (void)::write(event_fd_.get(), &one, sizeof one);
    if (nothing_left()) idle_.notify_all();
  }
}

void SegmentWorker::punch_step(const Range& step) {
  // The range reads as zeros afterwards, which also clears the extent
  // header. It was the daemon's allocation: failing to punch it is a bug.
  while (::fallocate(segment_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     static_cast<off_t>(step.offset), static_cast<off_t>(step.length)) != 0) {
    SHELF_CHECK(errno == EINTR);
  }
}

}  // namespace shelf::server
