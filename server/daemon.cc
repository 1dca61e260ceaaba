#include "server/daemon.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <optional>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <shelf/limits.h>

#include "base/units.h"
#include "protocol/messages.h"
#include "server/file_safety.h"
#include "server/log.h"
#include "server/store_internal.h"

namespace shelf::server {

using protocol::MessageType;

struct Daemon::Connection {
  UniqueFd fd;
  std::chrono::steady_clock::time_point accepted;  // tells it from a reused fd in silent_
  Store::SessionId session = 0;
  uint32_t pid = 0;
  uint32_t uid = 0;
  bool greeted = false;  // Hello received
  bool closing = false;  // close once `out` is flushed
  // A WaitFor is pending, or a Publish or a Get waits for checks off the
  // loop: nothing more is read until it is answered. The names it still
  // waits for (each has this fd in waiters_), or the ticket of the checks
  // (in checking_; the frame stays in `in`, to be processed again once they
  // are done).
  bool parked = false;
  std::vector<std::string> waiting_for;
  uint64_t check_ticket = 0;
  // Subscribed: a one-way event stream from now on (nothing more is read),
  // and the events not queued since its backlog reached kMaxEventBacklogBytes.
  bool subscribed = false;
  uint64_t dropped_events = 0;
  std::vector<std::byte> in;
  std::vector<std::byte> out;
  size_t out_sent = 0;
  // The lease table's memfd, sent with the first byte of `out` (the Hello
  // response) and then closed.
  UniqueFd pass_fd;
  uint32_t interest = 0;  // current epoll events
};

namespace {

// The sooner of two epoll timeouts in ms, -1 meaning none.
int sooner_timeout(int a, int b) { return a < 0 ? b : b < 0 ? a : std::min(a, b); }

// Reading in 256 KiB steps keeps the number of recv calls low for the large
// publish messages without holding much memory per idle connection.
constexpr size_t kReadChunk = 256 * 1024;

// Creates the socket's directory (0700, or 0710 and the group's with a
// group, so members can reach the socket) if need be, and refuses one that
// another user could use to swap our socket or plant a symlink where our lock
// and log files go (check_directory_chain: it and every ancestor). With a
// group, every directory on the way must let the group through.
Status make_private_parent_dir(const std::string& path, std::optional<gid_t> group,
                               const std::string& group_name) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return Status();
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  if (::mkdir(dir.c_str(), group ? 0710 : 0700) == 0) {
    if (group && ::chown(dir.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      return Status::from_errno("give " + dir + " to group " + group_name, errno);
    }
  } else if (errno != EEXIST) {
    return Status::from_errno("create directory " + dir, errno);
  }
  SHELF_RETURN_IF_ERROR(check_directory_chain(dir));
  if (!group) return Status();
  struct stat st;
  for (std::string d = dir;;) {
    if (::stat(d.c_str(), &st) != 0) return Status::from_errno("stat " + d, errno);
    const bool passes =
        (st.st_mode & S_IXOTH) != 0 || ((st.st_mode & S_IXGRP) != 0 && st.st_gid == *group);
    if (!passes) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return Status::permission_denied(
          "members of group " + group_name + " could not reach the socket: " + d + " (mode " +
          mode + ") does not let them through (it needs o+x, or g+x and group " + group_name +
          "); choose a --socket in a directory they can reach, e.g. a new one, which shelfd " +
          "creates with mode 0710 for the group");
    }
    if (d == "/") break;
    const auto up = d.rfind('/');
    d = up == 0 ? "/" : d.substr(0, up);
  }
  return Status();
}

// Resolves --group: a group name, or a numeric gid.
Result<gid_t> resolve_group(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  int rc = ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc == 0 && found != nullptr) return found->gr_gid;
  gid_t gid = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), gid);
  if (!name.empty() && ec == std::errc() && end == name.data() + name.size()) return gid;
  return Status::invalid_argument("--group: there is no group '" + name + "' (see getent group)");
}

// Gives the file at `path` to `group` with mode 0660. The file is ours and
// was created 0600, so it is never wider than asked, not even briefly.
Status share_with_group(const std::string& path, gid_t gid, const std::string& group_name) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  int rc = fd.valid() ? ::fchown(fd.get(), static_cast<uid_t>(-1), gid)
                      : ::chown(path.c_str(), static_cast<uid_t>(-1), gid);  // a socket
  if (rc != 0) {
    if (errno == EPERM) {
      return Status::permission_denied("shelfd (uid " + std::to_string(::geteuid()) +
                                       ") may not give " + path + " to group " + group_name +
                                       ": it must be a member of the group (or run as root)");
    }
    return Status::from_errno("give " + path + " to group " + group_name, errno);
  }
  rc = fd.valid() ? ::fchmod(fd.get(), 0660) : ::chmod(path.c_str(), 0660);
  if (rc != 0) return Status::from_errno("chmod 0660 " + path, errno);
  return Status();
}

// Takes the lock that makes this daemon the only one on `socket_path`. The
// kernel drops a flock when its holder dies, so a crashed daemon never blocks
// the next one.
Result<UniqueFd> take_instance_lock(const std::string& lock_path, const std::string& socket_path) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    SHELF_ASSIGN_OR_RETURN(UniqueFd fd, open_lock_file(lock_path));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) return Status::from_errno("lock " + lock_path, errno);
      char pid[32] = {};
      ssize_t n = ::pread(fd.get(), pid, sizeof pid - 1, 0);
      std::string who = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("?");
      while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
      return Status::already_exists("another shelfd (pid " + who + ") already serves " +
                                    socket_path + "; stop it first (kill " + who + ")");
    }
    // A daemon that was exiting may have unlinked the file we locked; then
    // our lock guards nothing. Check that the path is still our file.
    struct stat by_fd, by_path;
    if (::fstat(fd.get(), &by_fd) != 0) return Status::from_errno("stat " + lock_path, errno);
    if (::stat(lock_path.c_str(), &by_path) != 0 || by_fd.st_ino != by_path.st_ino ||
        by_fd.st_dev != by_path.st_dev) {
      continue;
    }
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0 ||
        ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      return Status::from_errno("write " + lock_path, errno);
    }
    return fd;
  }
  return Status::unavailable("could not take " + lock_path + ": it keeps being replaced");
}

}  // namespace

Status prepare_socket_directory(const DaemonOptions& options) {
  std::optional<gid_t> group;
  if (!options.group.empty()) {
    SHELF_ASSIGN_OR_RETURN(group, resolve_group(options.group));
  }
  return make_private_parent_dir(options.socket_path, group, options.group);
}

// Three quarters, not half: one user's big job (a Dask cluster is a
// connection per worker) still fits in most of the daemon, while the quarter
// left is far more than another user's session (the CLI, a notebook, a few
// workers) needs to get in. Below four slots the reserve is the one slot.
uint32_t default_connections_per_user(uint32_t max_connections) {
  if (max_connections < 2) return max_connections;
  return max_connections - std::max<uint32_t>(1, max_connections / 4);
}

Result<std::unique_ptr<Daemon>> Daemon::start(const DaemonOptions& options,
                                              const StoreOptions& store_options) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->options_ = options;
  if (d->options_.max_connections_per_user == 0) {
    d->options_.max_connections_per_user = default_connections_per_user(options.max_connections);
  }
  d->read_buffer_ = std::make_unique_for_overwrite<std::byte[]>(kReadChunk);
  d->spare_fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!options.group.empty()) {
    SHELF_ASSIGN_OR_RETURN(d->group_, resolve_group(options.group));
  }
  SHELF_RETURN_IF_ERROR(make_private_parent_dir(options.socket_path, d->group_, options.group));
  d->lock_path_ = options.socket_path + ".lock";
  SHELF_ASSIGN_OR_RETURN(d->lock_fd_, take_instance_lock(d->lock_path_, options.socket_path));
  d->lock_id_ = file_id(d->lock_path_);
  // We hold the instance lock, so a socket nobody listens on is stale; any
  // other file there is not ours to remove. Checked before the segment is
  // made, so that a refusal changes nothing.
  SHELF_RETURN_IF_ERROR(clear_stale_socket(options.socket_path));
  // Before the store: a --metrics-listen that cannot be served makes no segment.
  SHELF_ASSIGN_OR_RETURN(
      d->metrics_, MetricsServer::start({options.socket_path + ".metrics", options.metrics_listen,
                                         options.metrics_datasets}));
  SHELF_ASSIGN_OR_RETURN(d->store_, Store::create(store_options));
  SHELF_ASSIGN_OR_RETURN(d->listen_fd_, listen_on_socket_file(options.socket_path, 512));
  d->socket_id_ = file_id(options.socket_path);
  if (d->group_) {
    // Members connect to the socket and map the segment (read-write, to
    // publish). The lock and log files stay shelfd's own.
    SHELF_RETURN_IF_ERROR(share_with_group(options.socket_path, *d->group_, options.group));
    SHELF_RETURN_IF_ERROR(share_with_group(d->metrics_->unix_path(), *d->group_, options.group));
    SHELF_RETURN_IF_ERROR(share_with_group(d->store_->segment_path(), *d->group_, options.group));
    log_info("sharing " + options.socket_path + " and the segment with group " + options.group);
  } else {
    // A segment re-attached from a daemon started with --group is still
    // 0660: this one shares it with nobody.
    const std::string& segment_path = d->store_->segment_path();
    if (::chmod(segment_path.c_str(), 0600) != 0) {
      return Status::from_errno("chmod 0600 " + segment_path, errno);
    }
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (::pthread_sigmask(SIG_BLOCK, &signals, nullptr) != 0) {
    return Status::internal("cannot block SIGTERM/SIGINT");
  }
  // A client that vanishes mid-reply must not kill us; we use MSG_NOSIGNAL
  // too, but ignoring SIGPIPE covers every other write.
  ::signal(SIGPIPE, SIG_IGN);
  d->signal_fd_.reset(::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!d->signal_fd_.valid()) return Status::from_errno("signalfd", errno);
  d->epoll_fd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!d->epoll_fd_.valid()) return Status::from_errno("epoll_create1", errno);
  for (int fd : {d->listen_fd_.get(), d->signal_fd_.get(), d->metrics_->refresh_fd(),
                 d->store_->background_ready_fd(), d->store_->verifier_ready_fd(),
                 d->store_->spiller_ready_fd()}) {
    if (fd < 0) continue;  // no verifier (nothing to check after the restart), no spiller
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(d->epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status::from_errno("epoll_ctl", errno);
    }
  }
  d->watch_orphan_owners();
  return d;
}

void Daemon::watch_orphan_owners() {
  // A pidfd becomes readable when its process exits: then the extents it was
  // writing when the previous daemon died can be freed.
  for (uint32_t pid : store_->orphan_owners()) {
    UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0)));
    if (!fd.valid()) {
      if (errno == ESRCH) {
        store_->owner_gone(pid);
      } else {
        log_warn("cannot watch pid " + std::to_string(pid) + " (" + std::strerror(errno) +
                 "); its unsealed extents stay held until shelfd restarts");
      }
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd.get();
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
      log_warn("cannot watch pid " + std::to_string(pid) + ": epoll_ctl: " + std::strerror(errno));
      continue;
    }
    const int key = fd.get();
    owner_fds_.emplace(key, std::make_pair(pid, std::move(fd)));
  }
}

Daemon::~Daemon() {
  metrics_.reset();  // stops its thread first; it never touches what follows
  while (!connections_.empty()) close_connection(connections_.begin()->first);
  // Only the files we made: another may have been put at either path since.
  if (listen_fd_.valid() && socket_id_) remove_if_same(options_.socket_path, *socket_id_);
  store_.reset();  // keeps the segment for the next daemon unless --remove-segment-on-exit
  if (lock_fd_.valid() && lock_id_) remove_if_same(lock_path_, *lock_id_);
}

Status Daemon::run() {
  std::vector<epoll_event> events(64);
  // A turn runs from epoll_wait's return to its next call (metrics.h).
  std::optional<std::chrono::steady_clock::time_point> turn_began;
  for (;;) {
    const int silent_timeout = close_silent_connections();
    const int recheck_timeout = recheck_holds();
    const int timeout = sooner_timeout(silent_timeout, recheck_timeout);
    if (turn_began) {
      counters_.count_turn(std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now() - *turn_began)
                               .count());
    }
    int n = ::epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0) {
      turn_began.reset();
      if (errno == EINTR) continue;
      return Status::from_errno("epoll_wait", errno);
    }
    turn_began = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == signal_fd_.get()) {
        signalfd_siginfo info{};
        ssize_t got = ::read(signal_fd_.get(), &info, sizeof info);
        if (got == sizeof info) {
          log_info(std::string("stopping on ") + strsignal(static_cast<int>(info.ssi_signo)));
          return Status();
        }
        continue;
      }
      if (fd == listen_fd_.get()) {
        accept_connections();
        continue;
      }
      if (fd == metrics_->refresh_fd()) {
        refresh_metrics();
        continue;
      }
      if (fd == store_->background_ready_fd() || fd == store_->verifier_ready_fd() ||
          fd == store_->spiller_ready_fd()) {
        store_->collect_background();
        continue;
      }
      if (auto owner = owner_fds_.find(fd); owner != owner_fds_.end()) {
        ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
        store_->owner_gone(owner->second.first);
        owner_fds_.erase(owner);
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;
      Connection& c = *it->second;
      if ((c.parked || c.subscribed) && (events[i].events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
        close_connection(fd);  // a waiter that went away: its waits go with it
        continue;
      }
      if (events[i].events & (EPOLLERR | EPOLLHUP)) {
        // Flush nothing more: the peer is gone. (EPOLLHUP with data still to
        // read is handled by reading until EOF below.)
        if (!(events[i].events & EPOLLIN)) {
          close_connection(fd);
          continue;
        }
      }
      if (events[i].events & EPOLLOUT) on_writable(c);
      if (connections_.count(fd) && (events[i].events & EPOLLIN)) on_readable(c);
    }
    // After every turn: a request that waited for the worker collected too.
    emit_new_quarantines();
    wake_checked();
    flush_woken();
    // Once the requests a restore woke have their leases: it is not spilled again.
    store_->spill_above_threshold();
    if (std::exchange(lease_released_, false)) store_->recheck_table_holds();
  }
}

void Daemon::accept_connections() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_.valid()) {
        // Out of descriptors: the pending connection would wake epoll again
        // and again. Free the spare, take it, tell it why, close it.
        spare_fd_.reset();
        UniqueFd refused(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (refused.valid()) {
          refuse(refused.get(),
                 Status::unavailable("shelfd is out of file descriptors; try again later"));
        }
        spare_fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        log_warn("out of file descriptors: refused a connection");
        continue;
      }
      if (errno == EMFILE || errno == ENFILE) return;
      if (errno == ECONNABORTED) continue;
      log_error(std::string("accept: ") + std::strerror(errno));
      return;
    }
    auto c = std::make_unique<Connection>();
    c->fd.reset(fd);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      log_error(std::string("SO_PEERCRED: ") + std::strerror(errno));
      continue;  // who it is decides what it may do: without that, nothing
    }
    c->pid = static_cast<uint32_t>(cred.pid);
    c->uid = cred.uid;
    // File permissions keep others from the socket, but root ignores them
    // and a socket can be chmod-ed or reached through a passed descriptor:
    // the credentials the kernel vouches for decide.
    if (!allowed(fd, cred.uid, cred.gid)) {
      std::string who = "uid " + std::to_string(::geteuid());
      if (group_) who += " and members of group " + options_.group;
      refuse(fd, Status::permission_denied(
                     "uid " + std::to_string(cred.uid) + " may not use the shelfd at " +
                     options_.socket_path + ": it serves " + who + " only" +
                     (group_ ? "" : "; its owner can share it with a group (shelfd --group)")));
      log_warn("refused a connection from pid " + std::to_string(cred.pid) + " (uid " +
               std::to_string(cred.uid) + "): not its user" + (group_ ? " or group" : ""));
      continue;
    }
    if (!admit_within_user_share(fd, *c)) continue;
    if (connections_.size() >= options_.max_connections && !evict_a_silent_connection()) {
      // Unavailable, not ResourceExhausted: it is no memory limit, and a
      // later try may get in (Python: ConnectionError, not MemoryError).
      refuse(fd, Status::unavailable("shelfd has " + std::to_string(connections_.size()) +
                                     " connections, its limit (--max-connections); try "
                                     "again later"));
      log_warn("refused a connection from pid " + std::to_string(c->pid) +
               ": --max-connections reached");
      continue;
    }
    c->session = store_->open_session(c->pid, c->uid);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      log_error(std::string("epoll_ctl: ") + std::strerror(errno));
      store_->close_session(c->session);
      continue;
    }
    c->interest = EPOLLIN;
    c->accepted = std::chrono::steady_clock::now();
    silent_.emplace_back(c->accepted + std::chrono::milliseconds(kHelloTimeoutMs), fd);
    log_debug("connection from pid " + std::to_string(c->pid));
    ++connections_of_uid_[c->uid];
    connections_.emplace(fd, std::move(c));
  }
}

int Daemon::close_silent_connections() {
  const auto now = std::chrono::steady_clock::now();
  while (!silent_.empty()) {
    const auto [deadline, fd] = silent_.front();
    auto it = connections_.find(fd);
    // Gone, greeted, or a newer connection on a reused descriptor: done with it.
    const bool waiting =
        it != connections_.end() && !it->second->greeted &&
        it->second->accepted + std::chrono::milliseconds(kHelloTimeoutMs) == deadline;
    if (!waiting) {
      silent_.pop_front();
      continue;
    }
    if (deadline > now) {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
      return static_cast<int>(ms);
    }
    silent_.pop_front();
    log_warn("closed a connection from pid " + std::to_string(it->second->pid) + ": no Hello in " +
             std::to_string(kHelloTimeoutMs / 1000) + " s");
    refuse(fd, Status::unavailable("shelfd closed this connection: no Hello within " +
                                   std::to_string(kHelloTimeoutMs / 1000) + " s"));
    close_connection(fd);
  }
  return -1;
}

int Daemon::recheck_holds() {
  auto waiting = [&] { return store_->has_table_holds() || store_->waits_for_presence(); };
  if (!waiting()) return -1;
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_hold_recheck_) {
    store_->recheck_table_holds();
    store_->recheck_presence();
    next_hold_recheck_ = now + std::chrono::milliseconds(kHoldRecheckMs);
    if (!waiting()) return -1;
  }
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_hold_recheck_ - now);
  return static_cast<int>(std::max<int64_t>(wait.count(), 0));
}

bool Daemon::admit_within_user_share(int fd, const Connection& c) {
  if (c.uid == ::geteuid()) return true;
  const auto held = connections_of_uid_.find(c.uid);
  const uint32_t count = held == connections_of_uid_.end() ? 0 : held->second;
  const uint32_t share = options_.max_connections_per_user;
  if (count < share) return true;
  // Unavailable, as for --max-connections: closing one lets this user in again.
  refuse(fd, Status::unavailable("uid " + std::to_string(c.uid) + " has " + std::to_string(count) +
                                 " connections to the shelfd at " + options_.socket_path +
                                 ", the most one user may have (--max-connections-per-user " +
                                 std::to_string(share) +
                                 "); close one, or start shelfd with a larger " +
                                 "--max-connections-per-user"));
  log_warn("refused a connection from pid " + std::to_string(c.pid) + " (uid " +
           std::to_string(c.uid) + "): it has " + std::to_string(count) +
           " connections, --max-connections-per-user");
  return false;
}

bool Daemon::evict_a_silent_connection() {
  for (const auto& [deadline, fd] : silent_) {
    auto it = connections_.find(fd);
    if (it == connections_.end() || it->second->greeted) continue;
    log_warn("closed a connection from pid " + std::to_string(it->second->pid) +
             " that had not said Hello, to make room at --max-connections");
    refuse(fd, Status::unavailable("shelfd closed this connection to make room: it had not "
                                   "said Hello, and shelfd is at --max-connections"));
    close_connection(fd);
    return true;  // its silent_ entry goes at the next close_silent_connections()
  }
  return false;
}

bool Daemon::allowed(int fd, uint32_t uid, uint32_t gid) const {
  if (uid == ::geteuid() || uid == 0) return true;
  if (!group_) return false;
  if (gid == *group_) return true;
  // The peer's supplementary groups, as they were when it connected.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return std::find(groups.begin(), groups.end(), *group_) != groups.end();
    }
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t) + 1);  // len now says how much it takes
  }
  log_warn(std::string("SO_PEERGROUPS: ") + std::strerror(errno));
  return false;
}

void Daemon::refresh_metrics() {
  if (!metrics_->take_refresh()) return;
  MetricsSnapshot snapshot;
  snapshot.status = store_->status(/*who_holds=*/false);
  snapshot.counters = counters_;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  snapshot.taken_ns = int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
  metrics_->publish(std::move(snapshot));
}

void Daemon::refuse(int fd, const Status& why) {
  counters_.count_refused(DaemonCounters::Request::kConnect, why.code());
  std::vector<std::byte> out;
  protocol::encode_error_response(out, MessageType::kHello, why);
  ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;  // best effort: the connection closes either way
}

void Daemon::close_connection(int fd) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  // Ends the session: unsealed extents are freed, leases released.
  store_->close_session(it->second->session);
  drop_waits(*it->second);
  if (it->second->check_ticket != 0) {
    auto [first, last] = checking_.equal_range(it->second->check_ticket);
    for (auto c = first; c != last; ++c) {
      if (c->second == fd) {
        checking_.erase(c);
        break;
      }
    }
  }
  if (it->second->subscribed) std::erase(subscribers_, fd);
  if (auto held = connections_of_uid_.find(it->second->uid);
      held != connections_of_uid_.end() && --held->second == 0) {
    connections_of_uid_.erase(held);
  }
  log_debug("connection from pid " + std::to_string(it->second->pid) + " closed");
  connections_.erase(it);
}

void Daemon::on_readable(Connection& c) {
  const int fd = c.fd.get();
  for (;;) {
    // Into a scratch buffer, then appended: growing c.in by kReadChunk
    // first would zero-fill 256 KiB per request (measured: 16% of the
    // daemon's time per get).
    ssize_t n = ::recv(fd, read_buffer_.get(), kReadChunk, 0);
    if (n > 0) {
      c.in.insert(c.in.end(), read_buffer_.get(), read_buffer_.get() + n);
      process_frames(c);
      if (c.closing || c.parked || c.subscribed || !c.out.empty()) break;  // answer first
      if (static_cast<size_t>(n) < kReadChunk) break;
      continue;
    }
    if (n == 0) {  // EOF: the client is gone (exited or killed)
      close_connection(fd);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_connection(fd);
    return;
  }
  on_writable(c);
}

void Daemon::on_writable(Connection& c) {
  for (;;) {
    while (c.out_sent < c.out.size()) {
      ssize_t n = send_some(c);
      if (n > 0) {
        c.out_sent += static_cast<size_t>(n);
        c.pass_fd.reset();  // it went with the first byte
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        update_interest(c);  // wait for EPOLLOUT
        return;
      } else {
        close_connection(c.fd.get());  // the peer is gone
        return;
      }
    }
    c.out.clear();
    c.out_sent = 0;
    if (c.closing) {
      close_connection(c.fd.get());
      return;
    }
    if (c.subscribed) {
      // The backlog drained: say how many events it had no room for.
      if (c.dropped_events == 0) break;
      protocol::Event dropped;
      dropped.kind = protocol::EventKind::kDropped;
      dropped.time_ns = internal::now_ns();
      dropped.dropped = std::exchange(c.dropped_events, 0);
      protocol::encode_event(c.out, dropped);
      continue;
    }
    // Requests that arrived while a response was pending.
    process_frames(c);
    if (c.out.empty()) break;
  }
  update_interest(c);
}

ssize_t Daemon::send_some(Connection& c) {
  const size_t n = c.out.size() - c.out_sent;
  if (!c.pass_fd.valid()) {
    return ::send(c.fd.get(), c.out.data() + c.out_sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  iovec iov{c.out.data() + c.out_sent, n};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  const int fd = c.pass_fd.get();
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  return ::sendmsg(c.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

void Daemon::update_interest(Connection& c) {
  // Backpressure: while a response is unsent we stop reading that client.
  // A parked waiter, and a subscriber with nothing to send, are watched
  // only for hanging up.
  const uint32_t want = !c.out.empty()               ? EPOLLOUT
                        : (c.parked || c.subscribed) ? EPOLLRDHUP
                                                     : EPOLLIN;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd.get();
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) c.interest = want;
}

void Daemon::process_frames(Connection& c) {
  size_t consumed = 0;
  while (!c.closing && !c.parked && !c.subscribed && c.out.empty() &&
         c.in.size() - consumed >= protocol::kFrameHeaderBytes) {
    std::span<const std::byte> rest(c.in.data() + consumed, c.in.size() - consumed);
    protocol::FrameHeader h = protocol::read_frame_header(rest);
    std::string bad;
    if (h.magic != protocol::kFrameMagic) {
      bad = "not a shelf protocol frame (bad magic)";
    } else if (h.version != protocol::kProtocolVersion) {
      bad = "protocol version " + std::to_string(h.version) +
            " is not spoken here (shelfd speaks " + std::to_string(protocol::kProtocolVersion) +
            "); use a client of the same release";
    } else if (h.payload_length > protocol::kMaxPayloadBytes) {
      bad = "message of " + std::to_string(h.payload_length) + " bytes is over the limit of " +
            std::to_string(protocol::kMaxPayloadBytes);
    } else if (!protocol::is_request_type(h.type)) {
      bad = "unknown message type " + std::to_string(h.type);
    }
    if (!bad.empty()) {
      // We cannot find the next frame boundary in garbage: answer and hang up.
      log_warn("pid " + std::to_string(c.pid) + ": " + bad + "; closing the connection");
      protocol::encode_error_response(c.out, MessageType::kHello, Status::invalid_argument(bad));
      counters_.count_refused(DaemonCounters::Request::kBadFrame, Status::Code::kInvalidArgument);
      c.closing = true;
      break;
    }
    if (rest.size() - protocol::kFrameHeaderBytes < h.payload_length) break;  // wait for more
    dispatch(c, h.type, rest.subspan(protocol::kFrameHeaderBytes, h.payload_length));
    if (c.check_ticket != 0) break;  // the frame is processed again once checked
    consumed += protocol::kFrameHeaderBytes + h.payload_length;
  }
  c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(consumed));
  if (c.subscribed) std::vector<std::byte>().swap(c.in);  // never read: an event stream
}

void Daemon::hello(Connection& c, std::span<const std::byte> payload) {
  // The version first: the rest of another version's Hello may have
  // another shape, and its sender deserves the real reason.
  protocol::ByteReader version(payload);
  const uint16_t speaks = version.u16();
  if (!version.failed() && speaks != protocol::kProtocolVersion) {
    protocol::encode_error_response(
        c.out, MessageType::kHello,
        Status::invalid_argument("client speaks protocol " + std::to_string(speaks) +
                                 ", shelfd speaks " + std::to_string(protocol::kProtocolVersion)));
    c.closing = true;
    return;
  }
  auto m = protocol::decode_hello_request(payload);
  if (!m) {
    protocol::encode_error_response(c.out, MessageType::kHello,
                                    Status::invalid_argument("malformed message payload"));
    return;
  }
  // A second Hello is answered, but keeps the first lease table and the
  // leases in it: its response carries none.
  const bool first = !c.greeted;
  c.greeted = true;
  protocol::HelloResponse r;
  r.shm_dir = store_->shm_dir();
  r.segment_name = store_->segment_name();
  r.segment_bytes = store_->segment_bytes();
  r.generation = store_->generation();
  r.memory_limit = store_->memory_limit();
  r.daemon_pid = static_cast<uint32_t>(::getpid());
  if (first) {
    store_->describe_session(c.session, std::move(m->client_name), std::move(m->command));
    if (auto table = store_->open_lease_table(c.session); table.ok()) {
      c.pass_fd = std::move(table).value();
      r.lease_slots = kLeaseSlots;
    } else {
      log_warn("pid " + std::to_string(c.pid) + ": " + table.status().message() +
               "; its gets take leases by round trips");
    }
  }
  protocol::encode_response(c.out, r);
}

void Daemon::dispatch(Connection& c, uint16_t raw_type, std::span<const std::byte> payload) {
  const auto type = static_cast<MessageType>(raw_type);
  auto malformed = [&] {
    counters_.count_refused(DaemonCounters::request_of(type), Status::Code::kInvalidArgument);
    protocol::encode_error_response(c.out, type,
                                    Status::invalid_argument("malformed message payload"));
  };
  auto reply_status = [&](const Status& s) {
    if (s.ok()) {
      protocol::encode_empty_response(c.out, type);
    } else {
      counters_.count_refused(DaemonCounters::request_of(type), s.code());
      protocol::encode_error_response(c.out, type, s);
    }
  };
  if (!c.greeted && type != MessageType::kHello) {
    protocol::encode_error_response(c.out, type,
                                    Status::invalid_argument("the first message must be Hello"));
    c.closing = true;
    return;
  }
  switch (type) {
    case MessageType::kHello:
      return hello(c, payload);
    case MessageType::kAllocate: {
      auto m = protocol::decode_allocate_request(payload);
      if (!m) return malformed();
      // Over the limit with --spill-dir: answered once datasets are spilled.
      if (auto ticket = store_->await_room(c.session, m->bytes)) {
        return park_until_checked(c, *ticket);
      }
      auto r = store_->allocate(c.session, m->bytes);
      if (!r.ok()) return reply_status(r.status());
      return protocol::encode_response(c.out, *r);
    }
    case MessageType::kAbort: {
      auto m = protocol::decode_abort_request(payload);
      if (!m) return malformed();
      return reply_status(store_->abort(c.session, m->offset));
    }
    case MessageType::kPublish: {
      auto m = protocol::decode_publish_request(payload);
      if (!m) return malformed();
      // Its descriptors over the limit with --spill-dir: once datasets are spilled.
      if (auto ticket = store_->await_room(*m)) return park_until_checked(c, *ticket);
      // Large: its checks run off the loop first (Store::start_publish_checks).
      if (auto ticket = store_->start_publish_checks(c.session, *m)) {
        return park_until_checked(c, *ticket);
      }
      // Which names this publish replaces: only worth asking when someone listens.
      std::vector<bool> replaces;
      for (size_t i = 0; !subscribers_.empty() && i < m->items.size(); ++i) {
        replaces.push_back(store_->summary(m->items[i].name).has_value());
      }
      Status s = store_->publish(c.session, *m);
      if (s.ok()) counters_.publishes += m->items.size();
      if (s.ok()) wake_waiters(m->items);
      for (size_t i = 0; s.ok() && i < m->items.size(); ++i) {
        log_info("published '" + m->items[i].name + "' (pid " + std::to_string(c.pid) + ")");
        if (i < replaces.size()) emit_published(c, m->items[i].name, replaces[i]);
      }
      return reply_status(s);
    }
    case MessageType::kGet: {
      auto m = protocol::decode_get_request(payload);
      if (!m) return malformed();
      // Found at a restart and not verified yet, or spilled: answered once
      // it is verified, or restored.
      if (auto ticket = store_->await_served(m->name)) return park_until_checked(c, *ticket);
      auto r = store_->get(c.session, m->name);
      if (!r.ok()) return reply_status(r.status());
      return protocol::encode_response(c.out, *r);
    }
    case MessageType::kRelease: {
      auto m = protocol::decode_release_request(payload);
      if (!m) return malformed();
      return reply_status(store_->release(c.session, m->lease_id));
    }
    case MessageType::kUnpublish: {
      auto m = protocol::decode_unpublish_request(payload);
      if (!m) return malformed();
      auto removed = store_->unpublish(m->name, m->cascade);
      if (!removed.ok()) return reply_status(removed.status());
      for (const protocol::DatasetSummary& d : *removed) {
        emit_unpublished(c, d);
        ++counters_.unpublishes;
        log_info("unpublished '" + d.name + "' (pid " + std::to_string(c.pid) + ")");
      }
      return reply_status(Status());
    }
    case MessageType::kPin: {
      auto m = protocol::decode_pin_request(payload);
      if (!m) return malformed();
      // Pinned means in memory: answered, as a Get, once checked or restored.
      if (m->pinned) {
        if (auto ticket = store_->await_served(m->name)) return park_until_checked(c, *ticket);
      }
      Status s = store_->pin(m->name, m->pinned);
      if (s.ok()) {
        log_info((m->pinned ? "pinned '" : "unpinned '") + m->name + "' (pid " +
                 std::to_string(c.pid) + ")");
      }
      return reply_status(s);
    }
    case MessageType::kList:
      if (!payload.empty()) return malformed();
      return protocol::encode_response(c.out, store_->list());
    case MessageType::kStatus: {
      if (!payload.empty()) return malformed();
      protocol::StatusResponse r = store_->status();
      r.socket_path = options_.socket_path;
      return protocol::encode_response(c.out, r);
    }
    case MessageType::kLeaseReleased:
      if (!payload.empty()) return malformed();
      lease_released_ = true;  // looked at once per loop turn, however many came
      return protocol::encode_empty_response(c.out, type);
    case MessageType::kWaitFor: {
      auto m = protocol::decode_wait_for_request(payload);
      if (!m) return malformed();
      for (const std::string& name : m->names) {
        Status s = Store::check_name(name);
        if (!s.ok()) return reply_status(s);
      }
      return start_wait(c, *m);
    }
    case MessageType::kSubscribe: {
      auto m = protocol::decode_subscribe_request(payload);
      if (!m) return malformed();
      return subscribe(c, *m);
    }
    case MessageType::kEvent:
      break;  // not a request: process_frames() refused it already
  }
  malformed();
}

void Daemon::start_wait(Connection& c, const protocol::WaitForRequest& m) {
  std::vector<std::string> missing;
  for (const std::string& name : m.names) {
    if (store_->serves(name)) continue;
    if (std::find(missing.begin(), missing.end(), name) != missing.end()) continue;
    missing.push_back(name);
  }
  if (missing.empty()) return protocol::encode_empty_response(c.out, MessageType::kWaitFor);
  for (const std::string& name : missing) waiters_[name].push_back(c.fd.get());
  log_debug("pid " + std::to_string(c.pid) + " waits for " + std::to_string(missing.size()) +
            " name(s)");
  c.waiting_for = std::move(missing);
  c.parked = true;
}

void Daemon::wake_waiters(const std::vector<protocol::PublishItem>& items) {
  for (const protocol::PublishItem& item : items) {
    auto it = waiters_.find(item.name);
    if (it == waiters_.end()) continue;
    for (int fd : it->second) {
      Connection& c = *connections_.at(fd);
      std::erase(c.waiting_for, item.name);
      if (!c.waiting_for.empty()) continue;
      c.parked = false;
      protocol::encode_empty_response(c.out, MessageType::kWaitFor);
      woken_.push_back(fd);
    }
    waiters_.erase(it);
  }
}

void Daemon::park_until_checked(Connection& c, uint64_t ticket) {
  c.check_ticket = ticket;
  c.parked = true;
  checking_.emplace(ticket, c.fd.get());
}

void Daemon::wake_checked() {
  for (uint64_t ticket : store_->take_finished_checks()) {
    // None left: their connections closed meanwhile.
    auto [first, last] = checking_.equal_range(ticket);
    for (auto it = first; it != last; ++it) {
      Connection& c = *connections_.at(it->second);
      c.check_ticket = 0;
      c.parked = false;
      woken_.push_back(c.fd.get());  // on_writable() processes its request again
    }
    checking_.erase(first, last);
  }
}

void Daemon::flush_woken() {
  // A woken connection may publish in its next request and wake others:
  // take the list, and loop until none is left.
  while (!woken_.empty()) {
    std::vector<int> woken = std::move(woken_);
    woken_.clear();
    for (int fd : woken) {
      auto it = connections_.find(fd);
      if (it != connections_.end()) on_writable(*it->second);
    }
  }
}

void Daemon::drop_waits(Connection& c) {
  for (const std::string& name : c.waiting_for) {
    auto it = waiters_.find(name);
    if (it == waiters_.end()) continue;
    std::erase(it->second, c.fd.get());
    if (it->second.empty()) waiters_.erase(it);
  }
  c.waiting_for.clear();
  c.parked = false;
}

void Daemon::subscribe(Connection& c, const protocol::SubscribeRequest& m) {
  const uint64_t generation = store_->generation();
  protocol::encode_response(c.out, protocol::SubscribeResponse{generation});
  if (m.last_generation != 0 && m.last_generation != generation) {
    // What a subscriber of the previous daemon missed and can still learn:
    // that this one started, and what it found damaged. Bounded by the
    // index's size, so queued whole, past kMaxEventBacklogBytes if need be.
    protocol::Event restart;
    restart.kind = protocol::EventKind::kRestart;
    restart.time_ns = store_->started_ns();
    restart.generation = generation;
    restart.previous_generation = m.last_generation;
    protocol::encode_event(c.out, restart);
    for (protocol::QuarantinedDataset& q : store_->quarantined()) {
      protocol::Event e;
      e.kind = protocol::EventKind::kQuarantine;
      e.name = std::move(q.name);
      e.time_ns = store_->started_ns();
      e.memory_bytes = q.memory_bytes;
      e.reason = std::move(q.reason);
      protocol::encode_event(c.out, e);
    }
  }
  c.subscribed = true;
  subscribers_.push_back(c.fd.get());
  log_debug("pid " + std::to_string(c.pid) + " subscribed to events");
}

void Daemon::emit_new_quarantines() {
  for (protocol::QuarantinedDataset& q : store_->take_new_quarantines()) {
    protocol::Event e;
    e.kind = protocol::EventKind::kQuarantine;
    e.name = std::move(q.name);
    e.time_ns = internal::now_ns();
    e.memory_bytes = q.memory_bytes;
    e.reason = std::move(q.reason);
    emit(e);
  }
}

void Daemon::emit_published(const Connection& publisher, const std::string& name, bool replaced) {
  const std::optional<protocol::DatasetSummary> d = store_->summary(name);
  if (!d) return;
  protocol::Event e;
  e.kind = replaced ? protocol::EventKind::kOverride : protocol::EventKind::kPublish;
  e.name = name;
  e.time_ns = d->created_ns;
  e.pid = publisher.pid;
  e.uid = publisher.uid;
  e.num_rows = d->num_rows;
  e.num_partitions = d->num_partitions;
  e.memory_bytes = d->memory_bytes;
  emit(e);
}

void Daemon::emit_unpublished(const Connection& by, const protocol::DatasetSummary& removed) {
  protocol::Event e;
  e.kind = protocol::EventKind::kUnpublish;
  e.name = removed.name;
  e.time_ns = internal::now_ns();
  e.pid = by.pid;
  e.uid = by.uid;
  e.num_rows = removed.num_rows;
  e.num_partitions = removed.num_partitions;
  e.memory_bytes = removed.memory_bytes;
  emit(e);
}

void Daemon::emit(const protocol::Event& event) {
  std::vector<std::byte> frame;
  protocol::encode_event(frame, event);
  for (int fd : subscribers_) {
    Connection& c = *connections_.at(fd);
    const size_t unsent = c.out.size() - c.out_sent;
    // Once one is dropped, all are until the backlog drains: the dropped
    // event then comes in the place of the missing ones.
    if (c.dropped_events > 0 || unsent + frame.size() > kMaxEventBacklogBytes) {
      ++c.dropped_events;
      continue;
    }
    if (c.out_sent >= unsent && c.out_sent > 0) {
      // The sent prefix outgrew the rest: drop it, so that a subscriber
      // that reads slowly but never catches up cannot grow `out` for ever.
      c.out.erase(c.out.begin(), c.out.begin() + static_cast<std::ptrdiff_t>(c.out_sent));
      c.out_sent = 0;
    }
    c.out.insert(c.out.end(), frame.begin(), frame.end());
    // Sent after this loop turn's requests; one already sending (EPOLLOUT)
    // takes it with the rest.
    if (unsent == 0) woken_.push_back(fd);
  }
}

}  // namespace shelf::server
