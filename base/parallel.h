// parallel_for: a loop whose iterations run on several threads, for bulk
// work on the cores of the machine (hashing a table's buffers, a filter's
// partitions, faulting pages in, parsing CSV chunks): the one thread pool
// rule of the tree.
//
// Threads: the calling thread runs iterations too; the others are started
// for the call and joined before it returns, so nothing outlives it.
// Iterations are taken in index order from a shared counter (a thread that
// finishes a short one takes the next), and must not depend on each other.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace shelf {

// The machine's cores (at least 1), as the process first saw them. Read
// once: std::thread::hardware_concurrency() opens and reads
// /sys/devices/system/cpu/online on every call, which was three system
// calls in every publish (the seal asks threads_for how to hash).
inline unsigned core_count() {
  static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return cores;
}

// The threads worth starting for `work` units when each thread should have
// at least `per_thread` of them: 1 to one per core.
inline unsigned threads_for(uint64_t work, uint64_t per_thread) {
  const uint64_t wanted = std::max<uint64_t>(1, work / std::max<uint64_t>(1, per_thread));
  return static_cast<unsigned>(std::min<uint64_t>(wanted, core_count()));
}

// Calls fn(i) once for each i in [0, count), on up to `threads` threads.
// An exception fn throws (std::bad_alloc) stops the iterations not yet
// begun and is rethrown here once every thread has stopped.
template <class Fn>
void parallel_for(size_t count, unsigned threads, Fn&& fn) {
  threads = static_cast<unsigned>(std::clamp<size_t>(count, 1, std::max(1u, threads)));
  if (threads == 1) {
    for (size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  auto run = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) fn(i);
    } catch (...) {
      next.store(count, std::memory_order_relaxed);
      std::lock_guard lock(mu);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(run);
    } catch (const std::system_error&) {  // no thread to be had: fewer do it all
      break;
    }
  }
  run();
  for (std::thread& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace shelf
