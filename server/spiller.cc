#include "server/spiller.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "base/check.h"
#include "base/fault_point.h"
#include "shm/checksum.h"
#include "shm/layout.h"

namespace shelf::server {

namespace {

constexpr uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

// The copies between the segment and a file go through a buffer of this
// size: the segment is read with pread(2), which unlike a read through a
// mapping allocates no page for a hole it reads (docs/leases.md, "Lists").
constexpr size_t kCopyBytes = 4u << 20;

// A restore reserves its pages this much at a time (SegmentWorker's punch step).
constexpr uint64_t kReserveStepBytes = 32u << 20;

// The spiller thread's nice value (the loop's is 0).
constexpr int kSpillerNice = 10;

// The most a descriptor may take in a spill file's header area: far past
// any real one (kMaxColumns x partitions is bounded by the limit), it only
// stops a damaged length from allocating without bound.
constexpr uint64_t kMaxSpilledDescriptorBytes = uint64_t{1} << 32;

Status io_error(const std::string& doing, const std::string& path, int err) {
  return Status::from_errno(doing + " " + path, err);  // ENOSPC: ResourceExhausted
}

bool write_all(int fd, const std::byte* data, uint64_t length, uint64_t at) {
  while (length > 0) {
    const ssize_t n = ::pwrite(fd, data, length, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data += n;
    length -= static_cast<uint64_t>(n);
    at += static_cast<uint64_t>(n);
  }
  return true;
}

// False with errno set; ENODATA when the file ends first.
bool read_all(int fd, std::byte* data, uint64_t length, uint64_t at) {
  while (length > 0) {
    const ssize_t n = ::pread(fd, data, length, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENODATA;
      return false;
    }
    data += n;
    length -= static_cast<uint64_t>(n);
    at += static_cast<uint64_t>(n);
  }
  return true;
}

uint64_t head_bytes(uint64_t num_partitions, uint64_t descriptor_length) {
  return sizeof(SpillFileHeader) + num_partitions * sizeof(uint64_t) + descriptor_length;
}

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
}

}  // namespace

std::string spill_file_path(const std::string& dir, const std::string& prefix,
                            uint64_t publish_id) {
  return dir + "/" + prefix + "." + std::to_string(publish_id) + ".spill";
}

uint64_t spill_file_publish_id(const std::string& file, const std::string& prefix,
                               bool* temporary) {
  std::string_view rest(file);
  if (!rest.starts_with(prefix + ".")) return 0;
  rest.remove_prefix(prefix.size() + 1);
  *temporary = rest.ends_with(".spill.tmp");
  if (!*temporary && !rest.ends_with(".spill")) return 0;
  rest.remove_suffix(*temporary ? 10 : 6);
  if (rest.empty() || rest.size() > 20) return 0;
  uint64_t id = 0;
  for (char c : rest) {
    if (c < '0' || c > '9') return 0;
    id = id * 10 + static_cast<uint64_t>(c - '0');
  }
  return id;
}

uint64_t Spiller::file_bytes(uint64_t descriptor_length, const std::vector<uint64_t>& payloads) {
  uint64_t bytes = align_up(head_bytes(payloads.size(), descriptor_length), kSpillAlignment);
  for (uint64_t p : payloads) bytes += align_up(p, kSpillAlignment);
  return bytes;
}

Result<std::unique_ptr<Spiller>> Spiller::start(const shm::ShmObject& segment, std::byte* base) {
  UniqueFd segment_fd(::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0));
  if (!segment_fd.valid()) return Status::from_errno("dup " + segment.path(), errno);
  UniqueFd event_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event_fd.valid()) return Status::from_errno("eventfd", errno);
  return std::unique_ptr<Spiller>(
      new Spiller(segment, std::move(segment_fd), std::move(event_fd), base));
}

Spiller::Spiller(const shm::ShmObject& segment, UniqueFd segment_fd, UniqueFd event_fd,
                 std::byte* base)
    : segment_(segment),
      segment_fd_(std::move(segment_fd)),
      event_fd_(std::move(event_fd)),
      base_(base) {
  // As SegmentWorker: signals are the event loop's.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Spiller::~Spiller() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    jobs_.clear();
  }
  work_.notify_one();
  thread_.join();
}

void Spiller::add(Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  work_.notify_one();
}

std::vector<Spiller::Outcome> Spiller::take_done() {
  uint64_t count = 0;
  (void)::read(event_fd_.get(), &count, sizeof count);  // EAGAIN when nothing was signalled
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(done_, {});
}

void Spiller::run() {
  // Below the event loop: on a machine whose cores are all busy, a woken
  // loop thread runs before this copy goes on (shelf_bench figure 13: the
  // worst request of another client during a spill). Linux nices threads
  // one by one; failing leaves it at the loop's priority.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kSpillerNice);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    Outcome outcome = job.kind == Job::Kind::kSpill ? spill(job) : restore(job);
    outcome.ticket = job.ticket;
    outcome.kind = job.kind;
    outcome.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    lock.lock();
    done_.push_back(std::move(outcome));
    const uint64_t one = 1;
    (void)::write(event_fd_.get(), &one, sizeof one);
  }
}

Spiller::Outcome Spiller::spill(const Job& job) const {
  Outcome out;
  const std::string temporary = job.path + ".tmp";
  // A temporary file of ours a killed shelfd left is written over (the name
  // holds a publish id, never reused); O_NOFOLLOW: never through a symlink.
  UniqueFd fd(
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    out.status = io_error("spilling " + job.what + ": cannot create", temporary, errno);
    return out;
  }
  auto fail = [&](const std::string& doing, int err) {
    ::unlink(temporary.c_str());
    out.status = io_error("spilling " + job.what + ": " + doing, temporary, err);
    return out;
  };
  std::vector<uint64_t> payloads;
  for (const Range& r : job.ranges) payloads.push_back(r.length);
  std::vector<std::byte> head(
      align_up(head_bytes(payloads.size(), job.descriptor.size()), kSpillAlignment));
  SpillFileHeader header{};
  header.magic = kSpillFileMagic;
  header.version = kSpillFileVersion;
  header.publish_id = job.publish_id;
  header.num_partitions = payloads.size();
  header.descriptor_length = job.descriptor.size();
  std::byte* p = head.data() + sizeof header;
  std::memcpy(p, payloads.data(), payloads.size() * sizeof(uint64_t));
  p += payloads.size() * sizeof(uint64_t);
  std::memcpy(p, job.descriptor.data(), job.descriptor.size());
  std::memcpy(head.data(), &header, sizeof header);
  header.xxh3 = shm::xxh3(head.data(), head_bytes(payloads.size(), job.descriptor.size()));
  std::memcpy(head.data(), &header, sizeof header);
  if (!write_all(fd.get(), head.data(), head.size(), 0)) return fail("cannot write", errno);
  uint64_t at = head.size();
  std::vector<std::byte> buffer(kCopyBytes);
  for (const Range& r : job.ranges) {
    for (uint64_t done = 0; done < r.length;) {
      const uint64_t n = std::min<uint64_t>(kCopyBytes, r.length - done);
      if (!read_all(segment_fd_.get(), buffer.data(), n, r.offset + done)) {
        return fail("cannot read the segment for", errno);
      }
      if (!write_all(fd.get(), buffer.data(), n, at + done)) return fail("cannot write", errno);
      done += n;
    }
    at += align_up(r.length, kSpillAlignment);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(at)) != 0) return fail("cannot size", errno);
  if (::fsync(fd.get()) != 0) return fail("cannot fsync", errno);
  SHELF_FAULT_POINT("daemon.spill.before_rename");
  if (::rename(temporary.c_str(), job.path.c_str()) != 0) return fail("cannot rename", errno);
  // The rename is durable once the directory is.
  UniqueFd dir(::open(directory_of(job.path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid() || ::fsync(dir.get()) != 0) {
    const int err = errno;
    ::unlink(job.path.c_str());
    out.status =
        io_error("spilling " + job.what + ": cannot fsync the directory of", job.path, err);
    return out;
  }
  return out;
}

Spiller::Outcome Spiller::restore(const Job& job) const {
  Outcome out;
  auto damaged = [&](const std::string& what) {
    out.status = Status::corruption("the spill file " + job.path + " of " + job.what +
                                    " is damaged: " + what);
    return out;
  };
  UniqueFd fd(::open(job.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    out.status = io_error("restoring " + job.what + ": cannot open", job.path, errno);
    return out;
  }
  auto read_failed = [&](int err) {
    if (err == ENODATA) return damaged("it is shorter than its header says");
    out.status = io_error("restoring " + job.what + ": cannot read", job.path, err);
    return out;
  };
  SpillFileHeader header{};
  if (!read_all(fd.get(), reinterpret_cast<std::byte*>(&header), sizeof header, 0)) {
    return read_failed(errno);
  }
  if (header.magic != kSpillFileMagic || header.version != kSpillFileVersion) {
    return damaged("not a version " + std::to_string(kSpillFileVersion) + " spill file");
  }
  if (header.publish_id != job.publish_id || header.num_partitions != job.ranges.size() ||
      header.descriptor_length > kMaxSpilledDescriptorBytes) {
    return damaged("its header is not the one shelfd wrote for it");
  }
  std::vector<std::byte> head(head_bytes(header.num_partitions, header.descriptor_length));
  if (!read_all(fd.get(), head.data(), head.size(), 0)) return read_failed(errno);
  const uint64_t want = header.xxh3;
  std::memset(head.data() + offsetof(SpillFileHeader, xxh3), 0, sizeof header.xxh3);
  if (shm::xxh3(head.data(), head.size()) != want) return damaged("its header's checksum");
  uint64_t at = align_up(head.size(), kSpillAlignment);
  for (size_t i = 0; i < job.ranges.size(); ++i) {
    uint64_t length = 0;
    std::memcpy(&length, head.data() + sizeof header + i * sizeof(uint64_t), sizeof length);
    if (length != job.ranges[i].length) return damaged("a partition's length");
    // Pages first: read(2) into a hole of a full tmpfs fails with EFAULT,
    // which would say nothing of why. A step at a time: a posix_fallocate
    // holds the segment file's lock, which the loop's own punches wait for
    // (~7 ms a step here). Reserving by faults (MADV_POPULATE_WRITE) takes
    // no such lock but halved the restore's speed (figure 13: 1.21 ->
    // 0.56 GB/s), as it maps every page before read(2) writes it.
    for (uint64_t done = 0; done < length; done += kReserveStepBytes) {
      if (Status s = segment_.reserve(job.ranges[i].offset + done,
                                      std::min(kReserveStepBytes, length - done));
          !s.ok()) {
        out.status = Status::from_code(
            static_cast<uint8_t>(s.code()),
            "restoring " + job.what + ": cannot reserve its pages in the segment: " + s.message());
        return out;
      }
    }
    if (!read_all(fd.get(), base_ + job.ranges[i].offset, length, at)) return read_failed(errno);
    at += align_up(length, kSpillAlignment);
  }
  SHELF_FAULT_POINT("daemon.restore.before_check");
  for (uint64_t p = 0; p < job.check->view.num_partitions(); ++p) {
    if (const auto m = shm::first_checksum_mismatch(job.check->view, base_, p)) {
      return damaged("checksum mismatch in partition " + std::to_string(m->partition) +
                     " column '" + std::string(job.check->view.column_name(m->column)) + "'");
    }
  }
  return out;
}

}  // namespace shelf::server
