// Events: what happens on the shelf, as it happens. Client::subscribe()
// opens an EventStream; the daemon sends it an Event for every publish,
// override and unpublish from then on (`shelf events`, Python's
// client.events()). The daemon pushes them: nothing polls.
//
//   shelf::EventStream events = client.subscribe().value();
//   for (;;) {
//     shelf::Result<shelf::Event> e = events.next();
//     if (!e.ok()) break;  // Unavailable: the daemon has gone
//     std::cout << shelf::event_kind_name(e->kind) << " " << e->name << "\n";
//   }
//
// Threads and lifetime. An EventStream is a connection of its own, not the
// Client's: it may outlive the Client that opened it, and the Client's
// thread may go on making requests meanwhile. One EventStream is used by
// one thread at a time; several streams (on any threads) are independent.
// Destroying it closes its connection, and the daemon forgets it.
//
// A stream that falls behind (its unread events past kMaxEventBacklogBytes,
// limits.h) loses events rather than slowing the daemon: it then reads one
// kDropped event saying how many it missed, in their place.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <shelf/result.h>

namespace shelf {

enum class EventKind : uint8_t {
  kPublish = 1,    // a new name was published
  kOverride = 2,   // a publish replaced a dataset of the same name
  kUnpublish = 3,  // a name was removed
  // A dataset the daemon found damaged when it started, kept but not
  // served. Only right after a kRestart event.
  kQuarantine = 4,
  // The stream's daemon is another than the one of the subscriber's last
  // stream (Client::subscribe's last_generation): it restarted meanwhile.
  kRestart = 5,
  kDropped = 6,  // `dropped` events were not sent: this stream read too slowly
};

// "publish", "override", "unpublish", "quarantine", "restart", "dropped":
// the names `shelf events` prints and Python's event dicts carry.
std::string_view event_kind_name(EventKind kind);

// One event. Fields its kind does not use are 0 or empty.
struct Event {
  EventKind kind = EventKind::kPublish;
  std::string name;  // publish, override, unpublish, quarantine
  // When it happened, ns since the epoch (UTC): the publish's created_ns;
  // for quarantine and restart, when the daemon started.
  int64_t time_ns = 0;
  uint32_t pid = 0;  // publish, override, unpublish: the process that did it
  uint32_t uid = 0;
  // publish, override: the new dataset; unpublish: the one removed.
  uint64_t num_rows = 0;
  uint64_t num_partitions = 0;
  uint64_t memory_bytes = 0;         // ... and quarantine
  std::string reason;                // quarantine: what was found wrong
  uint64_t generation = 0;           // restart: the new daemon's generation
  uint64_t previous_generation = 0;  // restart: the one the subscriber saw last
  uint64_t dropped = 0;              // dropped: how many
};

class EventStream {
 public:
  EventStream(EventStream&&) noexcept;
  EventStream& operator=(EventStream&&) noexcept;
  ~EventStream();

  // The next event, in the order the daemon did them; waits for at most
  // `timeout` (none: without bound). Blocks the calling thread. A non-empty
  // `interrupted` is called on that thread when a signal interrupts the wait
  // (EINTR) and every kWaitCheckMs (limits.h) meanwhile; true ends the wait
  // as a timeout does (Python passes one that checks for Ctrl-C). It must
  // not throw. Errors: TimedOut (the timeout passed, or `interrupted` ended
  // the wait: the stream stays usable, call next() again), Unavailable (the
  // daemon stopped or died; every later call fails too: subscribe again,
  // passing generation(), to hear of a restart), InvalidArgument (a
  // negative timeout, a moved-from stream).
  Result<Event> next(std::optional<std::chrono::milliseconds> timeout = std::nullopt,
                     const std::function<bool()>& interrupted = {});

  // The generation of the daemon this stream listens to: what a later
  // Client::subscribe passes to learn whether that daemon restarted.
  uint64_t generation() const;

  class Impl;

 private:
  friend class Client;
  explicit EventStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shelf
