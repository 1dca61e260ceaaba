#include "base/fault_point.h"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

#ifdef SHELF_FAULT_POINTS
namespace shelf::internal {

void fault_point(const char* name) {
  const char* wanted = std::getenv("SHELF_FAULT_POINT");
  if (wanted == nullptr || std::strcmp(wanted, name) != 0) return;
  if (const char* fd_text = std::getenv("SHELF_FAULT_NOTIFY_FD")) {
    std::string line = std::string(name) + "\n";
    ssize_t n = ::write(std::atoi(fd_text), line.data(), line.size());
    (void)n;  // nothing to do if the test closed its end
  }
  // Stopped, the process waits for the test: SIGKILL, or SIGCONT to go on
  // past the point (a race between two processes, played step by step).
  ::raise(SIGSTOP);
}

}  // namespace shelf::internal
#endif
