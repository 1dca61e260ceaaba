// Byte-level encoding of the control protocol: little-endian integers and
// length-prefixed strings over plain byte buffers. No sockets here.
//
// Frame:  FrameHeader (12 bytes) | payload (FrameHeader::payload_length bytes)
// docs/protocol.md lists every message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shelf::protocol {

// "SHLF" in little-endian ASCII: the first 4 bytes of every frame.
inline constexpr uint32_t kFrameMagic = 0x464C4853;
// Bump when a message changes shape; the daemon refuses other versions.
// 2: Status lists the quarantined datasets.
// 3: served segments are of layout version 2 (the name index clients read).
// 4: WaitFor.
// 5: Hello's response carries the lease table (lease_slots and its memfd),
// LeaseReleased; served segments are of layout version 3 (used_slots_end,
// which lists rely on): a client of 4 would refuse the segment with a
// misleading error.
// 6: Status says who holds what (unpublished datasets still read, a row per
// client process); Subscribe and Event.
// 7: Status says what each user uses, and its quota.
// 8: lease tables of version 2 (a slot may mark a list in progress); a
// client of 7 would refuse the table as corrupt.
// 9: Hello and Status carry the segment's directory (shelfd --shm-dir);
// Status its page size and what lies in huge pages.
// 10: a dataset's summary says whether it is spilled (shelfd --spill-dir).
// 11: pinning (Pin, PublishRequest::pin, DatasetSummary::pinned); Status
// says where and how much shelfd spills.
// 12: views (a PublishItem's descriptor may be a view's definition,
// DatasetSummary::view and view_base, UnpublishRequest::cascade).
inline constexpr uint16_t kProtocolVersion = 12;
// Largest payload either side accepts. A list of 10,000 datasets is ~1.5 MiB,
// a publish of 100,000 partitions of 10 columns ~80 MiB: 256 MiB bounds the
// daemon's buffering per connection while leaving that room.
inline constexpr uint32_t kMaxPayloadBytes = 256u << 20;

struct FrameHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t type;  // MessageType
  uint32_t payload_length;
};
inline constexpr size_t kFrameHeaderBytes = 12;

// Appends the frame header for a payload of `payload_length` bytes.
void put_frame_header(std::vector<std::byte>& out, uint16_t type, uint32_t payload_length);
// Reads a frame header from the first kFrameHeaderBytes of `in`, which must
// hold at least that many bytes (checked: aborts otherwise).
FrameHeader read_frame_header(std::span<const std::byte> in);

class ByteWriter {
 public:
  void u8(uint8_t v) { raw(&v, 1); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void i64(int64_t v) { raw(&v, 8); }
  void boolean(bool v) { u8(v ? 1 : 0); }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  void bytes(std::span<const std::byte> b) {
    u32(static_cast<uint32_t>(b.size()));
    raw(b.data(), b.size());
  }
  std::vector<std::byte>& buffer() { return buf_; }
  std::vector<std::byte> take() { return std::move(buf_); }

 private:
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  std::vector<std::byte> buf_;
};

// Reads what ByteWriter wrote. A read past the end sets failed() and yields
// zeros/empties; callers check failed() (or done()) once at the end.
class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> in) : in_(in) {}
  uint8_t u8() { return get<uint8_t>(); }
  uint16_t u16() { return get<uint16_t>(); }
  uint32_t u32() { return get<uint32_t>(); }
  uint64_t u64() { return get<uint64_t>(); }
  int64_t i64() { return get<int64_t>(); }
  bool boolean() {
    uint8_t v = u8();
    if (v > 1) failed_ = true;
    return v == 1;
  }
  std::string str() {
    std::span<const std::byte> b = bytes();
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  std::span<const std::byte> bytes() {
    uint32_t n = u32();
    if (failed_ || n > remaining()) {
      failed_ = true;
      return {};
    }
    auto out = in_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  // A count of items each at least `min_item_bytes` long: fails (and returns
  // 0) when the rest of the input could not hold that many.
  uint32_t count(size_t min_item_bytes) {
    uint32_t n = u32();
    if (failed_ || (min_item_bytes > 0 && n > remaining() / min_item_bytes)) {
      failed_ = true;
      return 0;
    }
    return n;
  }
  size_t remaining() const { return in_.size() - pos_; }
  bool failed() const { return failed_; }
  // True when everything was read and nothing was left over.
  bool done() const { return !failed_ && pos_ == in_.size(); }

 private:
  template <class T>
  T get() {
    T v{};
    if (failed_ || remaining() < sizeof(T)) {
      failed_ = true;
      return v;
    }
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

}  // namespace shelf::protocol
