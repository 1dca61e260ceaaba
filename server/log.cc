#include "server/log.h"

#include <cstdio>
#include <string>
#include <time.h>
#include <unistd.h>

namespace shelf::server {

namespace {
LogLevel g_level = LogLevel::kInfo;
int g_fd = STDERR_FILENO;
int g_copy_fd = -1;
}  // namespace

bool parse_log_level(std::string_view text, LogLevel* level) {
  if (text == "error")
    *level = LogLevel::kError;
  else if (text == "warn")
    *level = LogLevel::kWarn;
  else if (text == "info")
    *level = LogLevel::kInfo;
  else if (text == "debug")
    *level = LogLevel::kDebug;
  else
    return false;
  return true;
}

void set_log_level(LogLevel level) { g_level = level; }
void set_log_fd(int fd) { g_fd = fd; }
void set_log_copy_fd(int fd) { g_copy_fd = fd; }

void log(LogLevel level, std::string_view message) {
  if (level > g_level) return;
  static const char* kNames[] = {"error", "warn", "info", "debug"};
  char stamp[32];
  time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::string line = std::string(stamp) + " shelfd[" + std::to_string(::getpid()) + "] " +
                     kNames[static_cast<int>(level)] + ": " + std::string(message) + "\n";
  // One write per line keeps lines whole; a failed log write has nowhere to go.
  ssize_t n = ::write(g_fd, line.data(), line.size());
  if (g_copy_fd >= 0) n = ::write(g_copy_fd, line.data(), line.size());
  (void)n;
}

}  // namespace shelf::server
