// Garbage on the socket: raw AF_UNIX connections that break the protocol in
// every way a buggy or hostile client could. After each, the daemon must be
// alive and serve a normal client correctly; frames it cannot parse are
// answered with InvalidArgument and the connection is closed, while a
// well-framed but malformed request leaves the connection usable.
#include <cerrno>
#include <cstring>
#include <optional>
#include <poll.h>
#include <random>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "protocol/messages.h"
#include "protocol/wire.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/segment.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using protocol::MessageType;
using ::testing::HasSubstr;

using Bytes = std::vector<std::byte>;

UniqueFd raw_connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

// Sends everything it can; false once the daemon has hung up.
bool send_all(int fd, const Bytes& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Reads exactly `n` bytes before `deadline`; false on EOF, reset or timeout.
bool recv_exact(int fd, std::byte* out, size_t n, std::chrono::steady_clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

struct Response {
  uint16_t type = 0;
  Status status;
  Bytes body;  // after the status
};

// Reads one response frame; nullopt if the connection ends first.
std::optional<Response> read_response(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + kWaitTimeout;
  std::byte header[protocol::kFrameHeaderBytes];
  if (!recv_exact(fd, header, sizeof header, deadline)) return std::nullopt;
  protocol::FrameHeader h = protocol::read_frame_header(header);
  EXPECT_EQ(h.magic, protocol::kFrameMagic);
  EXPECT_EQ(h.version, protocol::kProtocolVersion);
  if (h.magic != protocol::kFrameMagic || h.payload_length > (1u << 20)) return std::nullopt;
  Bytes payload(h.payload_length);
  if (!recv_exact(fd, payload.data(), payload.size(), deadline)) return std::nullopt;
  protocol::ByteReader reader(payload);
  Response r;
  r.type = h.type;
  r.status = protocol::decode_response_status(reader);
  r.body.assign(payload.end() - static_cast<std::ptrdiff_t>(reader.remaining()), payload.end());
  return r;
}

// True once the daemon has closed the connection (EOF or reset) before
// `deadline`; a test that checks many connections shares one deadline.
bool closed_by_daemon(int fd, std::chrono::steady_clock::time_point deadline =
                                  std::chrono::steady_clock::now() + kWaitTimeout) {
  std::byte sink[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;  // timeout: still open
    ssize_t n = ::recv(fd, sink, sizeof sink, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

uint16_t response_to(MessageType type) {
  return static_cast<uint16_t>(static_cast<uint16_t>(type) | protocol::kResponseBit);
}

Bytes header_only(uint32_t magic, uint16_t version, uint16_t type, uint32_t payload_length) {
  protocol::ByteWriter w;
  w.u32(magic);
  w.u16(version);
  w.u16(type);
  w.u32(payload_length);
  return w.take();
}

Bytes frame_with_payload(MessageType type, const Bytes& payload) {
  Bytes out;
  protocol::put_frame_header(out, static_cast<uint16_t>(type),
                             static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes hello_frame() {
  Bytes out;
  protocol::encode_request(out, protocol::HelloRequest{protocol::kProtocolVersion, "abuse", ""});
  return out;
}

// A raw connection that has said Hello and got its answer.
UniqueFd greeted_connection(const TestDaemon& daemon) {
  UniqueFd fd = raw_connect(daemon.socket());
  if (!fd.valid()) return fd;
  EXPECT_TRUE(send_all(fd.get(), hello_frame()));
  auto r = read_response(fd.get());
  EXPECT_TRUE(r.has_value() && r->status.ok() && r->type == response_to(MessageType::kHello));
  return fd;
}

// Sends `request` and expects an InvalidArgument answer to `type` whose
// message contains `text`.
void expect_invalid(int fd, const Bytes& request, MessageType type, const std::string& text) {
  ASSERT_TRUE(send_all(fd, request));
  auto r = read_response(fd);
  ASSERT_TRUE(r.has_value()) << "no answer to a " << static_cast<int>(type) << " request";
  EXPECT_EQ(r->type, response_to(type));
  EXPECT_EQ(r->status.code(), Status::Code::kInvalidArgument) << r->status.to_string();
  EXPECT_THAT(r->status.message(), HasSubstr(text));
}

// Sends `garbage` and expects an InvalidArgument answer containing `text`,
// then the connection closed by the daemon.
void expect_refused_and_closed(const TestDaemon& daemon, const Bytes& garbage,
                               const std::string& text) {
  UniqueFd fd = raw_connect(daemon.socket());
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(send_all(fd.get(), garbage));
  auto r = read_response(fd.get());
  ASSERT_TRUE(r.has_value()) << "no answer to garbage (" << text << ")";
  EXPECT_EQ(r->status.code(), Status::Code::kInvalidArgument) << r->status.to_string();
  EXPECT_THAT(r->status.message(), HasSubstr(text));
  EXPECT_TRUE(closed_by_daemon(fd.get())) << "the daemon kept a connection it cannot parse";
}

class ProtocolAbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
    Client c = daemon_->connect();
    publish_int64(c, "resident", 5000, 21);
  }
  // The daemon lives, its data is intact, and it serves a normal client.
  void expect_healthy() {
    ASSERT_TRUE(daemon_->alive());
    Client c = daemon_->connect();
    expect_int64_published(c, "resident", 5000, 21);
    expect_daemon_serves(*daemon_);
    EXPECT_TRUE(eventually([&] { return status_of(c).num_connections == 1; }))
        << "the daemon still holds sessions of closed connections";
    EXPECT_EQ(status_of(c).num_leases, 0u);
    EXPECT_EQ(status_of(c).unsealed_bytes, 0u);
  }
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(ProtocolAbuseTest, RandomBytes) {
  std::mt19937 rng(1234);
  for (size_t size : {1u, 11u, 12u, 4096u, 300'000u}) {
    Bytes garbage(size);
    for (std::byte& b : garbage) b = static_cast<std::byte>(rng());
    UniqueFd fd = raw_connect(daemon_->socket());
    ASSERT_TRUE(fd.valid());
    send_all(fd.get(), garbage);  // may fail once the daemon hangs up
    if (size >= protocol::kFrameHeaderBytes) {
      // A whole header of garbage is answered (best effort) and hung up on.
      EXPECT_TRUE(closed_by_daemon(fd.get())) << size << " bytes of garbage";
    }
  }
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, BadMagicOrVersion) {
  const auto hello = static_cast<uint16_t>(MessageType::kHello);
  expect_refused_and_closed(*daemon_, header_only(0xDEADBEEF, 1, hello, 0), "bad magic");
  expect_refused_and_closed(*daemon_, header_only(protocol::kFrameMagic, 99, hello, 0),
                            "protocol version 99");
  expect_refused_and_closed(*daemon_,
                            header_only(protocol::kFrameMagic, protocol::kProtocolVersion, 0, 0),
                            "unknown message type");
  expect_refused_and_closed(
      *daemon_, header_only(protocol::kFrameMagic, protocol::kProtocolVersion, 0x8001, 0),
      "unknown message type");
  // An Event is the daemon's to send, never a client's request.
  expect_refused_and_closed(*daemon_,
                            header_only(protocol::kFrameMagic, protocol::kProtocolVersion,
                                        static_cast<uint16_t>(MessageType::kEvent), 0),
                            "unknown message type 13");
  // A Hello of another protocol version, well framed.
  protocol::ByteWriter w;
  w.u16(protocol::kProtocolVersion + 1);
  w.str("from the future");
  Bytes future = frame_with_payload(MessageType::kHello, w.take());
  expect_refused_and_closed(*daemon_, future,
                            "protocol " + std::to_string(protocol::kProtocolVersion + 1));
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, HeaderClaimingFourGiBPayload) {
  expect_refused_and_closed(*daemon_,
                            header_only(protocol::kFrameMagic, protocol::kProtocolVersion,
                                        static_cast<uint16_t>(MessageType::kHello), 0xFFFFFFFFu),
                            "over the limit");
  // After a good Hello too, for a request type that carries data.
  UniqueFd fd = greeted_connection(*daemon_);
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(send_all(fd.get(), header_only(protocol::kFrameMagic, protocol::kProtocolVersion,
                                             static_cast<uint16_t>(MessageType::kPublish),
                                             protocol::kMaxPayloadBytes + 1)));
  auto r = read_response(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status.code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(closed_by_daemon(fd.get()));
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, TruncatedFramesThenClose) {
  Bytes hello = hello_frame();
  {
    // Half a header.
    UniqueFd fd = raw_connect(daemon_->socket());
    ASSERT_TRUE(send_all(fd.get(), Bytes(hello.begin(), hello.begin() + 5)));
  }
  {
    // A header, then part of its payload.
    UniqueFd fd = raw_connect(daemon_->socket());
    ASSERT_TRUE(send_all(fd.get(), Bytes(hello.begin(), hello.end() - 3)));
  }
  {
    // A header promising 100 MiB (under the limit), then 10 bytes.
    UniqueFd fd = raw_connect(daemon_->socket());
    Bytes big = header_only(protocol::kFrameMagic, protocol::kProtocolVersion,
                            static_cast<uint16_t>(MessageType::kHello), 100u << 20);
    big.resize(big.size() + 10);
    ASSERT_TRUE(send_all(fd.get(), big));
  }
  // A truncated frame left open does not block anyone else (one thread
  // serves every connection).
  UniqueFd stalled = greeted_connection(*daemon_);
  Bytes list;
  protocol::encode_list_request(list);
  protocol::encode_list_request(list);  // two List frames...
  list.pop_back();                      // ...the second short by one byte
  ASSERT_TRUE(send_all(stalled.get(), list));
  auto r = read_response(stalled.get());
  ASSERT_TRUE(r.has_value()) << "the whole first frame was not answered";
  EXPECT_TRUE(r->status.ok()) << r->status.to_string();
  {
    Client c = daemon_->connect();
    expect_int64_published(c, "resident", 5000, 21);
    expect_daemon_serves(*daemon_);
  }
  stalled.reset();
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, MalformedPayloadsAreAnsweredAndTheConnectionStaysUsable) {
  UniqueFd fd = greeted_connection(*daemon_);
  ASSERT_TRUE(fd.valid());
  const int c = fd.get();
  {
    protocol::ByteWriter w;
    w.u32(1000);  // a string of 1000 bytes...
    w.u8('a');    // ...that has one
    expect_invalid(c, frame_with_payload(MessageType::kGet, w.take()), MessageType::kGet,
                   "malformed");
  }
  {
    protocol::ByteWriter w;
    w.str("resident");
    w.u8(0);  // trailing byte
    expect_invalid(c, frame_with_payload(MessageType::kGet, w.take()), MessageType::kGet,
                   "malformed");
  }
  expect_invalid(c, frame_with_payload(MessageType::kGet, Bytes{}), MessageType::kGet, "malformed");
  expect_invalid(c, frame_with_payload(MessageType::kAllocate, Bytes(3)), MessageType::kAllocate,
                 "malformed");
  expect_invalid(c, frame_with_payload(MessageType::kList, Bytes(1)), MessageType::kList,
                 "malformed");
  expect_invalid(c, frame_with_payload(MessageType::kStatus, Bytes(8)), MessageType::kStatus,
                 "malformed");
  {
    protocol::ByteWriter w;
    w.u8(2);  // a bool that is neither 0 nor 1
    w.u32(0);
    expect_invalid(c, frame_with_payload(MessageType::kPublish, w.take()), MessageType::kPublish,
                   "malformed");
  }
  {
    protocol::ByteWriter w;
    w.u8(0);            // override_existing
    w.u8(0);            // pin
    w.u32(0xFFFFFFFF);  // four billion items in a few bytes
    expect_invalid(c, frame_with_payload(MessageType::kPublish, w.take()), MessageType::kPublish,
                   "malformed");
  }
  // Well-formed requests that make no sense get errors, not crashes.
  Bytes req;
  protocol::encode_request(req, protocol::ReleaseRequest{424242});
  expect_invalid(c, req, MessageType::kRelease, "no lease");
  req.clear();
  protocol::encode_request(req, protocol::AbortRequest{4096});
  expect_invalid(c, req, MessageType::kAbort, "no unsealed extent");
  req.clear();
  protocol::encode_request(req, protocol::AllocateRequest{0});
  expect_invalid(c, req, MessageType::kAllocate, "0 bytes");
  req.clear();
  protocol::encode_request(req, protocol::AllocateRequest{~uint64_t{0}});
  ASSERT_TRUE(send_all(c, req));
  auto big = read_response(c);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->status.code(), Status::Code::kResourceExhausted) << big->status.to_string();
  req.clear();
  protocol::encode_request(req, protocol::PublishRequest{false, false, {}});
  expect_invalid(c, req, MessageType::kPublish, "at least one");
  req.clear();
  std::mt19937 rng(7);
  for (size_t size : {0u, 10u, 64u, 1000u}) {
    Bytes junk(size);
    for (std::byte& b : junk) b = static_cast<std::byte>(rng());
    protocol::PublishRequest publish;
    publish.items.push_back({"junk", junk});
    req.clear();
    protocol::encode_request(req, publish);
    expect_invalid(c, req, MessageType::kPublish, "bad dataset descriptor");
  }
  // A second Hello is harmless: answered, and it keeps the first lease
  // table (the leases in it would go with a new one).
  ASSERT_TRUE(send_all(c, hello_frame()));
  auto again = read_response(c);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->status.ok());
  protocol::ByteReader hello_body(again->body);
  auto second = protocol::decode_hello_response(hello_body);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->lease_slots, 0u);

  // Still usable: a well-formed request gets a proper answer.
  req.clear();
  protocol::encode_list_request(req);
  ASSERT_TRUE(send_all(c, req));
  auto list = read_response(c);
  ASSERT_TRUE(list.has_value());
  ASSERT_TRUE(list->status.ok()) << list->status.to_string();
  protocol::ByteReader body(list->body);
  auto decoded = protocol::decode_list_response(body);
  ASSERT_TRUE(decoded.has_value());
  ASSERT_EQ(decoded->datasets.size(), 1u);
  EXPECT_EQ(decoded->datasets[0].name, "resident");
  req.clear();
  protocol::encode_request(req, protocol::GetRequest{"resident"});
  ASSERT_TRUE(send_all(c, req));
  auto got = read_response(c);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->status.ok()) << got->status.to_string();
  fd.reset();  // its lease ends with it
  expect_healthy();
}

// A connection cannot publish another connection's extent, nor one that was
// never written: the daemon checks ownership and the seal state.
// Allocates an extent on a raw, greeted connection.
std::optional<protocol::AllocateResponse> allocate_raw(int fd, uint64_t bytes) {
  Bytes req;
  protocol::encode_request(req, protocol::AllocateRequest{bytes});
  if (!send_all(fd, req)) return std::nullopt;
  auto alloc = read_response(fd);
  if (!alloc.has_value() || !alloc->status.ok()) return std::nullopt;
  protocol::ByteReader body(alloc->body);
  return protocol::decode_allocate_response(body);
}

// A Publish frame for `name`: one int64 column of `rows` rows at
// `data_offset`, in one partition lying in `extent`.
Bytes publish_frame(const std::string& name, const protocol::AllocateResponse& extent,
                    uint64_t data_offset, uint64_t rows) {
  shm::DescriptorBuilder builder(Schema{{"v", Type::kInt64}});
  shm::ChunkLayout chunk{};
  chunk.data = shm::BufferLayout{data_offset, rows * 8, 0};
  builder.add_partition(shm::PartitionLayout{rows, extent.offset, extent.length, 0},
                        std::span<const shm::ChunkLayout>(&chunk, 1));
  protocol::PublishRequest publish;
  publish.items.push_back({name, builder.finish()});
  Bytes out;
  protocol::encode_request(out, publish);
  return out;
}

TEST_F(ProtocolAbuseTest, ForgedDescriptorsAreRefused) {
  UniqueFd owner = greeted_connection(*daemon_);
  UniqueFd thief = greeted_connection(*daemon_);
  ASSERT_TRUE(owner.valid() && thief.valid());
  auto extent = allocate_raw(owner.get(), 4000);
  ASSERT_TRUE(extent.has_value());
  auto descriptor = [&](uint64_t data_offset, uint64_t rows) {
    return publish_frame("forged", *extent, data_offset, rows);
  };
  const uint64_t data = extent->offset + shm::kExtentHeaderBytes;
  expect_invalid(thief.get(), descriptor(data, 10), MessageType::kPublish,
                 "not an unsealed extent of this connection");
  expect_invalid(owner.get(), descriptor(data, 10), MessageType::kPublish, "not finished writing");
  expect_invalid(owner.get(), descriptor(data, extent->length), MessageType::kPublish,
                 "outside its extent");
  expect_invalid(owner.get(), descriptor(data + 8, 10), MessageType::kPublish, "misaligned");
  owner.reset();
  thief.reset();
  expect_healthy();
}

// A published dataset's extents belong to it: no connection, not even one
// holding a lease on it, can publish them again under another name or over
// the dataset itself (the memory would then have two owners and be freed twice).
TEST_F(ProtocolAbuseTest, PublishedExtentsCannotBeTakenOver) {
  UniqueFd thief = greeted_connection(*daemon_);
  ASSERT_TRUE(thief.valid());
  Bytes req;
  protocol::encode_request(req, protocol::GetRequest{"resident"});
  ASSERT_TRUE(send_all(thief.get(), req));
  auto got = read_response(thief.get());
  ASSERT_TRUE(got.has_value() && got->status.ok());
  protocol::ByteReader body(got->body);
  auto lease = protocol::decode_get_response(body);
  ASSERT_TRUE(lease.has_value());

  // Where "resident"'s partition lies, read from the segment as a reader would.
  auto segment = shm::ShmObject::open(shm::kDefaultShmDir, daemon_->segment(), /*writable=*/false);
  ASSERT_TRUE(segment.ok()) << segment.status().to_string();
  const uint64_t first_page = lease->descriptor_offset / shm::kPageSize * shm::kPageSize;
  auto mapping = shm::Mapping::map(
      *segment, first_page,
      shelf::align_up(lease->descriptor_offset + lease->descriptor_length - first_page,
                      shm::kPageSize),
      /*writable=*/false);
  ASSERT_TRUE(mapping.ok()) << mapping.status().to_string();
  auto view = shm::DescriptorView::parse(
      mapping->bytes().subspan(lease->descriptor_offset - first_page, lease->descriptor_length),
      /*from_client=*/false);
  ASSERT_TRUE(view.ok()) << view.status().to_string();
  const shm::PartitionLayout& part = view->partition(0);
  const protocol::AllocateResponse extent{part.extent_offset, part.extent_length};
  const Bytes steal = publish_frame("stolen", extent, view->chunk(0, 0).data.offset, 5000);
  expect_invalid(thief.get(), steal, MessageType::kPublish,
                 "not an unsealed extent of this connection");
  // Over the dataset itself, with override.
  protocol::PublishRequest replace;
  replace.override_existing = true;
  shm::DescriptorBuilder builder(view->schema());
  builder.add_partition(part, std::span<const shm::ChunkLayout>(&view->chunk(0, 0), 1));
  replace.items.push_back({"resident", builder.finish()});
  req.clear();
  protocol::encode_request(req, replace);
  expect_invalid(thief.get(), req, MessageType::kPublish,
                 "not an unsealed extent of this connection");
  thief.reset();
  expect_healthy();
}

// The publisher reserves its extent's pages itself (the daemon reserves only
// the header page); a publisher that skips that cannot publish, so no reader
// can ever fault on a hole. `payload` bytes: a small extent is checked on the
// daemon's loop, one past 16 MiB by its segment worker first.
void expect_unreserved_extent_refused(const TestDaemon& daemon, uint64_t payload) {
  UniqueFd owner = greeted_connection(daemon);
  ASSERT_TRUE(owner.valid());
  auto extent = allocate_raw(owner.get(), payload);
  ASSERT_TRUE(extent.has_value());
  ASSERT_EQ(extent->length, payload + shm::kPageSize);
  const uint64_t resident_before = daemon.resident_bytes();
  const Bytes publish =
      publish_frame("unreserved", *extent, extent->offset + shm::kExtentHeaderBytes, 10);
  expect_invalid(owner.get(), publish, MessageType::kPublish, "not reserved and mapped");

  // Reserved but never touched: tmpfs still calls those pages holes.
  auto segment = shm::ShmObject::open(shm::kDefaultShmDir, daemon.segment(), /*writable=*/true);
  ASSERT_TRUE(segment.ok()) << segment.status().to_string();
  ASSERT_TRUE(segment->reserve(extent->offset, extent->length).ok());
  EXPECT_EQ(daemon.resident_bytes(), resident_before + payload);
  expect_invalid(owner.get(), publish, MessageType::kPublish, "not reserved and mapped");

  // Reserved and populated, as the client library does: past that check, to the next.
  auto mapping = shm::Mapping::map(*segment, extent->offset, extent->length, true, true);
  ASSERT_TRUE(mapping.ok()) << mapping.status().to_string();
  expect_invalid(owner.get(), publish, MessageType::kPublish, "not finished writing");
}

TEST_F(ProtocolAbuseTest, UnreservedExtentIsRefused) {
  expect_unreserved_extent_refused(*daemon_, 3 * shm::kPageSize);
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, AnUnreservedExtentIsRefusedAlsoWhenTheWorkerChecksIt) {
  expect_unreserved_extent_refused(*daemon_, 24ull << 20);
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, RequestBeforeHello) {
  Bytes list;
  protocol::encode_list_request(list);
  expect_refused_and_closed(*daemon_, list, "first message must be Hello");
  Bytes get;
  protocol::encode_request(get, protocol::GetRequest{"resident"});
  expect_refused_and_closed(*daemon_, get, "first message must be Hello");
  expect_healthy();
}

TEST_F(ProtocolAbuseTest, FiftyConnectionsSendingGarbageAtOnce) {
  constexpr int kConnections = 50;
  std::mt19937 rng(99);
  std::vector<UniqueFd> fds;
  for (int i = 0; i < kConnections; ++i) {
    fds.push_back(raw_connect(daemon_->socket()));
    ASSERT_TRUE(fds.back().valid());
  }
  // All connected before any sends: the daemon sees them together.
  for (int i = 0; i < kConnections; ++i) {
    Bytes garbage;
    switch (i % 5) {
      case 0:
        garbage.resize(protocol::kFrameHeaderBytes + rng() % 5000);  // a header's worth at least
        for (std::byte& b : garbage) b = static_cast<std::byte>(rng());
        break;
      case 1:
        garbage = header_only(0x12345678, 1, 1, 0);
        break;
      case 2:
        garbage = header_only(protocol::kFrameMagic, protocol::kProtocolVersion, 1, 0xFFFFFFFFu);
        break;
      case 3:
        protocol::encode_list_request(garbage);
        break;
      case 4:
        garbage = hello_frame();
        protocol::encode_request(garbage, protocol::AllocateRequest{1 << 20});
        garbage.resize(garbage.size() - 2);  // truncated
        break;
    }
    send_all(fds[i].get(), garbage);
  }
  // Half are closed by us at once, half wait for the daemon's verdict.
  for (int i = 0; i < kConnections; i += 2) fds[i].reset();
  const auto deadline = std::chrono::steady_clock::now() + kWaitTimeout;
  for (int i = 1; i < kConnections; i += 2) {
    if (i % 5 != 4) {
      EXPECT_TRUE(closed_by_daemon(fds[i].get(), deadline)) << "connection " << i;
    }
  }
  {
    // With the stalled ones still open, a normal client is served.
    Client c = daemon_->connect();
    expect_int64_published(c, "resident", 5000, 21);
  }
  fds.clear();
  expect_healthy();
}

// Many processes at once, each sending a random mix of well-formed requests
// with random fields (out of order: releases of leases never taken, aborts
// of extents never allocated, publishes of forged descriptors), mutated
// payloads, truncated frames and garbage, while a reader checks the
// resident dataset the whole time. Every answer must come in order, to the
// request it answers.
TEST_F(ProtocolAbuseTest, ManyProcessesSendingRandomMessagesAtOnce) {
  constexpr int kChildren = 6;
  constexpr int kMessages = 300;
  std::vector<pid_t> children;
  for (int child = 0; child < kChildren; ++child) {
    children.push_back(spawn_child([&, child] {
      std::mt19937 rng(static_cast<uint32_t>(child) * 7919 + 1);
      UniqueFd fd = greeted_connection(*daemon_);
      const std::vector<std::string> names = {"resident", "junk-" + std::to_string(child), "",
                                              std::string(300, 'x')};
      uint64_t last_lease = 0;
      for (int i = 0; i < kMessages && !::testing::Test::HasFailure(); ++i) {
        if (!fd.valid()) fd = greeted_connection(*daemon_);
        Bytes frame;
        MessageType type = MessageType::kList;
        const std::string& name = names[rng() % names.size()];
        switch (rng() % 11) {
          case 0:
            type = MessageType::kAllocate;
            protocol::encode_request(frame, protocol::AllocateRequest{rng() % (256 * 1024)});
            break;
          case 1:
            type = MessageType::kAbort;
            protocol::encode_request(frame, protocol::AbortRequest{(rng() % 4096) * 4096});
            break;
          case 2:
            type = MessageType::kRelease;
            protocol::encode_request(frame, protocol::ReleaseRequest{last_lease + rng() % 3});
            break;
          case 3:
            type = MessageType::kGet;
            protocol::encode_request(frame, protocol::GetRequest{name});
            break;
          case 4:
            type = MessageType::kUnpublish;
            if (name == "resident") continue;  // the one dataset the checks need
            protocol::encode_request(frame, protocol::UnpublishRequest{name});
            break;
          case 5: {
            type = MessageType::kPublish;
            const protocol::AllocateResponse extent{(rng() % 4096) * 4096, 4096 * (1 + rng() % 4)};
            frame = publish_frame(name == "resident" ? "forged" : name, extent,
                                  extent.offset + shm::kExtentHeaderBytes, rng() % 100);
            break;
          }
          case 6: {
            // A well-framed request whose payload bytes are mutated.
            type = static_cast<MessageType>(1 + rng() % 9);
            protocol::encode_request(frame, protocol::GetRequest{name});
            frame = frame_with_payload(
                type, Bytes(frame.begin() + protocol::kFrameHeaderBytes, frame.end()));
            for (size_t k = protocol::kFrameHeaderBytes; k < frame.size(); ++k) {
              if (rng() % 4 == 0) frame[k] = static_cast<std::byte>(rng());
            }
            if (type == MessageType::kHello) continue;  // may be answered either way
            break;
          }
          case 7: {
            // Truncated: part of a frame, then hang up.
            protocol::encode_request(frame, protocol::GetRequest{name});
            frame.resize(rng() % frame.size());
            send_all(fd.get(), frame);
            fd.reset();
            continue;
          }
          case 8: {
            // Garbage: the daemon answers and hangs up.
            frame.resize(protocol::kFrameHeaderBytes + rng() % 64);
            for (std::byte& b : frame) b = static_cast<std::byte>(rng());
            send_all(fd.get(), frame);
            EXPECT_TRUE(closed_by_daemon(fd.get()));
            fd.reset();
            continue;
          }
          case 9:
            type = MessageType::kPin;
            protocol::encode_request(frame, protocol::PinRequest{name, rng() % 2 == 0});
            break;
          default:
            protocol::encode_list_request(frame);
            break;
        }
        ASSERT_TRUE(send_all(fd.get(), frame));
        auto r = read_response(fd.get());
        ASSERT_TRUE(r.has_value()) << "no answer to a request of type " << static_cast<int>(type);
        ASSERT_EQ(r->type, response_to(type)) << "an answer out of order";
        if (type == MessageType::kGet && r->status.ok()) {
          protocol::ByteReader body(r->body);
          auto got = protocol::decode_get_response(body);
          ASSERT_TRUE(got.has_value());
          last_lease = got->lease_id;
        }
      }
    }));
  }
  {
    // Meanwhile a reader keeps finding the resident data intact.
    Client reader = daemon_->connect();
    for (int i = 0; i < 50; ++i) expect_int64_published(reader, "resident", 5000, 21);
  }
  for (pid_t child : children) EXPECT_EQ(wait_child(child), 0);
  expect_healthy();
}

// A client that sends requests and vanishes without reading the answers:
// the daemon ends its session, leases included.
TEST_F(ProtocolAbuseTest, ClientVanishesWithRequestsInFlight) {
  Bytes requests = hello_frame();
  for (int i = 0; i < 1000; ++i) {
    protocol::encode_request(requests, protocol::GetRequest{"resident"});
  }
  protocol::encode_request(requests, protocol::AllocateRequest{1 << 20});
  for (int round = 0; round < 5; ++round) {
    UniqueFd fd = raw_connect(daemon_->socket());
    ASSERT_TRUE(fd.valid());
    send_all(fd.get(), requests);  // the daemon may stop reading; then we give up
    if (round % 2 == 1) {
      auto r = read_response(fd.get());  // read some, not all
      EXPECT_TRUE(r.has_value() && r->status.ok());
    }
  }
  expect_healthy();
}

// A client that keeps sending but never reads: the daemon stops reading it
// (backpressure) without blocking anyone else, and drops it when it goes.
TEST_F(ProtocolAbuseTest, ClientThatNeverReadsDoesNotBlockOthers) {
  UniqueFd greedy = greeted_connection(*daemon_);
  ASSERT_TRUE(greedy.valid());
  Bytes status;
  protocol::encode_status_request(status);
  Bytes burst;
  for (int i = 0; i < 256; ++i) burst.insert(burst.end(), status.begin(), status.end());
  // Send until both directions' socket buffers are full.
  size_t sent = 0;
  for (int stalls = 0; stalls < 3;) {
    ssize_t n = ::send(greedy.get(), burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) << std::strerror(errno);
    ++stalls;
    // Give the daemon a chance to drain what it can, then try again.
    Client probe = daemon_->connect();
    ASSERT_TRUE(probe.status().ok());
  }
  EXPECT_GT(sent, 100'000u);
  {
    Client c = daemon_->connect();
    expect_int64_published(c, "resident", 5000, 21);
    expect_daemon_serves(*daemon_);
  }
  greedy.reset();
  expect_healthy();
}

}  // namespace
}  // namespace shelf::test

namespace shelf::test {
namespace {

// A Hello whose client name and command are 1 MiB each, and control bytes:
// status keeps kMaxCommandBytes of each (every other user reads them), and
// the CLI prints them escaped.
TEST(ProtocolAbuseHelloTest, AHugeOrHostileCommandIsCutAndShownEscaped) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  UniqueFd fd = raw_connect(daemon->socket());
  ASSERT_TRUE(fd.valid());
  const std::string huge = "\x1b[31m" + std::string(1 << 20, 'x');
  Bytes hello;
  protocol::encode_request(hello, protocol::HelloRequest{protocol::kProtocolVersion, huge, huge});
  ASSERT_TRUE(send_all(fd.get(), hello));
  auto r = read_response(fd.get());
  ASSERT_TRUE(r.has_value() && r->status.ok());
  Client client = daemon->connect();
  const MemoryStats st = status_of(client);
  const ClientInfo* row = nullptr;
  for (const ClientInfo& c : st.clients) {
    if (c.pid == static_cast<uint32_t>(::getpid())) row = &c;
  }
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->command.size(), kMaxCommandBytes);
  EXPECT_EQ(row->client_name.size(), kMaxCommandBytes);
  EXPECT_EQ(row->connections, 2u) << "the raw connection and this client: one process";
  CommandResult shown =
      run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status", "--clients"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(shown.out.find('\x1b'), std::string::npos) << "an escape sequence reached the terminal";
}

}  // namespace
}  // namespace shelf::test
