#include "protocol/wire.h"

#include "base/check.h"

namespace shelf::protocol {

void put_frame_header(std::vector<std::byte>& out, uint16_t type, uint32_t payload_length) {
  ByteWriter w;
  w.u32(kFrameMagic);
  w.u16(kProtocolVersion);
  w.u16(type);
  w.u32(payload_length);
  out.insert(out.end(), w.buffer().begin(), w.buffer().end());
}

FrameHeader read_frame_header(std::span<const std::byte> in) {
  SHELF_CHECK(in.size() >= kFrameHeaderBytes);
  ByteReader r(in.first(kFrameHeaderBytes));
  FrameHeader h;
  h.magic = r.u32();
  h.version = r.u16();
  h.type = r.u16();
  h.payload_length = r.u32();
  return h;
}

}  // namespace shelf::protocol
