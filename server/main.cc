// shelfd: the resident daemon that owns a shelf segment and serves clients.
#include <charconv>
#include <cstdio>
#include <fcntl.h>
#include <iostream>
#include <optional>
#include <pwd.h>
#include <string>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <boost/program_options.hpp>

#include "base/paths.h"
#include "base/units.h"
#include "server/daemon.h"
#include "server/file_safety.h"
#include "server/log.h"
#include "shm/layout.h"

namespace po = boost::program_options;
using namespace shelf;

namespace {

constexpr const char* kUsage =
    R"(shelfd - the shelf daemon: shares named datasets between processes in shared memory

Usage: shelfd [options]

By default shelfd detaches and returns once it is ready to serve; with
--foreground it stays attached and logs to stderr. Stop it with SIGTERM or
SIGINT (Ctrl-C). Published datasets live in the segment in /dev/shm (or
--shm-dir) and
outlive the daemon: a shelfd started again on the same segment (after a stop
or a crash) checks every dataset's checksums and serves them again. Start
with --discard to drop them, or pass --remove-segment-on-exit to remove the
segment when shelfd stops.

Options)";

// Half of the segment's tmpfs: leaves room for everything else that uses it.
uint64_t default_memory_limit(const std::string& shm_dir) {
  struct statvfs vfs;
  if (::statvfs(shm_dir.c_str(), &vfs) != 0) return 1ull << 30;
  return uint64_t{vfs.f_blocks} * vfs.f_frsize / 2 / shm::kPageSize * shm::kPageSize;
}

// A command line shelfd cannot follow: said on stderr, exit code 2.
int usage_error(const std::string& message) {
  std::cerr << "shelfd: " << message << "\nTry 'shelfd --help'.\n";
  return 2;
}

// A user name, or a numeric uid (which need not have a name).
Result<uint32_t> uid_of_user(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_uid;
  }
  uint32_t uid = 0;
  auto [end, ec] = std::from_chars(user.data(), user.data() + user.size(), uid);
  if (!user.empty() && ec == std::errc() && end == user.data() + user.size()) return uid;
  return Status::invalid_argument("there is no user '" + user + "' (see getent passwd)");
}

// The --user-quota values into `store`: "SIZE" for every user, "USER=SIZE"
// (a name or a uid) for one. The error names the value and what is wrong.
Status parse_user_quotas(const std::vector<std::string>& values, server::StoreOptions& store) {
  bool default_given = false;
  for (const std::string& value : values) {
    const size_t eq = value.rfind('=');
    const std::string user = eq == std::string::npos ? "" : value.substr(0, eq);
    const std::string size_text = eq == std::string::npos ? value : value.substr(eq + 1);
    const std::string what = "--user-quota '" + value + "'";
    auto size = parse_size(size_text);
    if (!size.ok()) return Status::invalid_argument(what + ": " + size.status().message());
    if (*size < shm::kPageSize) {
      return Status::invalid_argument(what + ": a quota must be at least 4 KiB");
    }
    if (eq == std::string::npos) {
      if (default_given) {
        return Status::invalid_argument(what + ": the quota of every user is given twice");
      }
      default_given = true;
      store.user_quota = *size;
      continue;
    }
    auto uid = uid_of_user(user);
    if (!uid.ok()) return Status::invalid_argument(what + ": " + uid.status().message());
    if (!store.user_quotas.emplace(*uid, *size).second) {
      return Status::invalid_argument(what + ": uid " + std::to_string(*uid) +
                                      " is given a quota twice");
    }
  }
  return Status();
}

// Everything the command line decides.
struct Options {
  server::StoreOptions store;
  server::DaemonOptions daemon;
  bool foreground = false;
  bool max_connections_given = false;
  std::string log_file;
};

// Parses the command line into `options`. Returns the exit code when shelfd
// should stop here (--help: 0; a bad option, said on stderr: 2).
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  std::string socket_path, segment, limit_text, log_level_text;
  std::string max_datasets_text, max_connections_text, per_user_text, verify_threads_text;
  std::string spill_above_text;
  std::vector<std::string> stray, user_quotas;
  po::options_description desc(kUsage);
  // clang-format off
  desc.add_options()
      ("help,h", "show this help and exit")
      ("socket", po::value(&socket_path),
       "Unix socket to serve (default: $SHELF_SOCKET, else $XDG_RUNTIME_DIR/shelf/shelf.sock, "
       "else /tmp/shelf-<uid>/shelf.sock)")
      ("segment", po::value(&segment),
       "name of the shared-memory segment in the --shm-dir (default: derived from the socket "
       "path)")
      ("shm-dir", po::value(&options.store.shm_dir),
       "the tmpfs directory the segment lives in, e.g. one mounted with huge=within_size "
       "for 2 MiB pages (an absolute path; default: /dev/shm). Clients learn it from shelfd")
      ("memory-limit", po::value(&limit_text),
       "most memory the datasets may take, e.g. 512MiB or 8GiB (default: half of the "
       "--shm-dir; "
       "on an existing segment, its own limit). A restart may raise it and keep every dataset, "
       "or lower it to no less than what the segment holds")
      ("max-datasets", po::value(&max_datasets_text)->default_value("16384"),
       "slots in the dataset index (256 bytes each, charged to the limit; default on an "
       "existing segment: its own). A restart may raise it and keep every dataset, or lower it "
       "to no less than the highest slot in use")
      ("max-connections", po::value(&max_connections_text)->default_value("1024"),
       "clients connected at once; more are refused with an error")
      ("max-connections-per-user", po::value(&per_user_text),
       "clients one user may have connected at once, so that no user can lock the others "
       "out; shelfd's own user is not held to it (default: --max-connections less a quarter)")
      ("user-quota", po::value(&user_quotas)->composing(),
       "the most memory one user's datasets (and the partitions it is writing) may take: "
       "SIZE for every user, USER=SIZE (a name or a uid) for one, e.g. --user-quota 64GiB "
       "--user-quota alice=256GiB; repeat it for more users (default: none)")
      ("spill-dir", po::value(&options.store.spill_dir),
       "when a publish needs memory the limit does not leave, write datasets nobody reads "
       "(least recently used first) to files here and free their memory instead of refusing; "
       "a get reads them back. An absolute path of a directory of shelfd's own, made 0700 when "
       "missing; refused if others may write it (default: off)")
      ("spill-above", po::value(&spill_above_text),
       "with --spill-dir: spill as soon as the datasets take more than this percentage of "
       "the memory limit, e.g. 90%, so that publishes seldom wait for a spill (default: 100%, "
       "only when a request needs the memory)")
      ("group", po::value(&options.daemon.group),
       "also serve the members of this Unix group: the socket and the segment become 0660 "
       "and theirs (default: only shelfd's own user, and root)")
      ("metrics-listen", po::value(&options.daemon.metrics_listen),
       "also serve Prometheus metrics over HTTP at ADDR:PORT (GET /metrics), e.g. "
       "127.0.0.1:9464; port 0 picks a free one (default: off; `shelf metrics` always works)")
      ("metrics-datasets", po::value(&options.daemon.metrics_datasets)->default_value(20),
       "how many of the largest datasets get a shelf_dataset_memory_bytes series")
      ("verify-on-publish", po::bool_switch(&options.store.verify_on_publish),
       "recompute every buffer's XXH3 checksum before publishing (one extra read)")
      ("verify-threads", po::value(&verify_threads_text),
       "threads that check the checksums of the datasets a restart finds, while shelfd "
       "already serves (a get of one waits for its own); default: one per core")
      ("discard", po::bool_switch(&options.store.discard),
       "remove an existing segment of this name and start empty (its datasets are lost)")
      ("remove-segment-on-exit", po::bool_switch(&options.store.remove_on_exit),
       "remove the segment, and so every dataset, when shelfd stops")
      ("foreground", po::bool_switch(&options.foreground), "do not detach; log to stderr")
      ("log-level", po::value(&log_level_text)->default_value("info"),
       "error, warn, info or debug")
      ("log-file", po::value(&options.log_file),
       "where a detached shelfd logs (default: <socket>.log)");
  // clang-format on
  // Arguments that are not options are collected to be refused by name:
  // `shelfd 8GiB` must not start with the default limit.
  po::options_description hidden;
  hidden.add_options()("stray", po::value(&stray));
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description positional;
  positional.add("stray", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage_error(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (!stray.empty()) {
    const bool a_size = parse_size(stray.front()).ok();
    return usage_error("unexpected argument '" + stray.front() + "': shelfd takes options only" +
                       (a_size ? " (did you mean --memory-limit " + stray.front() + "?)" : ""));
  }
  for (const char* name : {"socket", "segment", "shm-dir", "memory-limit", "group", "log-file",
                           "verify-threads", "spill-dir", "spill-above"}) {
    if (vm.count(name) && vm[name].as<std::string>().empty()) {
      return usage_error(std::string("--") + name + " must not be empty");
    }
  }
  auto max_datasets =
      parse_count(max_datasets_text, "--max-datasets", 1, server::kMaxIndexCapacity);
  if (!max_datasets.ok()) return usage_error(max_datasets.status().message());
  options.store.max_datasets = static_cast<uint32_t>(*max_datasets);
  auto max_connections = parse_count(max_connections_text, "--max-connections", 1, 1u << 20);
  if (!max_connections.ok()) return usage_error(max_connections.status().message());
  options.daemon.max_connections = static_cast<uint32_t>(*max_connections);
  if (vm.count("max-connections-per-user")) {
    auto per_user = parse_count(per_user_text, "--max-connections-per-user", 1, *max_connections);
    if (!per_user.ok()) {
      return usage_error(per_user.status().message() + " (at most --max-connections)");
    }
    options.daemon.max_connections_per_user = static_cast<uint32_t>(*per_user);
  }

  if (vm.count("verify-threads")) {
    auto threads = parse_count(verify_threads_text, "--verify-threads", 1, 1024);
    if (!threads.ok()) return usage_error(threads.status().message());
    options.store.verify_threads = static_cast<unsigned>(*threads);
  }
  if (Status s = parse_user_quotas(user_quotas, options.store); !s.ok()) {
    return usage_error(s.message());
  }

  std::string& shm_dir = options.store.shm_dir;
  if (shm_dir.front() != '/') {
    return usage_error("--shm-dir must be an absolute path, not '" + shm_dir +
                       "': every client opens the segment by it");
  }
  while (shm_dir.size() > 1 && shm_dir.back() == '/') shm_dir.pop_back();
  std::string& spill_dir = options.store.spill_dir;
  if (!spill_dir.empty() && spill_dir.front() != '/') {
    return usage_error("--spill-dir must be an absolute path, not '" + spill_dir + "'");
  }
  while (spill_dir.size() > 1 && spill_dir.back() == '/') spill_dir.pop_back();
  if (vm.count("spill-above")) {
    if (spill_dir.empty()) return usage_error("--spill-above needs --spill-dir");
    std::string_view number(spill_above_text);
    if (number.ends_with('%')) number.remove_suffix(1);
    auto percent = parse_count(std::string(number), "--spill-above", 1, 100);
    if (!percent.ok()) return usage_error(percent.status().message() + " (a percentage, e.g. 90%)");
    options.store.spill_above_percent = static_cast<uint32_t>(*percent);
  }

  server::LogLevel level;
  if (!server::parse_log_level(log_level_text, &level)) {
    return usage_error("--log-level must be error, warn, info or debug, not '" + log_level_text +
                       "'");
  }
  server::set_log_level(level);
  options.daemon.socket_path = socket_path.empty() ? default_socket_path() : socket_path;
  options.store.segment_name =
      segment.empty() ? default_segment_name(options.daemon.socket_path) : segment;
  if (limit_text.empty()) {
    options.store.memory_limit = default_memory_limit(options.store.shm_dir);
  } else {
    auto limit = parse_size(limit_text);
    if (!limit.ok()) return usage_error("--memory-limit: " + limit.status().message());
    options.store.memory_limit = *limit;
  }
  // Values the user did not choose give way to those of an existing segment.
  options.store.memory_limit_given = !limit_text.empty();
  options.store.max_datasets_given = !vm["max-datasets"].defaulted();
  options.max_connections_given = !vm["max-connections"].defaulted();
  if (options.log_file.empty()) options.log_file = options.daemon.socket_path + ".log";
  return std::nullopt;
}

// Every connection is a descriptor: take all the kernel allows, and keep
// --max-connections below it (with room for the daemon's own), so a client
// past the limit is told so instead of finding shelfd out of descriptors.
void fit_connections_to_open_files(Options& options) {
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return;
  files.rlim_cur = files.rlim_max;
  (void)::setrlimit(RLIMIT_NOFILE, &files);
  (void)::getrlimit(RLIMIT_NOFILE, &files);
  // 64 for the daemon's own, and as many again as the metrics thread may hold.
  const rlim_t own = 64 + server::kMaxMetricsConnections;
  const rlim_t room = files.rlim_cur > 2 * own ? files.rlim_cur - own : files.rlim_cur / 2;
  if (options.daemon.max_connections <= room) return;
  if (options.max_connections_given) {
    std::cerr << "shelfd: --max-connections lowered to " << room
              << " to fit the open-files limit (ulimit -n " << files.rlim_cur << ")\n";
  }
  options.daemon.max_connections = static_cast<uint32_t>(room);
}

// Detach: the parent waits on a pipe until the child is serving (or has
// failed, having said why on the shared stderr), so `shelfd && shelf list`
// never races the daemon's start. In the child, returns nullopt and sets
// `ready_fd` to the pipe's end to write the "serving" line to; in the parent
// (and on failure), the exit code.
std::optional<int> detach(int& ready_fd) {
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
  return std::nullopt;
}

// The log of a detached shelfd: its directory made first when it is the
// socket's (the default <socket>.log), and refused with the reason when it
// cannot be opened or is a file shelfd did not create.
Result<UniqueFd> open_detached_log(const Options& options) {
  SHELF_RETURN_IF_ERROR(server::prepare_socket_directory(options.daemon));
  auto log = server::open_log_file(options.log_file);
  if (!log.ok()) return Status::io_error("--log-file: " + log.status().message());
  return log;
}

// "; re-attached ..." when the store re-attached a segment, else "".
std::string recovery_summary(const server::Store& store) {
  if (!store.recovery().attached) return std::string();
  const server::RecoveryReport& r = store.recovery();
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.2f s", r.seconds);
  return "; re-attached " + store.segment_path() + " (generation " + std::to_string(r.generation) +
         "): " + std::to_string(r.datasets) + " datasets served again, " +
         std::to_string(r.quarantined) + " quarantined (see `shelf status`), in " + seconds +
         "; checking the checksums of " + std::to_string(r.unverified) + " (" +
         format_bytes(r.unverified_bytes) + ") in the background";
}

// The detached child is serving: its stdin and stdout go to /dev/null and
// its stderr to the log file.
void redirect_to_log(int log_fd) {
  server::set_log_copy_fd(-1);  // stderr becomes the log file itself below
  int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(log_fd >= 0 ? log_fd : null_fd, STDERR_FILENO);
    if (null_fd > STDERR_FILENO) ::close(null_fd);
  }
}

// Tells the waiting parent `ready_line`: it prints it and exits.
void tell_parent(int ready_fd, const std::string& ready_line) {
  ssize_t n = ::write(ready_fd, ready_line.data(), ready_line.size());
  (void)n;
  ::close(ready_fd);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto exit_code = parse_options(argc, argv, options)) return *exit_code;
  fit_connections_to_open_files(options);
  // Detached, the log file is opened before the start, so that what the
  // start finds (a re-attached segment, quarantined datasets) is in it too;
  // and before detaching, so that a log shelfd cannot write stops it here.
  UniqueFd log_file;
  if (!options.foreground) {
    auto opened = open_detached_log(options);
    if (!opened.ok()) {
      std::cerr << "shelfd: not started: " << opened.status().message() << "\n";
      return 1;
    }
    log_file = std::move(opened).value();
  }
  const int log_fd = log_file.get();
  int ready_fd = -1;
  if (!options.foreground) {
    if (auto exit_code = detach(ready_fd)) return *exit_code;
    server::set_log_copy_fd(log_fd);
  }
  auto daemon = server::Daemon::start(options.daemon, options.store);
  if (!daemon.ok()) {
    std::cerr << "shelfd: " << daemon.status().message() << "\n";
    if (log_fd >= 0) {  // the log says why there is no daemon, too, as a log line
      server::set_log_copy_fd(-1);
      server::set_log_fd(log_fd);
      server::log_error("not started: " + daemon.status().message());
    }
    return 1;
  }
  const server::Store& store = (*daemon)->store();
  const std::string recovered = recovery_summary(store);
  const std::string metrics = (*daemon)->metrics_address().empty()
                                  ? std::string()
                                  : ", metrics http://" + (*daemon)->metrics_address() + "/metrics";
  if (!options.foreground) redirect_to_log(log_fd);
  server::log_info("serving " + options.daemon.socket_path + " with segment " +
                   store.segment_path() + ", memory limit " + format_bytes(store.memory_limit()) +
                   metrics + (recovered.empty() ? " (new)" : recovered));
  // Only once the log says so: whoever started shelfd may read the log next.
  if (!options.foreground) {
    tell_parent(ready_fd, "shelfd: serving " + options.daemon.socket_path + " (pid " +
                              std::to_string(::getpid()) + ", limit " +
                              format_bytes(store.memory_limit()) + ", log " + options.log_file +
                              metrics + ")" + recovered + "\n");
  }
  Status s = (*daemon)->run();
  if (!s.ok()) {
    server::log_error("event loop failed: " + s.message());
    return 1;
  }
  server::log_info("stopped");
  return 0;
}
