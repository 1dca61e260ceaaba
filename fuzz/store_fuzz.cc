// Fuzzes the daemon's Store, the code that acts on what clients ask: each
// input is a script of requests from up to four sessions (connections):
// allocate, abort, write (what a publisher does to an extent), publish
// descriptors naming any extent (its own, another session's, a freed or a
// sealed one), get, release, unpublish, close, and the stepwise punching of
// freed memory. Offsets and lease ids come from what the Store handed out,
// or from the input.
//
// Beyond "no crash, no leak, no undefined behaviour" it checks the
// accounting: used memory never passes the limit, every descriptor a get
// points at parses and names sealed extents, and once every session is
// closed and every name unpublished, all memory but the index is back.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

#include <shelf/limits.h>

#include "base/check.h"
#include "protocol/messages.h"
#include "server/publisher_for_tests.h"
#include "server/store.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace shelf::server {
namespace {

constexpr uint64_t kLimit = 2 << 20;

// Reads the script; zeros once it runs out.
class Script {
 public:
  Script(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() {
    const uint8_t low = u8();
    return static_cast<uint16_t>(low | (u8() << 8));
  }
  template <class T>
  const T* pick(const std::vector<T>& v) {
    return v.empty() ? nullptr : &v[u8() % v.size()];
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool sealed = false;  // published: the harness no longer writes its header
};

void check_accounting(const Store& store) {
  protocol::StatusResponse s = store.status();
  SHELF_CHECK(s.used_bytes <= s.memory_limit);
  SHELF_CHECK(s.index_bytes + s.unsealed_bytes + s.pending_free_bytes <= s.used_bytes);
}

// What a reader does with a lease: the descriptor parses and every extent
// it names is sealed.
void check_lease(const Store& store, const shm::Mapping& segment,
                 const protocol::GetResponse& got) {
  SHELF_CHECK(got.descriptor_offset % 8 == 0);
  SHELF_CHECK(got.descriptor_offset + got.descriptor_length <= store.segment_bytes());
  auto view = shm::DescriptorView::parse(
      segment.bytes().subspan(got.descriptor_offset, got.descriptor_length), false);
  SHELF_CHECK(view.ok());
  for (uint64_t p = 0; p < view->num_partitions(); ++p) {
    const auto* header = reinterpret_cast<const shm::ExtentHeaderLayout*>(
        segment.data() + view->partition(p).extent_offset);
    SHELF_CHECK(shm::load_acquire(header->state) ==
                static_cast<uint32_t>(shm::ExtentState::kSealed));
  }
}

// The state of one script run: the Store, the publisher's mapping, and what
// the Store handed out so far.
class Harness {
 public:
  Harness(Store& store, const shm::ShmObject& object, const shm::Mapping& segment)
      : store_(store), object_(object), segment_(segment) {}

  // Runs the script's next request, then checks the accounting.
  void step(Script& in) {
    if (sessions_.empty() || (sessions_.size() < 4 && in.u8() % 8 == 0)) {
      sessions_.push_back(
          store_.open_session(1000 + static_cast<uint32_t>(sessions_.size()), 1000));
    }
    const size_t si = in.u8() % sessions_.size();
    const Store::SessionId session = sessions_[si];
    switch (in.u8() % 10) {
      case 0:
        allocate(in, session);
        break;
      case 1: {
        const Extent* e = in.pick(extents_);
        (void)store_.abort(session, e ? e->offset : uint64_t{in.u16()} * shm::kPageSize);
        break;
      }
      case 2:
        write(in);
        break;
      case 3:
        publish(in, session);
        break;
      case 4: {
        auto r = store_.get(session, *in.pick(names_));
        if (r.ok()) {
          check_lease(store_, segment_, *r);
          leases_.push_back(r->lease_id);
        }
        break;
      }
      case 5: {
        const uint64_t* lease = in.pick(leases_);
        (void)store_.release(session, lease ? *lease : in.u8());
        break;
      }
      case 6: {
        const std::string& name = *in.pick(names_);
        (void)store_.unpublish(name, /*cascade=*/(in.u8() & 1) != 0);
        break;
      }
      case 7:
        store_.close_session(session);
        sessions_.erase(sessions_.begin() + static_cast<std::ptrdiff_t>(si));
        break;
      case 8:
        store_.collect_background();
        break;
      default:
        (void)store_.list();
        break;
    }
    check_accounting(store_);
  }

  // Everyone leaves: all memory but the index comes back.
  void finish() {
    for (Store::SessionId s : sessions_) store_.close_session(s);
    // With cascade: a view goes with its base (and is then NotFound itself).
    for (const std::string& name : names_) (void)store_.unpublish(name, /*cascade=*/true);
    store_.wait_for_background();
    protocol::StatusResponse s = store_.status();
    SHELF_CHECK(s.datasets.empty());
    SHELF_CHECK(s.num_leases == 0 && s.unsealed_bytes == 0 && s.pending_free_bytes == 0);
    SHELF_CHECK(s.used_bytes == s.index_bytes);
  }

 private:
  void allocate(Script& in, Store::SessionId session) {
    auto r = store_.allocate(session, uint64_t{in.u16()} * 64);
    if (!r.ok()) return;
    SHELF_CHECK(r->offset % shm::kPageSize == 0 && r->length % shm::kPageSize == 0);
    SHELF_CHECK(r->offset + r->length <= store_.segment_bytes());
    // Any earlier extent at this offset was freed: forget it.
    std::erase_if(extents_, [&](const Extent& e) { return e.offset == r->offset; });
    extents_.push_back({r->offset, r->length});
  }

  // Write as a publisher: reserve and touch the pages, mark it written.
  // Not a sealed extent: any process that may publish can map the segment
  // writable and scribble over published data (docs/design.md, "Who may
  // talk to whom"); readers then see Corruption. That is not what this target is
  // after.
  void write(Script& in) {
    const Extent* e = in.pick(extents_);
    if (e == nullptr || e->sealed) return;
    SHELF_CHECK(for_tests::write_extent(object_, e->offset, e->length).ok());
  }

  // Publish one or two datasets, each of one int64 column over one or two of
  // the known extents (or offsets from the input).
  void publish(Script& in, Store::SessionId session) {
    protocol::PublishRequest request;
    request.override_existing = in.u8() & 1;
    const int items = 1 + in.u8() % 2;
    for (int i = 0; i < items; ++i) {
      std::vector<for_tests::Int64Partition> parts(1 + in.u8() % 2);
      for (for_tests::Int64Partition& p : parts) {
        const Extent* e = in.pick(extents_);
        const Extent x = e ? *e : Extent{uint64_t{in.u16()} * shm::kPageSize, shm::kPageSize};
        const uint64_t rows = std::min<uint64_t>(in.u8(), (x.length - 64) / 8);
        p = for_tests::Int64Partition{x.offset, x.length, rows};
      }
      request.items.push_back({*in.pick(names_), for_tests::int64_descriptor(parts)});
    }
    if (!store_.publish(session, request).ok()) return;
    for (const protocol::PublishItem& item : request.items) {
      auto view = shm::DescriptorView::parse(item.descriptor, true);
      SHELF_CHECK(view.ok());
      for (uint64_t p = 0; p < view->num_partitions(); ++p) {
        for (Extent& e : extents_) {
          e.sealed = e.sealed || e.offset == view->partition(p).extent_offset;
        }
      }
    }
  }

  Store& store_;
  const shm::ShmObject& object_;
  const shm::Mapping& segment_;
  std::vector<Store::SessionId> sessions_;
  std::vector<Extent> extents_;  // every extent ever handed out
  std::vector<uint64_t> leases_;
  const std::vector<std::string> names_ = {"a", "b", "c", std::string(kMaxNameBytes + 1, 'n'), ""};
};

void run(Script& in) {
  static const std::string segment_name = "shelf-fuzz-store-" + std::to_string(::getpid());
  server::StoreOptions options;
  options.segment_name = segment_name;
  options.memory_limit = kLimit;
  options.max_datasets = 4;
  auto created = Store::create(options);
  SHELF_CHECK(created.ok());
  Store& store = **created;
  // The publisher's view of the segment: any process of the user can map it
  // writable, and a hostile one may write anywhere.
  auto object = shm::ShmObject::open(shm::kDefaultShmDir, segment_name, /*writable=*/true);
  SHELF_CHECK(object.ok());
  // Both hold it open now: without a name, a crash leaves nothing in /dev/shm.
  SHELF_CHECK(shm::ShmObject::unlink(shm::kDefaultShmDir, segment_name).ok());
  auto mapped = shm::Mapping::map(*object, 0, store.segment_bytes(), /*writable=*/true);
  SHELF_CHECK(mapped.ok());

  Harness harness(store, *object, *mapped);
  while (!in.done()) harness.step(in);
  harness.finish();
}

}  // namespace
}  // namespace shelf::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shelf::server::Script script(data, size);
  shelf::server::run(script);
  return 0;
}
