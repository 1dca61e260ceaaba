// Client::subscribe and EventStream (<shelf/events.h>): an event stream is a
// connection of its own whose Subscribe turned it into a one-way stream of
// Event frames (docs/protocol.md, "Events").
#include <chrono>
#include <cstdio>
#include <memory>
#include <utility>

#include <shelf/client.h>
#include <shelf/events.h>

#include "libclient/src/client_impl.h"
#include "protocol/messages.h"

namespace shelf {

using protocol::MessageType;

class EventStream::Impl {
 public:
  Impl(std::shared_ptr<Client::Impl> connection, uint64_t generation)
      : connection_(std::move(connection)), generation_(generation) {}
  Client::Impl& connection() { return *connection_; }
  uint64_t generation() const { return generation_; }

 private:
  std::shared_ptr<Client::Impl> connection_;  // the stream's own, not the Client's
  uint64_t generation_;
};

namespace {

Event to_event(protocol::Event&& e) {
  Event out;
  out.kind = static_cast<EventKind>(e.kind);  // the same values: decode_event checked the range
  out.name = std::move(e.name);
  out.time_ns = e.time_ns;
  out.pid = e.pid;
  out.uid = e.uid;
  out.num_rows = e.num_rows;
  out.num_partitions = e.num_partitions;
  out.memory_bytes = e.memory_bytes;
  out.reason = std::move(e.reason);
  out.generation = e.generation;
  out.previous_generation = e.previous_generation;
  out.dropped = e.dropped;
  return out;
}

}  // namespace

std::string_view event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::kPublish:
      return "publish";
    case EventKind::kOverride:
      return "override";
    case EventKind::kUnpublish:
      return "unpublish";
    case EventKind::kQuarantine:
      return "quarantine";
    case EventKind::kRestart:
      return "restart";
    case EventKind::kDropped:
      return "dropped";
  }
  return "unknown";
}

EventStream::EventStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventStream::EventStream(EventStream&&) noexcept = default;
EventStream& EventStream::operator=(EventStream&&) noexcept = default;
EventStream::~EventStream() = default;

uint64_t EventStream::generation() const { return impl_ ? impl_->generation() : 0; }

Result<Event> EventStream::next(std::optional<std::chrono::milliseconds> timeout,
                                const std::function<bool()>& interrupted) {
  if (!impl_) return Status::invalid_argument("this EventStream was moved from");
  if (timeout && timeout->count() < 0) {
    return Status::invalid_argument("an event wait's timeout cannot be negative");
  }
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (timeout) deadline = std::chrono::steady_clock::now() + *timeout;
  Client::Impl::WaitEnd end = Client::Impl::WaitEnd::kReplied;
  SHELF_ASSIGN_OR_RETURN(std::optional<protocol::Event> event,
                         impl_->connection().next_event(deadline, interrupted, &end));
  if (event) return to_event(std::move(*event));
  if (end == Client::Impl::WaitEnd::kInterrupted) {
    return Status::timed_out("interrupted while waiting for an event");
  }
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g s", static_cast<double>(timeout->count()) / 1000);
  return Status::timed_out(std::string("no event in ") + seconds);
}

Result<EventStream> Client::subscribe(uint64_t last_generation) {
  SHELF_RETURN_IF_ERROR(impl_->check_alive());
  // A connection of its own: once subscribed, the daemon reads nothing more from it.
  ClientOptions options = impl_->options();
  options.socket = impl_->socket_path();
  options.client_name += " (events)";
  SHELF_ASSIGN_OR_RETURN(std::shared_ptr<Impl> connection, Impl::connect(options));
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::SubscribeRequest{last_generation});
  SHELF_ASSIGN_OR_RETURN(protocol::SubscribeResponse r,
                         connection->call_and_decode(frame, MessageType::kSubscribe,
                                                     protocol::decode_subscribe_response));
  return EventStream(std::make_unique<EventStream::Impl>(std::move(connection), r.generation));
}

}  // namespace shelf
