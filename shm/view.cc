#include "shm/view.h"

#include <cstring>
#include <set>
#include <string_view>

#include <shelf/limits.h>

#include "shm/checksum.h"

namespace shelf::shm {

namespace {

void append(std::vector<std::byte>& out, const void* data, size_t n) {
  const auto* p = static_cast<const std::byte*>(data);
  out.insert(out.end(), p, p + n);
}

}  // namespace

bool is_view(std::span<const std::byte> bytes) {
  uint64_t magic = 0;
  if (bytes.size() < sizeof magic) return false;
  std::memcpy(&magic, bytes.data(), sizeof magic);
  return magic == kViewMagic;
}

std::vector<std::byte> encode_view(const ViewDefinition& view) {
  std::vector<std::byte> out(sizeof(ViewHeaderLayout));
  append(out, view.base.data(), view.base.size());
  append(out, view.where.data(), view.where.size());
  for (const std::string& column : view.columns) {
    const auto length = static_cast<uint32_t>(column.size());
    append(out, &length, sizeof length);
    append(out, column.data(), column.size());
  }
  ViewHeaderLayout h{};
  h.magic = kViewMagic;
  h.version = kViewVersion;
  h.num_columns = static_cast<uint32_t>(view.columns.size());
  h.limit = view.limit.value_or(kViewNoLimit);
  h.base_length = static_cast<uint32_t>(view.base.size());
  h.where_length = static_cast<uint32_t>(view.where.size());
  h.body_length = out.size() - sizeof h;
  h.body_xxh3 = xxh3(out.data() + sizeof h, h.body_length);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

Result<ViewDefinition> parse_view(std::span<const std::byte> bytes, bool from_client) {
  auto bad = [&](const std::string& what) {
    const std::string message = "view definition: " + what;
    return from_client ? Status::invalid_argument(message) : Status::corruption(message);
  };
  ViewHeaderLayout h;
  if (bytes.size() < sizeof h) return bad("shorter than its header");
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.magic != kViewMagic) return bad("bad magic");
  if (h.version != kViewVersion) {
    return bad("version " + std::to_string(h.version) + ", this build reads " +
               std::to_string(kViewVersion));
  }
  if (h.body_length != bytes.size() - sizeof h) return bad("its length does not match");
  const std::byte* body = bytes.data() + sizeof h;
  if (xxh3(body, h.body_length) != h.body_xxh3) return bad("checksum mismatch");
  if (h.base_length == 0 || h.base_length > kMaxNameBytes) return bad("bad base name length");
  if (h.where_length > kMaxFilterBytes) return bad("the expression is too long");
  if (h.num_columns > kMaxColumns) return bad("too many columns");
  if (uint64_t{h.base_length} + h.where_length > h.body_length) return bad("truncated");

  ViewDefinition v;
  const auto* chars = reinterpret_cast<const char*>(body);
  v.base.assign(chars, h.base_length);
  v.where.assign(chars + h.base_length, h.where_length);
  uint64_t at = uint64_t{h.base_length} + h.where_length;
  std::set<std::string_view> seen;
  for (uint32_t i = 0; i < h.num_columns; ++i) {
    uint32_t length = 0;
    if (h.body_length - at < sizeof length) return bad("truncated column list");
    std::memcpy(&length, body + at, sizeof length);
    at += sizeof length;
    if (length == 0 || length > kMaxColumnNameBytes || length > h.body_length - at) {
      return bad("bad column name length");
    }
    v.columns.emplace_back(chars + at, length);
    at += length;
    if (!seen.insert(v.columns.back()).second) {
      return bad("column '" + v.columns.back() + "' is named twice");
    }
  }
  if (at != h.body_length) return bad("bytes after the column list");
  if (h.limit != kViewNoLimit) v.limit = h.limit;
  v.created_ns = h.created_ns;
  v.publisher_uid = h.publisher_uid;
  v.publisher_pid = h.publisher_pid;
  return v;
}

void stamp_view(std::byte* bytes, int64_t created_ns, uint32_t uid, uint32_t pid) {
  auto* h = reinterpret_cast<ViewHeaderLayout*>(bytes);
  h->created_ns = created_ns;
  h->publisher_uid = uid;
  h->publisher_pid = pid;
}

}  // namespace shelf::shm
