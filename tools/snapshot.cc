#include "tools/snapshot.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <shelf/limits.h>

#include "base/unique_fd.h"
#include "tools/progress.h"

namespace shelf::tools {

namespace {

// Save writes in pieces this large: both XXH3 states and the write() see the
// same bytes while they are in cache.
constexpr size_t kWriteChunk = 4u << 20;
// A manifest is a few lines per partition and column; anything larger than
// this is not one, and reading it whole could exhaust memory.
constexpr uint64_t kMaxManifestBytes = 256u << 20;
// An escaped name longer than this is cut and hashed (file names stop at 255
// bytes). Not kMaxNameBytes, though it has the same value: that bounds a
// dataset name, this the one file name its escaped form becomes, which
// percent-encoding can make three times longer. Changing it renames the
// directories of existing snapshots (docs/snapshot_format.md).
constexpr size_t kMaxEscapedName = 200;
constexpr const char* kManifest = "manifest";
constexpr const char* kBufferNames[3] = {"validity bitmap", "string offsets", "data"};

std::string hex16(uint64_t v) {
  char buf[17];
  static const char* digits = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, v >>= 4) buf[i] = digits[v & 15];
  buf[16] = '\0';
  return buf;
}

std::string percent_encode(std::string_view text) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '-' || (c == '.' && i > 0);
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= text.size()) return std::nullopt;
    auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
    if (ec != std::errc() || end != text.data() + i + 3) return std::nullopt;
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

// "snap/" -> "snap", so that the paths in messages read DIR/name, not DIR//name.
std::string without_trailing_slashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

Status errno_status(const std::string& what, int err) { return Status::from_errno(what, err); }

// write() until done; EINTR and short writes are retried.
Status write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot write " + path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status();
}

Status fsync_path(const std::string& path, bool directory) {
  UniqueFd fd(::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_status("cannot open " + path, errno);
  if (::fsync(fd.get()) != 0) return errno_status("cannot fsync " + path, errno);
  return Status();
}

// Takes the flock on DIR/<escaped>/.lock that keeps two saves of one
// dataset (or a save and a load) from meeting: a save removes the files its
// manifest no longer names.
Result<UniqueFd> lock_dataset_dir(const std::string& path, bool exclusive) {
  const std::string lock_path = path + "/.lock";
  UniqueFd fd(::open(lock_path.c_str(),
                     (exclusive ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    // A snapshot copied without its lock file loads fine.
    if (!exclusive && errno == ENOENT) return UniqueFd();
    return errno_status("cannot open " + lock_path, errno);
  }
  if (::flock(fd.get(), (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      // A load (shared) only meets a save; a save meets either.
      return Status::unavailable(path +
                                 (exclusive ? " is being saved or loaded" : " is being saved") +
                                 " by another shelf process; try again when it is done");
    }
    return errno_status("cannot lock " + lock_path, errno);
  }
  return fd;
}

Status check_dir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return Status::invalid_argument("snapshot directory " + dir +
                                      " does not exist; create it first (mkdir -p " + dir + ")");
    }
    return errno_status("cannot use snapshot directory " + dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::invalid_argument("snapshot directory " + dir + " is not a directory");
  }
  return Status();
}

// ---------------------------------------------------------------- save --

// A file being written in order, hashed as it goes.
class PartWriter {
 public:
  PartWriter(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {
    XXH3_64bits_reset(&state_);
  }
  uint64_t position() const { return position_; }
  const std::string& path() const { return path_; }

  // Zeros up to the next multiple of kBufferAlignment.
  Status align() {
    static const char zeros[kBufferAlignment] = {};
    const uint64_t pad = align_up(position_, kBufferAlignment) - position_;
    return write(zeros, pad);
  }
  // Writes `n` bytes of `data`; when `buffer_state` is given, hashes them into it too.
  Status write(const void* data, uint64_t n, XXH3_state_t* buffer_state = nullptr) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(n, kWriteChunk));
      XXH3_64bits_update(&state_, p, piece);
      if (buffer_state != nullptr) XXH3_64bits_update(buffer_state, p, piece);
      SHELF_RETURN_IF_ERROR(write_all(fd_.get(), p, piece, path_));
      p += piece;
      n -= piece;
      position_ += piece;
    }
    return Status();
  }
  // fsync and close: the data is on disk once this returns OK.
  Status finish() {
    if (::fsync(fd_.get()) != 0) return errno_status("cannot fsync " + path_, errno);
    if (::close(fd_.release()) != 0) return errno_status("cannot close " + path_, errno);
    return Status();
  }
  uint64_t digest() const { return XXH3_64bits_digest(&state_); }

 private:
  UniqueFd fd_;
  std::string path_;
  uint64_t position_ = 0;
  XXH3_state_t state_;
};

// A name for this save's files that no earlier save of the dataset used.
std::string new_generation() {
  const int64_t t = std::chrono::system_clock::now().time_since_epoch().count();
  const uint64_t seed[3] = {
      static_cast<uint64_t>(t), static_cast<uint64_t>(::getpid()),
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  return hex16(XXH3_64bits(seed, sizeof seed));
}

std::string part_file_name(const std::string& generation, uint64_t partition) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "-%06llu.part", static_cast<unsigned long long>(partition));
  return generation + buf;
}

// Removes every .part file of `path` that `keep` does not hold, and manifest
// temporaries: what interrupted or earlier saves left. Best effort.
void remove_stale_files(const std::string& path, const std::set<std::string>& keep) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(path.c_str()), &::closedir);
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d.get())) {
    const std::string n = e->d_name;
    const bool part = n.size() > 5 && n.compare(n.size() - 5, 5, ".part") == 0;
    const bool temp = n.rfind(".manifest.tmp", 0) == 0;
    if ((part && !keep.count(n)) || temp) stale.push_back(n);
  }
  for (const std::string& n : stale) ::unlink((path + "/" + n).c_str());
}

// The manifest's lines before the partitions: docs/snapshot_format.md.
std::string manifest_head(const Dataset& ds) {
  const Schema& schema = ds.schema();
  std::string manifest = "shelf-snapshot " + std::to_string(kSnapshotVersion) + "\n";
  manifest += "name " + percent_encode(ds.name()) + "\n";
  manifest += "created_ns " + std::to_string(ds.created_ns()) + "\n";
  manifest += "columns " + std::to_string(schema.size()) + "\n";
  for (const Field& f : schema) {
    manifest += "column " + percent_encode(f.name) + " " + std::string(type_name(f.type)) + "\n";
  }
  manifest += "partitions " + std::to_string(ds.num_partitions()) + "\n";
  return manifest;
}

// Writes partition `p` of `ds` to the new file `file` in `path` (named in
// `written` once it exists), checking each buffer against the checksum taken
// at publish, and appends its manifest lines to `manifest`. Returns the
// file's size.
Result<uint64_t> save_partition(const Dataset& ds, uint64_t p, const std::string& path,
                                const std::string& file, std::set<std::string>& written,
                                std::string& manifest) {
  const Schema& schema = ds.schema();
  const std::string file_path = path + "/" + file;
  UniqueFd fd(::open(file_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_status("cannot create " + file_path, errno);
  written.insert(file);
  PartWriter out(std::move(fd), file_path);
  std::string chunks;
  for (size_t c = 0; c < schema.size(); ++c) {
    const ColumnView col = ds.column(p, c);
    const std::span<const uint8_t> validity = col.validity_bitmap();
    const std::span<const int64_t> offsets = col.string_offsets();
    const std::span<const std::byte> data = col.data();
    const void* buffers[3] = {validity.data(), offsets.data(), data.data()};
    const uint64_t lengths[3] = {validity.size_bytes(), offsets.size_bytes(), data.size_bytes()};
    chunks += "chunk " + std::to_string(col.null_count());
    for (int b = 0; b < 3; ++b) {
      SHELF_RETURN_IF_ERROR(out.align());
      const uint64_t offset = out.position();
      XXH3_state_t buffer_state;
      XXH3_64bits_reset(&buffer_state);
      SHELF_RETURN_IF_ERROR(out.write(buffers[b], lengths[b], &buffer_state));
      const uint64_t recorded = ds.checksum(p, c, b);
      // Publish records 0 for an empty buffer.
      if (lengths[b] > 0 && XXH3_64bits_digest(&buffer_state) != recorded) {
        return Status::corruption("dataset '" + ds.name() + "', partition " + std::to_string(p) +
                                  ", column '" + schema[c].name + "': the " + kBufferNames[b] +
                                  " in shared memory no longer matches the checksum taken at "
                                  "publish; not saved");
      }
      chunks +=
          " " + std::to_string(offset) + " " + std::to_string(lengths[b]) + " " + hex16(recorded);
    }
    chunks += "\n";
  }
  SHELF_RETURN_IF_ERROR(out.finish());
  manifest += "partition " + std::to_string(ds.num_rows(p)) + " " + file + " " +
              std::to_string(out.position()) + " " + hex16(out.digest()) + "\n" + chunks;
  return out.position();
}

// Writes `manifest` durably beside the final one and renames it into place:
// the commit of a save. On failure the old manifest (if any) stays.
Status commit_manifest(const std::string& path, const std::string& manifest) {
  const std::string temp = path + "/.manifest.tmp";
  {
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return errno_status("cannot create " + temp, errno);
    PartWriter out(std::move(fd), temp);
    SHELF_RETURN_IF_ERROR(out.write(manifest.data(), manifest.size()));
    SHELF_RETURN_IF_ERROR(out.finish());
  }
  const std::string final_manifest = path + "/" + kManifest;
  if (::rename(temp.c_str(), final_manifest.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return errno_status("cannot rename " + temp + " to " + final_manifest, err);
  }
  return Status();
}

Status save_dataset(const Dataset& ds, const std::string& dir, SnapshotEntry* entry,
                    Progress* progress) {
  const std::string path = dir + "/" + escape_name(ds.name());
  entry->name = ds.name();
  entry->path = path;
  // Until the manifest is renamed into place the files this save writes are
  // garbage: remove them on any failure, so a failed save leaves the old
  // snapshot as it was, or, for a first save, no directory at all (a
  // directory without a manifest would make `shelf load DIR` refuse).
  std::set<std::string> written;
  bool created = false, committed = false;
  struct Cleanup {
    const std::string& path;
    const std::set<std::string>& files;
    const bool& created;
    const bool& committed;
    ~Cleanup() {
      if (committed) return;
      for (const std::string& f : files) ::unlink((path + "/" + f).c_str());
      if (created) {
        ::unlink((path + "/.lock").c_str());
        ::rmdir(path.c_str());
      }
    }
  } cleanup{path, written, created, committed};
  // Owner-only, like the daemon's socket directory: a snapshot holds the
  // datasets' contents, and other users cannot read them in shared memory.
  if (::mkdir(path.c_str(), 0700) == 0) {
    created = true;
    // The new directory's entry must be on disk before the manifest inside it counts.
    SHELF_RETURN_IF_ERROR(fsync_path(dir, true));
  } else if (errno != EEXIST) {
    return errno_status("cannot create " + path, errno);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::invalid_argument(path + " exists and is not a directory");
  }
  SHELF_ASSIGN_OR_RETURN(UniqueFd lock, lock_dataset_dir(path, /*exclusive=*/true));

  std::string manifest = manifest_head(ds);
  const std::string generation = new_generation();
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    SHELF_ASSIGN_OR_RETURN(
        uint64_t bytes,
        save_partition(ds, p, path, part_file_name(generation, p), written, manifest));
    entry->bytes += bytes;
    if (progress) {
      progress->add_bytes(bytes);
      progress->add_rows(ds.num_rows(p));
    }
  }
  // The .part files' names must be on disk before a manifest that names them.
  SHELF_RETURN_IF_ERROR(fsync_path(path, true));
  manifest += "end " + hex16(XXH3_64bits(manifest.data(), manifest.size())) + "\n";
  SHELF_RETURN_IF_ERROR(commit_manifest(path, manifest));
  committed = true;
  // The rename is the commit; it is durable once the directory is.
  SHELF_RETURN_IF_ERROR(fsync_path(path, true));
  remove_stale_files(path, written);
  entry->partitions = ds.num_partitions();
  entry->rows = ds.num_rows();
  return Status();
}

// ---------------------------------------------------------------- load --

struct BufferEntry {
  uint64_t offset = 0, length = 0, xxh3 = 0;
};
struct ChunkEntry {
  uint64_t nulls = 0;
  BufferEntry buffers[3];
};
struct PartitionEntry {
  uint64_t rows = 0;
  std::string file;
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
  std::vector<ChunkEntry> chunks;
};
struct Manifest {
  std::string path;  // the dataset's directory
  std::string name;
  Schema schema;
  std::vector<PartitionEntry> partitions;
  uint64_t bytes = 0;
  uint64_t rows = 0;
};

// Splits a line on single spaces.
std::vector<std::string_view> tokens(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = line.find(' ', start);
    if (end == std::string_view::npos) end = line.size();
    out.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool parse_u64(std::string_view text, uint64_t* out, int base = 10) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out, base);
  return ec == std::errc() && end == text.data() + text.size();
}

bool valid_part_file_name(std::string_view n) {
  if (n.empty() || n.front() == '.' || n.size() > 255) return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// Bytes of fixed-width or raw-bytes data `rows` rows take; 0 for strings.
uint64_t fixed_data_bytes(Type type, uint64_t rows) {
  return type == Type::kBytes ? rows : rows * fixed_width(type);
}

Status manifest_damaged(const std::string& path, const std::string& why) {
  return Status::corruption(path + " is damaged: " + why + "; nothing was loaded");
}

// The whole manifest of `dataset_dir`, at most kMaxManifestBytes.
Result<std::string> read_manifest_text(const std::string& dataset_dir, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      return Status::corruption(path + " is missing: " + dataset_dir +
                                " is not a complete snapshot (an interrupted first save leaves "
                                "none; save again or remove the directory)");
    }
    return errno_status("cannot read " + path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errno_status("cannot stat " + path, errno);
  if (static_cast<uint64_t>(st.st_size) > kMaxManifestBytes) {
    return Status::corruption(path + " is not a shelf snapshot manifest (" +
                              std::to_string(st.st_size) + " bytes is too large for one)");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status("cannot read " + path, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  return text;
}

// Checks the first line (magic and version) and the last ('end' and the
// XXH3 of all before it) of manifest `text`; returns the lines they enclose
// with the first one, each ending in '\n'.
Result<std::string_view> checked_manifest_body(const std::string& path, const std::string& text) {
  const std::string magic = "shelf-snapshot ";
  if (text.rfind(magic, 0) != 0) {
    return Status::corruption(path + " is not a shelf snapshot manifest (it does not start with '" +
                              magic + "<version>'); nothing was loaded");
  }
  const size_t first_end = text.find('\n');
  const std::string version = text.substr(
      magic.size(), (first_end == std::string::npos ? text.size() : first_end) - magic.size());
  if (version != std::to_string(kSnapshotVersion)) {
    std::string shown = version.substr(0, 20);
    return Status::invalid_argument(path + " has snapshot format version '" + shown +
                                    "'; this shelf reads version " +
                                    std::to_string(kSnapshotVersion) + " only; nothing was loaded");
  }
  // The last line checks the rest: a manifest cut short or edited is refused.
  if (text.empty() || text.back() != '\n') {
    return manifest_damaged(path, "it is cut short (no final newline)");
  }
  const size_t end_line = text.rfind('\n', text.size() - 2);
  if (end_line == std::string::npos || text.compare(end_line + 1, 4, "end ") != 0) {
    return manifest_damaged(path, "it is cut short (no 'end' line)");
  }
  uint64_t want = 0;
  if (!parse_u64(std::string_view(text).substr(end_line + 5, text.size() - end_line - 6), &want,
                 16)) {
    return manifest_damaged(path, "its 'end' line holds no checksum");
  }
  const std::string_view body(text.data(), end_line + 1);
  if (XXH3_64bits(body.data(), body.size()) != want) {
    return manifest_damaged(path, "its checksum does not match its contents");
  }
  return body;
}

// Parses a manifest's body line by line (docs/snapshot_format.md); every
// line is checked, in order, and an error names the line.
class ManifestParser {
 public:
  ManifestParser(const std::string& path, std::string_view body) : path_(path) {
    for (size_t start = 0; start < body.size();) {
      const size_t nl = body.find('\n', start);
      lines_.push_back(body.substr(start, nl - start));
      start = nl + 1;
    }
  }

  Result<Manifest> parse(const std::string& dataset_dir) {
    Manifest m;
    m.path = dataset_dir;
    SHELF_ASSIGN_OR_RETURN(uint64_t partitions, parse_head(m));
    // Each partition takes 1 + columns lines: a count that promises more lines
    // than the manifest has is refused before anything is reserved for it.
    if (partitions > (lines_.size() - li_) / (1 + m.schema.size())) {
      return error("it promises " + std::to_string(partitions) + " partitions but holds fewer");
    }
    std::set<std::string> files;
    for (uint64_t p = 0; p < partitions; ++p) {
      SHELF_ASSIGN_OR_RETURN(PartitionEntry pe, parse_partition(m.schema, p, files));
      m.bytes += pe.bytes;
      m.rows += pe.rows;
      m.partitions.push_back(std::move(pe));
    }
    if (li_ != lines_.size()) return error("unexpected text after the last partition");
    return m;
  }

 private:
  Status error(const std::string& what) const {
    return manifest_damaged(path_, "line " + std::to_string(li_ + 1) + ": " + what);
  }
  // The tokens of the current line if it is `keyword` and `count` tokens.
  std::optional<std::vector<std::string_view>> next(std::string_view keyword, size_t count) const {
    if (li_ >= lines_.size()) return std::nullopt;
    auto t = tokens(lines_[li_]);
    if (t.size() != count || t[0] != keyword) return std::nullopt;
    return t;
  }

  // name, created_ns, columns and each column into `m`; returns the count
  // on the 'partitions' line.
  Result<uint64_t> parse_head(Manifest& m) {
    auto t = next("name", 2);
    std::optional<std::string> name;
    if (!t || !(name = percent_decode((*t)[1])) || name->empty()) {
      return error("expected 'name <escaped name>'");
    }
    m.name = *name;
    ++li_;
    int64_t created_ns = 0;
    if (!(t = next("created_ns", 2)) || (*t)[1].empty() ||
        std::from_chars((*t)[1].data(), (*t)[1].data() + (*t)[1].size(), created_ns).ptr !=
            (*t)[1].data() + (*t)[1].size()) {
      return error("expected 'created_ns <number>'");
    }
    ++li_;
    uint64_t columns = 0;
    if (!(t = next("columns", 2)) || !parse_u64((*t)[1], &columns) || columns == 0 ||
        columns > kMaxColumns) {
      return error("expected 'columns <1.." + std::to_string(kMaxColumns) + ">'");
    }
    ++li_;
    for (uint64_t c = 0; c < columns; ++c, ++li_) {
      std::optional<std::string> column_name;
      std::optional<Type> type;
      if (!(t = next("column", 3)) || !(column_name = percent_decode((*t)[1])) ||
          !(type = parse_type((*t)[2]))) {
        return error("expected 'column <escaped name> <type>'");
      }
      m.schema.push_back(Field{*column_name, *type});
    }
    uint64_t partitions = 0;
    if (!(t = next("partitions", 2)) || !parse_u64((*t)[1], &partitions)) {
      return error("expected 'partitions <count>'");
    }
    ++li_;
    return partitions;
  }

  // A 'partition' line and its 'chunk' lines, one per column of `schema`;
  // its file must not be one of `files` (it joins them).
  Result<PartitionEntry> parse_partition(const Schema& schema, uint64_t p,
                                         std::set<std::string>& files) {
    PartitionEntry pe;
    auto t = next("partition", 5);
    if (!t || !parse_u64((*t)[1], &pe.rows) || !valid_part_file_name((*t)[2]) ||
        !parse_u64((*t)[3], &pe.bytes) || !parse_u64((*t)[4], &pe.xxh3, 16) ||
        pe.rows > kMaxRowsPerPartition) {
      return error("expected 'partition <rows> <file> <bytes> <xxh3>'");
    }
    pe.file = std::string((*t)[2]);
    if (!files.insert(pe.file).second) return error("file " + pe.file + " appears twice");
    ++li_;
    // Where each buffer must be: the layout rule of save, recomputed.
    uint64_t position = 0;
    for (size_t c = 0; c < schema.size(); ++c, ++li_) {
      SHELF_ASSIGN_OR_RETURN(ChunkEntry ce, parse_chunk(pe, c, schema[c].type, position));
      pe.chunks.push_back(ce);
    }
    if (position != pe.bytes) {
      return error("partition " + std::to_string(p) + " says its file has " +
                   std::to_string(pe.bytes) + " bytes but its buffers end at " +
                   std::to_string(position));
    }
    return pe;
  }

  // The 'chunk' line of column `c` of partition `pe`: its buffers must start
  // at `position` (advanced past them) and have the sizes `type` gives.
  Result<ChunkEntry> parse_chunk(const PartitionEntry& pe, size_t c, Type type,
                                 uint64_t& position) {
    ChunkEntry ce;
    auto t = next("chunk", 11);
    if (!t || !parse_u64((*t)[1], &ce.nulls)) {
      return error("expected 'chunk <nulls> <offset> <length> <xxh3> x3'");
    }
    for (int b = 0; b < 3; ++b) {
      BufferEntry& be = ce.buffers[b];
      if (!parse_u64((*t)[2 + 3 * b], &be.offset) || !parse_u64((*t)[3 + 3 * b], &be.length) ||
          !parse_u64((*t)[4 + 3 * b], &be.xxh3, 16)) {
        return error("expected 'chunk <nulls> <offset> <length> <xxh3> x3'");
      }
      position = align_up(position, kBufferAlignment);
      if (be.offset != position || be.length > pe.bytes - std::min(pe.bytes, be.offset)) {
        return error("the " + std::string(kBufferNames[b]) + " of column " + std::to_string(c) +
                     " is not where the format puts it");
      }
      position += be.length;
    }
    const uint64_t bitmap = (pe.rows + 7) / 8;
    const uint64_t v = ce.buffers[0].length, o = ce.buffers[1].length, d = ce.buffers[2].length;
    const bool nulls_ok =
        type == Type::kBytes
            ? ce.nulls == 0 && v == 0
            : (ce.nulls == 0 && v == 0) || (ce.nulls > 0 && ce.nulls <= pe.rows && v == bitmap);
    const bool offsets_ok = type == Type::kString ? o == (pe.rows + 1) * 8 : o == 0;
    const bool data_ok = type == Type::kString || d == fixed_data_bytes(type, pe.rows);
    if (!nulls_ok || !offsets_ok || !data_ok) {
      return error("the buffer sizes of column " + std::to_string(c) + " do not fit " +
                   std::to_string(pe.rows) + " rows of " + std::string(type_name(type)));
    }
    return ce;
  }

  const std::string& path_;
  std::vector<std::string_view> lines_;
  size_t li_ = 1;  // the current line; line 0 is the version, checked already
};

Result<Manifest> read_manifest(const std::string& dataset_dir) {
  const std::string path = dataset_dir + "/" + kManifest;
  SHELF_ASSIGN_OR_RETURN(std::string text, read_manifest_text(dataset_dir, path));
  SHELF_ASSIGN_OR_RETURN(std::string_view body, checked_manifest_body(path, text));
  return ManifestParser(path, body).parse(dataset_dir);
}

// A read-only mapping of a whole file; unmaps itself.
class FileMapping {
 public:
  FileMapping() = default;
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  static Status map(const std::string& path, uint64_t want_bytes, FileMapping* out) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
      if (errno == ENOENT) {
        return Status::corruption(path + " is missing; nothing was loaded");
      }
      return errno_status("cannot read " + path, errno);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return errno_status("cannot stat " + path, errno);
    if (static_cast<uint64_t>(st.st_size) != want_bytes) {
      return Status::corruption(
          path + " has " + std::to_string(st.st_size) + " bytes; its manifest says " +
          std::to_string(want_bytes) +
          (static_cast<uint64_t>(st.st_size) < want_bytes ? " (truncated)" : "") +
          "; nothing was loaded");
    }
    if (want_bytes == 0) return Status();
    void* p = ::mmap(nullptr, want_bytes, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) return errno_status("cannot map " + path, errno);
    // One sequential pass: read ahead generously, drop behind.
    ::madvise(p, want_bytes, MADV_SEQUENTIAL);
    ::madvise(p, want_bytes, MADV_WILLNEED);
    out->data_ = p;
    out->size_ = want_bytes;
    return Status();
  }
  const std::byte* data() const { return static_cast<const std::byte*>(data_); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Checks the file of one partition and copies it into a new partition of `table`.
Status load_partition(const Manifest& m, const PartitionEntry& pe, TableBuilder& table) {
  const std::string path = m.path + "/" + pe.file;
  FileMapping file;
  SHELF_RETURN_IF_ERROR(FileMapping::map(path, pe.bytes, &file));
  const std::byte* base = file.data();
  if (XXH3_64bits(base, pe.bytes) != pe.xxh3) {
    // Say where: the buffer whose own checksum fails, else the padding.
    for (size_t c = 0; c < pe.chunks.size(); ++c) {
      for (int b = 0; b < 3; ++b) {
        const BufferEntry& be = pe.chunks[c].buffers[b];
        if (be.length > 0 && XXH3_64bits(base + be.offset, be.length) != be.xxh3) {
          return Status::corruption(path + " is damaged: the " + kBufferNames[b] + " of column '" +
                                    m.schema[c].name +
                                    "' does not match its checksum; nothing was loaded");
        }
      }
    }
    return Status::corruption(path +
                              " is damaged: its checksum does not match the manifest; nothing "
                              "was loaded");
  }
  std::vector<ColumnData> columns(pe.chunks.size());
  for (size_t c = 0; c < pe.chunks.size(); ++c) {
    const ChunkEntry& ce = pe.chunks[c];
    ColumnData& cd = columns[c];
    cd.validity = ce.buffers[0].length
                      ? reinterpret_cast<const uint8_t*>(base + ce.buffers[0].offset)
                      : nullptr;
    cd.data = ce.buffers[2].length ? base + ce.buffers[2].offset : nullptr;
    cd.data_bytes = ce.buffers[2].length;
    if (m.schema[c].type == Type::kString) {
      // Offsets are 64-byte aligned in the file, so this view is aligned too.
      const auto* offsets = reinterpret_cast<const int64_t*>(base + ce.buffers[1].offset);
      // Checksums prove the bytes are the ones saved; these checks keep a
      // snapshot crafted to match its checksums from publishing nonsense.
      bool ok = offsets[0] == 0 && static_cast<uint64_t>(offsets[pe.rows]) == cd.data_bytes;
      for (uint64_t r = 0; ok && r < pe.rows; ++r) ok = offsets[r] <= offsets[r + 1];
      if (!ok) {
        return Status::corruption(path + ": the string offsets of column '" + m.schema[c].name +
                                  "' are not in order; nothing was loaded");
      }
      cd.offsets = offsets;
    }
  }
  return table.append_partition(pe.rows, columns);
}

}  // namespace

std::string escape_name(std::string_view name) {
  std::string escaped = percent_encode(name);
  if (escaped.size() <= kMaxEscapedName) return escaped;
  // Cut at a whole escape, then make it unique again with a hash of the name.
  size_t cut = kMaxEscapedName - 17;
  while (cut > 0 && (escaped[cut - 1] == '%' || (cut > 1 && escaped[cut - 2] == '%'))) --cut;
  return escaped.substr(0, cut) + "~" + hex16(XXH3_64bits(name.data(), name.size()));
}

Result<SnapshotReport> save_snapshot(Client& client, const std::string& dir_arg,
                                     const std::vector<std::string>& names, Progress* progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::string dir = without_trailing_slashes(dir_arg);
  SHELF_RETURN_IF_ERROR(check_dir(dir));
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return errno_status("cannot write into snapshot directory " + dir, errno);
  }
  SnapshotReport report;
  // Lease every dataset first: the set saved is the one published now, and
  // a named dataset that does not exist fails the save before any write.
  std::vector<Dataset> datasets;
  if (names.empty()) {
    SHELF_ASSIGN_OR_RETURN(std::vector<DatasetInfo> all, client.list_datasets());
    for (const DatasetInfo& info : all) {
      if (info.view) {
        report.views.push_back(info.name);
        continue;
      }
      auto ds = client.get_dataset(info.name);
      if (ds.ok()) {
        datasets.push_back(std::move(ds).value());
      } else if (ds.status().is_not_found()) {
        report.skipped.push_back(info.name);  // unpublished since the listing
      } else {
        return ds.status();
      }
    }
  } else {
    std::set<std::string> seen;
    for (const std::string& name : names) {
      if (!seen.insert(name).second) continue;
      SHELF_ASSIGN_OR_RETURN(Dataset ds, client.get_dataset(name));
      if (ds.view_definition()) {
        return Status::invalid_argument(
            "'" + name +
            "' is a view: it holds no data, and a snapshot saves data; save its base, or "
            "`shelf persist " +
            name + " NEW_NAME` and save that");
      }
      datasets.push_back(std::move(ds));
    }
  }
  if (progress) {
    SHELF_ASSIGN_OR_RETURN(std::vector<DatasetInfo> infos, client.list_datasets());
    uint64_t total = 0;
    for (const Dataset& ds : datasets) {
      for (const DatasetInfo& info : infos) total += info.name == ds.name() ? info.data_bytes : 0;
    }
    progress->set_total(total);
  }
  for (const Dataset& ds : datasets) {
    SnapshotEntry entry;
    SHELF_RETURN_IF_ERROR(save_dataset(ds, dir, &entry, progress));
    report.bytes += entry.bytes;
    report.datasets.push_back(std::move(entry));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

Result<SnapshotReport> load_snapshot(Client& client, const std::string& dir_arg,
                                     const std::vector<std::string>& names, bool override_existing,
                                     Progress* progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::string dir = without_trailing_slashes(dir_arg);
  SHELF_RETURN_IF_ERROR(check_dir(dir));
  std::vector<std::string> dataset_dirs;
  std::vector<std::string> requested;  // the name asked for in each of dataset_dirs, if any
  if (names.empty()) {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
    if (!d) return errno_status("cannot list " + dir, errno);
    while (dirent* e = ::readdir(d.get())) {
      const std::string n = e->d_name;
      if (n.empty() || n[0] == '.') continue;
      struct stat st;
      const std::string p = dir + "/" + n;
      if (::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) dataset_dirs.push_back(p);
    }
    if (dataset_dirs.empty()) {
      return Status::not_found("no dataset snapshots in " + dir + " (`shelf save " + dir +
                               "` makes them)");
    }
    std::sort(dataset_dirs.begin(), dataset_dirs.end());
  } else {
    std::set<std::string> seen;
    for (const std::string& name : names) {
      if (!seen.insert(name).second) continue;
      const std::string p = dir + "/" + escape_name(name);
      struct stat st;
      if (::stat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return Status::not_found("no snapshot of '" + name + "' in " + dir + " (no directory " + p +
                                 ")");
      }
      dataset_dirs.push_back(p);
      requested.push_back(name);
    }
  }

  // Every manifest first: a bad one fails the load before any memory is taken.
  std::vector<UniqueFd> locks;
  std::vector<Manifest> manifests;
  std::map<std::string, std::string> where;  // name -> directory
  for (size_t i = 0; i < dataset_dirs.size(); ++i) {
    SHELF_ASSIGN_OR_RETURN(UniqueFd lock, lock_dataset_dir(dataset_dirs[i], false));
    locks.push_back(std::move(lock));
    SHELF_ASSIGN_OR_RETURN(Manifest m, read_manifest(dataset_dirs[i]));
    if (!requested.empty() && m.name != requested[i]) {
      return Status::corruption(dataset_dirs[i] + "/" + kManifest + " holds dataset '" + m.name +
                                "', not '" + requested[i] + "'; nothing was loaded");
    }
    if (auto [it, fresh] = where.emplace(m.name, m.path); !fresh) {
      return Status::invalid_argument("both " + it->second + " and " + m.path + " hold dataset '" +
                                      m.name + "'; nothing was loaded");
    }
    // Sizes before data: a truncated file fails the load before memory is taken.
    for (const PartitionEntry& pe : m.partitions) {
      const std::string path = m.path + "/" + pe.file;
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return Status::corruption(path + " is missing; nothing was loaded");
        return errno_status("cannot stat " + path, errno);
      }
      if (static_cast<uint64_t>(st.st_size) != pe.bytes) {
        return Status::corruption(
            path + " has " + std::to_string(st.st_size) + " bytes; its manifest says " +
            std::to_string(pe.bytes) +
            (static_cast<uint64_t>(st.st_size) < pe.bytes ? " (truncated)" : "") +
            "; nothing was loaded");
      }
    }
    manifests.push_back(std::move(m));
  }
  if (!override_existing) {
    // Publish would refuse too, but only after every byte was read.
    SHELF_ASSIGN_OR_RETURN(std::vector<DatasetInfo> published, client.list_datasets());
    for (const DatasetInfo& info : published) {
      if (where.count(info.name)) {
        return Status::already_exists("dataset '" + info.name +
                                      "' already exists; unpublish it or load with --override; "
                                      "nothing was loaded");
      }
    }
  }

  std::vector<TableBuilder> tables;
  tables.reserve(manifests.size());
  if (progress) {
    uint64_t total = 0;
    for (const Manifest& m : manifests) total += m.bytes;
    progress->set_total(total);
  }
  for (const Manifest& m : manifests) {
    SHELF_ASSIGN_OR_RETURN(TableBuilder table, client.create_table(m.schema));
    for (const PartitionEntry& pe : m.partitions) {
      SHELF_RETURN_IF_ERROR(load_partition(m, pe, table));
      if (progress) {
        progress->add_bytes(pe.bytes);
        progress->add_rows(pe.rows);
      }
    }
    tables.push_back(std::move(table));
  }
  std::vector<NamedTable> named;
  for (size_t i = 0; i < manifests.size(); ++i) named.push_back({manifests[i].name, &tables[i]});
  PublishOptions options;
  options.override_existing = override_existing;
  SHELF_RETURN_IF_ERROR(client.publish_datasets(named, options));

  SnapshotReport report;
  for (const Manifest& m : manifests) {
    report.datasets.push_back(SnapshotEntry{m.name, m.path, m.partitions.size(), m.rows, m.bytes});
    report.bytes += m.bytes;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace shelf::tools
