// Fuzzes the protocol decoders: the input is read as a stream of frames, the
// way shelfd reads a connection, and every frame's payload (cut short where
// the input ends) goes through every request decoder and every response
// decoder, whatever its type says; a hostile client picks the type too.
//
// Beyond "no crash, no leak, no undefined behaviour" it checks that decoding
// is exact: whatever a decoder accepts re-encodes to the very same bytes, so
// no two encodings mean one message and nothing is silently dropped.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "base/check.h"
#include "protocol/messages.h"
#include "protocol/wire.h"

namespace shelf::protocol {
namespace {

using Bytes = std::vector<std::byte>;

// The payload of the single frame in `frame`, which the encoder just wrote.
std::span<const std::byte> payload_of(const Bytes& frame) {
  SHELF_CHECK(frame.size() >= kFrameHeaderBytes);
  FrameHeader h = read_frame_header(frame);
  SHELF_CHECK(h.magic == kFrameMagic && h.version == kProtocolVersion);
  SHELF_CHECK(frame.size() == kFrameHeaderBytes + h.payload_length);
  return std::span<const std::byte>(frame).subspan(kFrameHeaderBytes);
}

void check_same(std::span<const std::byte> a, std::span<const std::byte> b) {
  SHELF_CHECK(a.size() == b.size());
  SHELF_CHECK(a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Decodes `payload` as a request with `decode`; if it is accepted, checks
// that encode_request gives back exactly `payload`.
template <class Decode>
void request_round_trip(std::span<const std::byte> payload, Decode decode) {
  auto m = decode(payload);
  if (!m) return;
  Bytes frame;
  encode_request(frame, *m);
  check_same(payload_of(frame), payload);
}

// An Event frame's payload (no status): accepted, it re-encodes exactly,
// and its kind is one of the known ones.
void event_round_trip(std::span<const std::byte> payload) {
  auto m = decode_event(payload);
  if (!m) return;
  const auto kind = static_cast<uint8_t>(m->kind);
  SHELF_CHECK(kind >= 1 && kind <= kMaxEventKind);
  Bytes frame;
  encode_event(frame, *m);
  check_same(payload_of(frame), payload);
}

// A response: the status, then (when OK) the body `decode` reads. Accepted
// OK responses with an empty status message re-encode exactly.
template <class Decode>
void response_round_trip(std::span<const std::byte> payload, Decode decode) {
  ByteReader r(payload);
  Status status = decode_response_status(r);
  if (!status.ok()) {
    // A failed status read is reported as Internal, never as OK.
    SHELF_CHECK(status.code() != Status::Code::kOk);
    return;
  }
  auto m = decode(r);
  if (!m) return;
  SHELF_CHECK(r.done());
  ByteReader again(payload);
  (void)again.u8();
  if (again.str().empty()) {
    Bytes frame;
    encode_response(frame, *m);
    check_same(payload_of(frame), payload);
  }
}

void fuzz_payload(std::span<const std::byte> payload) {
  request_round_trip(payload, decode_hello_request);
  request_round_trip(payload, decode_allocate_request);
  request_round_trip(payload, decode_abort_request);
  request_round_trip(payload, decode_publish_request);
  request_round_trip(payload, decode_get_request);
  request_round_trip(payload, decode_release_request);
  request_round_trip(payload, decode_unpublish_request);
  request_round_trip(payload, decode_wait_for_request);
  request_round_trip(payload, decode_subscribe_request);
  event_round_trip(payload);
  response_round_trip(payload, decode_hello_response);
  response_round_trip(payload, decode_allocate_response);
  response_round_trip(payload, decode_get_response);
  response_round_trip(payload, decode_list_response);
  response_round_trip(payload, decode_status_response);
  response_round_trip(payload, decode_subscribe_response);
  // A publish never carries more items than the cap, whatever it claims.
  if (auto p = decode_publish_request(payload)) SHELF_CHECK(p->items.size() <= kMaxPublishItems);
  if (auto w = decode_wait_for_request(payload)) {
    SHELF_CHECK(!w->names.empty() && w->names.size() <= kMaxWaitNames);
  }
}

}  // namespace
}  // namespace shelf::protocol

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shelf::protocol;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  // Frames one after the other, as on a connection.
  while (in.size() >= kFrameHeaderBytes) {
    FrameHeader h = read_frame_header(in);
    (void)is_request_type(h.type);
    in = in.subspan(kFrameHeaderBytes);
    const size_t n = std::min<size_t>(h.payload_length, in.size());
    fuzz_payload(in.first(n));
    in = in.subspan(n);
  }
  // Whatever is left (less than a header) is a payload too.
  if (!in.empty()) shelf::protocol::fuzz_payload(in);
  return 0;
}
