// Daemon: the event loop of shelfd. One thread, epoll over the listening
// socket, a signalfd and every connection; each request is handled to the end
// before the next, so the Store needs no locks.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <unordered_map>
#include <utility>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "server/file_safety.h"
#include "server/metrics.h"
#include "server/metrics_server.h"
#include "server/store.h"

namespace shelf::server {

struct DaemonOptions {
  std::string socket_path;
  uint32_t max_connections = 1024;
  // Connections one uid may hold at once (--max-connections-per-user), so
  // that one user cannot take the slots every other user needs. shelfd's own
  // uid is not held to it; root is, like any other user. 0: the default,
  // default_connections_per_user(max_connections).
  uint32_t max_connections_per_user = 0;
  // Empty: only shelfd's own user (and root) may connect; the socket and the
  // segment are 0600. Else a Unix group whose members may too: both are
  // 0660 and belong to it (--group).
  std::string group;
  // Prometheus metrics: always on a Unix socket <socket_path>.metrics (what
  // `shelf metrics` reads); also on TCP at this ADDR:PORT when not empty
  // (--metrics-listen), served by a thread of their own (metrics_server.h).
  std::string metrics_listen;
  uint32_t metrics_datasets = 20;  // the largest datasets given a series (--metrics-datasets)
};

// Creates the socket's directory if need be and checks it (and its
// ancestors) as start() does, so that shelfd can open its log file there
// before starting. The same errors as start() for the directory.
Status prepare_socket_directory(const DaemonOptions& options);

// The default share of one user: --max-connections less a quarter kept for
// everyone else (at least one slot once there are two).
uint32_t default_connections_per_user(uint32_t max_connections);

class Daemon {
 public:
  // Takes the instance lock (<socket>.lock; AlreadyExists names the live
  // daemon's pid), creates the store, replaces a stale socket file and
  // listens. With a group, gives the socket and the segment to it (0660).
  // Blocks SIGTERM and SIGINT in this thread: run() handles them.
  // Errors: InvalidArgument (no such group), PermissionDenied (a socket
  // directory others could tamper with, one the group cannot reach, or a
  // group shelfd may not give files to), and the store's.
  static Result<std::unique_ptr<Daemon>> start(const DaemonOptions& options,
                                               const StoreOptions& store_options);
  // Serves until SIGTERM or SIGINT. Errors only for failures of the loop
  // itself (epoll); a client's mistake is answered, logged and survived.
  Status run();
  // Closes every connection, removes the socket and the lock file. The
  // segment stays for the next daemon (StoreOptions::remove_on_exit aside).
  ~Daemon();

  const Store& store() const { return *store_; }
  // "ADDR:PORT" the metrics are served on over TCP, as bound; empty without
  // --metrics-listen.
  const std::string& metrics_address() const { return metrics_->tcp_address(); }

 private:
  struct Connection;
  Daemon() = default;
  void accept_connections();
  void on_readable(Connection& c);
  void on_writable(Connection& c);
  // Handles whole frames buffered in c.in until a response is pending.
  void process_frames(Connection& c);
  void dispatch(Connection& c, uint16_t type, std::span<const std::byte> payload);
  // Answers Hello: checks the protocol version (a mismatch is answered, then
  // the connection closed) and tells the client where the segment is.
  void hello(Connection& c, std::span<const std::byte> payload);
  // One send of c.out's unsent bytes; with c.pass_fd, a sendmsg that
  // carries it (SCM_RIGHTS). As send(2).
  ssize_t send_some(Connection& c);
  void update_interest(Connection& c);
  // Every kHoldRecheckMs while datasets wait for lease tables or for
  // readers from before a restart: looks at the tables (the backstop for a
  // LeaseReleased that never came) and the presence locks again. Returns
  // the epoll timeout until the next look, or -1 when nothing waits.
  int recheck_holds();
  void close_connection(int fd);
  // True when the peer may use this daemon: shelfd's own uid, root, or a
  // member of options_.group (primary or supplementary group).
  bool allowed(int fd, uint32_t uid, uint32_t gid) const;
  // Watches the publishers that outlived the previous daemon (pidfds in epoll).
  void watch_orphan_owners();
  // Answers a connection we will not serve with `why`, best effort.
  void refuse(int fd, const Status& why);
  // The figures the metrics thread asked for (MetricsServer::refresh_fd()).
  void refresh_metrics();
  // Connections that have not said Hello (in the order they came), so a
  // client that connects and says nothing cannot hold a slot for ever.
  // Closes those past kHelloTimeoutMs; returns the epoll timeout (ms) until
  // the next one is due, or -1 when none waits.
  int close_silent_connections();
  // True when `c`'s uid may open one more connection: shelfd's own uid
  // always, any other below --max-connections-per-user. Else answers `fd`
  // why (Unavailable, naming the uid, its count and the option) and logs it.
  bool admit_within_user_share(int fd, const Connection& c);
  // At --max-connections: makes room for a new connection by closing the
  // oldest one that has not said Hello yet. False when every one has.
  bool evict_a_silent_connection();
  // WaitFor: answers at once when every name is served, else parks `c`
  // (reads nothing more from it) with a waiter per missing name.
  void start_wait(Connection& c, const protocol::WaitForRequest& m);
  // After a publish commit: drops `names` from the waits on them; a
  // connection left waiting for nothing is answered (in flush_woken()).
  void wake_waiters(const std::vector<protocol::PublishItem>& items);
  // Sends the answers wake_waiters() queued, outside of any other
  // connection's dispatch (a woken connection may then run its next request).
  void flush_woken();
  // Unparks the Publishes whose checks the worker has finished
  // (Store::take_finished_checks), for flush_woken() to process again.
  void wake_checked();
  // Removes `c`'s waiters (its connection is closing).
  void drop_waits(Connection& c);
  // Subscribe: answers with the generation, queues the restart and
  // quarantine events when the subscriber last saw another daemon, and
  // turns `c` into an event stream (docs/protocol.md, "Events").
  void subscribe(Connection& c, const protocol::SubscribeRequest& m);
  // Queues `event` for every subscriber (each within kMaxEventBacklogBytes,
  // else counted as dropped); sent by flush_woken().
  void emit(const protocol::Event& event);
  // The publish or override event of `name`, just published by `publisher`.
  void emit_published(const Connection& publisher, const std::string& name, bool replaced);
  // The unpublish event of `removed`, unpublished by `by`.
  void emit_unpublished(const Connection& by, const protocol::DatasetSummary& removed);
  // A quarantine event for each dataset the verifier found damaged.
  void emit_new_quarantines();
  // Holds `c`'s request (its frame stays in `in`) until `ticket` is done.
  void park_until_checked(Connection& c, uint64_t ticket);

  DaemonOptions options_;
  std::optional<gid_t> group_;  // options_.group resolved
  std::unique_ptr<Store> store_;
  UniqueFd lock_fd_;
  std::string lock_path_;
  std::optional<FileId> lock_id_, socket_id_;  // the files we made, to remove only them
  UniqueFd listen_fd_;
  UniqueFd epoll_fd_;
  UniqueFd signal_fd_;
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;
  // uid -> its open connections, for admit_within_user_share().
  std::unordered_map<uint32_t, uint32_t> connections_of_uid_;
  std::unordered_map<int, std::pair<uint32_t, UniqueFd>> owner_fds_;  // pidfd -> pid, fd
  UniqueFd spare_fd_;  // given up to accept-and-refuse when out of descriptors
  std::deque<std::pair<std::chrono::steady_clock::time_point, int>> silent_;  // deadline, fd
  std::unique_ptr<std::byte[]> read_buffer_;  // recv() scratch, kReadChunk bytes
  // Parked connections (fds) waiting for each name, and those whose wait is
  // over and whose answer is still to send (and subscribers with events
  // newly queued). See docs/protocol.md, "Waiting".
  std::unordered_map<std::string, std::vector<int>> waiters_;
  std::vector<int> woken_;
  // Requests held back until something off the loop is done, by ticket:
  // Publishes whose checks run on the segment worker, Gets of a dataset
  // whose checksums the verifier checks after a restart (several may wait
  // for one). ticket -> fd.
  std::unordered_multimap<uint64_t, int> checking_;
  std::vector<int> subscribers_;  // event streams (fds), in the order they subscribed
  std::chrono::steady_clock::time_point next_hold_recheck_{};
  bool lease_released_ = false;  // a LeaseReleased came this loop turn
  DaemonCounters counters_;      // this thread's only: see metrics.h
  std::unique_ptr<MetricsServer> metrics_;
};

}  // namespace shelf::server
