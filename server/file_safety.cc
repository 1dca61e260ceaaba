#include "server/file_safety.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string_view>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/log.h"

namespace shelf::server {

namespace {

std::string kind_of(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symlink";
  if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// What to do about a file shelfd will not touch.
Status not_ours(const std::string& path, const std::string& what, const std::string& expected,
                const std::string& option) {
  return Status::already_exists(path + " is " + what + ", not " + expected +
                                "; shelfd never replaces or alters a file it did not create: " +
                                "choose another " + option + " or move that file away");
}

// One directory of the chain: ours or root's, and writable by nobody else
// unless sticky.
Status check_one_directory(const std::string& dir, const struct stat& st) {
  const auto fix = "; choose a --socket in a directory only you can write";
  if (!S_ISDIR(st.st_mode)) return Status::permission_denied(dir + " is not a directory" + fix);
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return Status::permission_denied(dir + " belongs to uid " + std::to_string(st.st_uid) +
                                     ", neither shelfd's user nor root" + fix);
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return Status::permission_denied(dir + " (mode " + mode_text(st.st_mode) +
                                     ") is writable by other users and not sticky, so they " +
                                     "could swap what is inside it" + fix);
  }
  return Status();
}

// Reads the first bytes of `fd` (a regular file open for reading) from offset 0.
Result<std::string> head_of(int fd, size_t bytes, const std::string& path) {
  std::string text(bytes, '\0');
  ssize_t n = ::pread(fd, text.data(), bytes, 0);
  if (n < 0) return Status::from_errno("read " + path, errno);
  text.resize(static_cast<size_t>(n));
  return text;
}

// Opens `path` without following a symlink and without blocking on a FIFO
// or device, and checks that what is there is a regular file of our user.
// `looks_ours` decides, from an existing file's first bytes, whether shelfd
// made it.
Result<UniqueFd> open_own_file(const std::string& path, int flags, const std::string& option,
                               const std::string& what, bool (*looks_ours)(std::string_view)) {
  UniqueFd fd(::open(path.c_str(), flags | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.valid()) return fd;
  if (errno != EEXIST) return Status::from_errno("create " + what + " " + path, errno);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::from_errno("stat " + path, errno);
  const std::string expected = "a shelfd " + what;
  if (!S_ISREG(st.st_mode)) return not_ours(path, kind_of(st.st_mode), expected, option);
  fd.reset(::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) return Status::from_errno("open " + what + " " + path, errno);
  struct stat by_fd;
  if (::fstat(fd.get(), &by_fd) != 0) return Status::from_errno("stat " + path, errno);
  if (!S_ISREG(by_fd.st_mode)) return not_ours(path, kind_of(by_fd.st_mode), expected, option);
  if (by_fd.st_uid != ::geteuid()) {
    return not_ours(path, "a file of uid " + std::to_string(by_fd.st_uid), expected, option);
  }
  SHELF_ASSIGN_OR_RETURN(std::string head, head_of(fd.get(), 64, path));
  if (!looks_ours(head)) {
    return not_ours(path, "a regular file with other content", expected, option);
  }
  // Regular files never block; clear O_NONBLOCK anyway for plain writes.
  (void)::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd;
}

// A shelfd lock file holds a pid and a newline, or nothing (a daemon died
// between creating and writing it).
bool looks_like_lock(std::string_view text) {
  if (text.empty()) return true;
  if (text.size() > 21 || text.back() != '\n') return false;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  return text.size() > 1;
}

// A shelfd log starts with a line like "2026-11-25T16:40:01Z shelfd[123] ".
bool looks_like_log(std::string_view text) {
  if (text.empty()) return true;
  return text.size() >= 29 && text[4] == '-' && text[10] == 'T' && text[19] == 'Z' &&
         text.substr(20, 7) == " shelfd";
}

}  // namespace

Status check_directory_chain(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return Status::from_errno("stat " + dir, errno);
  if (S_ISLNK(st.st_mode)) {
    return Status::permission_denied(
        dir + " is a symlink; choose a --socket in a real directory only you can write");
  }
  SHELF_RETURN_IF_ERROR(check_one_directory(dir, st));
  // The ancestors, as the kernel resolves them: whoever may rename one of
  // them may put another directory in our directory's place.
  char real[PATH_MAX];
  if (::realpath(dir.c_str(), real) == nullptr) return Status::from_errno("resolve " + dir, errno);
  for (std::string d = real; d != "/";) {
    const auto up = d.rfind('/');
    d = up == 0 ? "/" : d.substr(0, up);
    if (::stat(d.c_str(), &st) != 0) return Status::from_errno("stat " + d, errno);
    Status s = check_one_directory(d, st);
    if (!s.ok()) {
      return Status::permission_denied("the socket directory " + dir +
                                       " is not safe: its ancestor " + s.message());
    }
  }
  return Status();
}

Status clear_stale_socket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status();
    return Status::from_errno("stat " + path, errno);
  }
  const char* expected = "a socket left by a shelfd that is gone";
  if (!S_ISSOCK(st.st_mode)) return not_ours(path, kind_of(st.st_mode), expected, "--socket");
  if (st.st_uid != ::geteuid()) {
    return not_ours(path, "a socket of uid " + std::to_string(st.st_uid), expected, "--socket");
  }
  // A socket whose process is gone refuses connections; one that accepts
  // (or whose queue is full) has a live listener that is not a shelfd of ours.
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return Status();  // bind() says why
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return Status::from_errno("socket", errno);
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ||
      errno == EAGAIN || errno == EINPROGRESS) {
    return Status::already_exists(path + " is a socket another process is listening on (not a " +
                                  "shelfd of this socket: it holds no lock); choose another " +
                                  "--socket or stop that process");
  }
  if (errno != ECONNREFUSED) return Status::from_errno("probe socket " + path, errno);
  if (::unlink(path.c_str()) != 0) return Status::from_errno("remove stale socket " + path, errno);
  log_info("replaced stale socket " + path + " (no process listened on it)");
  return Status();
}

Result<UniqueFd> open_lock_file(const std::string& path) {
  return open_own_file(path, O_RDWR, "--socket", "lock file", looks_like_lock);
}

Result<UniqueFd> open_log_file(const std::string& path) {
  // Read and write: an existing file's first line must be read to know it.
  return open_own_file(path, O_RDWR | O_APPEND, "--log-file", "log", looks_like_log);
}

std::optional<FileId> file_id(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

void remove_if_same(const std::string& path, const FileId& id) {
  std::optional<FileId> now = file_id(path);
  if (now && now->dev == id.dev && now->ino == id.ino) ::unlink(path.c_str());
}

Result<UniqueFd> listen_on_socket_file(const std::string& path, int backlog) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::invalid_argument("socket path is longer than " +
                                    std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::from_errno("socket", errno);
  // Bind under a umask that yields 0600, so the socket is never wider, not even briefly.
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::umask(old);
  if (rc != 0) return Status::from_errno("bind " + path, err);
  if (::listen(fd.get(), backlog) != 0) return Status::from_errno("listen " + path, errno);
  return fd;
}

}  // namespace shelf::server
