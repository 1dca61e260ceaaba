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

template <class Length>
void append_sized(std::vector<std::byte>& out, const std::string& text) {
  const auto length = static_cast<Length>(text.size());
  append(out, &length, sizeof length);
  append(out, text.data(), text.size());
}

// Reads the body's length-prefixed fields; a read past the end fails (and
// every later one with it).
class BodyReader {
 public:
  explicit BodyReader(std::span<const std::byte> body) : body_(body) {}
  template <class Length>
  bool text(uint64_t max, std::string* out) {
    Length length;
    if (!ok_ || body_.size() - at_ < sizeof length) return ok_ = false;
    std::memcpy(&length, body_.data() + at_, sizeof length);
    at_ += sizeof length;
    if (length > max || length > body_.size() - at_) return ok_ = false;
    out->assign(reinterpret_cast<const char*>(body_.data() + at_), static_cast<size_t>(length));
    at_ += length;
    return true;
  }
  bool done() const { return ok_ && at_ == body_.size(); }

 private:
  std::span<const std::byte> body_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace

bool is_view(std::span<const std::byte> bytes) {
  uint64_t magic = 0;
  if (bytes.size() < sizeof magic) return false;
  std::memcpy(&magic, bytes.data(), sizeof magic);
  return magic == kViewMagic;
}

std::vector<std::byte> encode_view(const ViewDefinition& view) {
  std::vector<std::byte> out(sizeof(ViewHeaderLayout));
  for (const std::string& base : view.bases) append_sized<uint32_t>(out, base);
  append_sized<uint32_t>(out, view.where);
  for (const std::string& column : view.columns) append_sized<uint32_t>(out, column);
  append_sized<uint64_t>(out, view.graph);
  ViewHeaderLayout h{};
  h.magic = kViewMagic;
  h.version = kViewVersion;
  h.kind = static_cast<uint32_t>(view.kind);
  h.limit = view.limit.value_or(kViewNoLimit);
  h.num_bases = static_cast<uint32_t>(view.bases.size());
  h.num_columns = static_cast<uint32_t>(view.columns.size());
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
  const std::span<const std::byte> body = bytes.subspan(sizeof h);
  if (xxh3(body.data(), body.size()) != h.body_xxh3) return bad("checksum mismatch");
  ViewDefinition v;
  v.kind = static_cast<ViewKind>(h.kind);
  const bool filter = v.kind == ViewKind::kFilter;
  if (!filter && v.kind != ViewKind::kGraph) return bad("unknown kind " + std::to_string(h.kind));
  if (filter ? h.num_bases != 1 : h.num_bases > kMaxViewBases) return bad("bad number of bases");
  if (filter ? h.num_columns > kMaxColumns : h.num_columns != 0) {
    return bad("bad number of columns");
  }
  BodyReader r(body);
  v.bases.resize(h.num_bases);
  std::set<std::string_view> bases;
  for (std::string& base : v.bases) {
    if (!r.text<uint32_t>(kMaxNameBytes, &base) || base.empty()) return bad("bad base name");
    if (!bases.insert(base).second) return bad("base '" + base + "' is named twice");
  }
  if (!r.text<uint32_t>(kMaxFilterBytes, &v.where)) return bad("bad expression length");
  std::set<std::string_view> seen;
  v.columns.resize(h.num_columns);
  for (std::string& column : v.columns) {
    if (!r.text<uint32_t>(kMaxColumnNameBytes, &column) || column.empty()) {
      return bad("bad column name");
    }
    if (!seen.insert(column).second) return bad("column '" + column + "' is named twice");
  }
  if (!r.text<uint64_t>(kMaxViewGraphBytes, &v.graph)) return bad("bad graph length");
  if (!r.done()) return bad("bytes after the graph");
  if (h.limit != kViewNoLimit) v.limit = h.limit;
  if (!filter && (!v.where.empty() || v.limit || v.graph.empty())) {
    return bad("a graph view has a graph and no filter");
  }
  if (filter && !v.graph.empty()) return bad("a filter view has no graph");
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
