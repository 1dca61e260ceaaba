#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <shelf/client.h>
#include <shelf/filter.h>
#include <shelf/limits.h>

#include "base/fault_point.h"
#include "base/paths.h"
#include "libclient/src/client_impl.h"
#include "libclient/src/dataset_impl.h"
#include "libclient/src/table_state.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/presence.h"
#include "shm/view.h"

namespace shelf {

using protocol::MessageType;

namespace {

// getpid() without a system call, for the checks on the get path (the
// system call was a quarter of a get's time): read once, and again in the
// child of every fork (pthread_atfork), the only time it changes for a
// process that uses a Client. A child made by a raw clone(2), which skips
// fork's handlers, would keep its parent's pid.
std::atomic<pid_t> g_pid{0};
void refresh_pid() { g_pid.store(::getpid(), std::memory_order_relaxed); }
pid_t current_pid() {
  static const bool registered = [] {
    refresh_pid();
    return ::pthread_atfork(nullptr, nullptr, refresh_pid) == 0;
  }();
  (void)registered;
  return g_pid.load(std::memory_order_relaxed);
}

// This process's command line, arguments joined by spaces, at most
// kMaxCommandBytes: what shelf status shows of it (HelloRequest).
const std::string& own_command_line() {
  // Read once per process: every connection says it (each wait and
  // subscription opens one), and it does not change. A forked child says
  // its parent's, which is what its own /proc/self/cmdline says too.
  static const std::string command = [] {
    std::string text;
    if (FILE* f = std::fopen("/proc/self/cmdline", "re")) {
      text.resize(kMaxCommandBytes);
      text.resize(std::fread(text.data(), 1, text.size(), f));
      std::fclose(f);
    }
    while (!text.empty() && text.back() == '\0') text.pop_back();
    std::replace(text.begin(), text.end(), '\0', ' ');
    return text;
  }();
  return command;
}

// Why a shelfd at `socket` did not answer within `timeout`, as far as this
// process can tell: the pid in its lock file, and whether that process is
// alive and stopped (SIGSTOP) or running. Without the lock file, only the wait.
std::string no_answer(const std::string& socket, std::chrono::milliseconds timeout) {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g s", static_cast<double>(timeout.count()) / 1000);
  std::string msg = "shelfd at " + socket + " did not answer in " + seconds;
  long pid = 0;
  if (FILE* lock = std::fopen((socket + ".lock").c_str(), "re")) {
    if (std::fscanf(lock, "%ld", &pid) != 1) pid = 0;
    std::fclose(lock);
  }
  char state = '?';
  if (pid > 0) {
    const std::string stat_path = "/proc/" + std::to_string(pid) + "/stat";
    if (FILE* stat = std::fopen(stat_path.c_str(), "re")) {
      // "pid (comm) state ...": the state follows the last ')'.
      char line[512] = {};
      size_t n = std::fread(line, 1, sizeof line - 1, stat);
      std::fclose(stat);
      const char* close = std::strrchr(line, ')');
      if (n > 0 && close != nullptr && close[1] == ' ') state = close[2];
    }
  }
  const std::string who = "pid " + std::to_string(pid);
  if (state == 'T' || state == 't') {
    msg += " and is still running, but stopped (" + who + ", SIGSTOP?): kill -CONT " +
           std::to_string(pid) + " resumes it";
  } else if (state != '?') {
    msg += " and is still running (" + who + "): it is busy or hung; wait, or allow longer " +
           "(shelf --timeout SECONDS)";
  } else {
    msg += "; allow longer with shelf --timeout SECONDS";
  }
  return msg;
}

std::string start_hint(const std::string& socket) {
  return "no shelfd at " + socket + " — start it with: shelfd --socket " + socket;
}

// True when the socket at `path` is shelfd's (owned by `daemon_uid`) and
// shared with a group this process is in (shelfd --group: mode 0660).
bool shared_with_my_group(const std::string& path, uint32_t daemon_uid) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != daemon_uid ||
      (st.st_mode & (S_IRGRP | S_IWGRP)) != (S_IRGRP | S_IWGRP)) {
    return false;
  }
  if (st.st_gid == ::getegid()) return true;
  std::vector<gid_t> groups(static_cast<size_t>(std::max(::getgroups(0, nullptr), 0)));
  int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
  return n > 0 && std::find(groups.begin(), groups.begin() + n, st.st_gid) != groups.begin() + n;
}

DatasetInfo to_info(const protocol::DatasetSummary& s) {
  DatasetInfo d;
  d.name = s.name;
  d.num_columns = s.num_columns;
  d.num_partitions = s.num_partitions;
  d.num_rows = s.num_rows;
  d.data_bytes = s.data_bytes;
  d.memory_bytes = s.memory_bytes;
  d.created_ns = s.created_ns;
  d.publisher_uid = s.publisher_uid;
  d.publisher_pid = s.publisher_pid;
  d.leases = s.leases;
  d.spilled = s.spilled;
  d.pinned = s.pinned;
  d.view = s.view;
  d.view_of_graph = s.view_of_graph;
  d.view_base = s.view_base;
  return d;
}

// Opens a stream socket to `path` whose every wait is bounded by `timeout`.
// Errors: Unavailable (nobody listens there), PermissionDenied,
// InvalidArgument (path too long).
Result<UniqueFd> connect_socket(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::invalid_argument("socket path is too long: " + path);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::from_errno("socket", errno);
  // Bounds every wait on the daemon: recv and send (and a connect to a full
  // backlog, which Linux bounds by the send timeout) give up with EAGAIN.
  if (timeout.count() > 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
      return Status::from_errno("set the socket timeout", errno);
    }
  }
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return fd;
  switch (errno) {
    case ENOENT:        // no socket file
    case ENOTDIR:       // a directory on the way is missing
    case ECONNREFUSED:  // a socket file nobody listens on (a daemon that died)
      return Status::unavailable(start_hint(path));
    case EACCES:
    case EPERM:
      return Status::permission_denied(
          "you may not use the shelfd at " + path +
          " (permission denied): it serves only its own user, or the members of the group it "
          "was started with (shelfd --group)");
    case EAGAIN:
      return Status::unavailable(no_answer(path, timeout));
    default:
      // Whatever else connect(2) says, there is no daemon to talk to here.
      return Status::unavailable("cannot connect to shelfd at " + path + " (" +
                                 std::strerror(errno) + "); " + start_hint(path));
  }
}

}  // namespace

// ---------------------------------------------------------------- Impl --

Result<std::shared_ptr<Client::Impl>> Client::Impl::connect(const ClientOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->options_ = options;
  impl->owner_pid_ = current_pid();
  impl->socket_path_ = options.socket.empty() ? default_socket_path() : options.socket;
  SHELF_ASSIGN_OR_RETURN(impl->fd_, connect_socket(impl->socket_path_, options.request_timeout));
  SHELF_RETURN_IF_ERROR(impl->check_peer());
  std::vector<std::byte> hello;
  protocol::encode_request(hello, protocol::HelloRequest{protocol::kProtocolVersion,
                                                         options.client_name, own_command_line()});
  UniqueFd table_fd;
  impl->receive_fd_ = &table_fd;
  auto hello_response =
      impl->call_and_decode(hello, MessageType::kHello, protocol::decode_hello_response);
  impl->receive_fd_ = nullptr;
  SHELF_ASSIGN_OR_RETURN(impl->hello_, std::move(hello_response));
  SHELF_RETURN_IF_ERROR(impl->map_segment());
  impl->attach_lease_table(std::move(table_fd));
  return impl;
}

void Client::Impl::attach_lease_table(UniqueFd fd) {
  if (hello_.lease_slots == 0 || !fd.valid()) return;
  // A table that is not what the daemon announced is not used: every lease
  // then takes a round trip, which is always safe.
  auto table = shm::LeaseTable::attach(std::move(fd));
  if (table.ok() && table->slots() == hello_.lease_slots) leases_.emplace(std::move(table).value());
}

std::optional<uint32_t> Client::Impl::take_lease_slot() {
  if (!leases_) return std::nullopt;
  std::lock_guard<std::mutex> lock(lease_mu_);
  if (!free_lease_slots_.empty()) {
    const uint32_t slot = free_lease_slots_.back();
    free_lease_slots_.pop_back();
    return slot;
  }
  if (unused_lease_slot_ == leases_->slots()) return std::nullopt;
  const uint32_t slot = unused_lease_slot_++;
  leases_->raise_high_water(unused_lease_slot_);
  return slot;
}

Result<std::optional<uint32_t>> Client::Impl::lease_in_table(const shm::EntrySnapshot& entry) {
  if (!leases_) return std::optional<uint32_t>();
  SHELF_RETURN_IF_ERROR(check_owner());  // a forked child has no table
  const std::optional<uint32_t> taken = take_lease_slot();
  if (!taken) return std::optional<uint32_t>();  // full: a round trip
  const uint32_t slot = *taken;
  // docs/leases.md, "The reader's side": set the slot, fence, look again.
  leases_->set(slot, entry.publish_id);
  SHELF_FAULT_POINT("client.lease.after_set");
  std::atomic_thread_fence(std::memory_order_seq_cst);
  SHELF_FAULT_POINT("client.lease.after_fence");
  if (index_->still_published(entry.slot, entry.publish_id) == shm::IndexRead::kFound) {
    // Also after the look: a restarted daemon scans no table of ours, but
    // it bumped the generation before it wrote the index we just read.
    Status alive = check_daemon();
    if (alive.ok()) return std::optional<uint32_t>(slot);
    give_back_lease_slot(slot);
    return alive;
  }
  give_back_lease_slot(slot);
  return std::optional<uint32_t>();  // it changed meanwhile: ask the daemon
}

void Client::Impl::give_back_lease_slot(uint32_t slot) {
  leases_->clear(slot);
  std::lock_guard<std::mutex> lock(lease_mu_);
  free_lease_slots_.push_back(slot);
}

void Client::Impl::end_table_lease(uint32_t slot, uint32_t index_slot, uint64_t publish_id) {
  if (!check_owner().ok()) return;  // a forked child: the lease and the mapping are the parent's
  give_back_lease_slot(slot);
  SHELF_FAULT_POINT("client.lease.after_clear");
  // The same pairing as taking it (docs/leases.md): either the daemon's
  // scan after unpublishing saw the slot empty, or this look sees the
  // dataset gone and says so.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const bool gone = index_->still_published(index_slot, publish_id) != shm::IndexRead::kFound;
  if (gone) post_lease_released();
}

void Client::Impl::post_lease_released() {
  std::vector<std::byte> frame;
  protocol::encode_lease_released_request(frame);
  post(frame);
}

shm::IndexRead Client::Impl::list_in_table(ListBuffers* buffers) {
  const std::optional<uint32_t> slot = take_lease_slot();
  if (!slot) return shm::IndexRead::kBusy;
  // docs/leases.md, "Lists": mark, fence, read; a daemon that unpublishes
  // meanwhile either sees the mark and holds what it would free, or has
  // changed the index before the fence, and the attempt reads the change.
  std::optional<uint64_t> first_mark;
  auto mark = [&](uint64_t seq) {
    if (!first_mark) first_mark = seq;
    leases_->mark_listing(*slot, seq);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    SHELF_FAULT_POINT("client.list.after_mark");
  };
  const shm::IndexRead read = index_->list_summaries(&buffers->entries, &buffers->names, mark);
  give_back_lease_slot(*slot);
  // As ending a lease: either the daemon's next scan sees the slot empty,
  // or this look sees that the index changed since the first mark (which
  // any unpublish that saw a mark of ours did): say so, and what it held
  // for this list is freed now rather than at its next look.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (first_mark && index_->sequence() != *first_mark) post_lease_released();
  return read;
}

Status Client::Impl::check_peer() const {
  // Only a daemon of our own user (or root) may hold our data: anyone else
  // listening on that path could read what we publish. The exception is a
  // daemon shared with a group of ours (shelfd --group) whose socket we were
  // told explicitly: at the default path anyone could be listening.
  ucred peer{};
  socklen_t peer_len = sizeof peer;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0) {
    return Status::from_errno("check who serves " + socket_path_, errno);
  }
  const char* env_socket = std::getenv("SHELF_SOCKET");
  const bool named = !options_.socket.empty() || (env_socket != nullptr && *env_socket != '\0');
  if (peer.uid != ::geteuid() && peer.uid != 0 &&
      !(named && shared_with_my_group(socket_path_, peer.uid))) {
    return Status::permission_denied(
        "the process serving " + socket_path_ + " runs as uid " + std::to_string(peer.uid) +
        ", not as you or root, and its socket is not shared with a group of yours at a path you "
        "named (--socket, $SHELF_SOCKET); refusing to use it");
  }
  return Status();
}

Status Client::Impl::segment_unavailable(const Status& cause) const {
  return Status::unavailable("shelfd at " + socket_path_ + " serves " + segment_path() +
                             ", which this process cannot open (" + cause.message() +
                             "): it was removed, or this process sees another " + hello_.shm_dir +
                             " than shelfd (a container?); restart shelfd (shelfd --socket " +
                             socket_path_ + ") to serve a segment again");
}

Status Client::Impl::map_segment() {
  // Map the whole segment read-only, once: readers then get pointers with no
  // further system call (unmapping and remapping a touched GiB costs ~50 ms).
  auto opened = shm::ShmObject::open(hello_.shm_dir, hello_.segment_name, /*writable=*/false);
  if (!opened.ok()) return segment_unavailable(opened.status());
  shm::ShmObject segment = std::move(opened).value();
  SHELF_ASSIGN_OR_RETURN(uint64_t size, segment.size());
  if (size < hello_.segment_bytes || hello_.segment_bytes < shm::kPageSize) {
    return Status::corruption(segment_path() + " is smaller than shelfd says");
  }
  SHELF_ASSIGN_OR_RETURN(shm::Mapping mapping,
                         shm::Mapping::map(segment, 0, hello_.segment_bytes, false));
  // Held while `segment` is open, i.e. while this connection maps it, so
  // that a shelfd restarted later sees this process whatever user it runs
  // as (shm/presence.h). Taken before the generation is checked below: a
  // daemon that restarted in between is refused here, and one that
  // restarts later finds the lock.
  if (Status s = shm::announce_presence(segment, hello_.generation); !s.ok()) {
    return Status::unavailable(s.message() +
                               ": the lock that tells a restarted shelfd this process still "
                               "reads the segment; nothing was read");
  }
  const auto* header = reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping.data());
  // Acquire: pairs with the daemon's release store of the magic in Store::initialise().
  const uint64_t magic = shm::load_acquire(header->magic);
  if (magic != shm::kSegmentMagic || header->layout_version != shm::kLayoutVersion ||
      header->generation != hello_.generation) {
    return Status::corruption(segment_path() +
                              " is not the segment shelfd announced (magic, version or "
                              "generation differ); is another program using that name?");
  }
  auto index = shm::NameIndexReader::open({mapping.data(), mapping.size()});
  if (!index) {
    return Status::corruption(segment_path() +
                              " has a name index this client cannot read (its header's "
                              "geometry is not that of layout version " +
                              std::to_string(shm::kLayoutVersion) + ")");
  }
  segment_.emplace(std::move(segment));
  mapping_.emplace(std::move(mapping));
  index_ = *index;
  return Status();
}

Status Client::Impl::check_alive() {
  SHELF_RETURN_IF_ERROR(check_owner());
  return check_daemon();
}

Status Client::Impl::check_daemon() {
  if (broken_) {
    std::lock_guard<std::mutex> lock(mu_);
    return lost("earlier", 0);
  }
  // A daemon that died (or stopped) closed the socket: POLLRDHUP, even with
  // replies to post()ed requests still unread in it. This is as early as
  // death can be seen: the kernel closes a killed daemon's files (sockets
  // and its lock alike) only when its last thread exits, and until then the
  // segment is still the one it keeps, so an answer read from it is one the
  // daemon would have given. Tests that kill shelfd wait for its whole
  // thread group to exit (a pidfd, or waitpid) before they expect an error.
  pollfd p{fd_.get(), POLLRDHUP, 0};
  int n;
  do {
    n = ::poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
    std::lock_guard<std::mutex> lock(mu_);
    return lost("the daemon closed it", 0);
  }
  // A daemon restarted on the segment bumped its generation: the index is
  // no longer the one this connection's daemon keeps.
  const auto* header = reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping_->data());
  if (shm::load_acquire(header->generation) != hello_.generation) {
    std::lock_guard<std::mutex> lock(mu_);
    return lost("shelfd restarted on the segment", 0);
  }
  return Status();
}

bool Client::Impl::broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

Status Client::Impl::lost(std::string_view what, int err) {
  broken_ = true;
  if (!broken_reason_.empty()) return Status::unavailable(broken_reason_);
  if (err == EAGAIN || err == EWOULDBLOCK) {
    // Not lost: late. A reply that comes later would be out of step, so
    // nothing more is read or sent here. The socket stays open, though:
    // closing it would end the session and with it the leases of Datasets
    // this process still reads; it closes when the last of them (and the
    // Client) is gone.
    broken_reason_ = no_answer(socket_path_, options_.request_timeout) +
                     "; this connection is not used again: connect anew";
    return Status::unavailable(broken_reason_);
  }
  std::string msg = "lost the connection to shelfd at " + socket_path_ + " (" + std::string(what);
  if (err != 0) {
    msg += ": " + std::string(std::strerror(err));
  }
  broken_reason_ = msg +
                   "); connect again once shelfd runs: a shelfd restarted on the same segment "
                   "serves the same datasets";
  return Status::unavailable(broken_reason_);
}

ssize_t Client::Impl::recv_keeping_fd(std::byte* out, size_t n) {
  iovec iov{out, n};
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t r = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
  if (r <= 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < fds; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (!receive_fd_->valid()) {
        receive_fd_->reset(fd);
      } else {
        ::close(fd);  // only one is ever sent
      }
    }
  }
  return r;
}

Status Client::Impl::read_exact(std::byte* out, size_t n) {
  while (n > 0) {
    if (inbox_begin_ < inbox_end_) {
      const size_t take = std::min(n, inbox_end_ - inbox_begin_);
      std::memcpy(out, inbox_.data() + inbox_begin_, take);
      inbox_begin_ += take;
      out += take;
      n -= take;
      continue;
    }
    const bool direct = n >= kInboxBytes;
    if (!direct && inbox_.empty()) inbox_.resize(kInboxBytes);
    std::byte* into = direct ? out : inbox_.data();
    const size_t room = direct ? n : inbox_.size();
    ssize_t r =
        receive_fd_ != nullptr ? recv_keeping_fd(into, room) : ::recv(fd_.get(), into, room, 0);
    if (r > 0) {
      if (direct) {
        out += r;
        n -= static_cast<size_t>(r);
      } else {
        inbox_begin_ = 0;
        inbox_end_ = static_cast<size_t>(r);
      }
    } else if (r == 0) {
      return lost("the daemon closed it", 0);
    } else if (errno != EINTR) {
      return lost("recv", errno);
    }
  }
  return Status();
}

Status Client::Impl::check_owner() const {
  if (current_pid() == owner_pid_) return Status();
  return Status::unavailable("this connection to shelfd at " + socket_path_ +
                             " was opened by process " + std::to_string(owner_pid_) +
                             " before a fork; connect again in this process (what the parent "
                             "holds stays the parent's)");
}

Status Client::Impl::send_all(const std::vector<std::byte>& request) {
  if (broken_) return lost("earlier", 0);
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd_.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      return lost("send", errno);
    }
  }
  return Status();
}

Result<protocol::FrameHeader> Client::Impl::read_response() {
  std::byte header_bytes[protocol::kFrameHeaderBytes];
  SHELF_RETURN_IF_ERROR(read_exact(header_bytes, sizeof header_bytes));
  protocol::FrameHeader h = protocol::read_frame_header(header_bytes);
  if (h.magic != protocol::kFrameMagic || h.payload_length > protocol::kMaxPayloadBytes) {
    return lost("garbled response", 0);
  }
  payload_.resize(h.payload_length);
  SHELF_RETURN_IF_ERROR(read_exact(payload_.data(), payload_.size()));
  return h;
}

void Client::Impl::post(const std::vector<std::byte>& request) {
  if (!check_owner().ok()) return;  // a forked child: the leases are the parent's
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_) return;  // the daemon ended the leases with the connection
  // Unread replies fill the socket; past a bound the daemon would stop
  // reading us (backpressure) and this send would block for ever. Drop them
  // before they can: 64 replies are a few KiB.
  if (unread_replies_ >= kMaxUnreadReplies) {
    for (; unread_replies_ > 0; --unread_replies_) {
      if (!read_response().ok()) return;
    }
  }
  if (send_all(request).ok()) ++unread_replies_;
}

Result<std::vector<std::byte>> Client::Impl::call(const std::vector<std::byte>& request,
                                                  MessageType type) {
  // Before anything is sent or read: a forked child reading the shared
  // socket would take its parent's replies.
  SHELF_RETURN_IF_ERROR(check_owner());
  std::lock_guard<std::mutex> lock(mu_);
  return call_locked(request, type);
}

Result<std::vector<std::byte>> Client::Impl::call_locked(const std::vector<std::byte>& request,
                                                         MessageType type) {
  if (Status sent = send_all(request); !sent.ok()) {
    // A daemon that refuses a connection (too many clients) answers and hangs
    // up at once, maybe before our request went out: its reason is worth more
    // than "broken pipe".
    auto reply = read_response();
    if (reply.ok() && unread_replies_ == 0) {
      protocol::ByteReader reader(payload_);
      Status refused = protocol::decode_response_status(reader);
      if (!refused.ok()) return refused;
    }
    return sent;
  }
  for (; unread_replies_ > 0; --unread_replies_) {
    SHELF_RETURN_IF_ERROR(read_response().status());  // replies to post(): dropped
  }
  SHELF_ASSIGN_OR_RETURN(protocol::FrameHeader h, read_response());
  protocol::ByteReader reader(payload_);
  Status status = protocol::decode_response_status(reader);
  // The daemon answers a frame it cannot parse with an error and hangs up.
  const uint16_t expected = static_cast<uint16_t>(type) | protocol::kResponseBit;
  if (h.type != expected && status.ok()) return lost("out-of-order response", 0);
  if (!status.ok()) return status;
  const size_t body_start = payload_.size() - reader.remaining();
  return std::vector<std::byte>(payload_.begin() + static_cast<std::ptrdiff_t>(body_start),
                                payload_.end());
}

Result<Client::Impl::WaitEnd> Client::Impl::wait_readable(
    std::optional<std::chrono::steady_clock::time_point> deadline,
    const std::function<bool()>& interrupted) {
  // A frame read ahead (an event behind the last one) is waiting already.
  if (inbox_begin_ < inbox_end_) return WaitEnd::kReplied;
  for (;;) {
    int wait_ms = interrupted ? kWaitCheckMs : -1;
    if (deadline) {
      const auto left = *deadline - std::chrono::steady_clock::now();
      // Rounded up: a poll that ends early would only loop.
      const int left_ms = static_cast<int>(
          std::max<int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
      wait_ms = wait_ms < 0 ? left_ms : std::min(wait_ms, left_ms);
    }
    pollfd p{fd_.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, wait_ms);
    if (n < 0 && errno != EINTR) return lost("poll", errno);
    if (n > 0) return WaitEnd::kReplied;  // a frame, or the daemon hung up: reading tells
    // A slice ended, or a signal (EINTR): the deadline, then the caller's check.
    if (deadline && std::chrono::steady_clock::now() >= *deadline) return WaitEnd::kDeadline;
    if (interrupted && interrupted()) return WaitEnd::kInterrupted;
  }
}

Status Client::Impl::call_until(const std::vector<std::byte>& request, MessageType type,
                                std::optional<std::chrono::steady_clock::time_point> deadline,
                                const std::function<bool()>& interrupted, WaitEnd* end) {
  *end = WaitEnd::kReplied;
  SHELF_RETURN_IF_ERROR(check_owner());
  std::lock_guard<std::mutex> lock(mu_);
  SHELF_RETURN_IF_ERROR(send_all(request));
  SHELF_ASSIGN_OR_RETURN(*end, wait_readable(deadline, interrupted));
  if (*end != WaitEnd::kReplied) {
    broken_ = true;
    broken_reason_ = "a wait on this connection ended early; it is not used again";
    return Status();
  }
  SHELF_ASSIGN_OR_RETURN(protocol::FrameHeader h, read_response());
  protocol::ByteReader reader(payload_);
  Status status = protocol::decode_response_status(reader);
  const uint16_t expected = static_cast<uint16_t>(type) | protocol::kResponseBit;
  if (h.type != expected && status.ok()) return lost("out-of-order response", 0);
  return status;
}

Result<std::optional<protocol::Event>> Client::Impl::next_event(
    std::optional<std::chrono::steady_clock::time_point> deadline,
    const std::function<bool()>& interrupted, WaitEnd* end) {
  *end = WaitEnd::kReplied;
  SHELF_RETURN_IF_ERROR(check_owner());
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_) return lost("earlier", 0);
  SHELF_ASSIGN_OR_RETURN(*end, wait_readable(deadline, interrupted));
  if (*end != WaitEnd::kReplied) return std::optional<protocol::Event>();
  SHELF_ASSIGN_OR_RETURN(protocol::FrameHeader h, read_response());
  if (h.type != static_cast<uint16_t>(MessageType::kEvent)) {
    return lost("a frame of type " + std::to_string(h.type) + " on an event stream", 0);
  }
  std::optional<protocol::Event> event = protocol::decode_event(payload_);
  if (!event) return lost("a malformed event", 0);
  return event;
}

Result<const shm::ShmObject*> Client::Impl::writable_segment() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!segment_rw_) {
    auto rw = shm::ShmObject::open(hello_.shm_dir, hello_.segment_name, /*writable=*/true);
    if (!rw.ok()) return segment_unavailable(rw.status());
    segment_rw_.emplace(std::move(rw).value());
  }
  return &*segment_rw_;
}

// -------------------------------------------------------------- Client --

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::connect(const ClientOptions& options) {
  SHELF_ASSIGN_OR_RETURN(std::shared_ptr<Impl> impl, Impl::connect(options));
  return Client(std::move(impl));
}

const std::string& Client::socket_path() const { return impl_->socket_path(); }

Result<TableBuilder> Client::create_table(Schema schema) {
  SHELF_ASSIGN_OR_RETURN(std::unique_ptr<internal::TableState> state,
                         internal::TableState::create(impl_, std::move(schema)));
  return TableBuilder(std::move(state));
}

Status Client::publish_dataset(std::string_view name, TableBuilder& table,
                               const PublishOptions& options) {
  NamedTable one{std::string(name), &table};
  return publish_datasets(std::span<const NamedTable>(&one, 1), options);
}

Status Client::publish_datasets(std::span<const NamedTable> tables, const PublishOptions& options) {
  protocol::PublishRequest request;
  request.override_existing = options.override_existing;
  request.pin = options.pin;
  for (const NamedTable& t : tables) {
    if (t.table == nullptr || !t.table->state_) {
      return Status::invalid_argument("dataset '" + t.name + "': no table (moved from?)");
    }
    if (t.table->state_->client != impl_) {
      return Status::invalid_argument("dataset '" + t.name +
                                      "': the table was created by another Client");
    }
    SHELF_ASSIGN_OR_RETURN(std::vector<std::byte> descriptor, t.table->state_->seal());
    request.items.push_back(protocol::PublishItem{t.name, std::move(descriptor)});
  }
  std::vector<std::byte> frame;
  protocol::encode_request(frame, request);
  // Checked here, not left to the daemon: it would hang up on a message over
  // its limit, and this connection (with every lease on it) would be lost.
  if (frame.size() > protocol::kFrameHeaderBytes + protocol::kMaxPayloadBytes) {
    return Status::invalid_argument(
        "this publish describes too many partitions and columns for one message (" +
        std::to_string(frame.size()) + " bytes, the limit is " +
        std::to_string(protocol::kMaxPayloadBytes) +
        "); publish the tables in smaller groups or with fewer, larger partitions");
  }
  SHELF_RETURN_IF_ERROR(impl_->call(frame, MessageType::kPublish).status());
  for (const NamedTable& t : tables) t.table->state_->mark_published();
  return Status();
}

namespace {

// What list_datasets() says of an entry read from the index.
DatasetInfo info_from_summary(const shm::EntrySummary& e, std::string_view names) {
  DatasetInfo d;
  d.name = names.substr(e.name_offset, e.name_length);
  d.memory_bytes = e.data_bytes;
  d.created_ns = e.created_ns;
  d.spilled = e.spilled;
  d.pinned = e.pinned;
  d.view = e.view;
  d.view_of_graph = e.view_of_graph;
  if (e.has_descriptor) {
    d.num_columns = e.num_columns;
    d.num_partitions = e.num_partitions;
    d.num_rows = e.num_rows;
    d.data_bytes = e.buffer_bytes;
    d.publisher_uid = e.publisher_uid;
    d.publisher_pid = e.publisher_pid;
    if (e.view && !e.view_of_graph) {
      d.view_base = names.substr(e.view_base_offset, e.view_base_length);
    }
  }
  return d;
}

// Sorts buffers->order by name (byte order, as std::string's <) over
// buffers->entries. Sorted on the names' first 16 bytes as two big-endian
// words (zero-padded: a name holds no NUL, so a shorter name sorts first, as
// it should), and only on a tie on the whole names. 16, not 8: names often
// share a prefix ("tiny-00042"), and with 8 bytes perf showed half the
// sort's time, for 10,000 such names, in the tie-breaking memcmp.
void order_by_name(Client::Impl::ListBuffers* buffers) {
  const std::vector<shm::EntrySummary>& entries = buffers->entries;
  const std::string_view names = buffers->names;
  auto name_of = [&](uint32_t i) {
    return names.substr(entries[i].name_offset, entries[i].name_length);
  };
  auto big_endian_word = [](std::string_view name, size_t from) {
    uint64_t word = 0;
    for (size_t b = from; b < from + 8; ++b) {
      const uint64_t byte = b < name.size() ? static_cast<unsigned char>(name[b]) : 0;
      word = word << 8 | byte;
    }
    return word;
  };
  buffers->order.resize(entries.size());
  for (uint32_t i = 0; i < entries.size(); ++i) {
    const std::string_view name = name_of(i);
    buffers->order[i] = {{big_endian_word(name, 0), big_endian_word(name, 8)}, i};
  }
  using NameKey = Client::Impl::ListBuffers::NameKey;
  std::sort(buffers->order.begin(), buffers->order.end(), [&](const NameKey& a, const NameKey& b) {
    if (a.prefix[0] != b.prefix[0]) return a.prefix[0] < b.prefix[0];
    if (a.prefix[1] != b.prefix[1]) return a.prefix[1] < b.prefix[1];
    return name_of(a.index) < name_of(b.index);
  });
}

std::string not_found_message(std::string_view name) {
  return "dataset '" + std::string(name) + "' not found; `shelf list` shows the published datasets";
}

}  // namespace

Result<std::vector<DatasetInfo>> Client::list_datasets() {
  // From the segment's name index: no message (docs/shm_layout.md).
  SHELF_RETURN_IF_ERROR(impl_->check_alive());
  Client::Impl::ListBuffers& b = impl_->list_buffers();
  if (impl_->list_in_table(&b) == shm::IndexRead::kFound) {
    // Sorted by name through an index: moving 10,000 DatasetInfos about
    // costs more than building them in order.
    order_by_name(&b);
    std::vector<DatasetInfo> out;
    out.reserve(b.entries.size());
    for (const auto& key : b.order) {
      const shm::EntrySummary& e = b.entries[key.index];
      out.push_back(info_from_summary(e, b.names));
    }
    return out;
  }
  // The daemon kept changing the index, or no table slot was free: ask it.
  std::vector<std::byte> frame;
  protocol::encode_list_request(frame);
  SHELF_ASSIGN_OR_RETURN(
      protocol::ListResponse r,
      impl_->call_and_decode(frame, MessageType::kList, protocol::decode_list_response));
  std::vector<DatasetInfo> out;
  out.reserve(r.datasets.size());
  for (const auto& s : r.datasets) out.push_back(to_info(s));
  return out;
}

namespace {

// A lease on `name`'s descriptor (or view definition), not yet checked.
struct Leased {
  std::unique_ptr<Dataset::Impl> impl;
  uint64_t descriptor_offset = 0;
  uint64_t descriptor_length = 0;
};

Result<Leased> lease(const std::shared_ptr<Client::Impl>& client, std::string_view name) {
  // A name the index does not hold is answered without a message, and so is
  // one it does, while the lease table has room (docs/leases.md).
  shm::EntrySnapshot entry;
  const shm::IndexRead found = client->index().find(name, &entry);
  if (found == shm::IndexRead::kNotFound) {
    SHELF_RETURN_IF_ERROR(client->check_alive());
    return Status::not_found(not_found_message(name));
  }
  // Quarantined, or not verified yet since a restart: shelfd answers (once
  // its checksums are checked, for the latter).
  if (found == shm::IndexRead::kFound && entry.state == shm::IndexEntryState::kPublished) {
    SHELF_ASSIGN_OR_RETURN(std::optional<uint32_t> slot, client->lease_in_table(entry));
    if (slot) {
      return Leased{std::make_unique<Dataset::Impl>(
                        client, std::string(name),
                        Dataset::Impl::TableLease{*slot, entry.slot, entry.publish_id}),
                    entry.descriptor_offset, entry.descriptor_length};
    }
  }
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::GetRequest{std::string(name)});
  SHELF_ASSIGN_OR_RETURN(
      protocol::GetResponse r,
      client->call_and_decode(frame, MessageType::kGet, protocol::decode_get_response));
  // From here the lease is ours: Dataset::Impl's destructor gives it back,
  // also when open() fails.
  return Leased{std::make_unique<Dataset::Impl>(client, std::string(name), r.lease_id),
                r.descriptor_offset, r.descriptor_length};
}

// A view's definition as the API gives it.
ViewDefinition public_definition(shm::ViewDefinition view) {
  if (view.kind == shm::ViewKind::kGraph) {
    return ViewDefinition{"", "", {}, std::nullopt, std::move(view.graph), std::move(view.bases)};
  }
  return ViewDefinition{std::move(view.bases.front()), std::move(view.where),
                        std::move(view.columns), view.limit};
}

// The view definition a leased descriptor holds, or nullopt for a dataset.
Result<std::optional<shm::ViewDefinition>> definition_of(const Client::Impl& client,
                                                         const Leased& leased) {
  const auto* bytes =
      client.view().at<std::byte>(leased.descriptor_offset, leased.descriptor_length);
  if (bytes == nullptr || !shm::is_view({bytes, leased.descriptor_length})) {
    return std::optional<shm::ViewDefinition>();
  }
  // A private copy: the checks below hold for what is used.
  std::vector<std::byte> copy(bytes, bytes + leased.descriptor_length);
  auto parsed = shm::parse_view(copy, /*from_client=*/false);
  if (!parsed.ok()) {
    return Status::corruption("view '" + leased.impl->name_ + "': " + parsed.status().message());
  }
  return std::optional<shm::ViewDefinition>(std::move(parsed).value());
}

Result<Dataset> get_view(const std::shared_ptr<Client::Impl>& client, std::string_view name,
                         const shm::ViewDefinition& view, const GetOptions& options,
                         uint32_t depth);

// Client::get_dataset, `depth` views down.
Result<Dataset> get(const std::shared_ptr<Client::Impl>& client, std::string_view name,
                    const GetOptions& options, uint32_t depth) {
  SHELF_ASSIGN_OR_RETURN(Leased leased, lease(client, name));
  SHELF_ASSIGN_OR_RETURN(std::optional<shm::ViewDefinition> view, definition_of(*client, leased));
  if (view) {
    leased.impl.reset();  // the definition is copied: the base's lease is what counts
    if (view->kind == shm::ViewKind::kGraph) {
      const Dataset::Impl::Origin origin{view->created_ns, view->publisher_uid,
                                         view->publisher_pid};
      return Dataset(std::make_unique<Dataset::Impl>(client, std::string(name), origin,
                                                     public_definition(std::move(*view))));
    }
    return get_view(client, name, *view, options, depth);
  }
  SHELF_RETURN_IF_ERROR(leased.impl->open(leased.descriptor_offset, leased.descriptor_length));
  Dataset dataset(std::move(leased.impl));
  if (client->options().verify_checksums) SHELF_RETURN_IF_ERROR(dataset.verify());
  return dataset;
}

Result<Dataset> get_view(const std::shared_ptr<Client::Impl>& client, std::string_view name,
                         const shm::ViewDefinition& view, const GetOptions& options,
                         uint32_t depth) {
  // shelfd refuses a view that would read itself or nest deeper; this
  // bounds the recursion whatever the segment says.
  if (depth >= kMaxViewDepth) {
    return Status::invalid_argument("view '" + std::string(name) + "': views nest deeper than " +
                                    std::to_string(kMaxViewDepth));
  }
  std::optional<uint64_t> limit = view.limit;
  if (options.max_rows) limit = std::min(limit.value_or(UINT64_MAX), *options.max_rows);
  // Without a predicate the first `limit` rows of the base are all it needs.
  GetOptions of_base;
  if (view.where.find_first_not_of(" \t\r\n") == std::string::npos) of_base.max_rows = limit;
  const std::string& base_name = view.bases.front();
  auto base = get(client, base_name, of_base, depth + 1);
  if (!base.ok()) {
    return Status::from_code(
        static_cast<uint8_t>(base.status().code()),
        "view '" + std::string(name) + "' reads '" + base_name + "': " + base.status().message());
  }
  if (base->view_definition() && !base->view_definition()->graph.empty()) {
    return Status::invalid_argument("view '" + std::string(name) + "' reads '" + base_name +
                                    "', a view of a Dask graph, which only Python evaluates");
  }
  auto filter = Filter::parse(base->schema(), view.where, view.columns, limit);
  if (!filter.ok()) {
    return Status::invalid_argument("view '" + std::string(name) + "' no longer fits its base '" +
                                    base_name + "': " + filter.status().message());
  }
  const Dataset::Impl::Origin origin{view.created_ns, view.publisher_uid, view.publisher_pid};
  return Dataset(std::make_unique<Dataset::Impl>(
      client, std::string(name),
      std::make_unique<internal::Derived>(std::move(base).value(), std::move(filter).value()),
      origin, public_definition(view)));
}

}  // namespace

Result<Dataset> Client::get_dataset(std::string_view name, const GetOptions& options) {
  return get(impl_, name, options, 0);
}

Status Client::publish_view(std::string_view name, const ViewDefinition& view,
                            const PublishOptions& options) {
  shm::ViewDefinition definition;
  if (!view.graph.empty()) {
    if (view.graph.size() > kMaxViewGraphBytes) {
      return Status::invalid_argument(
          "view '" + std::string(name) + "': its graph pickles to " +
          std::to_string(view.graph.size()) + " bytes, more than a view holds (" +
          std::to_string(kMaxViewGraphBytes) +
          "); a graph that big carries data: persist it and publish the data instead");
    }
    // Only Python evaluates it; shelfd checks its bases (published, no cycle).
    definition.kind = shm::ViewKind::kGraph;
    definition.bases = view.graph_bases;
    definition.graph = view.graph;
  } else {
    // Parsed against the base here, so that a bad filter fails now, with the
    // parser's position; shelfd checks the rest (the base, cycles, depth).
    SHELF_ASSIGN_OR_RETURN(Dataset base, get_dataset(view.base, GetOptions{0}));
    auto filter = Filter::parse(base.schema(), view.where, view.columns, view.limit);
    if (!filter.ok()) {
      return Status::invalid_argument("view '" + std::string(name) +
                                      "': " + filter.status().message());
    }
    definition.bases = {view.base};
    definition.where = view.where;
    definition.columns = view.columns;
    definition.limit = view.limit;
  }
  protocol::PublishRequest request;
  request.override_existing = options.override_existing;
  request.pin = options.pin;
  request.items.push_back(protocol::PublishItem{std::string(name), shm::encode_view(definition)});
  std::vector<std::byte> frame;
  protocol::encode_request(frame, request);
  return impl_->call(frame, MessageType::kPublish).status();
}

Result<ViewDefinition> Client::view_definition(std::string_view name) {
  SHELF_ASSIGN_OR_RETURN(Leased leased, lease(impl_, name));
  SHELF_ASSIGN_OR_RETURN(std::optional<shm::ViewDefinition> view, definition_of(*impl_, leased));
  if (!view) {
    return Status::invalid_argument("'" + std::string(name) + "' is a dataset, not a view");
  }
  return public_definition(std::move(*view));
}

Status Client::persist_view(std::string_view view, std::string_view name,
                            const PublishOptions& options) {
  SHELF_ASSIGN_OR_RETURN(Dataset rows, get_dataset(view));
  if (!rows.view_definition()) {
    return Status::invalid_argument("'" + std::string(view) + "' is a dataset, not a view; " +
                                    "`shelf publish " + std::string(name) + " --from " +
                                    std::string(view) + "` copies it");
  }
  if (!rows.view_definition()->graph.empty()) {
    return Status::invalid_argument("'" + std::string(view) +
                                    "' is a view of a Dask graph, which only Python evaluates: "
                                    "client.persist_view() there computes and publishes it");
  }
  SHELF_ASSIGN_OR_RETURN(Filter every_row, Filter::parse(rows.schema(), ""));
  SHELF_ASSIGN_OR_RETURN(TableBuilder table, create_table(rows.schema()));
  SHELF_RETURN_IF_ERROR(write_filtered(rows, every_row, table));
  return publish_dataset(name, table, options);
}

Status Client::unpublish_dataset(std::string_view name, const UnpublishOptions& options) {
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::UnpublishRequest{std::string(name), options.cascade});
  return impl_->call(frame, MessageType::kUnpublish).status();
}

Status Client::pin_dataset(std::string_view name, bool pinned) {
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::PinRequest{std::string(name), pinned});
  return impl_->call(frame, MessageType::kPin).status();
}

namespace {

// status().clients from the daemon's rows, whose holdings index its
// datasets then its unpublished ones (protocol::Holding).
std::vector<ClientInfo> to_clients(const protocol::StatusResponse& r) {
  std::vector<ClientInfo> clients;
  for (const auto& c : r.clients) {
    ClientInfo info;
    info.pid = c.pid;
    info.uid = c.uid;
    info.command = c.command;
    info.client_name = c.client_name;
    info.connected_ns = c.connected_ns;
    info.connections = c.connections;
    info.leases = c.leases;
    info.datasets_held = c.datasets_held;
    info.held_bytes = c.held_bytes;
    info.unpublished_bytes = c.unpublished_bytes;
    info.writing_bytes = c.writing_bytes;
    for (const auto& h : c.holdings) {  // in range: the decoder checks
      const bool published = h.dataset < r.datasets.size();
      HeldDataset held;
      if (published) {
        held.name = r.datasets[h.dataset].name;
        held.memory_bytes = r.datasets[h.dataset].memory_bytes;
      } else {
        held.name = r.unpublished[h.dataset - r.datasets.size()].name;
        held.memory_bytes = r.unpublished[h.dataset - r.datasets.size()].memory_bytes;
      }
      held.published = published;
      held.leases = h.leases;
      held.held_alone = h.alone;
      info.held.push_back(std::move(held));
    }
    clients.push_back(std::move(info));
  }
  return clients;
}

}  // namespace

Result<MemoryStats> Client::status() {
  std::vector<std::byte> frame;
  protocol::encode_status_request(frame);
  SHELF_ASSIGN_OR_RETURN(
      protocol::StatusResponse r,
      impl_->call_and_decode(frame, MessageType::kStatus, protocol::decode_status_response));
  MemoryStats m;
  m.socket_path = r.socket_path;
  m.shm_dir = r.shm_dir;
  m.segment_name = r.segment_name;
  m.daemon_pid = r.daemon_pid;
  m.generation = r.generation;
  m.started_ns = r.started_ns;
  m.memory_limit = r.memory_limit;
  m.used_bytes = r.used_bytes;
  m.index_bytes = r.index_bytes;
  m.unsealed_bytes = r.unsealed_bytes;
  m.pending_free_bytes = r.pending_free_bytes;
  m.resident_bytes = r.resident_bytes;
  m.page_bytes = r.page_bytes;
  m.huge_page_bytes = r.huge_page_bytes;
  m.num_connections = r.num_connections;
  m.num_leases = r.num_leases;
  for (const auto& s : r.datasets) m.datasets.push_back(to_info(s));
  for (const auto& q : r.quarantined) {
    m.quarantined.push_back(QuarantinedDataset{q.name, q.memory_bytes, q.reason});
  }
  for (const auto& u : r.unpublished) {
    m.unpublished.push_back(
        UnpublishedDatasetInfo{u.name, u.memory_bytes, u.leases, u.restart_hold});
  }
  m.clients = to_clients(r);
  for (const auto& u : r.users)
    m.users.push_back(UserUsageInfo{u.uid, u.used_bytes, u.quota_bytes});
  m.verifying = {r.verify_datasets_left, r.verify_bytes_left, r.verify_bytes_done};
  m.spilling = {r.spill_dir, r.spill_above_bytes, r.spilled_datasets, r.spilled_file_bytes};
  return m;
}

DatasetMap Client::datasets() { return DatasetMap(Client(impl_)); }

namespace {

using Deadline = std::optional<std::chrono::steady_clock::time_point>;

std::string seconds_text(std::chrono::milliseconds ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", static_cast<double>(ms.count()) / 1000);
  return text;
}

// The names of `names` the index does not show as published, quoted and
// joined: what a timed-out wait reports.
std::string unpublished_names(const shm::NameIndexReader& index,
                              std::span<const std::string> names) {
  std::string out;
  for (const std::string& name : names) {
    shm::EntrySnapshot entry;
    if (index.find(name, &entry) == shm::IndexRead::kFound &&
        shm::is_listed(static_cast<uint32_t>(entry.state))) {
      continue;
    }
    out += (out.empty() ? "'" : ", '") + name + "'";
  }
  return out;
}

}  // namespace

Status Client::wait_for_datasets(std::span<const std::string> names,
                                 std::optional<std::chrono::milliseconds> timeout,
                                 const std::function<bool()>& interrupted) {
  if (names.empty()) return Status::invalid_argument("wait for which datasets? give a name");
  if (names.size() > kMaxWaitNames) {
    return Status::invalid_argument("one wait takes at most " + std::to_string(kMaxWaitNames) +
                                    " names, not " + std::to_string(names.size()) +
                                    "; wait for them in groups");
  }
  if (timeout && timeout->count() < 0) {
    return Status::invalid_argument("a wait's timeout cannot be negative");
  }
  SHELF_RETURN_IF_ERROR(impl_->check_alive());
  // Published already, as the segment's index shows: no wait, no message.
  if (unpublished_names(impl_->index(), names).empty()) return Status();
  const Deadline deadline =
      timeout ? Deadline(std::chrono::steady_clock::now() + *timeout) : std::nullopt;
  // A connection of its own: the daemon parks the one a WaitFor arrives on.
  ClientOptions options = impl_->options();
  options.socket = impl_->socket_path();
  options.client_name += " (waiting)";
  SHELF_ASSIGN_OR_RETURN(std::shared_ptr<Impl> waiter, Impl::connect(options));
  protocol::WaitForRequest request;
  request.names.assign(names.begin(), names.end());
  std::vector<std::byte> frame;
  protocol::encode_request(frame, request);
  Impl::WaitEnd end = Impl::WaitEnd::kReplied;
  Status status = waiter->call_until(frame, MessageType::kWaitFor, deadline, interrupted, &end);
  if (end == Impl::WaitEnd::kReplied) return status;
  std::string missing = unpublished_names(impl_->index(), names);
  if (missing.empty()) missing = "(published as the wait ended)";
  const std::string why = end == Impl::WaitEnd::kDeadline
                              ? "timed out after " + seconds_text(*timeout)
                              : std::string("interrupted while");
  return Status::timed_out(why +
                           " waiting for datasets to be published; not published: " + missing);
}

Result<Dataset> Client::wait_for_dataset(std::string_view name,
                                         std::optional<std::chrono::milliseconds> timeout,
                                         const std::function<bool()>& interrupted) {
  const std::string names[] = {std::string(name)};
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    std::optional<std::chrono::milliseconds> left = timeout;
    if (timeout) {
      const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      left = std::max(std::chrono::milliseconds(0), *timeout - spent);
    }
    SHELF_RETURN_IF_ERROR(wait_for_datasets(names, left, interrupted));
    auto dataset = get_dataset(name);
    // Unpublished again between the wake-up and the Get: wait again.
    if (dataset.ok() || dataset.status().code() != Status::Code::kNotFound) return dataset;
  }
}

// ---------------------------------------------------------- DatasetMap --

Result<std::vector<std::string>> DatasetMap::keys() {
  Client::Impl& impl = *client_.impl_;
  SHELF_RETURN_IF_ERROR(impl.check_alive());
  Client::Impl::ListBuffers& b = impl.list_buffers();
  if (impl.index().list_summaries(&b.entries, &b.names) != shm::IndexRead::kFound) {
    SHELF_ASSIGN_OR_RETURN(std::vector<DatasetInfo> infos, client_.list_datasets());
    std::vector<std::string> names;
    for (auto& info : infos) names.push_back(std::move(info.name));
    return names;
  }
  order_by_name(&b);
  std::vector<std::string> names;
  names.reserve(b.entries.size());
  for (const auto& key : b.order) {
    const shm::EntrySummary& e = b.entries[key.index];
    names.emplace_back(std::string_view(b.names).substr(e.name_offset, e.name_length));
  }
  return names;
}

Result<bool> DatasetMap::contains(std::string_view name) {
  Client::Impl& impl = *client_.impl_;
  shm::EntrySnapshot entry;
  const shm::IndexRead read = impl.index().find(name, &entry);
  if (read == shm::IndexRead::kBusy) {
    SHELF_ASSIGN_OR_RETURN(std::vector<std::string> names, keys());
    return std::binary_search(names.begin(), names.end(), name);
  }
  SHELF_RETURN_IF_ERROR(impl.check_alive());
  return read == shm::IndexRead::kFound && shm::is_listed(static_cast<uint32_t>(entry.state));
}

Result<size_t> DatasetMap::size() {
  Client::Impl& impl = *client_.impl_;
  uint64_t n = 0;
  if (impl.index().count(&n) == shm::IndexRead::kBusy) {
    SHELF_ASSIGN_OR_RETURN(std::vector<std::string> names, keys());
    return names.size();
  }
  SHELF_RETURN_IF_ERROR(impl.check_alive());
  return static_cast<size_t>(n);
}

std::vector<std::string>::const_iterator DatasetMap::begin() {
  auto names = keys();
  snapshot_ = names.ok() ? std::move(names).value() : std::vector<std::string>{};
  return snapshot_.cbegin();
}

}  // namespace shelf
