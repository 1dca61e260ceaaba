#include "tools/metrics_fetch.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/unique_fd.h"

namespace shelf::tools {

namespace {

using Clock = std::chrono::steady_clock;

// Waits for `events` on `fd` until `deadline`; false on timeout.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::invalid_argument("socket path is too long: " + path);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::from_errno("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      return Status::permission_denied("may not connect to " + path);
    }
    return Status::unavailable("no shelfd serves metrics at " + path + " (" + std::strerror(err) +
                               "); is shelfd running?");
  }
  return fd;
}

}  // namespace

Result<std::string> fetch_metrics(const std::string& socket_path,
                                  std::chrono::milliseconds timeout) {
  const std::string path = socket_path + ".metrics";
  const auto deadline = Clock::now() + timeout;
  SHELF_ASSIGN_OR_RETURN(UniqueFd fd, connect_unix(path));
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: shelfd\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(fd.get(), POLLOUT, deadline)) break;
    } else {
      return Status::unavailable("shelfd closed " + path + " before the request was sent");
    }
  }
  std::string response;
  char buf[16384];
  for (;;) {
    if (!wait_for(fd.get(), POLLIN, deadline)) {
      return Status::unavailable("shelfd did not answer at " + path + " within " +
                                 std::to_string(timeout.count()) + " ms");
    }
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      response.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      return Status::unavailable(std::string("reading ") + path + ": " + std::strerror(errno));
    }
  }
  const size_t body = response.find("\r\n\r\n");
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (body == std::string::npos || status_line.rfind("HTTP/1.1 200", 0) != 0) {
    return Status::internal("shelfd answered " + path + " with '" + status_line + "'");
  }
  return response.substr(body + 4);
}

std::string metrics_down_text() {
  return "# HELP shelf_up 1 while shelfd answers (`shelf metrics` prints 0 when it cannot).\n"
         "# TYPE shelf_up gauge\n"
         "shelf_up 0\n";
}

}  // namespace shelf::tools
