// RAII owners of a shared-memory object and of mappings of it.
//
// A shared-memory object is a file in a memory filesystem: /dev/shm (tmpfs)
// by default, or a directory the user mounted for the purpose, e.g. a tmpfs
// with huge pages (shelfd --shm-dir; docs/design.md, "Huge pages"). It is
// opened with open(2) on its path, as shm_open(3) does for /dev/shm:
// Boost.Interprocess's shared_memory_object knows only /dev/shm. Mappings are
// Boost.Interprocess mapped_regions (not managed_shared_memory:
// docs/design.md, "Memory", says why). Every Boost call is made here and its
// exceptions become Status values; nothing above shm/ sees Boost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <shelf/result.h>

namespace shelf::shm {

// Where shared-memory objects live unless shelfd is given --shm-dir.
inline constexpr std::string_view kDefaultShmDir = "/dev/shm";

// DIR/NAME: the one rule for where a shared-memory object lives.
std::string object_path(std::string_view dir, std::string_view name);

// A shared-memory object DIR/NAME, open in this process. DIR is an absolute
// path (checking that it is a memory filesystem is the caller's: see
// shm/memory_fs.h). Move-only. It does not unlink the name when destroyed:
// unlink() does that.
class ShmObject {
 public:
  // Creates DIR/NAME with `mode` permissions and `size` bytes (sparse: no
  // memory is used until reserve()). Never follows a symlink. Fails with
  // AlreadyExists if NAME exists.
  static Result<ShmObject> create(std::string_view dir, std::string_view name, uint64_t size,
                                  uint32_t mode);
  // Opens an existing DIR/NAME read-only, or read-write. IoError with
  // sys_errno() == ENOENT if there is none (NotFound is kept for "no dataset
  // of that name").
  static Result<ShmObject> open(std::string_view dir, std::string_view name, bool writable);
  // Removes DIR/NAME; mappings stay valid. OK if it did not exist.
  static Status unlink(std::string_view dir, std::string_view name);
  // The longest shm object name accepted, well under NAME_MAX (255) of /dev/shm.
  static constexpr size_t kMaxObjectNameBytes = 200;
  // True when NAME is a valid shm object name ([A-Za-z0-9._-], 1..kMaxObjectNameBytes bytes).
  static bool is_valid_name(std::string_view name);

  ShmObject(ShmObject&&) noexcept;
  ShmObject& operator=(ShmObject&&) noexcept;
  ~ShmObject();

  const std::string& name() const;
  // DIR/NAME, for messages and for is_linked().
  const std::string& path() const;
  int fd() const;
  bool writable() const;
  // Size of the object (fstat).
  Result<uint64_t> size() const;
  // Memory the object really holds (fstat st_blocks).
  Result<uint64_t> resident_bytes() const;
  // Sets the object's size (ftruncate). Growing adds a hole (no memory);
  // shrinking drops the pages past the new end, and a mapping that touches
  // them then gets SIGBUS: the caller makes sure nothing lies there.
  Status resize(uint64_t size) const;
  // Allocates backing pages for [offset, offset+length) with posix_fallocate,
  // so that a full /dev/shm is an error now instead of a SIGBUS later.
  // Errors: ResourceExhausted naming the directory when it is full.
  Status reserve(uint64_t offset, uint64_t length) const;
  // reserve(), but by faulting the pages in through `mapped`, which points at
  // `offset` of a writable shared mapping of this object (MADV_POPULATE_WRITE,
  // Linux 5.14; older kernels get reserve()). tmpfs holds the file's lock
  // for the whole of a posix_fallocate, and every other fallocate, hole
  // punch and SEEK_HOLE of the segment waits for it (a publisher's 1 GiB
  // held them all, shelfd's loop included, for ~80 ms); a fault takes no
  // such lock. The pages are mapped afterwards. Errors as reserve(); on one,
  // nothing of the range stays reserved.
  // `threads` > 1 faults equal runs of the range in on that many threads:
  // a fault clears the page, and one core clears ~1.4 GB/s here, so a large
  // range is reserved in half the time on two (docs/benchmarks.md).
  Status reserve_through(std::byte* mapped, uint64_t offset, uint64_t length,
                         unsigned threads = 1) const;
  // True when SEEK_HOLE finds no hole in [offset, offset+length). On tmpfs a
  // page that was reserved but never touched counts as a hole too: true means
  // every page was allocated and touched (see Mapping::map's `populate`).
  Result<bool> is_reserved(uint64_t offset, uint64_t length) const;
  // Gives the pages of [offset, offset+length) back to the OS (punches a
  // hole); reads of the range return zeros afterwards.
  Status punch(uint64_t offset, uint64_t length) const;
  // The size of the page the filesystem gives this object when a byte at
  // `offset` is first written: kHugePageSize on a tmpfs mounted with
  // huge=within_size or huge=always (where the kernel had a huge page to
  // give), kPageSize otherwise. It writes a zero byte at `offset` and
  // punches [offset, offset + kHugePageSize) afterwards, so that range must
  // be kHugePageSize-aligned, inside the object, and unused by anyone.
  Result<uint64_t> probe_page_size(uint64_t offset) const;
  // Takes an exclusive flock on the object without waiting; the kernel drops
  // it when this process dies. Errors: AlreadyExists when another process holds it.
  Status try_lock() const;
  // True when DIR/NAME is still this object: another process may have
  // removed it, or put another one in its place, since it was opened.
  Result<bool> is_linked() const;
  // try_lock(), then is_linked(): the lock is on the object NAME names, so
  // that acting on NAME afterwards (unlink) acts on the locked object.
  // Errors: AlreadyExists when another process holds the lock, or NAME no
  // longer names this object (another shelfd replaced it meanwhile).
  Status lock_while_linked() const;
  // The object's owner (fstat st_uid).
  Result<uint32_t> owner() const;

 private:
  class Impl;
  explicit ShmObject(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A range of mapped memory, for madvise_in_parallel().
struct MappedRange {
  std::byte* begin = nullptr;  // page-aligned
  uint64_t length = 0;         // a multiple of the page size
};

// Calls madvise(2) with `advice` over every range, cut into equal runs of
// whole pages, one run per thread, on up to `threads` threads (this one
// included); EINTR is retried. Returns 0, or the errno of a call that failed
// (EINVAL: a kernel without `advice`). Meant for MADV_POPULATE_READ/WRITE,
// whose cost is per page and scales with cores.
int madvise_in_parallel(std::span<const MappedRange> ranges, int advice, unsigned threads);

// A mapping of part of a ShmObject. Move-only; unmaps itself.
class Mapping {
 public:
  // Maps [offset, offset+length) of `object`; offset must be page aligned.
  // `writable` needs an object opened read-write. `populate` pre-faults the
  // pages (MADV_POPULATE_*), which is much cheaper than faulting page by page.
  static Result<Mapping> map(const ShmObject& object, uint64_t offset, uint64_t length,
                             bool writable, bool populate = false);

  Mapping(Mapping&&) noexcept;
  Mapping& operator=(Mapping&&) noexcept;
  ~Mapping();

  std::byte* data() const;
  uint64_t size() const;
  std::span<std::byte> bytes() const { return {data(), static_cast<size_t>(size())}; }
  // True when every page of [offset, offset+length) of the mapping is in the
  // page cache (mincore), so that a first touch of it allocates nothing.
  // Unlike ShmObject::is_reserved it takes no lock of the file, so it waits
  // for nobody's fallocate or hole punch. False also for a page swapped out:
  // ask is_reserved then. Thread-safe (reads only).
  Result<bool> all_pages_present(uint64_t offset, uint64_t length) const;

 private:
  class Impl;
  explicit Mapping(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shelf::shm
