#include "server/puncher.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <utility>

#include "base/check.h"

namespace shelf::server {

Result<std::unique_ptr<Puncher>> Puncher::start(const shm::ShmObject& segment) {
  UniqueFd segment_fd(::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0));
  if (!segment_fd.valid()) return Status::from_errno("dup /dev/shm/" + segment.name(), errno);
  UniqueFd event_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event_fd.valid()) return Status::from_errno("eventfd", errno);
  return std::unique_ptr<Puncher>(new Puncher(std::move(segment_fd), std::move(event_fd)));
}

Puncher::Puncher(UniqueFd segment_fd, UniqueFd event_fd)
    : segment_fd_(std::move(segment_fd)), event_fd_(std::move(event_fd)) {
  // The thread takes no signals: SIGTERM and SIGINT are the event loop's
  // (its signalfd), and one delivered here would kill shelfd uncleaned.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Puncher::~Puncher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_one();
  thread_.join();
}

void Puncher::punch(Range range) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    todo_.push_back(range);
  }
  work_.notify_one();
}

std::vector<Puncher::Range> Puncher::take_done() {
  uint64_t count = 0;
  (void)::read(event_fd_.get(), &count, sizeof count);  // EAGAIN when nothing was signalled
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(done_, {});
}

void Puncher::wait_until_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return todo_.empty() && !busy_; });
}

void Puncher::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // Whatever was handed over is punched before stopping: a stop leaves no
    // freed memory behind in /dev/shm.
    work_.wait(lock, [this] { return stop_ || !todo_.empty(); });
    if (todo_.empty()) return;
    const Range range = todo_.front();
    todo_.pop_front();
    busy_ = true;
    lock.unlock();
    for (uint64_t done = 0; done < range.length;) {
      const uint64_t step = std::min(kPunchStepBytes, range.length - done);
      // The range reads as zeros afterwards, which also clears the extent
      // header. It was the daemon's allocation: failing to punch it is a bug.
      const int rc = ::fallocate(segment_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 static_cast<off_t>(range.offset + done), static_cast<off_t>(step));
      SHELF_CHECK(rc == 0 || errno == EINTR);
      if (rc == 0) done += step;
      // The file's lock is free between steps, but a running thread that
      // takes it again at once wins it over a waiter the kernel has woken
      // (for up to ~4 ms, until it hands the lock over). Pausing lets
      // the waiter in.
      if (done < range.length) std::this_thread::sleep_for(kPauseBetweenSteps);
    }
    lock.lock();
    busy_ = false;
    done_.push_back(range);
    const uint64_t one = 1;
    (void)::write(event_fd_.get(), &one, sizeof one);
    if (todo_.empty()) idle_.notify_all();
  }
}

}  // namespace shelf::server
