// Client::Impl: the connection and the mappings, shared by a Client and the
// Datasets and TableBuilders it hands out. Internal to libclient.
//
// Threads: the Client's own thread makes requests (call()), but a Dataset or
// TableBuilder can be destroyed on any thread, and its destructor post()s a
// Release or an Abort on this same connection. So everything that touches the
// socket, and the state of the conversation on it (broken_, the count of
// unread replies, the reply buffer), is guarded by mu_: a request and its
// reply are one critical section, and a post() from another thread waits for
// at most that one round trip (bounded by request_timeout). The mapping and
// the hello are written once in connect() and only read afterwards, so
// view() needs no lock. The lease table (docs/leases.md) has a lock of its
// own, lease_mu_, held only to hand a slot out or take it back, so that
// gets on many threads never wait for each other's round trips.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "protocol/messages.h"
#include "shm/lease_table.h"
#include "shm/name_index.h"
#include "shm/segment.h"
#include "shm/segment_view.h"

namespace shelf {

class Client::Impl {
 public:
  // Connects, checks who serves the socket, says hello and maps the segment.
  // Errors: Unavailable (no daemon, or its segment cannot be opened),
  // PermissionDenied, Corruption.
  static Result<std::shared_ptr<Impl>> connect(const ClientOptions& options);

  // Sends one request frame and returns the response body after an OK status,
  // or the status. Connection failures make every later call fail too.
  // Thread-safe (serialised by mu_).
  Result<std::vector<std::byte>> call(const std::vector<std::byte>& request,
                                      protocol::MessageType type);
  // Sends a request whose reply nobody needs (Release, Abort) without waiting
  // for it: its reply is read and dropped by the next call(). This halves the
  // cost of letting a Dataset go. Failures are ignored: a lost connection
  // ends every lease and frees every unsealed extent anyway. Thread-safe: any
  // thread may post (a Dataset destroyed away from its Client's thread).
  void post(const std::vector<std::byte>& request);
  // Like call(), decoding the body with `decode` (an optional-returning decoder).
  template <class Decode>
  auto call_and_decode(const std::vector<std::byte>& request, protocol::MessageType type,
                       Decode decode)
      -> Result<typename decltype(decode(std::declval<protocol::ByteReader&>()))::value_type>;

  // How a call_until() ended.
  enum class WaitEnd { kReplied, kDeadline, kInterrupted };
  // Like call() with no body, but waits for the reply until `deadline` (none:
  // without bound) instead of request_timeout: for WaitFor, which the daemon
  // answers only when the names are published. A non-empty `interrupted` is
  // called on the calling thread, with mu_ held, when poll() ends with EINTR
  // and after each kWaitCheckMs slice; true ends the wait. Sets *end to how
  // it ended; after kDeadline or kInterrupted the connection is never used
  // again (the reply would come out of step). Thread-safe.
  Status call_until(const std::vector<std::byte>& request, protocol::MessageType type,
                    std::optional<std::chrono::steady_clock::time_point> deadline,
                    const std::function<bool()>& interrupted, WaitEnd* end);

  // On a connection that subscribed (Client::subscribe): waits for the next
  // Event frame until `deadline` (none: without bound), with `interrupted`
  // called as call_until() calls it. nullopt, and *end set to kDeadline or
  // kInterrupted, when the wait ended first; the connection stays usable
  // (no frame was read in part). Errors: Unavailable (the daemon has gone,
  // or sent what is not an Event). Thread-safe.
  Result<std::optional<protocol::Event>> next_event(
      std::optional<std::chrono::steady_clock::time_point> deadline,
      const std::function<bool()>& interrupted, WaitEnd* end);

  // Opens the segment read-write (once), for mapping this client's own
  // extents. Errors: Unavailable (the segment is gone). Thread-safe.
  Result<const shm::ShmObject*> writable_segment();
  // The read-only mapping of the whole segment; immutable after connect().
  shm::SegmentView view() const { return {mapping_->data(), mapping_->size()}; }
  // The segment's name index, read without the daemon; immutable after connect().
  const shm::NameIndexReader& index() const { return *index_; }
  // What a call that asks the segment, not the daemon, answers first: OK
  // while the daemon that said hello still serves this connection;
  // Unavailable as call() would (a forked child, a lost connection, a
  // daemon gone or restarted). One poll(2) of the socket, no message, and
  // no lock unless it fails. Thread-safe.
  Status check_alive();

  // A lease on `entry` (a published entry find() read) taken in the lease
  // table, with no message (docs/leases.md, "The reader's side"): the slot
  // that holds it, or nullopt when the table cannot give one (no table, all
  // slots taken, the entry changed meanwhile): take it by a round trip
  // then. Errors: as check_alive(). Thread-safe.
  Result<std::optional<uint32_t>> lease_in_table(const shm::EntrySnapshot& entry);
  // Ends the lease in `slot` on publish `publish_id` in index slot
  // `index_slot`; tells the daemon (a posted LeaseReleased) when that
  // dataset is no longer published, so it frees it now rather than at its
  // next look. Nothing in a forked child. Thread-safe.
  void end_table_lease(uint32_t slot, uint32_t index_slot, uint64_t publish_id);
  const std::string& socket_path() const { return socket_path_; }
  // True once the connection is lost: every lease on it ended with it.
  bool broken() const;
  const ClientOptions& options() const { return options_; }

  // What list_datasets() and DatasetMap::keys() read the index into, kept
  // from call to call, so that a list of 10,000 names does not allocate
  // (and fault in) ~1 MB afresh each time. Not locked: only the Client's
  // thread lists (client.h, "Threads": a Client and its DatasetMap are used
  // by one thread at a time).
  struct ListBuffers {
    std::vector<shm::EntrySummary> entries;
    std::string names;  // the entries' names, packed (NameIndexReader::list_summaries)
    // The entries in name order: each name's first 16 bytes as two
    // big-endian words, and the entry's position (order_by_name() in
    // client.cc).
    struct NameKey {
      uint64_t prefix[2];
      uint32_t index;
    };
    std::vector<NameKey> order;
  };
  ListBuffers& list_buffers() { return list_buffers_; }
  // Lists the index with each dataset's descriptor figures into `buffers`,
  // its descriptors kept from being freed meanwhile by a listing mark in
  // the lease table (docs/leases.md, "Lists"). kBusy when the daemon kept
  // changing the index, and when there is no table slot to mark (no table,
  // all slots taken): ask the daemon then. The caller checked the owner.
  shm::IndexRead list_in_table(ListBuffers* buffers);

 private:
  // The steps of connect().
  Status check_peer() const;
  // Maps the lease table the daemon sent with its Hello response, if any.
  void attach_lease_table(UniqueFd fd);
  Status map_segment();
  // Unavailable: the daemon's segment cannot be opened by this process.
  Status segment_unavailable(const Status& cause) const;
  // Where the daemon's Hello says the segment is.
  std::string segment_path() const { return shm::object_path(hello_.shm_dir, hello_.segment_name); }
  // call() and post() with mu_ held.
  Result<std::vector<std::byte>> call_locked(const std::vector<std::byte>& request,
                                             protocol::MessageType type);
  Status send_all(const std::vector<std::byte>& request);
  // Reads exactly n bytes: what the inbox holds first, then the socket.
  Status read_exact(std::byte* out, size_t n);
  // One recvmsg(2) into `out` that keeps a descriptor sent along (the lease
  // table) in *receive_fd_; any other descriptor is closed. As recv(2).
  ssize_t recv_keeping_fd(std::byte* out, size_t n);
  // Waits (mu_ held) until the socket is readable (kReplied) or, as
  // call_until() says, `deadline` passes or `interrupted` returns true.
  Result<WaitEnd> wait_readable(std::optional<std::chrono::steady_clock::time_point> deadline,
                                const std::function<bool()>& interrupted);
  // Reads one whole response frame into payload_.
  Result<protocol::FrameHeader> read_response();
  Status lost(std::string_view what, int err);
  // Unavailable in a process forked from the one that connected.
  Status check_owner() const;
  // check_alive() but the owner check, for callers that made it already.
  Status check_daemon();
  // A free lease table slot, the high-water mark raised past it; nullopt
  // when there is no table or every slot is taken.
  std::optional<uint32_t> take_lease_slot();
  // Empties a lease table slot (E1 of docs/leases.md) and hands it out again.
  void give_back_lease_slot(uint32_t slot);
  // Asks the daemon to look at the datasets it holds for leases again now
  // (a posted LeaseReleased; no reply is waited for).
  void post_lease_released();

  // Written by connect() before the Impl is shared, then only read.
  ClientOptions options_;
  std::string socket_path_;
  UniqueFd fd_;
  protocol::HelloResponse hello_;
  std::optional<shm::ShmObject> segment_;      // read-only
  std::optional<shm::Mapping> mapping_;        // the whole segment, PROT_READ
  std::optional<shm::NameIndexReader> index_;  // over mapping_
  // The process that connected. A child forked from it shares the socket,
  // but the leases on it are the parent's: the child must send nothing, or
  // letting go of its copy of a Dataset would end the parent's lease.
  pid_t owner_pid_ = 0;
  std::optional<shm::LeaseTable> leases_;  // none: every lease by a round trip
  UniqueFd* receive_fd_ = nullptr;         // set while the Hello response is read

  // Guards handing out the lease table's slots.
  std::mutex lease_mu_;
  std::vector<uint32_t> free_lease_slots_;  // given back, to reuse first
  uint32_t unused_lease_slot_ = 0;          // slots from here on were never used

  // Guards the socket's conversation: fd_'s reads and writes and the members
  // below. Never held while calling out of this class.
  mutable std::mutex mu_;
  std::optional<shm::ShmObject> segment_rw_;
  // Written under mu_; read without it by check_alive().
  std::atomic<bool> broken_ = false;
  std::string broken_reason_;  // what broke the connection, repeated by every later call
  static constexpr uint32_t kMaxUnreadReplies = 64;
  uint32_t unread_replies_ = 0;     // replies to post()ed requests not read yet
  std::vector<std::byte> payload_;  // the last response's payload, reused
  // Bytes read from the socket ahead of what read_exact() was asked for, so
  // that one recv takes a small reply's header and body together (and,
  // after post(), the replies behind it): [inbox_begin_, inbox_end_) of
  // inbox_ is unread. Frames of kInboxBytes or more bypass it.
  static constexpr size_t kInboxBytes = 16 << 10;
  std::vector<std::byte> inbox_;
  size_t inbox_begin_ = 0;
  size_t inbox_end_ = 0;

  ListBuffers list_buffers_;  // the Client's thread only (list_buffers())
};

template <class Decode>
auto Client::Impl::call_and_decode(const std::vector<std::byte>& request,
                                   protocol::MessageType type, Decode decode)
    -> Result<typename decltype(decode(std::declval<protocol::ByteReader&>()))::value_type> {
  SHELF_ASSIGN_OR_RETURN(std::vector<std::byte> body, call(request, type));
  protocol::ByteReader reader(body);
  auto decoded = decode(reader);
  if (!decoded) return Status::internal("malformed response from shelfd");
  return std::move(*decoded);
}

}  // namespace shelf
