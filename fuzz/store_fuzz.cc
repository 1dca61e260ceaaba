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

#include "base/check.h"
#include "protocol/messages.h"
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
  auto object = shm::ShmObject::open(segment_name, /*writable=*/true);
  SHELF_CHECK(object.ok());
  // Both hold it open now: without a name, a crash leaves nothing in /dev/shm.
  SHELF_CHECK(shm::ShmObject::unlink(segment_name).ok());
  auto mapped = shm::Mapping::map(*object, 0, store.segment_bytes(), /*writable=*/true);
  SHELF_CHECK(mapped.ok());
  const shm::Mapping& segment = *mapped;

  std::vector<Store::SessionId> sessions;
  std::vector<Extent> extents;  // every extent ever handed out
  std::vector<uint64_t> leases;
  const std::vector<std::string> names = {"a", "b", "c", std::string(201, 'n'), ""};

  while (!in.done()) {
    if (sessions.empty() || (sessions.size() < 4 && in.u8() % 8 == 0)) {
      sessions.push_back(store.open_session(1000 + static_cast<uint32_t>(sessions.size()), 1000));
    }
    const size_t si = in.u8() % sessions.size();
    const Store::SessionId session = sessions[si];
    switch (in.u8() % 10) {
      case 0: {
        auto r = store.allocate(session, uint64_t{in.u16()} * 64);
        if (r.ok()) {
          SHELF_CHECK(r->offset % shm::kPageSize == 0 && r->length % shm::kPageSize == 0);
          SHELF_CHECK(r->offset + r->length <= store.segment_bytes());
          // Any earlier extent at this offset was freed: forget it.
          std::erase_if(extents, [&](const Extent& e) { return e.offset == r->offset; });
          extents.push_back({r->offset, r->length});
        }
        break;
      }
      case 1: {
        const Extent* e = in.pick(extents);
        (void)store.abort(session, e ? e->offset : uint64_t{in.u16()} * shm::kPageSize);
        break;
      }
      case 2: {
        // Write as a publisher: reserve and touch the pages, mark it written.
        // Not a sealed extent: any process that may publish can map the
        // segment writable and scribble over published data (README.md,
        // "Who may talk to whom"); readers then see Corruption. That is
        // not what this target is after.
        const Extent* e = in.pick(extents);
        if (e == nullptr || e->sealed) break;
        SHELF_CHECK(object->reserve(e->offset, e->length).ok());
        auto m = shm::Mapping::map(*object, e->offset, e->length, true, /*populate=*/true);
        SHELF_CHECK(m.ok());
        auto* header = reinterpret_cast<shm::ExtentHeaderLayout*>(m->data());
        std::atomic_ref<uint32_t>(header->state)
            .store(static_cast<uint32_t>(shm::ExtentState::kWritten), std::memory_order_release);
        break;
      }
      case 3: {
        // Publish one or two datasets, each of one int64 column over one or
        // two of the known extents.
        protocol::PublishRequest request;
        request.override_existing = in.u8() & 1;
        const int items = 1 + in.u8() % 2;
        for (int i = 0; i < items; ++i) {
          shm::DescriptorBuilder builder(Schema{{"v", Type::kInt64}});
          const int parts = 1 + in.u8() % 2;
          for (int p = 0; p < parts; ++p) {
            const Extent* e = in.pick(extents);
            const Extent x = e ? *e : Extent{uint64_t{in.u16()} * shm::kPageSize, shm::kPageSize};
            const uint64_t rows = std::min<uint64_t>(in.u8(), (x.length - 64) / 8);
            shm::ChunkLayout chunk{};
            chunk.data = shm::BufferLayout{x.offset + shm::kExtentHeaderBytes, rows * 8, 0};
            builder.add_partition(shm::PartitionLayout{rows, x.offset, x.length, 0},
                                  std::span<const shm::ChunkLayout>(&chunk, 1));
          }
          request.items.push_back({*in.pick(names), builder.finish()});
        }
        if (store.publish(session, request).ok()) {
          for (const protocol::PublishItem& item : request.items) {
            auto view = shm::DescriptorView::parse(item.descriptor, true);
            SHELF_CHECK(view.ok());
            for (uint64_t p = 0; p < view->num_partitions(); ++p) {
              for (Extent& e : extents) {
                e.sealed = e.sealed || e.offset == view->partition(p).extent_offset;
              }
            }
          }
        }
        break;
      }
      case 4: {
        auto r = store.get(session, *in.pick(names));
        if (r.ok()) {
          check_lease(store, segment, *r);
          leases.push_back(r->lease_id);
        }
        break;
      }
      case 5: {
        const uint64_t* lease = in.pick(leases);
        (void)store.release(session, lease ? *lease : in.u8());
        break;
      }
      case 6:
        (void)store.unpublish(*in.pick(names));
        break;
      case 7:
        store.close_session(session);
        sessions.erase(sessions.begin() + static_cast<std::ptrdiff_t>(si));
        break;
      case 8:
        if (store.has_punch_work()) store.punch_some();
        break;
      default:
        (void)store.list();
        break;
    }
    check_accounting(store);
  }

  // Everyone leaves: all memory but the index comes back.
  for (Store::SessionId s : sessions) store.close_session(s);
  for (const std::string& name : names) (void)store.unpublish(name);
  while (store.has_punch_work()) store.punch_some();
  protocol::StatusResponse s = store.status();
  SHELF_CHECK(s.datasets.empty());
  SHELF_CHECK(s.num_leases == 0 && s.unsealed_bytes == 0 && s.pending_free_bytes == 0);
  SHELF_CHECK(s.used_bytes == s.index_bytes);
}

}  // namespace
}  // namespace shelf::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shelf::server::Script script(data, size);
  shelf::server::run(script);
  return 0;
}
