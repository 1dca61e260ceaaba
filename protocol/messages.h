// The messages of the control protocol between clients and shelfd, and their
// encoding. Each request gets exactly one response, in order. A response
// frame has the request's type with kResponseBit set; its payload starts with
// a status (u8 code, string message) and, when the code is OK, the body.
// docs/protocol.md describes each message.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <shelf/limits.h>
#include <shelf/status.h>

#include "protocol/wire.h"

namespace shelf::protocol {

enum class MessageType : uint16_t {
  kHello = 1,           // first message of every connection
  kAllocate = 2,        // reserve an extent for an unsealed partition
  kAbort = 3,           // give back an unsealed extent
  kPublish = 4,         // seal extents and publish one or more names, all or nothing
  kGet = 5,             // take a lease, when the lease table cannot (docs/leases.md)
  kRelease = 6,         // end a lease
  kUnpublish = 7,       // remove a name
  kList = 8,            // every published dataset
  kStatus = 9,          // memory and datasets at a glance
  kWaitFor = 10,        // answered once every name is published (docs/protocol.md, "Waiting")
  kLeaseReleased = 11,  // posted: a table lease of an unpublished dataset ended (docs/leases.md)
  // After its OK response the connection is a one-way stream of Event
  // frames, daemon to client: the daemon reads nothing more from it, watches
  // it for hang-up only, and sends Events until either side closes
  // (docs/protocol.md, "Events").
  kSubscribe = 12,
  kEvent = 13,  // daemon to client only, never a request; no status, no response bit
  kPin = 14,    // pin or unpin a name (never spilled while pinned)
};
inline constexpr uint16_t kResponseBit = 0x8000;
bool is_request_type(uint16_t type);

struct HelloRequest {
  uint16_t protocol_version = kProtocolVersion;
  std::string client_name;  // for the daemon's log and Status, e.g. "shelf publish"
  // The client's command line (its /proc/self/cmdline, arguments joined by
  // spaces), for Status. Sent rather than read by the daemon: reading
  // another process's cmdline waits for its mmap lock, which a process
  // unmapping a large range holds for milliseconds, and the daemon's loop
  // must not wait on a client. A process may write its own argv anyway.
  std::string command;
};
struct HelloResponse {
  std::string shm_dir;  // the segment is <shm_dir>/<segment_name>
  std::string segment_name;
  uint64_t segment_bytes = 0;
  uint64_t generation = 0;  // must match the segment header's
  uint64_t memory_limit = 0;
  uint32_t daemon_pid = 0;
  // Slots of the connection's lease table, whose memfd comes with this
  // response (SCM_RIGHTS); 0 when the daemon could not make one: every
  // lease is then taken by a round trip.
  uint32_t lease_slots = 0;
};

struct AllocateRequest {
  uint64_t bytes = 0;  // payload bytes wanted; the extent adds its header and rounds to pages
};
struct AllocateResponse {
  uint64_t offset = 0;  // segment offset of the extent (its ExtentHeaderLayout)
  uint64_t length = 0;  // whole extent, page multiple
};

struct AbortRequest {
  uint64_t offset = 0;  // an unsealed extent of this connection
};

struct PublishItem {
  std::string name;
  // shm::DescriptorBuilder output, or for a view shm::encode_view's.
  std::vector<std::byte> descriptor;
};
struct PublishRequest {
  bool override_existing = false;
  bool pin = false;  // every item is pinned: never spilled (shelfd --spill-dir)
  std::vector<PublishItem> items;
};

struct GetRequest {
  std::string name;
};
struct GetResponse {
  uint64_t lease_id = 0;
  uint64_t descriptor_offset = 0;  // segment offset of the descriptor bytes
  uint64_t descriptor_length = 0;
};

struct ReleaseRequest {
  uint64_t lease_id = 0;
};

struct UnpublishRequest {
  std::string name;
  // Also every view that reads it, directly or through other views;
  // without it a dataset views read is not unpublished (InvalidArgument).
  bool cascade = false;
};

// Answered (empty, OK) once the dataset is pinned, or unpinned; pinning a
// spilled dataset restores it first, as a Get does.
struct PinRequest {
  std::string name;
  bool pinned = true;  // false: unpin
};

struct DatasetSummary {
  std::string name;
  uint32_t num_columns = 0;
  uint64_t num_partitions = 0;
  uint64_t num_rows = 0;
  uint64_t data_bytes = 0;    // sum of buffer lengths
  uint64_t memory_bytes = 0;  // what it takes from the limit: extents, descriptor included
  int64_t created_ns = 0;
  uint32_t publisher_uid = 0;
  uint32_t publisher_pid = 0;
  uint32_t leases = 0;
  // Its buffers are in shelfd's spill directory (memory_bytes: its descriptor).
  bool spilled = false;
  bool pinned = false;  // never spilled (PinRequest, PublishRequest::pin)
  // A view (docs/views.md): no buffers (data_bytes 0, memory_bytes its
  // definition's extent), evaluated by readers: against view_base, or, a
  // view of a Dask graph (view_of_graph, view_base empty), by Python.
  bool view = false;
  bool view_of_graph = false;
  std::string view_base;
};
struct ListResponse {
  std::vector<DatasetSummary> datasets;  // sorted by name
};

// A dataset shelfd found damaged when it restarted: kept, never served.
struct QuarantinedDataset {
  std::string name;
  uint64_t memory_bytes = 0;
  std::string reason;
};

// A dataset that has left the index (unpublished, or replaced by an
// override) but that readers still hold: pending free until the last one
// lets go.
struct UnpublishedDataset {
  std::string name;
  uint64_t memory_bytes = 0;
  uint32_t leases = 0;
  // Kept for processes that mapped the segment before shelfd restarted
  // (their leases ended with the old daemon); ClientSummary::connections
  // is 0 for them.
  bool restart_hold = false;
};

// What one process holds of one dataset.
struct Holding {
  // Into StatusResponse::datasets, then ::unpublished past its end.
  uint32_t dataset = 0;
  uint32_t leases = 0;  // 0 for a restart hold
  bool alone = false;   // no other process holds it
};

// A process using shelfd: its connections together (a program's client, its
// waits and its CLI calls are one row), or a process that mapped the
// segment before shelfd restarted and may still read it (connections 0).
struct ClientSummary {
  uint32_t pid = 0;
  uint32_t uid = 0;
  // Its command line as its first Hello said (HelloRequest::command); for a
  // process held from before a restart, its name from /proc/PID/comm. This
  // daemon sends at most kMaxCommandBytes (<shelf/limits.h>); the process's
  // own words: escape before showing.
  std::string command;
  std::string client_name;   // what its first Hello said, e.g. "shelf publish"
  int64_t connected_ns = 0;  // its oldest connection's (0 for a restart hold)
  uint32_t connections = 0;
  uint64_t writing_bytes = 0;  // its unsealed extents: partitions being written
  // Over everything it holds, `holdings` cut or not:
  uint32_t leases = 0;
  uint32_t datasets_held = 0;
  uint64_t held_bytes = 0;         // memory of the datasets it holds
  uint64_t unpublished_bytes = 0;  // of those, unpublished ones no other process holds
  // The largest kMaxHoldingsPerClient of what it holds, largest first, so
  // that a Status stays small whatever the clients hold.
  std::vector<Holding> holdings;
};

// What one user's datasets and unsealed extents take (shelfd --user-quota):
// every uid that has any, and every uid given a quota of its own.
struct UserUsage {
  uint32_t uid = 0;
  uint64_t used_bytes = 0;   // its published datasets (quarantined too) and unsealed extents
  uint64_t quota_bytes = 0;  // 0: none
};

struct StatusResponse {
  std::string shm_dir;
  std::string segment_name;
  std::string socket_path;
  uint32_t daemon_pid = 0;
  uint64_t generation = 0;
  int64_t started_ns = 0;
  uint64_t memory_limit = 0;
  uint64_t used_bytes = 0;          // everything charged to the limit
  uint64_t index_bytes = 0;         // fixed cost of the header and index, part of used
  uint64_t unsealed_bytes = 0;      // extents being written, part of used
  uint64_t pending_free_bytes = 0;  // freed, not yet back (leased or being punched), part of used
  uint64_t resident_bytes = 0;      // what the tmpfs really holds for the segment
  // As shelf::MemoryStats (shelf/client.h) says.
  uint64_t page_bytes = 0;
  uint64_t huge_page_bytes = 0;
  uint32_t num_connections = 0;
  uint32_t num_leases = 0;
  std::vector<DatasetSummary> datasets;
  std::vector<QuarantinedDataset> quarantined;  // by name
  std::vector<UnpublishedDataset> unpublished;  // by name
  std::vector<ClientSummary> clients;           // by pid
  std::vector<UserUsage> users;                 // by uid
  // The checksums of what a restart found, checked while shelfd serves
  // (server/verifier.h): all 0 once every dataset is checked.
  uint32_t verify_datasets_left = 0;
  uint64_t verify_bytes_left = 0;
  uint64_t verify_bytes_done = 0;
  // Spilling (shelfd --spill-dir; all empty or 0 without): the directory,
  // the use past which shelfd spills before a request must wait for it
  // (--spill-above), and what the spilled datasets' files take.
  std::string spill_dir;
  uint64_t spill_above_bytes = 0;
  uint32_t spilled_datasets = 0;
  uint64_t spilled_file_bytes = 0;
};

// Answered (empty, OK) when every name is published; until then the
// connection is parked: the daemon reads nothing more from it.
struct WaitForRequest {
  std::vector<std::string> names;  // 1..kMaxWaitNames
};

struct SubscribeRequest {
  // The generation of the daemon the client last subscribed to, 0 for none.
  // When it differs from the current one, the stream starts with a restart
  // event and the quarantine events of the datasets this daemon found
  // damaged (docs/protocol.md, "Events").
  uint64_t last_generation = 0;
};
struct SubscribeResponse {
  uint64_t generation = 0;  // the daemon's: what the next Subscribe passes as last_generation
};

enum class EventKind : uint8_t {
  kPublish = 1,   // a new name
  kOverride = 2,  // a publish that replaced a published (or quarantined) name
  kUnpublish = 3,
  kQuarantine = 4,  // found damaged since the daemon's start (its checks of a restart)
  kRestart = 5,     // the daemon is another than the subscriber's last
  kDropped = 6,     // `dropped` events were not sent: the subscriber read too slowly
};
inline constexpr uint8_t kMaxEventKind = 6;

// One Event frame's payload. Fields a kind does not use are 0 or empty.
struct Event {
  EventKind kind = EventKind::kPublish;
  std::string name;  // publish, override, unpublish, quarantine
  int64_t time_ns = 0;
  uint32_t pid = 0;  // publish, override, unpublish: who did it
  uint32_t uid = 0;
  uint64_t num_rows = 0;  // publish, override; unpublish: of what was removed
  uint64_t num_partitions = 0;
  uint64_t memory_bytes = 0;         // ... and quarantine
  std::string reason;                // quarantine
  uint64_t generation = 0;           // restart: the daemon's now
  uint64_t previous_generation = 0;  // restart: the subscriber's last
  uint64_t dropped = 0;              // dropped
};

// Encoders append a whole frame (header and payload) to `out`.
void encode_request(std::vector<std::byte>& out, const HelloRequest& m);
void encode_request(std::vector<std::byte>& out, const AllocateRequest& m);
void encode_request(std::vector<std::byte>& out, const AbortRequest& m);
void encode_request(std::vector<std::byte>& out, const PublishRequest& m);
void encode_request(std::vector<std::byte>& out, const GetRequest& m);
void encode_request(std::vector<std::byte>& out, const ReleaseRequest& m);
void encode_request(std::vector<std::byte>& out, const UnpublishRequest& m);
void encode_request(std::vector<std::byte>& out, const PinRequest& m);
void encode_list_request(std::vector<std::byte>& out);
void encode_status_request(std::vector<std::byte>& out);
void encode_lease_released_request(std::vector<std::byte>& out);
void encode_request(std::vector<std::byte>& out, const WaitForRequest& m);
void encode_request(std::vector<std::byte>& out, const SubscribeRequest& m);
// An Event frame (type kEvent, the event as its whole payload).
void encode_event(std::vector<std::byte>& out, const Event& m);

// Decoders read a request payload; nullopt when it is malformed.
std::optional<HelloRequest> decode_hello_request(std::span<const std::byte> payload);
std::optional<AllocateRequest> decode_allocate_request(std::span<const std::byte> payload);
std::optional<AbortRequest> decode_abort_request(std::span<const std::byte> payload);
std::optional<PublishRequest> decode_publish_request(std::span<const std::byte> payload);
std::optional<GetRequest> decode_get_request(std::span<const std::byte> payload);
std::optional<ReleaseRequest> decode_release_request(std::span<const std::byte> payload);
std::optional<UnpublishRequest> decode_unpublish_request(std::span<const std::byte> payload);
std::optional<PinRequest> decode_pin_request(std::span<const std::byte> payload);
// Also nullopt for no names or more than kMaxWaitNames.
std::optional<WaitForRequest> decode_wait_for_request(std::span<const std::byte> payload);
std::optional<SubscribeRequest> decode_subscribe_request(std::span<const std::byte> payload);
// An Event frame's payload; nullopt also for an unknown kind.
std::optional<Event> decode_event(std::span<const std::byte> payload);

// Responses. An error response carries only the status.
void encode_error_response(std::vector<std::byte>& out, MessageType type, const Status& status);
void encode_empty_response(std::vector<std::byte>& out, MessageType type);
void encode_response(std::vector<std::byte>& out, const HelloResponse& m);
void encode_response(std::vector<std::byte>& out, const AllocateResponse& m);
void encode_response(std::vector<std::byte>& out, const GetResponse& m);
void encode_response(std::vector<std::byte>& out, const ListResponse& m);
void encode_response(std::vector<std::byte>& out, const StatusResponse& m);
void encode_response(std::vector<std::byte>& out, const SubscribeResponse& m);

// Reads the status at the start of a response payload and leaves `reader` at
// the body. A malformed payload yields an Internal status.
Status decode_response_status(ByteReader& reader);
std::optional<HelloResponse> decode_hello_response(ByteReader& reader);
std::optional<AllocateResponse> decode_allocate_response(ByteReader& reader);
std::optional<GetResponse> decode_get_response(ByteReader& reader);
std::optional<ListResponse> decode_list_response(ByteReader& reader);
std::optional<StatusResponse> decode_status_response(ByteReader& reader);
std::optional<SubscribeResponse> decode_subscribe_response(ByteReader& reader);

}  // namespace shelf::protocol
