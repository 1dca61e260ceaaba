// Progress: one line on stderr for long work (`shelf publish`, `save`,
// `load`): bytes done of the total where known, rows, MB/s and an ETA,
// redrawn a few times a second and erased when the work ends.
//
// Shown only when stderr is a terminal (kAuto), or always (kAlways,
// --progress), never with kNever (--quiet). When shown, it is drawn at
// least once, at the start, however short the work.
//
// Threads: add_bytes() / add_rows() / set_total() may be called from any
// thread (atomics); a Progress owns one drawing thread, stopped and joined
// by finish() or the destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace shelf::tools {

constexpr int kProgressIntervalMs = 250;

class Progress {
 public:
  enum class Mode { kAuto, kAlways, kNever };

  // `what`: the line's first word, e.g. "publish".
  Progress(std::string what, Mode mode);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  // Total bytes of the work; 0: unknown (no percentage or ETA then).
  void set_total(uint64_t bytes) { total_.store(bytes, std::memory_order_relaxed); }
  void add_bytes(uint64_t bytes) { bytes_.fetch_add(bytes, std::memory_order_relaxed); }
  void add_rows(uint64_t rows) { rows_.fetch_add(rows, std::memory_order_relaxed); }
  // Starts counting again from zero under a new label (a second phase).
  void restart(std::string what, uint64_t total);
  // Stops drawing and erases the line. Idempotent.
  void finish();

  // The line for these counters (no terminal codes): for tests and drawing.
  static std::string format_line(const std::string& what, uint64_t done, uint64_t total,
                                 uint64_t rows, double seconds);

 private:
  void run();
  void draw(bool final_erase);

  const bool enabled_;
  std::mutex mu_;  // guards what_, stop_, start_ and the terminal line
  std::condition_variable wake_;
  std::string what_;
  bool stop_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> rows_{0};
  std::thread thread_;
};

}  // namespace shelf::tools
