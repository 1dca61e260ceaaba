// Client::Impl: the connection and the mappings, shared by a Client and the
// Datasets and TableBuilders it hands out. Internal to libclient.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "protocol/messages.h"
#include "shm/segment.h"
#include "shm/segment_view.h"

namespace shelf {

class Client::Impl {
 public:
  static Result<std::shared_ptr<Impl>> connect(const ClientOptions& options);

  // Sends one request frame and returns the response body after an OK status,
  // or the status. Connection failures make every later call fail too.
  Result<std::vector<std::byte>> call(const std::vector<std::byte>& request,
                                      protocol::MessageType type);
  // Sends a request whose reply nobody needs (Release, Abort) without waiting
  // for it: its reply is read and dropped by the next call(). This halves the
  // cost of letting a Dataset go. Failures are ignored: a lost connection
  // ends every lease and frees every unsealed extent anyway.
  void post(const std::vector<std::byte>& request);
  // Like call(), decoding the body with `decode` (an optional-returning decoder).
  template <class Decode>
  auto call_and_decode(const std::vector<std::byte>& request, protocol::MessageType type,
                       Decode decode)
      -> Result<typename decltype(decode(std::declval<protocol::ByteReader&>()))::value_type>;

  // Opens the segment read-write (once), for mapping this client's own extents.
  Result<const shm::ShmObject*> writable_segment();
  shm::SegmentView view() const { return {mapping_->data(), mapping_->size()}; }
  const std::string& socket_path() const { return socket_path_; }
  bool broken() const { return broken_; }
  const ClientOptions& options() const { return options_; }

 private:
  Status send_all(const std::vector<std::byte>& request);
  Status read_exact(std::byte* out, size_t n);
  // Reads one whole response frame into payload_.
  Result<protocol::FrameHeader> read_response();
  Status lost(std::string_view what, int err);
  // Unavailable in a process forked from the one that connected.
  Status check_owner() const;

  ClientOptions options_;
  std::string socket_path_;
  UniqueFd fd_;
  protocol::HelloResponse hello_;
  std::optional<shm::ShmObject> segment_;  // read-only
  std::optional<shm::Mapping> mapping_;    // the whole segment, PROT_READ
  std::optional<shm::ShmObject> segment_rw_;
  bool broken_ = false;
  std::string broken_reason_;  // what broke the connection, repeated by every later call
  // The process that connected. A child forked from it shares the socket,
  // but the leases on it are the parent's: the child must send nothing, or
  // letting go of its copy of a Dataset would end the parent's lease.
  pid_t owner_pid_ = 0;
  static constexpr uint32_t kMaxUnreadReplies = 64;
  uint32_t unread_replies_ = 0;     // replies to post()ed requests not read yet
  std::vector<std::byte> payload_;  // the last response's payload, reused
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
