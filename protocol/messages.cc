#include "protocol/messages.h"

namespace shelf::protocol {

namespace {

// Appends one frame whose payload `body` writes.
template <class Body>
void frame(std::vector<std::byte>& out, uint16_t type, Body&& body) {
  ByteWriter w;
  body(w);
  std::vector<std::byte> payload = w.take();
  put_frame_header(out, type, static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
}

uint16_t response_type(MessageType type) {
  return static_cast<uint16_t>(static_cast<uint16_t>(type) | kResponseBit);
}

// Starts an OK response: status code 0 and an empty message.
void ok_status(ByteWriter& w) {
  w.u8(0);
  w.str("");
}

template <class T>
std::optional<T> finish(const ByteReader& r, T value) {
  if (!r.done()) return std::nullopt;
  return value;
}

void put_summary(ByteWriter& w, const DatasetSummary& d) {
  w.str(d.name);
  w.u32(d.num_columns);
  w.u64(d.num_partitions);
  w.u64(d.num_rows);
  w.u64(d.data_bytes);
  w.u64(d.memory_bytes);
  w.i64(d.created_ns);
  w.u32(d.publisher_uid);
  w.u32(d.publisher_pid);
  w.u32(d.leases);
  w.boolean(d.spilled);
  w.boolean(d.pinned);
  w.boolean(d.view);
  w.boolean(d.view_of_graph);
  w.str(d.view_base);
}

DatasetSummary get_summary(ByteReader& r) {
  DatasetSummary d;
  d.name = r.str();
  d.num_columns = r.u32();
  d.num_partitions = r.u64();
  d.num_rows = r.u64();
  d.data_bytes = r.u64();
  d.memory_bytes = r.u64();
  d.created_ns = r.i64();
  d.publisher_uid = r.u32();
  d.publisher_pid = r.u32();
  d.leases = r.u32();
  d.spilled = r.boolean();
  d.pinned = r.boolean();
  d.view = r.boolean();
  d.view_of_graph = r.boolean();
  d.view_base = r.str();
  return d;
}
// Smallest encoding of a summary: empty names and the fixed fields.
constexpr size_t kMinSummaryBytes = 4 + 4 + 8 * 5 + 4 * 3 + 4 + 4;  // 68

std::vector<DatasetSummary> get_summaries(ByteReader& r) {
  std::vector<DatasetSummary> out;
  uint32_t n = r.count(kMinSummaryBytes);
  out.reserve(n);
  for (uint32_t i = 0; i < n && !r.failed(); ++i) out.push_back(get_summary(r));
  return out;
}

}  // namespace

bool is_request_type(uint16_t type) {
  return (type >= static_cast<uint16_t>(MessageType::kHello) &&
          type <= static_cast<uint16_t>(MessageType::kLeaseReleased)) ||
         type == static_cast<uint16_t>(MessageType::kSubscribe) ||
         type == static_cast<uint16_t>(MessageType::kPin);  // kEvent is not one
}

void encode_request(std::vector<std::byte>& out, const HelloRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kHello), [&](ByteWriter& w) {
    w.u16(m.protocol_version);
    w.str(m.client_name);
    w.str(m.command);
  });
}
void encode_request(std::vector<std::byte>& out, const AllocateRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kAllocate), [&](ByteWriter& w) { w.u64(m.bytes); });
}
void encode_request(std::vector<std::byte>& out, const AbortRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kAbort), [&](ByteWriter& w) { w.u64(m.offset); });
}
void encode_request(std::vector<std::byte>& out, const PublishRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kPublish), [&](ByteWriter& w) {
    w.boolean(m.override_existing);
    w.boolean(m.pin);
    w.u32(static_cast<uint32_t>(m.items.size()));
    for (const PublishItem& item : m.items) {
      w.str(item.name);
      w.bytes(item.descriptor);
    }
  });
}
void encode_request(std::vector<std::byte>& out, const GetRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kGet), [&](ByteWriter& w) { w.str(m.name); });
}
void encode_request(std::vector<std::byte>& out, const ReleaseRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kRelease),
        [&](ByteWriter& w) { w.u64(m.lease_id); });
}
void encode_request(std::vector<std::byte>& out, const UnpublishRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kUnpublish), [&](ByteWriter& w) {
    w.str(m.name);
    w.boolean(m.cascade);
  });
}
void encode_request(std::vector<std::byte>& out, const PinRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kPin), [&](ByteWriter& w) {
    w.str(m.name);
    w.boolean(m.pinned);
  });
}
void encode_list_request(std::vector<std::byte>& out) {
  frame(out, static_cast<uint16_t>(MessageType::kList), [](ByteWriter&) {});
}
void encode_status_request(std::vector<std::byte>& out) {
  frame(out, static_cast<uint16_t>(MessageType::kStatus), [](ByteWriter&) {});
}
void encode_lease_released_request(std::vector<std::byte>& out) {
  frame(out, static_cast<uint16_t>(MessageType::kLeaseReleased), [](ByteWriter&) {});
}
void encode_request(std::vector<std::byte>& out, const WaitForRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kWaitFor), [&](ByteWriter& w) {
    w.u32(static_cast<uint32_t>(m.names.size()));
    for (const std::string& name : m.names) w.str(name);
  });
}

void encode_request(std::vector<std::byte>& out, const SubscribeRequest& m) {
  frame(out, static_cast<uint16_t>(MessageType::kSubscribe),
        [&](ByteWriter& w) { w.u64(m.last_generation); });
}
void encode_event(std::vector<std::byte>& out, const Event& m) {
  frame(out, static_cast<uint16_t>(MessageType::kEvent), [&](ByteWriter& w) {
    w.u8(static_cast<uint8_t>(m.kind));
    w.str(m.name);
    w.i64(m.time_ns);
    w.u32(m.pid);
    w.u32(m.uid);
    w.u64(m.num_rows);
    w.u64(m.num_partitions);
    w.u64(m.memory_bytes);
    w.str(m.reason);
    w.u64(m.generation);
    w.u64(m.previous_generation);
    w.u64(m.dropped);
  });
}

std::optional<HelloRequest> decode_hello_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  HelloRequest m;
  m.protocol_version = r.u16();
  m.client_name = r.str();
  m.command = r.str();
  return finish(r, std::move(m));
}
std::optional<AllocateRequest> decode_allocate_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  AllocateRequest m;
  m.bytes = r.u64();
  return finish(r, m);
}
std::optional<AbortRequest> decode_abort_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  AbortRequest m;
  m.offset = r.u64();
  return finish(r, m);
}
std::optional<PublishRequest> decode_publish_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  PublishRequest m;
  m.override_existing = r.boolean();
  m.pin = r.boolean();
  // Each item: two length prefixes at least. The cap keeps a forged count
  // from making the daemon build millions of items (gigabytes) before it
  // finds the first one wrong.
  uint32_t n = r.count(8);
  if (n > kMaxPublishItems) return std::nullopt;
  for (uint32_t i = 0; i < n && !r.failed(); ++i) {
    PublishItem item;
    item.name = r.str();
    std::span<const std::byte> d = r.bytes();
    item.descriptor.assign(d.begin(), d.end());
    m.items.push_back(std::move(item));
  }
  return finish(r, std::move(m));
}
std::optional<GetRequest> decode_get_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  GetRequest m;
  m.name = r.str();
  return finish(r, std::move(m));
}
std::optional<ReleaseRequest> decode_release_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  ReleaseRequest m;
  m.lease_id = r.u64();
  return finish(r, m);
}
std::optional<UnpublishRequest> decode_unpublish_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  UnpublishRequest m;
  m.name = r.str();
  m.cascade = r.boolean();
  return finish(r, std::move(m));
}
std::optional<PinRequest> decode_pin_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  PinRequest m;
  m.name = r.str();
  m.pinned = r.boolean();
  return finish(r, std::move(m));
}
std::optional<WaitForRequest> decode_wait_for_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  WaitForRequest m;
  const uint32_t n = r.count(4);  // each name: its length prefix at least
  if (n == 0 || n > kMaxWaitNames) return std::nullopt;
  for (uint32_t i = 0; i < n && !r.failed(); ++i) m.names.push_back(r.str());
  return finish(r, std::move(m));
}

std::optional<SubscribeRequest> decode_subscribe_request(std::span<const std::byte> payload) {
  ByteReader r(payload);
  SubscribeRequest m;
  m.last_generation = r.u64();
  return finish(r, m);
}
std::optional<Event> decode_event(std::span<const std::byte> payload) {
  ByteReader r(payload);
  Event m;
  const uint8_t kind = r.u8();
  if (kind == 0 || kind > kMaxEventKind) return std::nullopt;
  m.kind = static_cast<EventKind>(kind);
  m.name = r.str();
  m.time_ns = r.i64();
  m.pid = r.u32();
  m.uid = r.u32();
  m.num_rows = r.u64();
  m.num_partitions = r.u64();
  m.memory_bytes = r.u64();
  m.reason = r.str();
  m.generation = r.u64();
  m.previous_generation = r.u64();
  m.dropped = r.u64();
  return finish(r, std::move(m));
}

void encode_error_response(std::vector<std::byte>& out, MessageType type, const Status& status) {
  frame(out, response_type(type), [&](ByteWriter& w) {
    w.u8(static_cast<uint8_t>(status.code()));
    w.str(status.message());
  });
}
void encode_empty_response(std::vector<std::byte>& out, MessageType type) {
  frame(out, response_type(type), [&](ByteWriter& w) { ok_status(w); });
}
void encode_response(std::vector<std::byte>& out, const HelloResponse& m) {
  frame(out, response_type(MessageType::kHello), [&](ByteWriter& w) {
    ok_status(w);
    w.str(m.shm_dir);
    w.str(m.segment_name);
    w.u64(m.segment_bytes);
    w.u64(m.generation);
    w.u64(m.memory_limit);
    w.u32(m.daemon_pid);
    w.u32(m.lease_slots);
  });
}
void encode_response(std::vector<std::byte>& out, const AllocateResponse& m) {
  frame(out, response_type(MessageType::kAllocate), [&](ByteWriter& w) {
    ok_status(w);
    w.u64(m.offset);
    w.u64(m.length);
  });
}
void encode_response(std::vector<std::byte>& out, const GetResponse& m) {
  frame(out, response_type(MessageType::kGet), [&](ByteWriter& w) {
    ok_status(w);
    w.u64(m.lease_id);
    w.u64(m.descriptor_offset);
    w.u64(m.descriptor_length);
  });
}
void encode_response(std::vector<std::byte>& out, const ListResponse& m) {
  frame(out, response_type(MessageType::kList), [&](ByteWriter& w) {
    ok_status(w);
    w.u32(static_cast<uint32_t>(m.datasets.size()));
    for (const DatasetSummary& d : m.datasets) put_summary(w, d);
  });
}
void encode_response(std::vector<std::byte>& out, const StatusResponse& m) {
  frame(out, response_type(MessageType::kStatus), [&](ByteWriter& w) {
    ok_status(w);
    w.str(m.shm_dir);
    w.str(m.segment_name);
    w.str(m.socket_path);
    w.u32(m.daemon_pid);
    w.u64(m.generation);
    w.i64(m.started_ns);
    w.u64(m.memory_limit);
    w.u64(m.used_bytes);
    w.u64(m.index_bytes);
    w.u64(m.unsealed_bytes);
    w.u64(m.pending_free_bytes);
    w.u64(m.resident_bytes);
    w.u64(m.page_bytes);
    w.u64(m.huge_page_bytes);
    w.u32(m.num_connections);
    w.u32(m.num_leases);
    w.u32(static_cast<uint32_t>(m.datasets.size()));
    for (const DatasetSummary& d : m.datasets) put_summary(w, d);
    w.u32(static_cast<uint32_t>(m.quarantined.size()));
    for (const QuarantinedDataset& q : m.quarantined) {
      w.str(q.name);
      w.u64(q.memory_bytes);
      w.str(q.reason);
    }
    w.u32(static_cast<uint32_t>(m.unpublished.size()));
    for (const UnpublishedDataset& u : m.unpublished) {
      w.str(u.name);
      w.u64(u.memory_bytes);
      w.u32(u.leases);
      w.boolean(u.restart_hold);
    }
    w.u32(static_cast<uint32_t>(m.clients.size()));
    for (const ClientSummary& c : m.clients) {
      w.u32(c.pid);
      w.u32(c.uid);
      w.str(c.command);
      w.str(c.client_name);
      w.i64(c.connected_ns);
      w.u32(c.connections);
      w.u64(c.writing_bytes);
      w.u32(c.leases);
      w.u32(c.datasets_held);
      w.u64(c.held_bytes);
      w.u64(c.unpublished_bytes);
      w.u32(static_cast<uint32_t>(c.holdings.size()));
      for (const Holding& h : c.holdings) {
        w.u32(h.dataset);
        w.u32(h.leases);
        w.boolean(h.alone);
      }
    }
    w.u32(static_cast<uint32_t>(m.users.size()));
    for (const UserUsage& u : m.users) {
      w.u32(u.uid);
      w.u64(u.used_bytes);
      w.u64(u.quota_bytes);
    }
    w.u32(m.verify_datasets_left);
    w.u64(m.verify_bytes_left);
    w.u64(m.verify_bytes_done);
    w.str(m.spill_dir);
    w.u64(m.spill_above_bytes);
    w.u32(m.spilled_datasets);
    w.u64(m.spilled_file_bytes);
  });
}

void encode_response(std::vector<std::byte>& out, const SubscribeResponse& m) {
  frame(out, response_type(MessageType::kSubscribe), [&](ByteWriter& w) {
    ok_status(w);
    w.u64(m.generation);
  });
}

Status decode_response_status(ByteReader& r) {
  uint8_t code = r.u8();
  std::string message = r.str();
  if (r.failed()) return Status::internal("malformed response from shelfd");
  if (code == 0) return Status();
  return Status::from_code(code, message);
}

std::optional<HelloResponse> decode_hello_response(ByteReader& r) {
  HelloResponse m;
  m.shm_dir = r.str();
  m.segment_name = r.str();
  m.segment_bytes = r.u64();
  m.generation = r.u64();
  m.memory_limit = r.u64();
  m.daemon_pid = r.u32();
  m.lease_slots = r.u32();
  return finish(r, std::move(m));
}
std::optional<AllocateResponse> decode_allocate_response(ByteReader& r) {
  AllocateResponse m;
  m.offset = r.u64();
  m.length = r.u64();
  return finish(r, m);
}
std::optional<GetResponse> decode_get_response(ByteReader& r) {
  GetResponse m;
  m.lease_id = r.u64();
  m.descriptor_offset = r.u64();
  m.descriptor_length = r.u64();
  return finish(r, m);
}
std::optional<ListResponse> decode_list_response(ByteReader& r) {
  ListResponse m;
  m.datasets = get_summaries(r);
  return finish(r, std::move(m));
}
std::optional<StatusResponse> decode_status_response(ByteReader& r) {
  StatusResponse m;
  m.shm_dir = r.str();
  m.segment_name = r.str();
  m.socket_path = r.str();
  m.daemon_pid = r.u32();
  m.generation = r.u64();
  m.started_ns = r.i64();
  m.memory_limit = r.u64();
  m.used_bytes = r.u64();
  m.index_bytes = r.u64();
  m.unsealed_bytes = r.u64();
  m.pending_free_bytes = r.u64();
  m.resident_bytes = r.u64();
  m.page_bytes = r.u64();
  m.huge_page_bytes = r.u64();
  m.num_connections = r.u32();
  m.num_leases = r.u32();
  m.datasets = get_summaries(r);
  const uint32_t n = r.count(4 + 8 + 4);  // the smallest QuarantinedDataset
  for (uint32_t i = 0; i < n && !r.failed(); ++i) {
    QuarantinedDataset q;
    q.name = r.str();
    q.memory_bytes = r.u64();
    q.reason = r.str();
    m.quarantined.push_back(std::move(q));
  }
  const uint32_t u = r.count(4 + 8 + 4 + 1);  // the smallest UnpublishedDataset
  for (uint32_t i = 0; i < u && !r.failed(); ++i) {
    UnpublishedDataset d;
    d.name = r.str();
    d.memory_bytes = r.u64();
    d.leases = r.u32();
    d.restart_hold = r.boolean();
    m.unpublished.push_back(std::move(d));
  }
  const uint64_t datasets = m.datasets.size() + m.unpublished.size();
  // The smallest ClientSummary.
  const uint32_t c = r.count(4 + 4 + 4 + 4 + 8 + 4 + 8 + 4 + 4 + 8 + 8 + 4);
  for (uint32_t i = 0; i < c && !r.failed(); ++i) {
    ClientSummary s;
    s.pid = r.u32();
    s.uid = r.u32();
    s.command = r.str();
    s.client_name = r.str();
    s.connected_ns = r.i64();
    s.connections = r.u32();
    s.writing_bytes = r.u64();
    s.leases = r.u32();
    s.datasets_held = r.u32();
    s.held_bytes = r.u64();
    s.unpublished_bytes = r.u64();
    const uint32_t h = r.count(4 + 4 + 1);
    for (uint32_t j = 0; j < h && !r.failed(); ++j) {
      Holding holding;
      holding.dataset = r.u32();
      holding.leases = r.u32();
      holding.alone = r.boolean();
      if (holding.dataset >= datasets) return std::nullopt;  // names no dataset of this response
      s.holdings.push_back(holding);
    }
    m.clients.push_back(std::move(s));
  }
  const uint32_t users = r.count(4 + 8 + 8);
  for (uint32_t i = 0; i < users && !r.failed(); ++i) {
    UserUsage usage;
    usage.uid = r.u32();
    usage.used_bytes = r.u64();
    usage.quota_bytes = r.u64();
    m.users.push_back(usage);
  }
  m.verify_datasets_left = r.u32();
  m.verify_bytes_left = r.u64();
  m.verify_bytes_done = r.u64();
  m.spill_dir = r.str();
  m.spill_above_bytes = r.u64();
  m.spilled_datasets = r.u32();
  m.spilled_file_bytes = r.u64();
  return finish(r, std::move(m));
}

std::optional<SubscribeResponse> decode_subscribe_response(ByteReader& r) {
  SubscribeResponse m;
  m.generation = r.u64();
  return finish(r, m);
}

}  // namespace shelf::protocol
