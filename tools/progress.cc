#include "tools/progress.h"

#include <cstdio>
#include <unistd.h>

namespace shelf::tools {

namespace {

std::string megabytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (uint64_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / (1 << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  }
  return buf;
}

}  // namespace

Progress::Progress(std::string what, Mode mode)
    : enabled_(mode == Mode::kAlways || (mode == Mode::kAuto && ::isatty(STDERR_FILENO))),
      what_(std::move(what)),
      start_(std::chrono::steady_clock::now()) {
  if (enabled_) thread_ = std::thread([this] { run(); });
}

Progress::~Progress() { finish(); }

void Progress::restart(std::string what, uint64_t total) {
  std::lock_guard<std::mutex> lock(mu_);
  what_ = std::move(what);
  start_ = std::chrono::steady_clock::now();
  total_.store(total, std::memory_order_relaxed);
  bytes_.store(0, std::memory_order_relaxed);
  rows_.store(0, std::memory_order_relaxed);
}

void Progress::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Progress::format_line(const std::string& what, uint64_t done, uint64_t total,
                                  uint64_t rows, double seconds) {
  std::string line = what + ": " + megabytes(done);
  if (total > 0) {
    line += " of " + megabytes(total);
    line += " (" + std::to_string(done >= total ? 100 : done * 100 / total) + "%)";
  }
  if (rows > 0) line += ", " + std::to_string(rows) + " rows";
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  char buf[64];
  std::snprintf(buf, sizeof buf, ", %.0f MB/s", rate / (1 << 20));
  line += buf;
  if (total > done && rate > 0) {
    std::snprintf(buf, sizeof buf, ", ETA %.0f s", static_cast<double>(total - done) / rate);
    line += buf;
  }
  return line;
}

void Progress::draw(bool final_erase) {
  std::string out;
  if (final_erase) {
    if (!drawn_) return;
    out = "\r\x1b[K";
  } else {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    out = "\r" +
          format_line(what_, bytes_.load(std::memory_order_relaxed),
                      total_.load(std::memory_order_relaxed), rows_.load(std::memory_order_relaxed),
                      seconds) +
          "\x1b[K";
    drawn_ = true;
  }
  // One write(2): the line is never interleaved with itself.
  (void)!::write(STDERR_FILENO, out.data(), out.size());
}

void Progress::run() {
  std::unique_lock<std::mutex> lock(mu_);
  // Drawn at least once, however short the work: what is shown does not
  // depend on how the threads were scheduled.
  for (;;) {
    draw(false);
    if (wake_.wait_for(lock, std::chrono::milliseconds(kProgressIntervalMs),
                       [this] { return stop_; })) {
      break;
    }
  }
  draw(true);
}

}  // namespace shelf::tools
