// shelfd: the resident daemon that owns a shelf segment and serves clients.
#include <cstdio>
#include <fcntl.h>
#include <iostream>
#include <string>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>

#include "base/paths.h"
#include "base/units.h"
#include "server/daemon.h"
#include "server/log.h"

namespace po = boost::program_options;
using namespace shelf;

namespace {

constexpr const char* kUsage =
    R"(shelfd - the shelf daemon: shares named datasets between processes in shared memory

Usage: shelfd [options]

By default shelfd detaches and returns once it is ready to serve; with
--foreground it stays attached and logs to stderr. Stop it with SIGTERM or
SIGINT (Ctrl-C). Published datasets live in the segment in /dev/shm and
outlive the daemon: a shelfd started again on the same segment (after a stop
or a crash) checks every dataset's checksums and serves them again. Start
with --discard to drop them, or pass --remove-segment-on-exit to remove the
segment when shelfd stops.

Options)";

// Half of /dev/shm: leaves room for everything else that uses it.
uint64_t default_memory_limit() {
  struct statvfs vfs;
  if (::statvfs("/dev/shm", &vfs) != 0) return 1ull << 30;
  return uint64_t{vfs.f_blocks} * vfs.f_frsize / 2 / 4096 * 4096;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, segment, limit_text, log_level_text, log_file;
  server::StoreOptions store_options;
  server::DaemonOptions daemon_options;
  bool foreground = false;

  po::options_description desc(kUsage);
  // clang-format off
  desc.add_options()
      ("help,h", "show this help and exit")
      ("socket", po::value(&socket_path),
       "Unix socket to serve (default: $SHELF_SOCKET, else $XDG_RUNTIME_DIR/shelf/shelf.sock, "
       "else /tmp/shelf-<uid>/shelf.sock)")
      ("segment", po::value(&segment),
       "name of the shared-memory segment in /dev/shm (default: derived from the socket path)")
      ("memory-limit", po::value(&limit_text),
       "most memory the datasets may take, e.g. 512MiB or 8GiB (default: half of /dev/shm)")
      ("max-datasets", po::value(&store_options.max_datasets)->default_value(16384),
       "slots in the dataset index (256 bytes each, charged to the limit)")
      ("max-connections", po::value(&daemon_options.max_connections)->default_value(1024),
       "clients connected at once; more are refused with an error")
      ("group", po::value(&daemon_options.group),
       "also serve the members of this Unix group: the socket and the segment become 0660 "
       "and theirs (default: only shelfd's own user, and root)")
      ("verify-on-publish", po::bool_switch(&store_options.verify_on_publish),
       "recompute every buffer's XXH3 checksum before publishing (one extra read)")
      ("discard", po::bool_switch(&store_options.discard),
       "remove an existing segment of this name and start empty (its datasets are lost)")
      ("remove-segment-on-exit", po::bool_switch(&store_options.remove_on_exit),
       "remove the segment, and so every dataset, when shelfd stops")
      ("foreground", po::bool_switch(&foreground), "do not detach; log to stderr")
      ("log-level", po::value(&log_level_text)->default_value("info"),
       "error, warn, info or debug")
      ("log-file", po::value(&log_file),
       "where a detached shelfd logs (default: <socket>.log)");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "shelfd: " << e.what() << "\nTry 'shelfd --help'.\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }

  server::LogLevel level;
  if (!server::parse_log_level(log_level_text, &level)) {
    std::cerr << "shelfd: --log-level must be error, warn, info or debug\n";
    return 2;
  }
  server::set_log_level(level);
  daemon_options.socket_path = socket_path.empty() ? default_socket_path() : socket_path;
  store_options.segment_name =
      segment.empty() ? default_segment_name(daemon_options.socket_path) : segment;
  if (limit_text.empty()) {
    store_options.memory_limit = default_memory_limit();
  } else {
    auto limit = parse_size(limit_text);
    if (!limit.ok()) {
      std::cerr << "shelfd: --memory-limit: " << limit.status().message() << "\n";
      return 2;
    }
    store_options.memory_limit = *limit;
  }
  // Values the user did not choose give way to those of an existing segment.
  store_options.memory_limit_given = !limit_text.empty();
  store_options.max_datasets_given = !vm["max-datasets"].defaulted();
  if (log_file.empty()) log_file = daemon_options.socket_path + ".log";
  // Every connection is a descriptor: take all the kernel allows, and keep
  // --max-connections below it (with room for the daemon's own), so a client
  // past the limit is told so instead of finding shelfd out of descriptors.
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = files.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &files);
    (void)::getrlimit(RLIMIT_NOFILE, &files);
    const rlim_t room = files.rlim_cur > 128 ? files.rlim_cur - 64 : files.rlim_cur / 2;
    if (daemon_options.max_connections > room) {
      if (!vm["max-connections"].defaulted()) {
        std::cerr << "shelfd: --max-connections lowered to " << room
                  << " to fit the open-files limit (ulimit -n " << files.rlim_cur << ")\n";
      }
      daemon_options.max_connections = static_cast<uint32_t>(room);
    }
  }

  // Detach: the parent waits on a pipe until the child is serving (or has
  // failed, having said why on the shared stderr), so `shelfd && shelf list`
  // never races the daemon's start.
  int ready_fd = -1;
  if (!foreground) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      std::perror("shelfd: pipe");
      return 1;
    }
    pid_t child = ::fork();
    if (child < 0) {
      std::perror("shelfd: fork");
      return 1;
    }
    if (child > 0) {
      ::close(fds[1]);
      char line[512];
      ssize_t n = ::read(fds[0], line, sizeof line);
      if (n > 0) {
        std::fwrite(line, 1, static_cast<size_t>(n), stdout);
        return 0;
      }
      int status = 0;
      ::waitpid(child, &status, 0);
      return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
    }
    ::close(fds[0]);
    ready_fd = fds[1];
    ::setsid();
  }

  // Detached, the log file is opened before the start, so that what the
  // start finds (a re-attached segment, quarantined datasets) is in it too.
  int log_fd = -1;
  if (!foreground) {
    log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    server::set_log_copy_fd(log_fd);
  }
  auto daemon = server::Daemon::start(daemon_options, store_options);
  if (!daemon.ok()) {
    const std::string line = "shelfd: not started: " + daemon.status().message() + "\n";
    std::cerr << "shelfd: " << daemon.status().message() << "\n";
    if (log_fd >= 0) {  // the log says why there is no daemon, too
      ssize_t n = ::write(log_fd, line.data(), line.size());
      (void)n;
    }
    return 1;
  }
  const server::Store& store = (*daemon)->store();
  std::string recovered;
  if (store.recovery().attached) {
    const server::RecoveryReport& r = store.recovery();
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.2f s", r.seconds);
    recovered = "; re-attached /dev/shm/" + store.segment_name() + " (generation " +
                std::to_string(r.generation) + "): " + std::to_string(r.datasets) +
                " datasets served again, " + std::to_string(r.quarantined) +
                " quarantined (see `shelf status`), " + format_bytes(r.verified_bytes) +
                " verified in " + seconds;
  }
  if (!foreground) {
    server::set_log_copy_fd(-1);  // stderr becomes the log file itself below
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(log_fd >= 0 ? log_fd : null_fd, STDERR_FILENO);
      if (null_fd > STDERR_FILENO) ::close(null_fd);
    }
    if (log_fd > STDERR_FILENO) ::close(log_fd);
    std::string msg = "shelfd: serving " + daemon_options.socket_path + " (pid " +
                      std::to_string(::getpid()) + ", limit " + format_bytes(store.memory_limit()) +
                      ", log " + log_file + ")" + recovered + "\n";
    ssize_t n = ::write(ready_fd, msg.data(), msg.size());
    (void)n;
    ::close(ready_fd);
  }
  server::log_info("serving " + daemon_options.socket_path + " with segment /dev/shm/" +
                   store_options.segment_name + ", memory limit " +
                   format_bytes(store.memory_limit()) + (recovered.empty() ? " (new)" : recovered));
  Status s = (*daemon)->run();
  if (!s.ok()) {
    server::log_error("event loop failed: " + s.message());
    return 1;
  }
  server::log_info("stopped");
  return 0;
}
