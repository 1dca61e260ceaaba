// The daemon's log: one line per event, "2026-11-25T16:40:01Z shelfd[123] info: ...".
#pragma once

#include <string_view>

namespace shelf::server {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// Parses "error", "warn", "info", "debug"; false for anything else.
bool parse_log_level(std::string_view text, LogLevel* level);
void set_log_level(LogLevel level);
// Redirects the log to `fd` (stderr by default).
void set_log_fd(int fd);
// Also writes every line to `fd` (-1: no copy). shelfd uses it while it
// starts detached: what recovery finds goes both to whoever started it and
// to the log file.
void set_log_copy_fd(int fd);
void log(LogLevel level, std::string_view message);

inline void log_error(std::string_view m) { log(LogLevel::kError, m); }
inline void log_warn(std::string_view m) { log(LogLevel::kWarn, m); }
inline void log_info(std::string_view m) { log(LogLevel::kInfo, m); }
inline void log_debug(std::string_view m) { log(LogLevel::kDebug, m); }

}  // namespace shelf::server
