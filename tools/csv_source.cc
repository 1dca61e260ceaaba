#include "tools/csv_source.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>
#include <zstd.h>

namespace shelf::tools {

namespace {

bool starts_with_magic(const char* data, size_t size, CsvCompression* out) {
  const auto* b = reinterpret_cast<const unsigned char*>(data);
  if (size >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
    *out = CsvCompression::kGzip;
  } else if (size >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) {
    *out = CsvCompression::kZstd;
  } else {
    *out = CsvCompression::kNone;
  }
  return *out != CsvCompression::kNone;
}

Status write_all(int fd, const char* data, size_t size, const std::string& name) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::from_errno("cannot spool " + name + " to the temporary directory", errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status();
}

// A private temporary file: never visible in the directory (O_TMPFILE), or
// unlinked at once where the file system has no O_TMPFILE.
Result<UniqueFd> make_spool_file() {
  const char* env = std::getenv("TMPDIR");
  std::string dir = env && *env ? env : "/tmp";
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::string templ = dir + "/shelf-spool-XXXXXX";
    fd = ::mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0) return Status::from_errno("cannot create a temporary file in " + dir, errno);
    ::unlink(templ.c_str());
  }
  return UniqueFd(fd);
}

// Streams every byte of `in` (decompressed as `compression` says) to `out`.
class Spooler {
 public:
  Spooler(int in, int out, const std::string& name, uint64_t total,
          const CsvSource::OnSpoolProgress& progress)
      : in_(in), out_(out), name_(name), total_(total), progress_(progress) {}

  // The first bytes decide the compression; returns the plain bytes written.
  Result<uint64_t> run(CsvCompression* compression) {
    std::vector<char> block(kSpoolBlockBytes);
    size_t have = 0;
    bool eof = false;
    while (have < 4 && !eof) {  // enough bytes for the magic, or the end
      SHELF_ASSIGN_OR_RETURN(size_t n, read_some(block.data() + have, block.size() - have));
      eof = n == 0;
      have += n;
    }
    starts_with_magic(block.data(), have, compression);
    switch (*compression) {
      case CsvCompression::kNone:
        return copy(block, have, eof);
      case CsvCompression::kGzip:
        return gunzip(block, have, eof);
      case CsvCompression::kZstd:
        return unzstd(block, have, eof);
    }
    return Status::internal("unknown compression");
  }

 private:
  Result<size_t> read_some(char* out, size_t size) {
    for (;;) {
      ssize_t n = ::read(in_, out, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::from_errno("cannot read " + name_, errno);
      consumed_ += static_cast<uint64_t>(n);
      if (progress_) progress_(consumed_, total_);
      return static_cast<size_t>(n);
    }
  }

  Status emit(const char* data, size_t size) {
    written_ += size;
    return write_all(out_, data, size, name_);
  }

  Result<uint64_t> copy(std::vector<char>& block, size_t have, bool eof) {
    SHELF_RETURN_IF_ERROR(emit(block.data(), have));
    while (!eof) {
      SHELF_ASSIGN_OR_RETURN(size_t n, read_some(block.data(), block.size()));
      eof = n == 0;
      SHELF_RETURN_IF_ERROR(emit(block.data(), n));
    }
    return written_;
  }

  Status broken(const char* format, uint64_t offset, const std::string& detail) {
    return Status::invalid_argument(name_ + ": " + format + " at compressed byte " +
                                    std::to_string(offset) + (detail.empty() ? "" : ": " + detail));
  }

  // Every gzip member in turn (gzip files may be concatenated).
  Result<uint64_t> gunzip(std::vector<char>& block, size_t have, bool eof) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK) return Status::resource_exhausted("inflateInit2");
    std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&z, &inflateEnd);
    std::vector<char> out(kSpoolBlockBytes);
    uint64_t base = 0;  // compressed offset of block[0]
    bool member_done = false;
    for (;;) {
      z.next_in = reinterpret_cast<Bytef*>(block.data());
      z.avail_in = static_cast<uInt>(have);
      while (z.avail_in > 0) {
        if (member_done) {  // another member follows
          if (inflateReset(&z) != Z_OK) return Status::internal("inflateReset");
          member_done = false;
        }
        z.next_out = reinterpret_cast<Bytef*>(out.data());
        z.avail_out = static_cast<uInt>(out.size());
        const int rc = inflate(&z, Z_NO_FLUSH);
        const uint64_t at = base + (have - z.avail_in);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
          return broken("corrupt gzip data", at, z.msg ? z.msg : "");
        }
        SHELF_RETURN_IF_ERROR(emit(out.data(), out.size() - z.avail_out));
        if (rc == Z_STREAM_END) member_done = true;
        if (rc == Z_BUF_ERROR && z.avail_in > 0 && z.avail_out > 0) {
          return broken("corrupt gzip data", at, "no progress");
        }
      }
      base += have;
      if (eof) break;
      SHELF_ASSIGN_OR_RETURN(have, read_some(block.data(), block.size()));
      eof = have == 0;
    }
    // Drain what inflate still holds for the last member.
    while (!member_done) {
      z.next_out = reinterpret_cast<Bytef*>(out.data());
      z.avail_out = static_cast<uInt>(out.size());
      const int rc = inflate(&z, Z_FINISH);
      SHELF_RETURN_IF_ERROR(emit(out.data(), out.size() - z.avail_out));
      if (rc == Z_STREAM_END) break;
      if (rc == Z_DATA_ERROR) return broken("corrupt gzip data", base, z.msg ? z.msg : "");
      if (z.avail_out != 0) return broken("truncated gzip stream: it ends", base, "");
    }
    return written_;
  }

  Result<uint64_t> unzstd(std::vector<char>& block, size_t have, bool eof) {
    std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
    if (!ctx) return Status::resource_exhausted("ZSTD_createDCtx");
    std::vector<char> out(ZSTD_DStreamOutSize());
    uint64_t base = 0;
    size_t last = 0;  // 0: a frame just ended (or none began)
    for (;;) {
      ZSTD_inBuffer in{block.data(), have, 0};
      // Until the input is used up and the decoder holds nothing back (it
      // filled the whole output last time: call it again).
      bool full = false;
      while (in.pos < in.size || full) {
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        last = ZSTD_decompressStream(ctx.get(), &o, &in);
        if (ZSTD_isError(last)) {
          return broken("corrupt zstd data", base + in.pos, ZSTD_getErrorName(last));
        }
        SHELF_RETURN_IF_ERROR(emit(out.data(), o.pos));
        full = o.pos == o.size;
      }
      base += have;
      if (eof) break;
      SHELF_ASSIGN_OR_RETURN(have, read_some(block.data(), block.size()));
      eof = have == 0;
    }
    if (last != 0) return broken("truncated zstd stream: it ends", base, "");
    return written_;
  }

  int in_;
  int out_;
  const std::string& name_;
  uint64_t total_;
  const CsvSource::OnSpoolProgress& progress_;
  uint64_t consumed_ = 0;
  uint64_t written_ = 0;
};

Status make_blocking(int fd, const std::string& name) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    return Status::from_errno("cannot read " + name, errno);
  }
  return Status();
}

// A pipe (what `<(...)` and /dev/fd/N name) rather than a FIFO with a name
// in a file system: the kernel names it "pipe:[inode]".
bool is_anonymous_pipe(int fd) {
  char target[64];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target);
  return n >= 5 && std::string_view(target, 5) == "pipe:";
}

// A named FIFO opened without blocking: waits (bounded) until a writer sends
// data or goes away, then makes reads blocking again.
Status wait_for_writer(int fd, const std::string& name) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, kFifoWriterWaitMs);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return Status::from_errno("cannot wait for " + name, errno);
  if (rc == 0) {
    return Status::invalid_argument(
        name + " is a FIFO that nothing wrote to within " +
        std::to_string(kFifoWriterWaitMs / 1000) +
        " s; start the program that writes it first, or pipe it into 'shelf publish NAME -'");
  }
  return make_blocking(fd, name);
}

}  // namespace

Result<std::unique_ptr<CsvSource>> CsvSource::open(const std::string& path,
                                                   const OnSpoolProgress& progress) {
  std::unique_ptr<CsvSource> s(new CsvSource());
  const bool is_stdin = path == "-";
  s->name_ = is_stdin ? "<stdin>" : path;
  UniqueFd in;
  if (is_stdin) {
    if (::isatty(STDIN_FILENO)) {
      return Status::invalid_argument(
          "standard input is a terminal; pipe a CSV into it (e.g. zcat data.csv.gz | shelf "
          "publish NAME -)");
    }
    in.reset(::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0));
  } else {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is cleared below).
    in.reset(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  }
  if (!in.valid()) return Status::from_errno("cannot read " + s->name_, errno);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return Status::from_errno("cannot read " + s->name_, errno);
  if (S_ISDIR(st.st_mode)) {
    return Status::invalid_argument(s->name_ + " is a directory, not a CSV file");
  }
  if (S_ISREG(st.st_mode)) {
    const int flags = ::fcntl(in.get(), F_GETFL);
    if (flags >= 0) (void)::fcntl(in.get(), F_SETFL, flags & ~O_NONBLOCK);
    char head[4];
    const ssize_t n = ::pread(in.get(), head, sizeof head, 0);
    if (n < 0) return Status::from_errno("cannot read " + s->name_, errno);
    if (!starts_with_magic(head, static_cast<size_t>(n), &s->compression_)) {
      s->fd_ = std::move(in);
      s->size_ = static_cast<uint64_t>(st.st_size);
      return s;
    }
  } else if (S_ISFIFO(st.st_mode) && !is_stdin) {
    SHELF_RETURN_IF_ERROR(is_anonymous_pipe(in.get()) ? make_blocking(in.get(), s->name_)
                                                      : wait_for_writer(in.get(), s->name_));
  } else if (::isatty(in.get())) {
    return Status::invalid_argument(s->name_ + " is a terminal; give a file, a pipe or a FIFO");
  } else if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode)) {
    // A device (/dev/zero, a disk) has no end a CSV could have, on standard
    // input too (`< /dev/zero` would spool for ever).
    return Status::invalid_argument(s->name_ + " is a device, not a file, a pipe or a FIFO");
  }
  SHELF_ASSIGN_OR_RETURN(UniqueFd spool, make_spool_file());
  const uint64_t total = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  Spooler spooler(in.get(), spool.get(), s->name_, total, progress);
  SHELF_ASSIGN_OR_RETURN(s->size_, spooler.run(&s->compression_));
  s->fd_ = std::move(spool);
  s->spooled_ = true;
  return s;
}

Result<size_t> CsvSource::read_at(uint64_t offset, char* out, size_t length) const {
  size_t done = 0;
  while (done < length && offset + done < size_) {
    ssize_t n = ::pread(fd_.get(), out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::from_errno("cannot read " + name_, errno);
    if (n == 0) break;  // the file shrank: check_unchanged() says so
    done += static_cast<size_t>(n);
  }
  return done;
}

Status CsvSource::check_unchanged() const {
  if (spooled_) return Status();
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Status::from_errno("cannot read " + name_, errno);
  if (static_cast<uint64_t>(st.st_size) != size_) {
    return Status::invalid_argument(name_ + " changed while it was read: its size is " +
                                    std::to_string(st.st_size) + " bytes, it was " +
                                    std::to_string(size_));
  }
  return Status();
}

}  // namespace shelf::tools
