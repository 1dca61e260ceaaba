// SHELF_FAULT_POINT("name"): a place where crash tests kill a process.
//
// Compiled in only when SHELF_FAULT_POINTS is defined (test builds). When the
// environment variable SHELF_FAULT_POINT equals `name`, the process writes
// "name\n" to the file descriptor named by SHELF_FAULT_NOTIFY_FD (if set) and
// then stops itself (SIGSTOP), so the test can `kill -9` it at exactly that
// point, or send SIGCONT to let it go on (to play a race step by step).
#pragma once

#ifdef SHELF_FAULT_POINTS
namespace shelf::internal {
void fault_point(const char* name);
}  // namespace shelf::internal
#define SHELF_FAULT_POINT(name) ::shelf::internal::fault_point(name)
#else
#define SHELF_FAULT_POINT(name) \
  do {                          \
  } while (false)
#endif
