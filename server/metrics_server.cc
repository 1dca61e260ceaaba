#include "server/metrics_server.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "server/log.h"

namespace shelf::server {

using Clock = std::chrono::steady_clock;
// How long accepting pauses when the process is out of descriptors.
constexpr std::chrono::milliseconds kAcceptPause{100};

namespace {

struct Scraper {
  UniqueFd fd;
  std::string in;
  std::string out;  // the whole response, once known
  size_t sent = 0;
  Clock::time_point deadline;  // closed then, whatever it is doing
  bool waiting = false;        // for a snapshot newer than `after_seq`
  bool head = false;           // HEAD: headers only
  // Answered: reads and drops what the scraper still sends until it closes,
  // so that closing does not reset the connection before it read the answer.
  bool draining = false;
  uint64_t after_seq = 0;
};

// "host:port" or "[v6]:port" into its parts.
Status split_host_port(const std::string& text, std::string& host, std::string& port) {
  const auto bad = [&] {
    return Status::invalid_argument("--metrics-listen " + text +
                                    ": expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464");
  };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return bad();
  host = text.substr(0, colon);
  port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return bad();  // a bare IPv6 address: its port is ambiguous
  }
  if (host.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
      port.size() > 5 || std::stoul(port) > 65535) {
    return bad();
  }
  return Status();
}

std::string address_text(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(v4.sin_port));
  }
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
  ::inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
  return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6.sin6_port));
}

// Binds ADDR:PORT; `bound` gets the address as bound.
Result<UniqueFd> listen_tcp(const std::string& text, std::string& bound) {
  std::string host, port;
  SHELF_RETURN_IF_ERROR(split_host_port(text, host, port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return Status::invalid_argument("--metrics-listen " + text + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, &::freeaddrinfo);
  int err = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 64) != 0) {
      err = errno;
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return Status::from_errno("getsockname", errno);
    }
    bound = address_text(addr);
    return fd;
  }
  return Status::from_errno("--metrics-listen " + text + ": bind", err);
}

std::string http_response(std::string_view status, std::string_view content_type,
                          const std::string& body, bool head) {
  std::string out = "HTTP/1.1 ";
  out.append(status).append("\r\nContent-Type: ").append(content_type);
  out.append("\r\nContent-Length: ").append(std::to_string(body.size()));
  out.append("\r\nConnection: close\r\n\r\n");
  if (!head) out.append(body);
  return out;
}

std::string plain_error(std::string_view status, const std::string& why) {
  return http_response(status, "text/plain; charset=utf-8", why + "\n", false);
}

void write_eventfd(int fd) {
  const uint64_t one = 1;
  ssize_t n = ::write(fd, &one, sizeof one);
  (void)n;  // only fails when the counter would overflow: it is already set
}

}  // namespace

// The metrics thread: one poll() over the wake eventfd, the listening
// sockets and every scraper.
class MetricsServer::Loop {
 public:
  explicit Loop(MetricsServer& server) : server_(server) {}
  void run();

 private:
  // Takes the newest snapshot from publish(); false once stopping.
  bool take_snapshot();
  void accept_from(int listen_fd);
  // Reads what the scraper sent; once its request is whole, answers it or
  // marks it waiting for figures.
  void on_readable(Scraper& s);
  void handle_request(Scraper& s, size_t header_end);
  // Answers the waiting scrapers a snapshot newer than they asked for can
  // answer, and those that waited kMetricsRefreshWait with what there is.
  void answer_waiting(Clock::time_point now);
  void answer(Scraper& s);
  // Sends what it can, then drains; false when the scraper is gone.
  bool on_writable(Scraper& s);
  int poll_timeout(Clock::time_point now) const;
  // Full: closes the oldest scraper that has not sent a whole request yet,
  // so idle connections cannot lock real scrapers out.
  void evict_idlest();

  MetricsServer& server_;
  std::unordered_map<int, Scraper> scrapers_;
  MetricsSnapshot snapshot_;  // a copy of server_.snapshot_ number seq_
  uint64_t seq_ = 0;
  std::string body_;  // snapshot_ rendered, for rendered_seq_
  uint64_t rendered_seq_ = 0;
  bool refresh_asked_ = false;  // written refresh_fd, no snapshot since
  Clock::time_point refresh_asked_at_;
  Clock::time_point accept_paused_until_;  // after EMFILE
  Clock::time_point snapshot_at_;          // when snapshot_ arrived
};

void MetricsServer::Loop::run() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({server_.wake_fd_.get(), POLLIN, 0});
    if (Clock::now() >= accept_paused_until_) {
      fds.push_back({server_.unix_fd_.get(), POLLIN, 0});
      if (server_.tcp_fd_.valid()) fds.push_back({server_.tcp_fd_.get(), POLLIN, 0});
    }
    const size_t first_scraper = fds.size();
    for (const auto& [fd, s] : scrapers_) {
      const short events = !s.out.empty() ? POLLOUT : s.waiting ? 0 : POLLIN;
      fds.push_back({fd, events, 0});
    }
    int n = ::poll(fds.data(), fds.size(), poll_timeout(Clock::now()));
    if (n < 0 && errno != EINTR) {
      log_error(std::string("metrics: poll: ") + std::strerror(errno));
      return;
    }
    if (n > 0 && (fds[0].revents & POLLIN) && !take_snapshot()) return;
    for (size_t i = first_scraper; n > 0 && i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto it = scrapers_.find(fds[i].fd);
      if (it == scrapers_.end()) continue;
      Scraper& s = it->second;
      bool keep = true;
      if (fds[i].revents & POLLOUT) {
        keep = on_writable(s);
      } else if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        on_readable(s);
        keep = s.fd.valid() && (s.out.empty() || on_writable(s));
      }
      if (!keep) scrapers_.erase(it);
    }
    const Clock::time_point now = Clock::now();
    answer_waiting(now);
    for (auto it = scrapers_.begin(); it != scrapers_.end();) {
      it = now >= it->second.deadline ? scrapers_.erase(it) : std::next(it);
    }
    for (size_t i = 1; n > 0 && i < first_scraper; ++i) {
      if (fds[i].revents & POLLIN) accept_from(fds[i].fd);
    }
  }
}

int MetricsServer::Loop::poll_timeout(Clock::time_point now) const {
  Clock::time_point next = Clock::time_point::max();
  for (const auto& [fd, s] : scrapers_) next = std::min(next, s.deadline);
  if (refresh_asked_) next = std::min(next, refresh_asked_at_ + kMetricsRefreshWait);
  if (accept_paused_until_ > now) next = std::min(next, accept_paused_until_);
  if (next == Clock::time_point::max()) return -1;
  if (next <= now) return 0;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
  return static_cast<int>(ms);
}

bool MetricsServer::Loop::take_snapshot() {
  uint64_t count = 0;
  ssize_t got = ::read(server_.wake_fd_.get(), &count, sizeof count);
  (void)got;
  std::lock_guard<std::mutex> lock(server_.mu_);
  if (server_.stopping_) return false;
  if (server_.snapshot_seq_ != seq_) {
    snapshot_ = server_.snapshot_;
    seq_ = server_.snapshot_seq_;
    snapshot_at_ = Clock::now();
    refresh_asked_ = false;
  }
  return true;
}

void MetricsServer::Loop::accept_from(int listen_fd) {
  for (;;) {
    UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors, the listening socket would wake poll() at once
      // again and again: leave the backlog for a while.
      if (errno == EMFILE || errno == ENFILE) accept_paused_until_ = Clock::now() + kAcceptPause;
      return;  // or EAGAIN: all taken
    }
    if (scrapers_.size() >= kMaxMetricsConnections) evict_idlest();
    if (scrapers_.size() >= kMaxMetricsConnections) {
      const std::string busy = plain_error(
          "503 Service Unavailable",
          "shelfd has " + std::to_string(kMaxMetricsConnections) + " scrapers connected");
      ssize_t sent = ::send(fd.get(), busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)sent;  // best effort: it closes either way
      continue;
    }
    Scraper s;
    s.deadline = Clock::now() + kMetricsScrapeTimeout;
    const int key = fd.get();
    s.fd = std::move(fd);
    scrapers_.emplace(key, std::move(s));
  }
}

void MetricsServer::Loop::evict_idlest() {
  auto idlest = scrapers_.end();
  for (auto it = scrapers_.begin(); it != scrapers_.end(); ++it) {
    const Scraper& s = it->second;
    if (s.waiting || !s.out.empty()) continue;
    if (idlest == scrapers_.end() || s.deadline < idlest->second.deadline) idlest = it;
  }
  if (idlest != scrapers_.end()) scrapers_.erase(idlest);
}

void MetricsServer::Loop::on_readable(Scraper& s) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(s.fd.get(), buf, sizeof buf, 0);
    if (n > 0 && s.draining) continue;
    if (n > 0) {
      s.in.append(buf, static_cast<size_t>(n));
      size_t end = s.in.find("\r\n\r\n");
      if (end == std::string::npos) end = s.in.find("\n\n");
      if (end != std::string::npos) return handle_request(s, end);
      if (s.in.size() > kMaxMetricsRequestBytes) {
        s.out = plain_error(
            "431 Request Header Fields Too Large",
            "requests are limited to " + std::to_string(kMaxMetricsRequestBytes) + " bytes");
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    s.fd.reset();  // EOF before a whole request, or an error
    return;
  }
}

void MetricsServer::Loop::handle_request(Scraper& s, size_t header_end) {
  if (header_end > kMaxMetricsRequestBytes) {
    s.out = plain_error(
        "431 Request Header Fields Too Large",
        "requests are limited to " + std::to_string(kMaxMetricsRequestBytes) + " bytes");
    return;
  }
  std::string line = s.in.substr(0, s.in.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    s.out = plain_error("400 Bad Request", "expected: GET /metrics HTTP/1.1");
    return;
  }
  const std::string method = line.substr(0, sp1);
  const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET" && method != "HEAD") {
    s.out = plain_error("405 Method Not Allowed", "only GET and HEAD are served");
    return;
  }
  if (target != "/metrics" && target.rfind("/metrics?", 0) != 0) {
    s.out = plain_error("404 Not Found", "shelfd serves /metrics only");
    return;
  }
  s.head = method == "HEAD";
  if (seq_ > 0 && Clock::now() < snapshot_at_ + kMetricsMinRefresh) {
    answer(s);  // figures this fresh are good enough: the loop is not asked again
    return;
  }
  s.waiting = true;
  s.after_seq = seq_;
  if (!refresh_asked_) {
    refresh_asked_ = true;
    refresh_asked_at_ = Clock::now();
    write_eventfd(server_.refresh_fd_.get());
  }
}

void MetricsServer::Loop::answer_waiting(Clock::time_point now) {
  const bool gave_up = refresh_asked_ && now >= refresh_asked_at_ + kMetricsRefreshWait;
  if (gave_up) refresh_asked_ = false;  // the next scrape asks again
  for (auto it = scrapers_.begin(); it != scrapers_.end();) {
    Scraper& s = it->second;
    if (s.waiting && (seq_ > s.after_seq || gave_up)) {
      answer(s);
      if (!on_writable(s)) {
        it = scrapers_.erase(it);
        continue;
      }
    }
    ++it;
  }
}

void MetricsServer::Loop::answer(Scraper& s) {
  s.waiting = false;
  if (seq_ == 0) {
    s.out = plain_error("503 Service Unavailable", "shelfd has not given figures yet");
    return;
  }
  if (rendered_seq_ != seq_) {
    body_ = render_metrics(snapshot_, server_.options_.top_datasets);
    rendered_seq_ = seq_;
  }
  s.out = http_response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body_, s.head);
}

bool MetricsServer::Loop::on_writable(Scraper& s) {
  while (s.sent < s.out.size()) {
    ssize_t n = ::send(s.fd.get(), s.out.data() + s.sent, s.out.size() - s.sent,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      s.sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true;
    } else {
      return false;
    }
  }
  ::shutdown(s.fd.get(), SHUT_WR);
  s.out.clear();
  s.in.clear();
  s.draining = true;
  return true;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const MetricsOptions& options) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->options_ = options;
  if (!options.tcp_listen.empty()) {
    SHELF_ASSIGN_OR_RETURN(m->tcp_fd_, listen_tcp(options.tcp_listen, m->tcp_address_));
  }
  // The daemon holds the instance lock: a socket nobody listens on is a
  // crashed daemon's; anything else there is not ours to remove.
  SHELF_RETURN_IF_ERROR(clear_stale_socket(options.unix_path));
  SHELF_ASSIGN_OR_RETURN(m->unix_fd_, listen_on_socket_file(options.unix_path, 64));
  m->unix_id_ = file_id(options.unix_path);
  m->refresh_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  m->wake_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!m->refresh_fd_.valid() || !m->wake_fd_.valid()) {
    if (m->unix_id_) remove_if_same(options.unix_path, *m->unix_id_);
    return Status::from_errno("eventfd", errno);
  }
  // The thread takes no signals: SIGTERM and SIGINT are the event loop's
  // (its signalfd), and one delivered here would kill shelfd uncleaned.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  m->thread_ = std::thread([server = m.get()] { Loop(*server).run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return m;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    write_eventfd(wake_fd_.get());
    thread_.join();
  }
  // Only the socket we made: another file may have been put there since.
  if (unix_fd_.valid() && unix_id_) remove_if_same(options_.unix_path, *unix_id_);
}

bool MetricsServer::take_refresh() {
  uint64_t count = 0;
  return ::read(refresh_fd_.get(), &count, sizeof count) == sizeof count && count > 0;
}

void MetricsServer::publish(MetricsSnapshot snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot_ = std::move(snapshot);
    ++snapshot_seq_;
  }
  write_eventfd(wake_fd_.get());
}

}  // namespace shelf::server
