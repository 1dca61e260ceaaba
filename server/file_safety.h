// The files shelfd makes beside its socket, and the one rule for all of
// them: shelfd never destroys or alters a file it did not create.
//
// shelfd writes or removes exactly these paths: the socket (replaced only
// when it is a socket nobody listens on), <socket>.lock (created, or taken
// over when it is a lock file of a previous shelfd), the log file (created,
// or appended to when it is a shelfd log), the socket's directory (created
// when missing), the segment in /dev/shm (server/store.cc), and in the
// --spill-dir (made 0700 when missing) only files named for its segment,
// <segment>.<created_ns>.<publish id>.spill and .spill.tmp (server/spiller.h). At exit it
// removes the socket and the lock file only while they are still the files
// it made (same device and inode). Everything here is for shelfd's main
// thread during start and stop; nothing is thread-safe.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

#include <shelf/result.h>

#include "base/unique_fd.h"

namespace shelf::server {

// Identifies one file: a path may come to name another one.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
};

// Refuses a path under a directory another user could use to swap our
// files, as sshd checks the paths it trusts: the socket's directory and
// every ancestor of it (symlinks resolved) must belong to us or root and not
// be writable by group or others unless sticky (as /tmp is). The directory
// itself must not be a symlink. Errors: PermissionDenied naming the directory
// and what is wrong with it; IoError when one cannot be examined.
Status check_directory_chain(const std::string& dir);

// Makes `path` free for bind(): nothing there, or a socket file no process
// listens on any more (a crashed daemon's), which is removed. Anything else
// is refused: AlreadyExists for a socket something listens on, and for a
// file that is not a socket, naming it and its kind. The caller holds the
// instance lock, so no shelfd of ours can be starting on it meanwhile.
Status clear_stale_socket(const std::string& path);

// Binds and listens on a new socket file at `path` (nothing may be there:
// clear_stale_socket() first), mode 0600 from the start (bound under a
// umask), non-blocking, with `backlog`. Errors: InvalidArgument for a path
// too long for a socket, else the failing call's errno.
Result<UniqueFd> listen_on_socket_file(const std::string& path, int backlog);

// Opens (creating 0600 if need be) the lock file at `path` for read and
// write. An existing one is taken over only when it is a lock file of a
// shelfd: a regular file of our user holding nothing or a pid and a newline.
// Errors: AlreadyExists for any other file (named, with its kind); IoError.
Result<UniqueFd> open_lock_file(const std::string& path);

// Opens (creating 0600 if need be) the log file at `path` for appending. An
// existing one is appended to only when it is a regular file of our user that
// is empty or starts with a shelfd log line. Errors: AlreadyExists for any
// other file; IoError with the reason when it cannot be opened (a symlink
// planted there is refused, never followed).
Result<UniqueFd> open_log_file(const std::string& path);

// The identity of the file `path` names now (lstat), if any.
std::optional<FileId> file_id(const std::string& path);

// Removes `path` only if it still names the file `id` (another may have
// been put there since). Best effort; for shutdown.
void remove_if_same(const std::string& path, const FileId& id);

}  // namespace shelf::server
