// CsvSource: the bytes of one CSV input of `shelf publish`, readable at any
// offset and as often as the parser needs, whatever the input was.
//
// A regular uncompressed file is read in place (pread). Everything else is
// read exactly once, in one streaming pass, into a private temporary file
// that is unlinked at once (so nothing is left behind, even after kill -9):
//   - "-" (standard input), a pipe, a FIFO, /dev/stdin, <(process
//     substitution) (a terminal or another device is refused);
//   - a gzip (.gz, magic 1f 8b) or zstd (.zst, magic 28 b5 2f fd) stream,
//     detected by its first bytes, not its name, and decompressed streaming.
// The parser then sees plain bytes, so a compressed or piped input gives the
// same dataset as the plain file, byte for byte. Memory stays bounded (one
// buffer of kSpoolBlockBytes); the disk holds the decompressed copy until
// the CsvSource is destroyed.
//
// Threads: read_at() may be called from many threads at once (pread); the
// rest is for the thread that opened the source.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <shelf/limits.h>
#include <shelf/result.h>

#include "base/unique_fd.h"

namespace shelf::tools {

// Read and decompression block of a spooled input.
constexpr size_t kSpoolBlockBytes = 1 << 20;

enum class CsvCompression { kNone, kGzip, kZstd };

class CsvSource {
 public:
  // Called as bytes arrive while a stream is spooled: (input bytes read so
  // far, input bytes in all, 0 when unknown).
  using OnSpoolProgress = std::function<void(uint64_t done, uint64_t total)>;

  // Opens `path` ("-": standard input). Errors name the path: cannot open,
  // a directory, a terminal or a device, a FIFO nobody writes to
  // within kFifoWriterWaitMs, a truncated or corrupt gzip/zstd stream (with
  // the compressed byte offset where it broke), a full temporary directory.
  static Result<std::unique_ptr<CsvSource>> open(const std::string& path,
                                                 const OnSpoolProgress& progress = {});

  // The name to put in messages: the path, or "<stdin>" for "-".
  const std::string& name() const { return name_; }
  // Plain CSV bytes available (after decompression).
  uint64_t size() const { return size_; }
  CsvCompression compression() const { return compression_; }
  // True when the bytes are shelf's private copy (they cannot change).
  bool spooled() const { return spooled_; }

  // Reads up to `length` bytes at `offset`; returns how many (short only at
  // the end). Thread-safe.
  Result<size_t> read_at(uint64_t offset, char* out, size_t length) const;

  // For a file read in place: fails ("NAME changed while it was read") when
  // its size is no longer what open() saw. (Its bytes are checked by the
  // reader's checksums; a touch that changes nothing is no change.)
  Status check_unchanged() const;

 private:
  CsvSource() = default;
  std::string name_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  CsvCompression compression_ = CsvCompression::kNone;
  bool spooled_ = false;
};

}  // namespace shelf::tools
