#include "shm/segment.h"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>

#include "base/parallel.h"
#include "base/unique_fd.h"
#include "shm/layout.h"

namespace bip = boost::interprocess;

namespace shelf::shm {

namespace {

Status from_boost(std::string_view what, const bip::interprocess_exception& e) {
  int err = e.get_native_error();
  if (err != 0) return Status::from_errno(what, err);
  return Status::io_error(std::string(what) + ": " + e.what());
}

}  // namespace

class ShmObject::Impl {
 public:
  UniqueFd fd;
  std::string dir;
  std::string name;
  std::string path;  // dir/name
  bool writable = false;
};

ShmObject::ShmObject(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ShmObject::ShmObject(ShmObject&&) noexcept = default;
ShmObject& ShmObject::operator=(ShmObject&&) noexcept = default;
ShmObject::~ShmObject() = default;

bool ShmObject::is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxObjectNameBytes || name == "." || name == "..")
    return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string object_path(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (path.empty() || path.back() != '/') path += '/';
  return path + std::string(name);
}

Result<ShmObject> ShmObject::create(std::string_view dir, std::string_view name, uint64_t size,
                                    uint32_t mode) {
  if (!is_valid_name(name)) {
    return Status::invalid_argument("'" + std::string(name) +
                                    "' is not a valid segment name (use letters, digits, . _ -)");
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->name = name;
  impl->path = object_path(dir, name);
  impl->writable = true;
  const std::string what = "create " + impl->path;
  // O_NOFOLLOW | O_EXCL, as shm_open(3) opens: a name that exists, even as
  // a symlink, is refused.
  impl->fd.reset(::open(impl->path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        static_cast<mode_t>(mode)));
  if (!impl->fd.valid()) return Status::from_errno(what, errno);
  // The umask may have narrowed `mode`; set it exactly (never wider than asked).
  if (::fchmod(impl->fd.get(), mode) != 0 ||
      ::ftruncate(impl->fd.get(), static_cast<off_t>(size)) != 0) {
    int err = errno;
    ::unlink(impl->path.c_str());
    return Status::from_errno(what, err);
  }
  return ShmObject(std::move(impl));
}

Result<ShmObject> ShmObject::open(std::string_view dir, std::string_view name, bool writable) {
  if (!is_valid_name(name)) {
    return Status::invalid_argument("'" + std::string(name) + "' is not a valid segment name");
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->name = name;
  impl->path = object_path(dir, name);
  impl->writable = writable;
  impl->fd.reset(
      ::open(impl->path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC));
  if (!impl->fd.valid()) return Status::from_errno("open " + impl->path, errno);
  return ShmObject(std::move(impl));
}

Status ShmObject::unlink(std::string_view dir, std::string_view name) {
  if (!is_valid_name(name)) {
    return Status::invalid_argument("'" + std::string(name) + "' is not a valid segment name");
  }
  const std::string path = object_path(dir, name);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::from_errno("remove " + path, errno);
  }
  return Status();
}

const std::string& ShmObject::name() const { return impl_->name; }
const std::string& ShmObject::path() const { return impl_->path; }
int ShmObject::fd() const { return impl_->fd.get(); }
bool ShmObject::writable() const { return impl_->writable; }

Result<uint64_t> ShmObject::size() const {
  struct stat st;
  if (::fstat(fd(), &st) != 0) return Status::from_errno("stat " + path(), errno);
  return static_cast<uint64_t>(st.st_size);
}

Result<uint64_t> ShmObject::resident_bytes() const {
  struct stat st;
  if (::fstat(fd(), &st) != 0) return Status::from_errno("stat " + path(), errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

Status ShmObject::resize(uint64_t size) const {
  if (::ftruncate(fd(), static_cast<off_t>(size)) != 0) {
    return Status::from_errno("resize " + path() + " to " + std::to_string(size) + " bytes", errno);
  }
  return Status();
}

namespace {

Status dir_full(const std::string& dir, uint64_t length) {
  return Status::resource_exhausted(dir + " is full: could not reserve " + std::to_string(length) +
                                    " bytes; free space in " + dir + " (df -h " + dir +
                                    ") or lower --memory-limit");
}

}  // namespace

Status ShmObject::reserve(uint64_t offset, uint64_t length) const {
  int err;
  do {  // tmpfs gives up with EINTR when a signal arrives: try again
    err = ::posix_fallocate(fd(), static_cast<off_t>(offset), static_cast<off_t>(length));
  } while (err == EINTR);
  if (err == 0) return Status();
  // posix_fallocate may have allocated part of the range: give it back.
  (void)punch(offset, length);
  if (err == ENOSPC) {
    return dir_full(impl_->dir, length);
  }
  return Status::from_errno("reserve memory in " + path(), err);
}

int madvise_in_parallel(std::span<const MappedRange> ranges, int advice, unsigned threads) {
  uint64_t total = 0;
  for (const MappedRange& r : ranges) total += r.length;
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(total / kPageSize)));
  const uint64_t share = (total / kPageSize + threads - 1) / threads * kPageSize;
  // Thread t takes bytes [t * share, (t + 1) * share) of the ranges laid end to end.
  std::vector<std::vector<MappedRange>> work(threads);
  uint64_t assigned = 0;
  for (const MappedRange& r : ranges) {
    for (uint64_t done = 0; done < r.length;) {
      const uint64_t t = assigned / share;
      const uint64_t n = std::min(r.length - done, share * (t + 1) - assigned);
      work[t].push_back({r.begin + done, n});
      done += n;
      assigned += n;
    }
  }
  std::vector<int> errors(threads, 0);
  auto run = [&](unsigned t) {
    for (const MappedRange& r : work[t]) {
      while (::madvise(r.begin, r.length, advice) != 0) {
        if (errno != EINTR) {  // a signal: try again (done pages are skipped)
          errors[t] = errno;
          return;
        }
      }
    }
  };
  parallel_for(threads, threads, [&](size_t t) { run(static_cast<unsigned>(t)); });
  for (int err : errors) {
    if (err != 0) return err;
  }
  return 0;
}

Status ShmObject::reserve_through(std::byte* mapped, uint64_t offset, uint64_t length,
                                  unsigned threads) const {
  const MappedRange range{mapped, length};
  const int err = madvise_in_parallel({&range, 1}, MADV_POPULATE_WRITE, threads);
  if (err == 0) return Status();
  if (err == EINVAL) {
    // A kernel without MADV_POPULATE_WRITE: reserve, then touch each page (a
    // write keeps the byte), as a reserved page never touched is still a
    // hole to SEEK_HOLE.
    SHELF_RETURN_IF_ERROR(reserve(offset, length));
    auto* bytes = reinterpret_cast<volatile std::byte*>(mapped);
    for (uint64_t at = 0; at < length; at += kPageSize) bytes[at] = bytes[at];
    return Status();
  }
  // What was faulted in before the failure: give it back.
  (void)punch(offset, length);
  // A fault tmpfs cannot back is EFAULT (it would have been SIGBUS), an
  // allocation the kernel refuses ENOMEM.
  if (err == EFAULT || err == ENOMEM) {
    return dir_full(impl_->dir, length);
  }
  return Status::from_errno("reserve memory in " + path(), err);
}

Result<bool> ShmObject::is_reserved(uint64_t offset, uint64_t length) const {
  const off_t hole = ::lseek(fd(), static_cast<off_t>(offset), SEEK_HOLE);
  if (hole < 0) return Status::from_errno("look for holes in " + path(), errno);
  return static_cast<uint64_t>(hole) >= offset + length;
}

Status ShmObject::punch(uint64_t offset, uint64_t length) const {
  if (::fallocate(fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    return Status::from_errno("punch a hole in " + path(), errno);
  }
  return Status();
}

Result<uint64_t> ShmObject::probe_page_size(uint64_t offset) const {
  if (offset % kHugePageSize != 0) {
    return Status::internal("ShmObject::probe_page_size: an unaligned offset");
  }
  // A write, not a fault through a mapping: tmpfs decides the page size of
  // both the same way (its huge= option and the file's size), and a write
  // needs no mapping of the range.
  const char zero = 0;
  ssize_t n;
  do {
    n = ::pwrite(fd(), &zero, 1, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n != 1) return Status::from_errno("write a byte of " + path(), n < 0 ? errno : EIO);
  // The data the write made ends at the end of the page it allocated.
  const off_t hole = ::lseek(fd(), static_cast<off_t>(offset), SEEK_HOLE);
  const int err = errno;
  SHELF_RETURN_IF_ERROR(punch(offset, kHugePageSize));
  if (hole < 0) return Status::from_errno("look for holes in " + path(), err);
  return static_cast<uint64_t>(hole) - offset >= kHugePageSize ? kHugePageSize : kPageSize;
}

Status ShmObject::try_lock() const {
  if (::flock(fd(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::already_exists(path() + " is in use by another shelfd");
    }
    return Status::from_errno("lock " + path(), errno);
  }
  return Status();
}

Result<bool> ShmObject::is_linked() const {
  struct stat by_fd, by_name;
  if (::fstat(fd(), &by_fd) != 0) return Status::from_errno("stat " + path(), errno);
  if (::stat(path().c_str(), &by_name) != 0) {
    if (errno == ENOENT) return false;
    return Status::from_errno("stat " + path(), errno);
  }
  return by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino;
}

Status ShmObject::lock_while_linked() const {
  SHELF_RETURN_IF_ERROR(try_lock());
  SHELF_ASSIGN_OR_RETURN(bool linked, is_linked());
  if (!linked) {
    return Status::already_exists(path() +
                                  " was replaced by another shelfd while this one opened it");
  }
  return Status();
}

Result<uint32_t> ShmObject::owner() const {
  struct stat st;
  if (::fstat(fd(), &st) != 0) return Status::from_errno("stat " + path(), errno);
  return st.st_uid;
}

class Mapping::Impl {
 public:
  bip::mapped_region region;
};

Mapping::Mapping(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Mapping::Mapping(Mapping&&) noexcept = default;
Mapping& Mapping::operator=(Mapping&&) noexcept = default;
Mapping::~Mapping() = default;

Result<Mapping> Mapping::map(const ShmObject& object, uint64_t offset, uint64_t length,
                             bool writable, bool populate) {
  if (offset % kPageSize != 0 || length == 0) {
    return Status::internal("Mapping::map: unaligned offset or empty length");
  }
  auto impl = std::make_unique<Impl>();
  // mapped_region maps with the object's own handle; the object's open mode
  // must allow `writable`.
  if (writable && !object.writable()) {
    return Status::permission_denied(object.path() + " is open read-only");
  }
  try {
    bip::mapping_handle_t handle;
    handle.handle = object.fd();
    handle.is_xsi = false;
    struct HandleHolder {
      bip::mapping_handle_t h;
      bip::mapping_handle_t get_mapping_handle() const { return h; }
    } holder{handle};
    impl->region =
        bip::mapped_region(holder, writable ? bip::read_write : bip::read_only,
                           static_cast<bip::offset_t>(offset), static_cast<std::size_t>(length));
  } catch (const bip::interprocess_exception& e) {
    return from_boost("map " + object.path(), e);
  }
  if (populate) {
    // MADV_POPULATE_* (Linux 5.14) maps every page in one call instead of
    // one fault per 4 KiB page.
    auto* base = static_cast<volatile std::byte*>(impl->region.get_address());
    const size_t size = impl->region.get_size();
    const int advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
    if (::madvise(const_cast<std::byte*>(base), size, advice) != 0) {
      if (errno != EINVAL) return Status::from_errno("populate " + object.path(), errno);
      // An older kernel: touch each page instead (a write keeps the byte).
      for (size_t at = 0; at < size; at += kPageSize) {
        const std::byte b = base[at];
        if (writable) base[at] = b;
      }
    }
  }
  return Mapping(std::move(impl));
}

Result<bool> Mapping::all_pages_present(uint64_t offset, uint64_t length) const {
  if (offset % kPageSize != 0 || offset > size() || length > size() - offset) {
    return Status::internal("Mapping::all_pages_present: a range past the mapping");
  }
  // 64 MiB at a time: a 16 KiB vector however large the range.
  constexpr uint64_t kChunk = 64ull << 20;
  std::vector<unsigned char> present(kChunk / kPageSize);
  for (uint64_t at = 0; at < length; at += kChunk) {
    const uint64_t n = std::min(kChunk, length - at);
    if (::mincore(data() + offset + at, n, present.data()) != 0) {
      return Status::from_errno("mincore", errno);
    }
    const uint64_t pages = (n + kPageSize - 1) / kPageSize;
    for (uint64_t p = 0; p < pages; ++p) {
      if ((present[p] & 1) == 0) return false;
    }
  }
  return true;
}

std::byte* Mapping::data() const { return static_cast<std::byte*>(impl_->region.get_address()); }
uint64_t Mapping::size() const { return impl_->region.get_size(); }

}  // namespace shelf::shm
