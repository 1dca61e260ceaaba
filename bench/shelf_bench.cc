// shelf_bench: shelf's figures, each next to a baseline measured in the same
// run on the same machine, as ratios. Not a test: it prints numbers.
//
//   shelf_bench [--size-mib N] [--repeat N] [--figure NAME]... [--json] [--list]
//
// It starts its own shelfd (SHELFD_PATH, the one built with it) on a socket
// in a fresh temporary directory and a segment named shelf-bench-<pid>, and
// stops it (SIGTERM) at the end, on error and on SIGINT/SIGTERM/SIGHUP.
//
// Figures (kFigures below; --list prints them, --figure NAME runs a subset):
//   1. publish bandwidth of an int64 dataset vs memcpy into fresh tmpfs pages
//   2. get_dataset latency (1 MiB and the big dataset) vs a bare 64-byte
//      Unix-socket round trip
//   3. a reader process scanning the published column (first scan with
//      several madvise options, repeated scan) vs a private in-process scan
//   4. unpublish until the memory is back vs fallocate(PUNCH_HOLE)
//   5. list_datasets with 10,000 datasets vs the round trip
//   6. shelf save / shelf load of the int64 dataset to and from disk (in the
//      bench's temporary directory) vs write + fsync of the same bytes from
//      private memory (`cp` + `sync` at best), and vs read() of them plus
//      figure 1's publish
//   7. N reader processes (1, 2, 4, 8) each getting and releasing a small
//      dataset in a loop: aggregate gets/s, p50/p99, shelfd's CPU meanwhile
//   8. DatasetMap contains / size / keys among 10,001 datasets vs the round trip
//   9. wait_for_datasets in another process: from a publish's return to the
//      waiter's return, vs the round trip
//  10. requests that need shelfd (a 1-row publish + unpublish, a status) while
//      another process publishes and unpublishes the big dataset in a loop
//  11. a restart after kill -9 with the big dataset published
//  12. publishes of 1 KiB, 64 KiB and 1 MiB datasets one after another vs the
//      round trip
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <shelf/client.h>
#include <shelf/limits.h>

#include "tools/format.h"
#include "tools/metrics_fetch.h"
#include "tools/snapshot.h"

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kPage = 4096;
constexpr int kLatencySamples = 2000;
constexpr int kLatencyWarmup = 200;
constexpr int kManyDatasets = 10000;
constexpr int kManyBatch = 100;
constexpr int kListSamples = 30;

// ------------------------------------------------------------ utilities --

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}
// CPU time of the calling thread: robust to other programs taking the CPU.
int64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}
double ms_between(int64_t t0, int64_t t1) { return static_cast<double>(t1 - t0) / 1e6; }
double us_between(int64_t t0, int64_t t1) { return static_cast<double>(t1 - t0) / 1e3; }
double gbps(uint64_t bytes, double ms) { return static_cast<double>(bytes) / (ms * 1e6); }

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::string size_label(uint64_t bytes) {
  char buf[32];
  if (bytes % kGiB == 0) {
    std::snprintf(buf, sizeof buf, "%llu GiB", static_cast<unsigned long long>(bytes / kGiB));
  } else {
    std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(bytes / kMiB));
  }
  return buf;
}

// Sums int64 values: the reader's work in figure 3, the same code for the
// shared and the private buffer. Four accumulators so that it is bound by
// memory, not by the add latency.
__attribute__((noinline)) uint64_t sum_int64(const int64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += static_cast<uint64_t>(p[i]);
    a1 += static_cast<uint64_t>(p[i + 1]);
    a2 += static_cast<uint64_t>(p[i + 2]);
    a3 += static_cast<uint64_t>(p[i + 3]);
  }
  for (; i < n; ++i) a0 += static_cast<uint64_t>(p[i]);
  return a0 + a1 + a2 + a3;
}

// The sum of 0, 1, ..., n-1 modulo 2^64: what sum_int64 returns for the
// pattern every dataset here is filled with (value i at row i).
uint64_t expected_sum(uint64_t n) { return n % 2 == 0 ? (n / 2) * (n - 1) : n * ((n - 1) / 2); }

// Calls `io` (::read or ::write) until `n` bytes have moved; false on EOF or error.
template <class Byte, class Io>
bool io_all(Io io, int fd, Byte* p, size_t n) {
  while (n > 0) {
    ssize_t done = io(fd, p, n);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    p += done;
    n -= static_cast<size_t>(done);
  }
  return true;
}
bool write_all(int fd, const void* data, size_t n) {
  return io_all(::write, fd, static_cast<const char*>(data), n);
}
bool read_all(int fd, void* data, size_t n) {
  return io_all(::read, fd, static_cast<char*>(data), n);
}

// CPU time a process has run, from /proc/PID/schedstat (nanoseconds); -1 if unknown.
int64_t process_cpu_ns(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/schedstat");
  long long ns = -1;
  if (!(in >> ns)) return -1;
  return ns;
}

// Busy share of all CPUs over `ms` milliseconds, from /proc/stat: other
// programs running during a run make its figures noisy.
double cpu_busy_fraction(int ms) {
  auto sample = [](uint64_t* busy, uint64_t* total) {
    std::ifstream in("/proc/stat");
    std::string cpu;
    uint64_t v[10] = {};
    in >> cpu;
    for (uint64_t& x : v) in >> x;
    *total = 0;
    for (uint64_t x : v) *total += x;
    *busy = *total - v[3] - v[4];  // minus idle and iowait
  };
  uint64_t b0, t0, b1, t1;
  sample(&b0, &t0);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  sample(&b1, &t1);
  return t1 > t0 ? static_cast<double>(b1 - b0) / static_cast<double>(t1 - t0) : 0;
}

// Runs `pid` (0: the calling thread) on CPU `cpu` only, or on every CPU when
// `cpu` is -1. Best effort: a failure only makes the figures noisier.
void pin(pid_t pid, int cpu) {
  if (pid < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  const int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int c = 0; c < n; ++c) {
    if (cpu < 0 || c == cpu) CPU_SET(c, &set);
  }
  (void)::sched_setaffinity(pid, sizeof set, &set);
}

uint64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

// ------------------------------------------------- cleanup, on any exit --

// Everything the bench creates outside its own memory, kept in plain arrays
// so that the signal handler can undo it with system calls only.
struct Leftovers {
  pid_t daemon_pid = -1;
  int daemon_lock_fd = -1;  // open on <socket>.lock: flock succeeds once the daemon is gone
  pid_t children[2] = {-1, -1};
  char shm_dir[160] = "/dev/shm";  // --shm-dir: shelfd's and the baselines' tmpfs
  char segment[96] = "";           // "shelf-bench-<pid>"
  char segment_path[256] = "";     // <shm_dir>/<segment>
  char scratch[256] = "";  // "<shm_dir>/shelf-bench-<pid>-copy": the baselines' private file
  char dir[200] = "";
  char socket_path[240] = "";
  char lock_path[256] = "";
  char log_path[256] = "";
};
Leftovers g_left;
volatile sig_atomic_t g_cleaned = 0;

void sleep_ms(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// True once the daemon is gone (its flock on the lock file was dropped).
bool wait_daemon_gone(int timeout_ms) {
  if (g_left.daemon_lock_fd < 0) return true;
  for (int waited = 0; waited < timeout_ms; waited += 5) {
    if (::flock(g_left.daemon_lock_fd, LOCK_EX | LOCK_NB) == 0) {
      ::flock(g_left.daemon_lock_fd, LOCK_UN);
      return true;
    }
    sleep_ms(5);
  }
  return false;
}

// Async-signal-safe: only system calls.
void cleanup() {
  if (g_cleaned) return;
  g_cleaned = 1;
  for (pid_t& child : g_left.children) {
    if (child > 0) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      child = -1;
    }
  }
  if (g_left.daemon_pid > 0) {
    ::kill(g_left.daemon_pid, SIGTERM);
    if (!wait_daemon_gone(10000)) {
      ::kill(g_left.daemon_pid, SIGKILL);
      wait_daemon_gone(2000);
    }
    g_left.daemon_pid = -1;
  }
  if (g_left.daemon_lock_fd >= 0) ::close(g_left.daemon_lock_fd);
  // The daemon unlinks its segment when it stops; after a SIGKILL it cannot.
  if (g_left.segment_path[0] != '\0') ::unlink(g_left.segment_path);
  if (g_left.scratch[0] != '\0') ::unlink(g_left.scratch);
  for (const char* path : {g_left.socket_path, g_left.lock_path, g_left.log_path}) {
    if (path[0] != '\0') ::unlink(path);
  }
  if (g_left.dir[0] != '\0') ::rmdir(g_left.dir);
}

void on_signal(int sig) {
  cleanup();
  ::_exit(128 + sig);
}

// In a forked child: the cleanup above belongs to the parent alone.
void default_signals() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
}

void print_log_tail() {
  if (g_left.log_path[0] == '\0') return;
  std::ifstream in(g_left.log_path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (lines.empty()) return;
  std::fprintf(stderr, "last lines of the shelfd log (%s):\n", g_left.log_path);
  for (size_t i = lines.size() > 15 ? lines.size() - 15 : 0; i < lines.size(); ++i) {
    std::fprintf(stderr, "  %s\n", lines[i].c_str());
  }
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void die(const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "shelf_bench: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  print_log_tail();
  cleanup();
  std::exit(1);
}

void must(const shelf::Status& s, const char* what) {
  if (!s.ok()) die("%s: %s", what, s.to_string().c_str());
}
template <class T>
T must(shelf::Result<T> r, const char* what) {
  if (!r.ok()) die("%s: %s", what, r.status().to_string().c_str());
  return std::move(r).value();
}

void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char* fmt, ...) {
  std::fprintf(stderr, "shelf_bench: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
}

// ---------------------------------------------------------------- shelfd --

void launch_daemon(const std::vector<std::string>& extra);

void start_daemon(uint64_t memory_limit) {
  char dir_template[] = "/tmp/shelf-bench-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) die("mkdtemp: %s", std::strerror(errno));
  std::snprintf(g_left.dir, sizeof g_left.dir, "%s", dir_template);
  std::snprintf(g_left.socket_path, sizeof g_left.socket_path, "%s/shelf.sock", g_left.dir);
  std::snprintf(g_left.lock_path, sizeof g_left.lock_path, "%s.lock", g_left.socket_path);
  std::snprintf(g_left.log_path, sizeof g_left.log_path, "%s.log", g_left.socket_path);
  const std::string segment = "shelf-bench-" + std::to_string(::getpid());
  std::snprintf(g_left.segment, sizeof g_left.segment, "%s", segment.c_str());
  std::snprintf(g_left.segment_path, sizeof g_left.segment_path, "%s/%s", g_left.shm_dir,
                segment.c_str());

  launch_daemon({"--memory-limit", std::to_string(memory_limit), "--max-datasets", "20000"});
}

// Starts shelfd on g_left's socket and segment with `extra` options, and
// returns once it serves (without --foreground shelfd returns then).
void launch_daemon(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {SHELFD_PATH,    "--socket",  g_left.socket_path, "--segment",
                                   g_left.segment, "--shm-dir", g_left.shm_dir};
  args.insert(args.end(), extra.begin(), extra.end());
  std::fflush(nullptr);
  pid_t launcher = ::fork();
  if (launcher < 0) die("fork: %s", std::strerror(errno));
  if (launcher == 0) {
    // Its "serving ..." line would spoil --json: stdout goes to /dev/null;
    // errors still reach our stderr.
    int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "shelf_bench: exec %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(launcher, &status, 0) < 0 && errno == EINTR) {
  }
  // Without --foreground shelfd returns once it serves; its pid is in the lock file.
  pid_t pid = -1;
  std::ifstream(g_left.lock_path) >> pid;
  if (pid > 0) {
    g_left.daemon_pid = pid;
    if (g_left.daemon_lock_fd >= 0) ::close(g_left.daemon_lock_fd);
    g_left.daemon_lock_fd = ::open(g_left.lock_path, O_RDONLY | O_CLOEXEC);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("shelfd did not start (see above)");
  if (pid <= 0) die("no pid in %s", g_left.lock_path);
}

// ---------------------------------------------------- the echo process --

// A bare 64-byte round trip over a Unix stream socket to another process:
// the floor under every request shelfd answers.
int start_echo_child() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    die("socketpair: %s", std::strerror(errno));
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    default_signals();
    ::close(sv[0]);
    char buf[64];
    while (read_all(sv[1], buf, sizeof buf) && write_all(sv[1], buf, sizeof buf)) {
    }
    ::_exit(0);
  }
  ::close(sv[1]);
  g_left.children[0] = pid;
  return sv[0];
}

double ping_us(int fd) {
  char buf[64] = {1};
  const int64_t t0 = now_ns();
  if (!write_all(fd, buf, sizeof buf) || !read_all(fd, buf, sizeof buf)) die("echo child is gone");
  return us_between(t0, now_ns());
}

// -------------------------------------------------- the reader process --

enum class ScanMode : int32_t {
  kPlain,      // just scan: the faults map the pages
  kPopulate,   // MADV_POPULATE_READ over the column, then scan
  kPopulate2,  // Dataset::prefault(2): the same, split over two threads
  kAhead,      // a helper thread populates the second half while the scan starts
  kWillneed,
  kHugepage,
};
constexpr ScanMode kScanModes[] = {ScanMode::kPlain, ScanMode::kPopulate, ScanMode::kPopulate2,
                                   ScanMode::kAhead, ScanMode::kWillneed, ScanMode::kHugepage};
const char* mode_name(ScanMode m) {
  switch (m) {
    case ScanMode::kPlain:
      return "plain";
    case ScanMode::kPopulate:
      return "POPULATE_READ";
    case ScanMode::kPopulate2:
      return "Dataset::prefault(2)";
    case ScanMode::kAhead:
      return "thread POPULATE_READs 2nd half";
    case ScanMode::kWillneed:
      return "MADV_WILLNEED";
    case ScanMode::kHugepage:
      return "MADV_HUGEPAGE";
  }
  return "?";
}

enum class ReaderOp : int32_t { kQuit, kPrivate, kTrial };
struct ReaderCommand {
  ReaderOp op = ReaderOp::kQuit;
  ScanMode mode = ScanMode::kPlain;
  uint64_t rows = 0;
  char socket[256] = "";
  char name[shelf::kMaxNameBytes + 1] = "";  // a dataset name and its NUL
};
struct ReaderReply {
  int32_t ok = 0;
  int32_t advise_errno = 0;
  double connect_ms = 0;  // Client::connect: handshake + mapping the segment
  double get_ms = 0;
  double advise_ms = 0;    // the madvise of the mode
  double first_ms = 0;     // first scan (private: the first scan after the fill)
  double repeat_ms = 0;    // median of the repeated scans
  double teardown_ms = 0;  // ~Dataset (release) + ~Client (unmap)
  char error[256] = "";
};

struct Reader {
  int cmd_fd = -1;
  int reply_fd = -1;
};

ReaderReply reader_fail(const std::string& what) {
  ReaderReply r;
  std::snprintf(r.error, sizeof r.error, "%s", what.c_str());
  return r;
}

ReaderReply reader_private(std::unique_ptr<int64_t[]>& buffer, uint64_t rows) {
  ReaderReply r;
  if (!buffer) {
    buffer.reset(new int64_t[rows]);
    for (uint64_t i = 0; i < rows; ++i) buffer[i] = static_cast<int64_t>(i);
  }
  std::vector<double> scans;
  for (int i = 0; i < 3; ++i) {
    const int64_t t0 = now_ns();
    const uint64_t sum = sum_int64(buffer.get(), rows);
    scans.push_back(ms_between(t0, now_ns()));
    if (sum != expected_sum(rows)) return reader_fail("private scan: wrong sum");
  }
  r.first_ms = scans[0];
  scans.erase(scans.begin());  // the first warms the TLB and the caches
  r.repeat_ms = median(scans);
  r.ok = 1;
  return r;
}

ReaderReply reader_trial(const ReaderCommand& cmd) {
  ReaderReply r;
  shelf::ClientOptions options;
  options.socket = cmd.socket;
  options.client_name = "shelf_bench reader";
  const int64_t t0 = now_ns();
  auto connected = shelf::Client::connect(options);
  if (!connected.ok()) return reader_fail("connect: " + connected.status().to_string());
  std::optional<shelf::Client> client(std::move(connected).value());
  const int64_t t1 = now_ns();
  auto got = client->get_dataset(cmd.name);
  if (!got.ok()) return reader_fail("get_dataset: " + got.status().to_string());
  std::optional<shelf::Dataset> dataset(std::move(got).value());
  const int64_t t2 = now_ns();
  std::span<const int64_t> values = dataset->column(0, 0).values<int64_t>();
  if (values.size() != cmd.rows) return reader_fail("the column has the wrong length");

  // The madvise range: the column's pages (the mapping is page-aligned).
  const auto begin = reinterpret_cast<uintptr_t>(values.data()) & ~(kPage - 1);
  const auto end =
      (reinterpret_cast<uintptr_t>(values.data() + values.size()) + kPage - 1) & ~(kPage - 1);
  void* range = reinterpret_cast<void*>(begin);
  const size_t length = end - begin;
  const size_t half = (length / 2) & ~(kPage - 1);
  char* second_half = static_cast<char*>(range) + half;
  int err = 0, helper_err = 0;
  std::thread helper;
  switch (cmd.mode) {
    case ScanMode::kPlain:
      break;
    case ScanMode::kPopulate:
      if (::madvise(range, length, MADV_POPULATE_READ) != 0) err = errno;
      break;
    case ScanMode::kPopulate2:
      if (shelf::Status s = dataset->prefault(2); !s.ok())
        err = s.sys_errno() ? s.sys_errno() : EIO;
      break;
    case ScanMode::kAhead:  // joined after the scan
      helper = std::thread([&] {
        if (::madvise(second_half, length - half, MADV_POPULATE_READ) != 0) helper_err = errno;
      });
      break;
    case ScanMode::kWillneed:
      if (::madvise(range, length, MADV_WILLNEED) != 0) err = errno;
      break;
    case ScanMode::kHugepage:
      if (::madvise(range, length, MADV_HUGEPAGE) != 0) err = errno;
      break;
  }
  const int64_t t3 = now_ns();
  const uint64_t sum = sum_int64(values.data(), values.size());
  if (helper.joinable()) helper.join();
  r.advise_errno = err != 0 ? err : helper_err;
  const int64_t t4 = now_ns();
  if (sum != expected_sum(cmd.rows)) return reader_fail("first scan: wrong sum");
  std::vector<double> repeats;
  for (int i = 0; i < 2; ++i) {
    const int64_t s0 = now_ns();
    const uint64_t again = sum_int64(values.data(), values.size());
    repeats.push_back(ms_between(s0, now_ns()));
    if (again != sum) return reader_fail("repeated scan: wrong sum");
  }
  const int64_t t5 = now_ns();
  dataset.reset();
  client.reset();
  const int64_t t6 = now_ns();
  r.connect_ms = ms_between(t0, t1);
  r.get_ms = ms_between(t1, t2);
  r.advise_ms = ms_between(t2, t3);
  r.first_ms = ms_between(t3, t4);
  r.repeat_ms = median(repeats);
  r.teardown_ms = ms_between(t5, t6);
  r.ok = 1;
  return r;
}

// Forked before any Client and any large buffer exist, so that it starts
// with a clean address space and connects its own Client per trial.
Reader start_reader_child(int echo_fd) {
  int cmd[2], reply[2];
  if (::pipe2(cmd, O_CLOEXEC) != 0 || ::pipe2(reply, O_CLOEXEC) != 0) {
    die("pipe: %s", std::strerror(errno));
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    default_signals();
    ::close(echo_fd);  // or the echo child would never see EOF
    ::close(cmd[1]);
    ::close(reply[0]);
    std::unique_ptr<int64_t[]> private_buffer;
    ReaderCommand c;
    while (read_all(cmd[0], &c, sizeof c) && c.op != ReaderOp::kQuit) {
      ReaderReply r =
          c.op == ReaderOp::kPrivate ? reader_private(private_buffer, c.rows) : reader_trial(c);
      if (!write_all(reply[1], &r, sizeof r)) break;
    }
    ::_exit(0);
  }
  ::close(cmd[0]);
  ::close(reply[1]);
  g_left.children[1] = pid;
  return Reader{cmd[1], reply[0]};
}

ReaderReply ask_reader(const Reader& reader, const ReaderCommand& cmd) {
  ReaderReply r;
  if (!write_all(reader.cmd_fd, &cmd, sizeof cmd) || !read_all(reader.reply_fd, &r, sizeof r)) {
    die("the reader process died");
  }
  if (!r.ok) die("reader process: %s", r.error);
  return r;
}

// ---------------------------------------------------------------- report --

struct Row {
  std::string id;
  std::string figure;
  double value = NAN;
  std::string unit;
  double baseline = NAN;
  std::string baseline_unit;
  double ratio = NAN;
  std::string target_op;  // ">=", "<=" or "" (no target: "info")
  double target = NAN;
  std::string result() const {
    if (target_op.empty() || std::isnan(ratio)) return "info";
    const bool pass = target_op == ">=" ? ratio >= target : ratio <= target;
    return pass ? "PASS" : "MISS";
  }
};
std::vector<Row> g_rows;

void add_row(std::string id, std::string figure, double value, std::string unit,
             double baseline = NAN, std::string baseline_unit = "", double ratio = NAN,
             std::string target_op = "", double target = NAN) {
  g_rows.push_back(Row{std::move(id), std::move(figure), value, std::move(unit), baseline,
                       std::move(baseline_unit), ratio, std::move(target_op), target});
}

std::string format_value(double v, const std::string& unit) {
  if (std::isnan(v)) return "-";
  char buf[64];
  if (unit == "GB/s") {
    std::snprintf(buf, sizeof buf, "%.2f GB/s", v);
  } else if (unit == "us") {
    std::snprintf(buf, sizeof buf, "%.1f us", v);
  } else if (unit == "ms") {
    std::snprintf(buf, sizeof buf, v < 10 ? "%.2f ms" : "%.1f ms", v);
  } else if (unit == "ns") {
    std::snprintf(buf, sizeof buf, "%.0f ns", v);
  } else if (unit == "x") {
    std::snprintf(buf, sizeof buf, "%.2fx", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g %s", v, unit.c_str());
  }
  return buf;
}

void print_table(const std::string& header) {
  std::printf("%s\n\n", header.c_str());
  int width = 20;
  for (const Row& r : g_rows) width = std::max(width, static_cast<int>(r.figure.size()));
  std::printf("%-4s %-*s %12s %12s %8s %8s %6s\n", "#", width, "figure (vs baseline)", "value",
              "baseline", "ratio", "target", "result");
  std::string last_group;
  for (const Row& r : g_rows) {
    const std::string group = r.id.substr(0, 1);
    if (!last_group.empty() && group != last_group) std::printf("\n");
    last_group = group;
    char ratio[32] = "-", target[32] = "-";
    if (!std::isnan(r.ratio)) std::snprintf(ratio, sizeof ratio, "%.2fx", r.ratio);
    if (!r.target_op.empty()) {
      std::snprintf(target, sizeof target, "%s%.2f", r.target_op.c_str(), r.target);
    }
    std::printf("%-4s %-*s %12s %12s %8s %8s %6s\n", r.id.c_str(), width, r.figure.c_str(),
                format_value(r.value, r.unit).c_str(),
                format_value(r.baseline, r.baseline_unit).c_str(), ratio, target,
                r.result().c_str());
  }
}

std::string json_number(double v) {
  if (std::isnan(v) || std::isinf(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void print_json(uint64_t size_mib, int repeat, const std::string& kernel, double seconds,
                double busy_before, double busy_after) {
  std::printf("{\n  \"bench\": \"shelf_bench\",\n  \"size_mib\": %llu,\n  \"repeat\": %d,\n",
              static_cast<unsigned long long>(size_mib), repeat);
  std::printf("  \"cpus\": %u,\n  \"kernel\": %s,\n  \"seconds\": %.1f,\n",
              std::thread::hardware_concurrency(), shelf::tools::json_string(kernel).c_str(),
              seconds);
  std::printf("  \"cpu_busy_before\": %.3f,\n  \"cpu_busy_after\": %.3f,\n  \"rows\": [\n",
              busy_before, busy_after);
  for (size_t i = 0; i < g_rows.size(); ++i) {
    const Row& r = g_rows[i];
    std::printf(
        "    {\"id\": %s, \"figure\": %s, \"value\": %s, \"unit\": %s, \"baseline\": %s, "
        "\"baseline_unit\": %s, \"ratio\": %s, \"target\": %s, \"result\": %s}%s\n",
        shelf::tools::json_string(r.id).c_str(), shelf::tools::json_string(r.figure).c_str(),
        json_number(r.value).c_str(), shelf::tools::json_string(r.unit).c_str(),
        json_number(r.baseline).c_str(), shelf::tools::json_string(r.baseline_unit).c_str(),
        json_number(r.ratio).c_str(),
        r.target_op.empty()
            ? "null"
            : shelf::tools::json_string(r.target_op + json_number(r.target)).c_str(),
        shelf::tools::json_string(r.result()).c_str(), i + 1 < g_rows.size() ? "," : "");
  }
  std::printf("  ]\n}\n");
}

// ------------------------------------------------------------- baselines --

struct CopyBaseline {
  double copy_ms = 0;             // open + ftruncate + mmap + memcpy into fresh pages
  double unmap_ms = 0;            // munmap of the touched mapping
  double punch_ms = 0;            // fallocate(PUNCH_HOLE) of the whole file: figure 4's baseline
  double fallocate_ms = 0;        // shelf's path: posix_fallocate ...
  double populate_ms = 0;         // ... mmap + MADV_POPULATE_WRITE ...
  double fill_ms = 0;             // ... memcpy into mapped pages ...
  double xxh3_ms = 0;             // ... and XXH3 of the bytes (the seal)
  double unmap_populated_ms = 0;  // munmap of the populated, written mapping
  double fallocate_cpu_ms = 0;    // CPU time of posix_fallocate
  double populate_cpu_ms = 0;     // CPU time of mmap + MADV_POPULATE_WRITE
};

int open_scratch(uint64_t bytes) {
  int fd = ::open(g_left.scratch, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) die("open %s: %s", g_left.scratch, std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) die("ftruncate: %s", std::strerror(errno));
  return fd;
}
void close_scratch(int fd) {
  ::close(fd);
  ::unlink(g_left.scratch);
}
uint64_t file_resident(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

CopyBaseline measure_copy_baseline(const void* source, uint64_t bytes) {
  CopyBaseline b;
  {  // Fault path: every 4 KiB page is allocated, zeroed and mapped by a write fault.
    const int64_t t0 = now_ns();
    int fd = open_scratch(bytes);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap: %s", std::strerror(errno));
    std::memcpy(p, source, bytes);
    const int64_t t1 = now_ns();
    ::munmap(p, bytes);
    const int64_t t2 = now_ns();
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes)) !=
        0) {
      die("fallocate(PUNCH_HOLE): %s", std::strerror(errno));
    }
    const int64_t t3 = now_ns();
    if (file_resident(fd) != 0) die("PUNCH_HOLE left pages behind");
    close_scratch(fd);
    b.copy_ms = ms_between(t0, t1);
    b.unmap_ms = ms_between(t1, t2);
    b.punch_ms = ms_between(t2, t3);
  }
  {  // shelf's path, without shelf: reserve, populate the page tables, copy, hash.
    int fd = open_scratch(bytes);
    const int64_t c0 = thread_cpu_ns();
    const int64_t t0 = now_ns();
    if (int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
      die("posix_fallocate: %s", std::strerror(err));
    }
    const int64_t t1 = now_ns();
    const int64_t c1 = thread_cpu_ns();
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap: %s", std::strerror(errno));
    (void)::madvise(p, bytes, MADV_POPULATE_WRITE);
    const int64_t t2 = now_ns();
    const int64_t c2 = thread_cpu_ns();
    std::memcpy(p, source, bytes);
    const int64_t t3 = now_ns();
    volatile uint64_t hash = XXH3_64bits(p, bytes);
    (void)hash;
    const int64_t t4 = now_ns();
    ::munmap(p, bytes);
    b.unmap_populated_ms = ms_between(t4, now_ns());
    close_scratch(fd);
    b.fallocate_ms = ms_between(t0, t1);
    b.populate_ms = ms_between(t1, t2);
    b.fill_ms = ms_between(t2, t3);
    b.xxh3_ms = ms_between(t3, t4);
    b.fallocate_cpu_ms = ms_between(c0, c1);
    b.populate_cpu_ms = ms_between(c1, c2);
  }
  return b;
}

// ----------------------------------------------------------- the figures --

struct PublishSample {
  double add_partition_ms = 0;  // create_table + add_partition (allocate, fallocate, populate)
  double daemon_cpu_ms = -1;    // the daemon's CPU time during add_partition (its fallocate)
  double client_cpu_ms = 0;     // this thread's CPU time in add_partition (mmap + populate)
  double fill_ms = 0;           // memcpy into the mapped values
  double publish_ms = 0;        // publish_dataset: XXH3 + seal + round trip
  double publish_daemon_cpu_ms = -1;
  double teardown_ms = 0;  // ~TableBuilder: unmaps the writable partition
  double total_ms() const { return add_partition_ms + fill_ms + publish_ms; }
};

PublishSample publish_int64(shelf::Client& client, const std::string& name, const int64_t* source,
                            uint64_t rows, pid_t daemon_pid) {
  PublishSample s;
  const int64_t cpu0 = process_cpu_ns(daemon_pid);
  const int64_t own0 = thread_cpu_ns();
  const int64_t t0 = now_ns();
  std::optional<shelf::TableBuilder> table(
      must(client.create_table({{"v", shelf::Type::kInt64}}), "create_table"));
  shelf::PartitionBuilder partition = must(table->add_partition(rows), "add_partition");
  const int64_t t1 = now_ns();
  const int64_t own1 = thread_cpu_ns();
  const int64_t cpu1 = process_cpu_ns(daemon_pid);
  std::span<int64_t> values = partition.values<int64_t>(0);
  if (values.size() != rows) die("values<int64_t>() has the wrong size");
  std::memcpy(values.data(), source, rows * sizeof(int64_t));
  const int64_t t2 = now_ns();
  const int64_t cpu2 = process_cpu_ns(daemon_pid);
  must(client.publish_dataset(name, *table), "publish_dataset");
  const int64_t t3 = now_ns();
  const int64_t cpu3 = process_cpu_ns(daemon_pid);
  table.reset();
  const int64_t t4 = now_ns();
  s.add_partition_ms = ms_between(t0, t1);
  s.fill_ms = ms_between(t1, t2);
  s.publish_ms = ms_between(t2, t3);
  s.teardown_ms = ms_between(t3, t4);
  s.client_cpu_ms = ms_between(own0, own1);
  if (cpu0 >= 0 && cpu1 >= 0) s.daemon_cpu_ms = ms_between(cpu0, cpu1);
  if (cpu2 >= 0 && cpu3 >= 0) s.publish_daemon_cpu_ms = ms_between(cpu2, cpu3);
  return s;
}

struct UnpublishSample {
  double call_ms = 0;  // unpublish_dataset()
  double back_ms = 0;  // until status().resident_bytes has dropped by the dataset
  int polls = 0;       // status() calls it took
};

UnpublishSample unpublish_until_freed(shelf::Client& client, const std::string& name,
                                      uint64_t bytes) {
  const uint64_t before = must(client.status(), "status").resident_bytes;
  const uint64_t want = before > bytes ? before - bytes + bytes / 100 : 0;
  UnpublishSample s;
  const int64_t t0 = now_ns();
  must(client.unpublish_dataset(name), "unpublish_dataset");
  const int64_t t1 = now_ns();
  for (;;) {
    ++s.polls;
    if (must(client.status(), "status").resident_bytes <= want) break;
    if (now_ns() - t0 > 10'000'000'000)
      die("the memory of '%s' did not come back in 10 s", name.c_str());
  }
  s.call_ms = ms_between(t0, t1);
  s.back_ms = ms_between(t0, now_ns());
  return s;
}

template <class T, class F>
std::vector<double> collect(const std::vector<T>& v, F f) {
  std::vector<double> out;
  for (const T& x : v) out.push_back(f(x));
  return out;
}

// ------------------------------------------------------ the run's state --

// What the figures share: the processes and the client, the source every
// copy reads from, and the results a later figure compares with.
struct Bench {
  int repeat = 0;
  uint64_t bytes = 0, rows = 0, small_bytes = 0, small_rows = 0;
  std::string big_label, small_label;
  int echo_fd = -1;
  Reader reader;
  pid_t daemon_pid = -1;
  shelf::ClientOptions client_options;
  std::optional<shelf::Client> client;
  std::unique_ptr<int64_t[]> source;  // value i at row i

  // Figure 1: the copy baselines (figure 4 takes its PUNCH_HOLE from them),
  // the publish time (figure 6's baseline) and the unpublishes of every
  // published copy but the last (figure 4's first samples).
  std::vector<CopyBaseline> baselines;
  std::vector<UnpublishSample> unpublishes;
  double publish_ms = 0;
  // Figure 2: the round trip on one CPU (figure 5's baseline) and the list
  // of 2 datasets.
  double rtt_med = 0, rtt_p99 = 0;
  std::vector<double> list_small;
};

const std::string kBigName = "bench-big";      // figure 1 publishes it; 2 and 3 read it; 4 frees it
const std::string kSmallName = "bench-small";  // figure 2 publishes it

// ------------------------------------------------------------ figure 1 --

// Publish, against a copy into fresh shm pages; the samples of figure 4.
void figure_publish(Bench& b) {
  progress("[1/6] publish %s x%d, baseline copies, unpublish", b.big_label.c_str(), b.repeat);
  std::vector<PublishSample> publishes;
  for (int r = 0; r < b.repeat; ++r) {
    // Alternate which goes first, so that neither always follows the other.
    if (r % 2 == 0) b.baselines.push_back(measure_copy_baseline(b.source.get(), b.bytes));
    const std::string name = r + 1 == b.repeat ? kBigName : kBigName + "-" + std::to_string(r);
    publishes.push_back(publish_int64(*b.client, name, b.source.get(), b.rows, b.daemon_pid));
    // Figure 4 samples: every published copy but the last, kept for 2 and 3.
    if (r + 1 < b.repeat) b.unpublishes.push_back(unpublish_until_freed(*b.client, name, b.bytes));
    if (r % 2 == 1) b.baselines.push_back(measure_copy_baseline(b.source.get(), b.bytes));
  }
  const auto& baselines = b.baselines;
  const double copy_ms = median(collect(baselines, [](auto& x) { return x.copy_ms; }));
  b.publish_ms = median(collect(publishes, [](auto& p) { return p.total_ms(); }));
  const double copy_gbps = gbps(b.bytes, copy_ms), publish_gbps = gbps(b.bytes, b.publish_ms);
  const double b_fallocate = median(collect(baselines, [](auto& x) { return x.fallocate_ms; }));
  const double b_populate = median(collect(baselines, [](auto& x) { return x.populate_ms; }));
  const double b_fill = median(collect(baselines, [](auto& x) { return x.fill_ms; }));
  const double b_xxh3 = median(collect(baselines, [](auto& x) { return x.xxh3_ms; }));
  const double p_add = median(collect(publishes, [](auto& p) { return p.add_partition_ms; }));
  const double p_daemon = median(collect(publishes, [](auto& p) { return p.daemon_cpu_ms; }));
  const double p_fill = median(collect(publishes, [](auto& p) { return p.fill_ms; }));
  const double p_publish = median(collect(publishes, [](auto& p) { return p.publish_ms; }));
  const double p_teardown = median(collect(publishes, [](auto& p) { return p.teardown_ms; }));
  add_row("1", "publish " + b.big_label + " int64 (vs memcpy into fresh tmpfs pages)", publish_gbps,
          "GB/s", copy_gbps, "GB/s", publish_gbps / copy_gbps, ">=", 0.70);
  add_row("1a", "  add_partition (vs private posix_fallocate + POPULATE_WRITE)", p_add, "ms",
          b_fallocate + b_populate, "ms", p_add / (b_fallocate + b_populate));
  const double b_fallocate_cpu =
      median(collect(baselines, [](auto& x) { return x.fallocate_cpu_ms; }));
  const double b_populate_cpu =
      median(collect(baselines, [](auto& x) { return x.populate_cpu_ms; }));
  const double p_client = median(collect(publishes, [](auto& p) { return p.client_cpu_ms; }));
  if (p_daemon >= 0) {
    // The daemon reserves only the extent's header page; the publisher
    // reserves the rest itself (see docs/design.md, "Memory").
    add_row("1a1", "    shelfd CPU time per allocate (vs private fallocate of it all)", p_daemon,
            "ms", b_fallocate_cpu, "ms", p_daemon / b_fallocate_cpu);
  }
  add_row("1a2", "    client CPU: mmap + POPULATE_WRITE (vs private fallocate + it, CPU)", p_client,
          "ms", b_fallocate_cpu + b_populate_cpu, "ms",
          p_client / (b_fallocate_cpu + b_populate_cpu));
  add_row("1b", "  fill: memcpy into populated values (vs same, private shm)", p_fill, "ms", b_fill,
          "ms", p_fill / b_fill);
  // publish_dataset unmaps the partitions from the publisher (so nothing it
  // holds can write into sealed data): its baseline is XXH3 plus that munmap.
  const double b_unmap = median(collect(baselines, [](auto& x) { return x.unmap_populated_ms; }));
  add_row("1c", "  publish_dataset: XXH3 + seal + round trip + munmap (vs XXH3 + munmap)",
          p_publish, "ms", b_xxh3 + b_unmap, "ms", p_publish / (b_xxh3 + b_unmap));
  add_row("1d", "  ~TableBuilder after publish (nothing left to unmap)", p_teardown, "ms");
  add_row("1d", "  munmap after the fault-path copy, for comparison",
          median(collect(baselines, [](auto& x) { return x.unmap_ms; })), "ms");
  const double ideal_ms = b_fallocate + b_populate + b_fill + b_xxh3;
  add_row("1e", "  shelf's steps done privately, no daemon (vs memcpy baseline)",
          gbps(b.bytes, ideal_ms), "GB/s", copy_gbps, "GB/s", copy_ms / ideal_ms);
  add_row("1f", "  same without XXH3 (vs memcpy baseline)", gbps(b.bytes, ideal_ms - b_xxh3),
          "GB/s", copy_gbps, "GB/s", copy_ms / (ideal_ms - b_xxh3));
}

// ------------------------------------------------------------ figure 2 --

struct Latency {
  std::vector<double> rtt, list, get_s, rel_s, both_s, get_b, rel_b, both_b;
  double daemon_cpu_us = 0, echo_cpu_us = 0;
};

// One get_dataset and its release (~Dataset); kept in the samples if `keep`.
void get_once(Bench& b, const std::string& name, bool keep, std::vector<double>* get,
              std::vector<double>* rel, std::vector<double>* both) {
  const int64_t t0 = now_ns();
  int64_t t1;
  {
    auto dataset = b.client->get_dataset(name);
    t1 = now_ns();
    if (!dataset.ok()) die("get_dataset: %s", dataset.status().to_string().c_str());
  }  // ~Dataset sends the Release
  const int64_t t2 = now_ns();
  if (keep) {
    get->push_back(us_between(t0, t1));
    rel->push_back(us_between(t1, t2));
    both->push_back(us_between(t0, t2));
  }
}

// The samples of figure 2 with this process on `client_cpu` and shelfd and
// the echo process on `server_cpu`.
Latency measure_latency(Bench& b, int client_cpu, int server_cpu) {
  pin(0, client_cpu);
  pin(b.daemon_pid, server_cpu);
  pin(g_left.children[0], server_cpu);
  Latency L;
  int64_t daemon_cpu0 = 0, echo_cpu0 = 0;
  for (int i = 0; i < kLatencyWarmup + kLatencySamples; ++i) {
    const bool keep = i >= kLatencyWarmup;
    if (i == kLatencyWarmup) {
      daemon_cpu0 = process_cpu_ns(b.daemon_pid);
      echo_cpu0 = process_cpu_ns(g_left.children[0]);
    }
    const double ping = ping_us(b.echo_fd);
    const int64_t l0 = now_ns();
    must(b.client->list_datasets(), "list_datasets");
    const double list_us = us_between(l0, now_ns());
    // Alternate the order, so that neither size always follows the other.
    for (int k = 0; k < 2; ++k) {
      if ((i + k) % 2 == 0) {
        get_once(b, kSmallName, keep, &L.get_s, &L.rel_s, &L.both_s);
      } else {
        get_once(b, kBigName, keep, &L.get_b, &L.rel_b, &L.both_b);
      }
    }
    if (keep) {
      L.rtt.push_back(ping);
      L.list.push_back(list_us);
    }
  }
  // Per iteration: 1 ping to the echo process; a list, two gets and two
  // releases, which the daemon may never see (the index and the lease
  // table answer them): its CPU per iteration says how much it still does.
  L.daemon_cpu_us =
      static_cast<double>(process_cpu_ns(b.daemon_pid) - daemon_cpu0) / 1e3 / kLatencySamples;
  L.echo_cpu_us =
      static_cast<double>(process_cpu_ns(g_left.children[0]) - echo_cpu0) / 1e3 / kLatencySamples;
  return L;
}

void add_latency_rows(const Bench& b, const Latency& L, const std::string& where) {
  const std::string& small = b.small_label;
  const std::string& big = b.big_label;
  const double rtt_med = median(L.rtt), rtt_p99 = percentile(L.rtt, 0.99);
  add_row("2", where + "bare 64-byte Unix-socket round trip, median", rtt_med, "us");
  add_row("2", where + "  round trip p99", rtt_p99, "us");
  add_row("2", where + "shelfd CPU per list + 2 gets + 2 releases (vs echo CPU per ping)",
          L.daemon_cpu_us, "us", L.echo_cpu_us, "us", L.daemon_cpu_us / L.echo_cpu_us);
  add_row("2", where + "get_dataset " + small + ", median (vs round trip)", median(L.get_s), "us",
          rtt_med, "us", median(L.get_s) / rtt_med, "<=", 0.1);
  add_row("2", where + "get_dataset " + big + ", median (vs round trip)", median(L.get_b), "us",
          rtt_med, "us", median(L.get_b) / rtt_med, "<=", 0.1);
  add_row("2", where + "  get_dataset " + small + ", p99 (vs round-trip p99)",
          percentile(L.get_s, 0.99), "us", rtt_p99, "us", percentile(L.get_s, 0.99) / rtt_p99);
  add_row("2", where + "  get_dataset " + big + ", p99 (vs round-trip p99)",
          percentile(L.get_b, 0.99), "us", rtt_p99, "us", percentile(L.get_b, 0.99) / rtt_p99);
  add_row("2", where + "get_dataset " + big + " vs " + small + ", median", median(L.get_b), "us",
          median(L.get_s), "us", median(L.get_b) / median(L.get_s), "<=", 1.2);
  std::vector<double> rel = L.rel_s, both = L.both_s;
  rel.insert(rel.end(), L.rel_b.begin(), L.rel_b.end());
  both.insert(both.end(), L.both_b.begin(), L.both_b.end());
  add_row("2", where + "~Dataset (Release), median (vs round trip)", median(rel), "us", rtt_med,
          "us", median(rel) / rtt_med);
  // A lease in the lease table takes no message (docs/leases.md): the
  // target is a tenth of the round trip, about 1 us here.
  add_row("2", where + "get + release, median (vs round trip)", median(both), "us", rtt_med, "us",
          median(both) / rtt_med, "<=", 0.1);
  add_row("2", where + "list_datasets, 2 datasets, median (vs round trip)", median(L.list), "us",
          rtt_med, "us", median(L.list) / rtt_med);
}

// A get takes no message (a lease table slot), so nothing the daemon does
// should slow it: a second connection gets and releases the small dataset in
// a loop while this one publishes and unpublishes another big dataset.
// `both_s`: get + release of the small dataset alone, the baseline. (Figure
// 10 times the requests that do need the daemon.)
void measure_get_during_publish(Bench& b, const std::vector<double>& both_s) {
  std::vector<double> during;
  std::atomic<bool> stop{false};
  std::string getter_error;
  std::thread getter([&] {
    auto other = shelf::Client::connect(b.client_options);
    if (!other.ok()) {
      getter_error = other.status().to_string();
      return;
    }
    while (!stop.load(std::memory_order_relaxed)) {
      const int64_t t0 = now_ns();
      {
        auto dataset = other->get_dataset(kSmallName);
        if (!dataset.ok()) {
          getter_error = dataset.status().to_string();
          return;
        }
      }
      during.push_back(us_between(t0, now_ns()));
    }
  });
  sleep_ms(20);
  const std::string name = "bench-big-concurrent";
  publish_int64(*b.client, name, b.source.get(), b.rows, b.daemon_pid);
  unpublish_until_freed(*b.client, name, b.bytes);
  sleep_ms(20);
  stop = true;
  getter.join();
  if (!getter_error.empty() || during.empty()) {
    die("the concurrent getter failed: %s", getter_error.c_str());
  }
  const double worst = *std::max_element(during.begin(), during.end());
  add_row("2",
          "worst get+release " + b.small_label + " during a " + b.big_label + " publish+unpublish",
          worst / 1e3, "ms", median(both_s) / 1e3, "ms", worst / median(both_s));
}

// get_dataset latency against a bare round trip.
void figure_latency(Bench& b) {
  progress("[2/6] get_dataset latency, %d samples", kLatencySamples);
  publish_int64(*b.client, kSmallName, b.source.get(), b.small_rows, b.daemon_pid);
  // Where the processes run decides the round trip on this VM: a wakeup on
  // another, idle vCPU costs an IPI and a VM exit (~20-40 us), a wakeup on
  // the same CPU a context switch. Left to the scheduler, a run lands in
  // either mode by chance, and the baseline (echo process) and shelfd may
  // land in different ones. So both are pinned the same way, twice: all on
  // one CPU, then the client on one CPU and shelfd and the echo process on
  // the other.
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Latency same_cpu = measure_latency(b, 0, 0);
  add_latency_rows(b, same_cpu, "1 CPU: ");
  if (cpus > 1) add_latency_rows(b, measure_latency(b, 0, 1), "2 CPUs: ");
  pin(0, -1);
  pin(b.daemon_pid, -1);
  pin(g_left.children[0], -1);
  // The baselines of the later figures: the one-CPU placement, pinned again there.
  b.rtt_med = median(same_cpu.rtt);
  b.rtt_p99 = percentile(same_cpu.rtt, 0.99);
  b.list_small = same_cpu.list;
  measure_get_during_publish(b, same_cpu.both_s);
}

// ------------------------------------------------------------ figure 3 --

// A reader process scanning the published column.
void figure_scan(Bench& b) {
  progress("[3/6] reader process: scans of %s, %zu modes x%d", b.big_label.c_str(),
           std::size(kScanModes), b.repeat);
  ReaderCommand cmd;
  cmd.rows = b.rows;
  std::snprintf(cmd.socket, sizeof cmd.socket, "%s", g_left.socket_path);
  std::snprintf(cmd.name, sizeof cmd.name, "%s", kBigName.c_str());
  std::vector<ReaderReply> priv;
  std::vector<std::vector<ReaderReply>> trials(std::size(kScanModes));
  for (int r = 0; r < b.repeat; ++r) {
    cmd.op = ReaderOp::kPrivate;
    priv.push_back(ask_reader(b.reader, cmd));
    cmd.op = ReaderOp::kTrial;
    for (size_t m = 0; m < std::size(kScanModes); ++m) {
      cmd.mode = kScanModes[m];
      trials[m].push_back(ask_reader(b.reader, cmd));
    }
  }
  const uint64_t bytes = b.bytes;
  const double priv_ms = median(collect(priv, [](auto& x) { return x.repeat_ms; }));
  const double priv_gbps = gbps(bytes, priv_ms);
  const auto& plain = trials[0];
  const double plain_first = median(collect(plain, [](auto& x) { return x.first_ms; }));
  std::vector<double> all_repeats, connects, gets, teardowns;
  for (const auto& t : trials) {
    for (const ReaderReply& x : t) {
      all_repeats.push_back(x.repeat_ms);
      connects.push_back(x.connect_ms);
      gets.push_back(x.get_ms);
      teardowns.push_back(x.teardown_ms);
    }
  }
  const double repeat_gbps =
      gbps(bytes, median(collect(plain, [](auto& x) { return x.repeat_ms; })));
  add_row("3", "private heap scan in the reader, warm (the baseline)", priv_gbps, "GB/s");
  add_row("3", "repeated scan of the shared column (vs private)", repeat_gbps, "GB/s", priv_gbps,
          "GB/s", repeat_gbps / priv_gbps, ">=", 0.90);
  add_row("3", "  same, all trials of every mode (vs private)", gbps(bytes, median(all_repeats)),
          "GB/s", priv_gbps, "GB/s", gbps(bytes, median(all_repeats)) / priv_gbps);
  add_row("3", "first scan, plain: faults included (vs private)", gbps(bytes, plain_first), "GB/s",
          priv_gbps, "GB/s", gbps(bytes, plain_first) / priv_gbps);
  for (size_t m = 1; m < std::size(kScanModes); ++m) {
    const auto& t = trials[m];
    const double advise = median(collect(t, [](auto& x) { return x.advise_ms; }));
    const double first = median(collect(t, [](auto& x) { return x.first_ms; }));
    const double total = median(collect(t, [](auto& x) { return x.advise_ms + x.first_ms; }));
    std::string name = mode_name(kScanModes[m]);
    if (t[0].advise_errno != 0) name += std::string(" (") + std::strerror(t[0].advise_errno) + ")";
    add_row("3", "first scan, " + name + ": advise (vs plain scan)", advise, "ms", plain_first,
            "ms", advise / plain_first);
    add_row("3", "  then the scan (vs private)", gbps(bytes, first), "GB/s", priv_gbps, "GB/s",
            gbps(bytes, first) / priv_gbps);
    add_row("3", "  advise + scan (vs plain first scan)", gbps(bytes, total), "GB/s",
            gbps(bytes, plain_first), "GB/s", plain_first / total);
  }
  add_row("3", "reader Client::connect: hello + map the segment", median(connects), "ms");
  add_row("3", "reader get_dataset on a fresh connection", median(gets), "ms");
  add_row("3", "reader ~Dataset + ~Client: release + unmap the touched " + b.big_label,
          median(teardowns), "ms");
}

// ------------------------------------------------------------ figure 4 --

// Unpublish until the memory is back.
void figure_unpublish(Bench& b) {
  progress("[4/6] unpublish %s", b.big_label.c_str());
  b.unpublishes.push_back(unpublish_until_freed(*b.client, kBigName, b.bytes));
  const double punch_ms = median(collect(b.baselines, [](auto& x) { return x.punch_ms; }));
  const double back_ms = median(collect(b.unpublishes, [](auto& u) { return u.back_ms; }));
  const double call_ms = median(collect(b.unpublishes, [](auto& u) { return u.call_ms; }));
  int max_polls = 0;
  for (const auto& u : b.unpublishes) max_polls = std::max(max_polls, u.polls);
  add_row("4", "unpublish " + b.big_label + " until resident drops (vs PUNCH_HOLE)", back_ms, "ms",
          punch_ms, "ms", back_ms / punch_ms);
  add_row("4", "  the unpublish_dataset call alone (vs PUNCH_HOLE)", call_ms, "ms", punch_ms, "ms",
          call_ms / punch_ms);
  add_row("4", "  status() polls until the drop was seen (1 = freed by return)", max_polls,
          "polls");
}

// ------------------------------------------------------------ figure 5 --

// Publishes kManyDatasets tables of 16 rows, kManyBatch per publish; returns
// the milliseconds it took.
double publish_many(Bench& b) {
  const int64_t m0 = now_ns();
  for (int batch = 0; batch < kManyDatasets / kManyBatch; ++batch) {
    std::vector<shelf::TableBuilder> tables;
    std::vector<shelf::NamedTable> named;
    tables.reserve(kManyBatch);
    for (int i = 0; i < kManyBatch; ++i) {
      tables.push_back(must(b.client->create_table({{"v", shelf::Type::kInt64}}), "create_table"));
      shelf::PartitionBuilder p = must(tables.back().add_partition(16), "add_partition");
      std::memcpy(p.values<int64_t>(0).data(), b.source.get(), 16 * sizeof(int64_t));
    }
    for (int i = 0; i < kManyBatch; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "tiny-%05d", batch * kManyBatch + i);
      named.push_back({name, &tables[static_cast<size_t>(i)]});
    }
    must(b.client->publish_datasets(named), "publish_datasets");
  }
  return ms_between(m0, now_ns());
}

// list_datasets with 10,000 datasets.
void figure_list(Bench& b) {
  progress("[5/6] publish %d small datasets, list them", kManyDatasets);
  const double many_ms = publish_many(b);
  std::vector<double> list_many, status_many;
  size_t listed = 0;
  int64_t list_daemon_cpu = 0, list_client_cpu = 0;
  // Pinned as the one-CPU round trip it is compared with.
  pin(0, 0);
  pin(b.daemon_pid, 0);
  for (int i = 0; i < 3 + kListSamples; ++i) {
    if (i == 3) {
      list_daemon_cpu = process_cpu_ns(b.daemon_pid);
      list_client_cpu = thread_cpu_ns();
    }
    const int64_t t0 = now_ns();
    listed = must(b.client->list_datasets(), "list_datasets").size();
    if (i >= 3) list_many.push_back(us_between(t0, now_ns()));
  }
  list_daemon_cpu = process_cpu_ns(b.daemon_pid) - list_daemon_cpu;
  list_client_cpu = thread_cpu_ns() - list_client_cpu;
  // Figure 2's small dataset is the one more; figure 4 unpublished the big one.
  if (listed != static_cast<size_t>(kManyDatasets) + 1) {
    die("list_datasets returned %zu datasets, expected %d", listed, kManyDatasets + 1);
  }
  for (int i = 0; i < 10; ++i) {
    const int64_t t0 = now_ns();
    must(b.client->status(), "status");
    status_many.push_back(us_between(t0, now_ns()));
  }
  pin(0, -1);
  pin(b.daemon_pid, -1);
  const double per_publish_us = many_ms * 1000 / kManyDatasets;
  const double list_med = median(list_many);
  const double daemon_us = static_cast<double>(list_daemon_cpu) / 1e3 / kListSamples;
  const double client_us = static_cast<double>(list_client_cpu) / 1e3 / kListSamples;
  add_row("5", "publish 10,000 small datasets, per dataset (vs round trip)", per_publish_us, "us",
          b.rtt_med, "us", per_publish_us / b.rtt_med);
  add_row("5", "list_datasets with 10,001 datasets, median (vs round trip)", list_med, "us",
          b.rtt_med, "us", list_med / b.rtt_med);
  add_row("5", "  p99 (vs round-trip p99)", percentile(list_many, 0.99), "us", b.rtt_p99, "us",
          percentile(list_many, 0.99) / b.rtt_p99);
  add_row("5", "  per listed dataset, beyond the list of 2 datasets",
          (list_med - median(b.list_small)) * 1000 / (kManyDatasets - 1), "ns");
  add_row("5", "  shelfd CPU per list: build + encode + send (vs list)", daemon_us, "us", list_med,
          "us", daemon_us / list_med);
  add_row("5", "  client CPU per list: recv + decode + copy (vs list)", client_us, "us", list_med,
          "us", client_us / list_med);
  add_row("5", "status() with 10,001 datasets, median (vs list)", median(status_many), "us",
          list_med, "us", median(status_many) / list_med);
}

// ------------------------------------------------------------ figure 6 --

// The milliseconds of each round of figure 6.
struct SnapshotTimes {
  std::vector<double> save, write, load_warm, read_warm, load_cold, read_cold;
};

// Writes `bytes` of `data` to a new file at `path` and fsyncs it: the
// milliseconds it took.
double write_new_file(const std::string& path, const void* data, uint64_t bytes) {
  const int64_t t0 = now_ns();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || !write_all(fd, data, bytes) || ::fsync(fd) != 0) {
    die("write %s: %s", path.c_str(), std::strerror(errno));
  }
  ::close(fd);
  return ms_between(t0, now_ns());
}

// read()s `bytes` of the file at `path` into `sink`: the milliseconds it took.
double read_file(const std::string& path, char* sink, uint64_t bytes) {
  const int64_t t0 = now_ns();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || !read_all(fd, sink, bytes)) die("read %s", path.c_str());
  ::close(fd);
  return ms_between(t0, now_ns());
}

// Drops a file's pages from the page cache, so the next read comes from disk.
void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open %s: %s", path.c_str(), std::strerror(errno));
  ::fdatasync(fd);
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// One round of figure 6: saves what the round before loaded (the same
// bytes), writes the baseline file, loads warm and cold and reads the
// baseline file back each time into `sink`, then deletes both files.
void snapshot_round(Bench& b, int r, const std::string& snap_dir, const std::string& snap_name,
                    const std::string& plain_path, char* sink, SnapshotTimes& times) {
  // A new file each time, as save writes new files: allocating blocks is
  // part of the cost.
  auto write_plain = [&] {
    times.write.push_back(write_new_file(plain_path, b.source.get(), b.bytes));
  };
  auto save = [&] {
    const int64_t t0 = now_ns();
    must(shelf::tools::save_snapshot(*b.client, snap_dir, {snap_name}), "save_snapshot");
    times.save.push_back(ms_between(t0, now_ns()));
  };
  // Alternate which writes first: on this machine's disk the first GiB
  // after a pause goes at a burst rate (~1 GB/s) and the next at the
  // sustained one (~0.25 GB/s, as dd shows), whoever writes it.
  if (r % 2 == 0) {
    write_plain();
    save();
  } else {
    save();
    write_plain();
  }
  unpublish_until_freed(*b.client, snap_name, b.bytes);

  int64_t t0 = now_ns();
  must(shelf::tools::load_snapshot(*b.client, snap_dir, {snap_name}, false), "load_snapshot");
  times.load_warm.push_back(ms_between(t0, now_ns()));
  times.read_warm.push_back(read_file(plain_path, sink, b.bytes));

  unpublish_until_freed(*b.client, snap_name, b.bytes);
  for (const auto& e : std::filesystem::directory_iterator(snap_dir + "/" + snap_name)) {
    evict(e.path().string());
  }
  evict(plain_path);
  t0 = now_ns();
  must(shelf::tools::load_snapshot(*b.client, snap_dir, {snap_name}, false), "load_snapshot");
  times.load_cold.push_back(ms_between(t0, now_ns()));
  times.read_cold.push_back(read_file(plain_path, sink, b.bytes));
  // Deleting 1 GiB costs a discard on file systems mounted with `discard`
  // (this machine's root is), paid at the next journal commit: delete both
  // here and commit now, outside every timed step, so that neither the
  // save nor the baseline pays for the other's files.
  ::unlink(plain_path.c_str());
  std::filesystem::remove_all(snap_dir + "/" + snap_name);
  if (int dfd = ::open(g_left.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::syncfs(dfd);
    ::close(dfd);
  }
}

// Snapshots to disk and back. After a SIGINT here the files stay in the
// bench's directory (the signal-safe cleanup does not walk directories).
void figure_snapshot(Bench& b) {
  progress("[6/6] save %s to disk and load it back x%d", b.big_label.c_str(), b.repeat);
  const std::string snap_dir = std::string(g_left.dir) + "/snapshot";
  const std::string plain_path = std::string(g_left.dir) + "/plain.bin";
  if (::mkdir(snap_dir.c_str(), 0700) != 0)
    die("mkdir %s: %s", snap_dir.c_str(), std::strerror(errno));
  // The baseline reads into memory that is already mapped, as shelf reads
  // into partitions add_partition populated.
  std::unique_ptr<char[]> sink(new char[b.bytes]);
  std::memset(sink.get(), 1, b.bytes);
  const std::string snap_name = "bench-snap";
  (void)publish_int64(*b.client, snap_name, b.source.get(), b.rows, b.daemon_pid);
  SnapshotTimes times;
  for (int r = 0; r < b.repeat; ++r) {
    snapshot_round(b, r, snap_dir, snap_name, plain_path, sink.get(), times);
  }
  unpublish_until_freed(*b.client, snap_name, b.bytes);
  sink.reset();
  std::filesystem::remove_all(snap_dir);
  std::filesystem::remove(plain_path);
  // Loading is reading plus publishing: its baseline is read() into private
  // memory plus figure 1's publish of the same bytes from private memory.
  auto plus_publish = [&](std::vector<double> v) {
    for (double& x : v) x += b.publish_ms;
    return v;
  };
  auto snap_row = [&](const std::string& id, const std::string& what, const std::vector<double>& ms,
                      const std::vector<double>& base) {
    const double v = gbps(b.bytes, median(ms)), w = gbps(b.bytes, median(base));
    add_row(id, what, v, "GB/s", w, "GB/s", v / w);
  };
  snap_row("6", "shelf save " + b.big_label + ": XXH3 + write + fsync (vs write + fsync)",
           times.save, times.write);
  snap_row("6a", "shelf load, page cache warm (vs read() + publish of fig. 1)", times.load_warm,
           plus_publish(times.read_warm));
  snap_row("6b", "shelf load, page cache dropped (vs same read() + publish)", times.load_cold,
           plus_publish(times.read_cold));
  snap_row("6c", "  read() of the file alone, warm (vs from disk)", times.read_warm,
           times.read_cold);
}

// ------------------------------------------------------------ figure 7 --

constexpr int kReaderCounts[] = {1, 2, 4, 8};
constexpr double kReaderSeconds = 0.5;  // each round: every reader loops this long

// What one reader process of figure 7 reports.
struct LoopReply {
  int32_t ok = 0;
  uint64_t gets = 0;
  double p50_us = 0, p99_us = 0;
  char error[200] = "";
};

// The body of one reader process: connects, says it is ready, waits for the
// start byte, then gets and releases `name` for kReaderSeconds.
[[noreturn]] void loop_reader(const std::string& socket, const std::string& name, int ready_fd,
                              int start_fd, int reply_fd) {
  default_signals();
  LoopReply r;
  shelf::ClientOptions options;
  options.socket = socket;
  options.client_name = "shelf_bench reader";
  auto client = shelf::Client::connect(options);
  char byte = 1;
  if (!write_all(ready_fd, &byte, 1) || !read_all(start_fd, &byte, 1)) ::_exit(1);
  std::vector<double> samples;
  samples.reserve(1 << 20);
  if (client.ok()) {
    const int64_t end = now_ns() + static_cast<int64_t>(kReaderSeconds * 1e9);
    r.ok = 1;
    for (int64_t t0 = now_ns(); t0 < end;) {
      {
        auto dataset = client->get_dataset(name);
        if (!dataset.ok()) {
          r.ok = 0;
          std::snprintf(r.error, sizeof r.error, "%s", dataset.status().to_string().c_str());
          break;
        }
      }
      const int64_t t1 = now_ns();
      if (samples.size() < samples.capacity()) samples.push_back(us_between(t0, t1));
      ++r.gets;
      t0 = t1;
    }
  } else {
    std::snprintf(r.error, sizeof r.error, "%s", client.status().to_string().c_str());
  }
  r.p50_us = percentile(samples, 0.50);
  r.p99_us = percentile(samples, 0.99);
  (void)write_all(reply_fd, &r, sizeof r);
  ::_exit(0);
}

// N reader processes getting and releasing one small dataset in a loop.
void figure_readers(Bench& b) {
  progress("[7] 1, 2, 4, 8 reader processes getting + releasing for %.1f s each", kReaderSeconds);
  const std::string name = "bench-readers";
  publish_int64(*b.client, name, b.source.get(), 512, b.daemon_pid);
  std::vector<double> pings;
  for (int i = 0; i < 1000; ++i) pings.push_back(ping_us(b.echo_fd));
  const double rtt = median(pings);
  double one_reader_rate = 0;
  for (int n : kReaderCounts) {
    int ready[2], start[2], reply[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(start, O_CLOEXEC) != 0 ||
        ::pipe2(reply, O_CLOEXEC) != 0) {
      die("pipe: %s", std::strerror(errno));
    }
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    for (int i = 0; i < n; ++i) {
      const pid_t pid = ::fork();
      if (pid < 0) die("fork: %s", std::strerror(errno));
      if (pid == 0) loop_reader(g_left.socket_path, name, ready[1], start[0], reply[1]);
      pids.push_back(pid);
    }
    ::close(ready[1]);
    ::close(start[0]);
    ::close(reply[1]);
    char byte = 0;
    for (int i = 0; i < n; ++i) {
      if (!read_all(ready[0], &byte, 1)) die("a reader process died before it started");
    }
    const int64_t cpu0 = process_cpu_ns(b.daemon_pid);
    const int64_t t0 = now_ns();
    for (int i = 0; i < n; ++i) (void)write_all(start[1], &byte, 1);
    std::vector<LoopReply> replies(static_cast<size_t>(n));
    for (LoopReply& r : replies) {
      if (!read_all(reply[0], &r, sizeof r)) die("a reader process died");
    }
    const double wall_s = static_cast<double>(now_ns() - t0) / 1e9;
    const int64_t cpu1 = process_cpu_ns(b.daemon_pid);
    for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
    for (int fd : {ready[0], start[1], reply[0]}) ::close(fd);
    uint64_t gets = 0;
    std::vector<double> p50, p99;
    for (const LoopReply& r : replies) {
      if (!r.ok) die("a reader failed: %s", r.error);
      gets += r.gets;
      p50.push_back(r.p50_us);
      p99.push_back(r.p99_us);
    }
    const double rate = static_cast<double>(gets) / kReaderSeconds;
    if (n == 1) one_reader_rate = rate;
    const std::string who = std::to_string(n) + (n == 1 ? " reader: " : " readers: ");
    add_row("7", who + "get + release per second, all readers (vs 1 reader)", rate, "/s",
            one_reader_rate, "/s", rate / one_reader_rate);
    add_row("7", "  " + who + "get + release p50, median of readers (vs round trip)", median(p50),
            "us", rtt, "us", median(p50) / rtt);
    add_row("7", "  " + who + "get + release p99, worst reader (vs round trip)",
            *std::max_element(p99.begin(), p99.end()), "us", rtt, "us",
            *std::max_element(p99.begin(), p99.end()) / rtt);
    const double daemon_share =
        cpu0 >= 0 && cpu1 >= 0 ? static_cast<double>(cpu1 - cpu0) / 1e9 / wall_s : NAN;
    add_row("7", "  " + who + "shelfd CPU time meanwhile, share of one CPU", 100 * daemon_share,
            "%");
  }
  must(b.client->unpublish_dataset(name), "unpublish_dataset");
}

// ------------------------------------------------------------ figure 8 --

constexpr int kLookupSamples = 2000;

// Figure 12 publishes this many datasets of each size before it unpublishes
// them; shelfd's limit must hold that many 1 MiB ones (each takes 1.02 MiB
// with its header pages) whatever --size-mib is.
constexpr int kSmallSamples = 2000;
constexpr uint64_t kSmallFigureBytes = kSmallSamples * (uint64_t{5} << 18) + (uint64_t{256} << 20);

// contains / size / keys among figure 5's 10,001 datasets, vs the round trip.
void figure_lookup(Bench& b) {
  progress("[8] contains, size and keys among %d datasets", kManyDatasets + 1);
  shelf::DatasetMap map = b.client->datasets();
  std::vector<double> pings, hit, miss, size, keys;
  for (int i = 0; i < kLookupSamples; ++i) {
    pings.push_back(ping_us(b.echo_fd));
    char name[32];
    std::snprintf(name, sizeof name, "tiny-%05d", i * 7 % kManyDatasets);
    int64_t t0 = now_ns();
    const bool found = must(map.contains(name), "contains");
    hit.push_back(us_between(t0, now_ns()));
    t0 = now_ns();
    const bool absent = !must(map.contains("no-such-dataset"), "contains");
    miss.push_back(us_between(t0, now_ns()));
    if (!found || !absent) die("contains answered wrong");
    if (i % 20 == 0) {
      t0 = now_ns();
      const size_t n = must(map.size(), "size");
      size.push_back(us_between(t0, now_ns()));
      t0 = now_ns();
      const size_t k = must(map.keys(), "keys").size();
      keys.push_back(us_between(t0, now_ns()));
      if (n != static_cast<size_t>(kManyDatasets) + 1 || k != n) die("size/keys answered wrong");
    }
  }
  const double rtt = median(pings);
  add_row("8", "contains, present, among 10,001, median (vs round trip)", median(hit), "us", rtt,
          "us", median(hit) / rtt);
  add_row("8", "contains, absent, median (vs round trip)", median(miss), "us", rtt, "us",
          median(miss) / rtt);
  add_row("8", "size() of 10,001, median (vs round trip)", median(size), "us", rtt, "us",
          median(size) / rtt);
  add_row("8", "keys() of 10,001, median (vs round trip)", median(keys), "us", rtt, "us",
          median(keys) / rtt);
}

// A waiter process woken by a publish: from publish_dataset's return in this
// process to wait_for_datasets' return in the waiter (CLOCK_MONOTONIC is one
// clock for both). The waiter says when it starts each wait; the publish
// follows once the daemon holds the waiter's parked connection.
constexpr int kWaitSamples = 100;

// Forks a process that connects to the bench's shelfd, runs `body` with its
// Client and exits 0 (`body` calls _exit(1) itself on failure).
pid_t fork_connected(const Bench& b, const std::function<void(shelf::Client&)>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    default_signals();
    shelf::Client c = must(shelf::Client::connect(b.client_options), "connect");
    body(c);
    ::_exit(0);
  }
  return pid;
}

void figure_wait(Bench& b) {
  progress("[9] %d publishes, each waking a waiter in another process", kWaitSamples);
  int to_waiter[2], from_waiter[2];
  if (::pipe2(to_waiter, O_CLOEXEC) != 0 || ::pipe2(from_waiter, O_CLOEXEC) != 0) {
    die("pipe: %s", std::strerror(errno));
  }
  const uint32_t before = must(b.client->status(), "status").num_connections;
  const pid_t pid = fork_connected(b, [&](shelf::Client& c) {
    for (int i = 0; i < kWaitSamples; ++i) {
      char go = 0;
      if (!read_all(to_waiter[0], &go, 1)) ::_exit(1);
      const std::string names[] = {"wait-" + std::to_string(i)};
      must(c.wait_for_datasets(names), "wait_for_datasets");
      const int64_t woke = now_ns();
      if (!write_all(from_waiter[1], &woke, sizeof woke)) ::_exit(1);
    }
  });
  std::vector<double> latency, pings;
  for (int i = 0; i < kWaitSamples; ++i) {
    pings.push_back(ping_us(b.echo_fd));
    char go = 1;
    if (!write_all(to_waiter[1], &go, 1)) die("the waiter is gone");
    // Its Client's connection and the one its wait is parked on.
    while (must(b.client->status(), "status").num_connections < before + 2) {
      std::this_thread::yield();
    }
    shelf::TableBuilder t = must(b.client->create_table({{"v", shelf::Type::kInt64}}), "table");
    (void)must(t.add_partition(1), "add_partition");
    must(b.client->publish_dataset("wait-" + std::to_string(i), t), "publish");
    const int64_t published = now_ns();
    int64_t woke = 0;
    if (!read_all(from_waiter[0], &woke, sizeof woke)) die("the waiter is gone");
    latency.push_back(us_between(published, woke));
    must(b.client->unpublish_dataset("wait-" + std::to_string(i)), "unpublish");
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  for (int fd : {to_waiter[0], to_waiter[1], from_waiter[0], from_waiter[1]}) ::close(fd);
  const double rtt = median(pings);
  add_row("9", "publish's return to a waiter's return (other process), median (vs round trip)",
          median(latency), "us", rtt, "us", median(latency) / rtt);
  add_row("9", "  p99", percentile(latency, 0.99), "us");
}

// shelfd serves everyone from one loop: nothing slow may run on it. Another
// process publishes and unpublishes the big dataset `b.repeat` times while
// this one times requests that need the daemon (a one-row publish +
// unpublish, and a status()), against the same requests with nothing else
// running.
struct LoopSamples {
  std::vector<double> publish_us, status_us, get_us;
};

// A get takes no message (docs/leases.md): nothing of shelfd's loop is in
// its time, only this process's own scheduling and the segment's mapping.
void time_get(shelf::Client& client, LoopSamples& out) {
  const int64_t t0 = now_ns();
  {
    shelf::Dataset d = must(client.get_dataset("loop-get"), "get");
    if (d.num_rows() != 1)
      die("loop-get has %llu rows", static_cast<unsigned long long>(d.num_rows()));
  }
  out.get_us.push_back(us_between(t0, now_ns()));
}

void time_daemon_requests(shelf::Client& client, LoopSamples& out) {
  for (int i = 0; i < 10; ++i) time_get(client, out);
  const int64_t t0 = now_ns();
  shelf::TableBuilder t = must(client.create_table({{"v", shelf::Type::kInt64}}), "table");
  (void)must(t.add_partition(1), "add_partition");
  must(client.publish_dataset("loop-small", t), "publish");
  must(client.unpublish_dataset("loop-small"), "unpublish");
  const int64_t t1 = now_ns();
  (void)must(client.status(), "status");
  out.publish_us.push_back(us_between(t0, t1));
  out.status_us.push_back(us_between(t1, now_ns()));
}

// shelfd's own count of its event loop's turns (shelf_loop_turn_seconds):
// the turns of at most 1 ms and 10 ms, all of them, and the longest.
struct LoopTurns {
  double within_1ms = 0, within_10ms = 0, all = 0, max_s = 0;
};

LoopTurns loop_turns() {
  const std::string text =
      must(shelf::tools::fetch_metrics(g_left.socket_path, std::chrono::milliseconds(5000)),
           "shelf metrics");
  LoopTurns t;
  auto value = [&](const std::string& series) {
    const size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) die("shelfd's metrics have no %s", series.c_str());
    return std::strtod(text.c_str() + at + series.size() + 2, nullptr);
  };
  t.within_1ms = value("shelf_loop_turn_seconds_bucket{le=\"0.001\"}");
  t.within_10ms = value("shelf_loop_turn_seconds_bucket{le=\"0.01\"}");
  t.all = value("shelf_loop_turn_seconds_count");
  t.max_s = value("shelf_loop_turn_max_seconds");
  return t;
}

void figure_loop(Bench& b) {
  progress("[10] requests of one client while another publishes and unpublishes %s x%d",
           b.big_label.c_str(), b.repeat);
  LoopSamples alone, during;
  {
    shelf::TableBuilder t = must(b.client->create_table({{"v", shelf::Type::kInt64}}), "table");
    (void)must(t.add_partition(1), "add_partition");
    must(b.client->publish_dataset("loop-get", t), "publish loop-get");
  }
  for (int i = 0; i < 2000; ++i) time_daemon_requests(*b.client, alone);
  // The baseline of the gets: the same gets while two processes only spin,
  // as busy as the publisher's two reserving threads but touching no shelf:
  // how long this process waits for a core on this machine.
  LoopSamples spinning;
  {
    std::vector<pid_t> spinners;
    for (int k = 0; k < 2; ++k) {
      const pid_t pid = ::fork();
      if (pid < 0) die("fork: %s", std::strerror(errno));
      if (pid == 0) {
        for (;;) __asm__ __volatile__("" ::: "memory");  // spin until killed
      }
      spinners.push_back(pid);
    }
    for (const int64_t until = now_ns() + 3'000'000'000; now_ns() < until;) {
      time_get(*b.client, spinning);
    }
    for (pid_t pid : spinners) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  int calls[2];  // the publishing process's unpublish_dataset() times, in us
  if (::pipe2(calls, O_CLOEXEC) != 0) die("pipe: %s", std::strerror(errno));
  const pid_t pid = fork_connected(b, [&](shelf::Client& c) {
    for (int r = 0; r < b.repeat; ++r) {
      publish_int64(c, "loop-big", b.source.get(), b.rows, b.daemon_pid);
      const int64_t t0 = now_ns();
      must(c.unpublish_dataset("loop-big"), "unpublish");
      const double us = us_between(t0, now_ns());
      if (!write_all(calls[1], &us, sizeof us)) ::_exit(1);
    }
  });
  ::close(calls[1]);
  const LoopTurns turns_before = loop_turns();
  int status = 0;
  const int64_t t0 = now_ns();
  while (::waitpid(pid, &status, WNOHANG) == 0) time_daemon_requests(*b.client, during);
  const double loop_s = static_cast<double>(now_ns() - t0) / 1e9;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the publishing process failed");
  std::vector<double> unpublish_us(static_cast<size_t>(b.repeat));
  if (!read_all(calls[0], unpublish_us.data(), unpublish_us.size() * sizeof(double))) {
    die("the publishing process did not say how long its unpublishes took");
  }
  ::close(calls[0]);
  const LoopTurns turns_after = loop_turns();
  // Its last unpublish may still be giving memory back: wait, so that the
  // figures after this one start from a quiet daemon.
  while (must(b.client->status(), "status").pending_free_bytes > 0) sleep_ms(5);
  auto worst = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  auto over = [](const std::vector<double>& v, double us) {
    return static_cast<double>(std::count_if(v.begin(), v.end(), [&](double x) { return x > us; }));
  };
  add_row("10",
          "worst 1-row publish+unpublish of another client during a " + b.big_label +
              " publish/unpublish loop (vs the same alone, worst)",
          worst(during.publish_us) / 1e3, "ms", worst(alone.publish_us) / 1e3, "ms",
          worst(during.publish_us) / worst(alone.publish_us));
  add_row("10", "  its median (vs the same alone)", median(during.publish_us), "us",
          median(alone.publish_us), "us", median(during.publish_us) / median(alone.publish_us));
  add_row("10", "  its p99 (vs the same alone)", percentile(during.publish_us, 0.99), "us",
          percentile(alone.publish_us, 0.99), "us",
          percentile(during.publish_us, 0.99) / percentile(alone.publish_us, 0.99));
  add_row("10",
          "  of " + std::to_string(during.publish_us.size()) + " in " +
              std::to_string(static_cast<int>(loop_s * 1000)) + " ms, how many took > 10 ms",
          over(during.publish_us, 10'000), "");
  add_row("10",
          "worst get_dataset + release of a 1-row dataset during the loop (vs the same while "
          "two processes spin)",
          worst(during.get_us), "us", worst(spinning.get_us), "us",
          worst(during.get_us) / worst(spinning.get_us));
  add_row("10", "  its p99.9 (vs the same while two spin)", percentile(during.get_us, 0.999), "us",
          percentile(spinning.get_us, 0.999), "us",
          percentile(during.get_us, 0.999) / percentile(spinning.get_us, 0.999));
  add_row("10", "  the same alone: worst, p99.9", worst(alone.get_us), "us",
          percentile(alone.get_us, 0.999), "us");
  add_row("10",
          "  of " + std::to_string(during.get_us.size()) + ", how many took > 1 ms (of " +
              std::to_string(spinning.get_us.size()) + " while two spin)",
          over(during.get_us, 1'000), "", over(spinning.get_us, 1'000), "");
  must(b.client->unpublish_dataset("loop-get"), "unpublish loop-get");
  const double turns = turns_after.all - turns_before.all;
  add_row("10",
          "shelfd's loop meanwhile: of " + std::to_string(static_cast<uint64_t>(turns)) +
              " turns, how many took > 1 ms",
          turns - (turns_after.within_1ms - turns_before.within_1ms), "");
  add_row("10", "  how many took > 10 ms",
          turns - (turns_after.within_10ms - turns_before.within_10ms), "");
  add_row("10", "  its longest turn since it started", turns_after.max_s * 1e3, "ms");
  add_row("10", "the loop's unpublish_dataset() of " + b.big_label + ", the worst call",
          worst(unpublish_us) / 1e3, "ms");
  add_row("10", "worst status() during the loop (vs the same alone, worst)",
          worst(during.status_us) / 1e3, "ms", worst(alone.status_us) / 1e3, "ms",
          worst(during.status_us) / worst(alone.status_us));
}

// ----------------------------------------------------------- figure 11 --

// Publishes `rows` rows of `source` as `name` in `partitions` partitions.
void publish_partitioned(shelf::Client& client, const std::string& name, const int64_t* source,
                         uint64_t rows, uint64_t partitions) {
  shelf::TableBuilder table = must(client.create_table({{"v", shelf::Type::kInt64}}), "create");
  for (uint64_t p = 0; p < partitions; ++p) {
    const uint64_t begin = rows * p / partitions, end = rows * (p + 1) / partitions;
    shelf::PartitionBuilder part = must(table.add_partition(end - begin), "add_partition");
    std::memcpy(part.values<int64_t>(0).data(), source + begin, (end - begin) * sizeof(int64_t));
  }
  must(client.publish_dataset(name, table), "publish_dataset");
}

// What one kill -9 and restart took, from the start of the new shelfd.
struct RestartSample {
  double serving_ms = 0;    // until it serves (the launcher returned)
  double small_get_ms = 0;  // until a get of the dataset queued last returned
  double checked_ms = 0;    // until status says every checksum is checked
};

// kill -9 of shelfd, and a new one on the same segment with `extra`
// options; b.client connects to it. Returns the milliseconds from the
// launch until it served (before the connect).
double relaunch_daemon(Bench& b, const std::vector<std::string>& extra) {
  b.client.reset();
  ::kill(g_left.daemon_pid, SIGKILL);
  if (!wait_daemon_gone(10000)) die("shelfd did not die of SIGKILL");
  const int64_t t0 = now_ns();
  launch_daemon(extra);
  const double serving_ms = ms_between(t0, now_ns());
  b.daemon_pid = g_left.daemon_pid;
  b.client.emplace(must(shelf::Client::connect(b.client_options), "connect"));
  return serving_ms;
}

RestartSample kill_and_restart(Bench& b, unsigned threads, const std::string& small) {
  RestartSample s;
  const int64_t t0 = now_ns();
  s.serving_ms = relaunch_daemon(b, {"--verify-threads", std::to_string(threads)});
  { shelf::Dataset got = must(b.client->get_dataset(small), "get_dataset"); }
  s.small_get_ms = ms_between(t0, now_ns());
  while (must(b.client->status(), "status").verifying.datasets_left > 0) sleep_ms(1);
  s.checked_ms = ms_between(t0, now_ns());
  return s;
}

// kill -9 of shelfd with the big dataset published (in 16 partitions, so
// that threads can share it), and a restart: when it serves, when a get of
// a small dataset (queued last) returns, and when every checksum is
// checked, against hashing the same bytes here on one thread.
// Small publishes: a dataset of one int64 partition of 1 KiB, 64 KiB or
// 1 MiB, built and published (create_table, add_partition, fill, publish),
// one after another, then unpublished outside the timing (so the segment
// holds kSmallSamples of the largest at once: see kSmallFigureBytes).
void figure_small(Bench& b) {
  constexpr int kSamples = kSmallSamples;
  progress("[12] small publishes: %d each of 1 KiB, 64 KiB and 1 MiB", kSamples);
  std::vector<double> pings;
  for (int i = 0; i < kSamples; ++i) pings.push_back(ping_us(b.echo_fd));
  const double rtt = median(pings);
  const std::pair<uint64_t, const char*> sizes[] = {
      {uint64_t{1} << 10, "1 KiB"}, {uint64_t{64} << 10, "64 KiB"}, {uint64_t{1} << 20, "1 MiB"}};
  for (const auto& [bytes, label] : sizes) {
    // The extent's layout takes a few bytes past the values: 64 KiB of
    // values is the largest partition that goes inline.
    const uint64_t rows = (bytes == (64 << 10) ? bytes - 64 : bytes) / 8;
    std::vector<double> took;
    for (int i = 0; i < kSamples; ++i) {
      const std::string name = "small-" + std::to_string(i);
      const int64_t t0 = now_ns();
      shelf::TableBuilder t = must(b.client->create_table({{"v", shelf::Type::kInt64}}), "table");
      shelf::PartitionBuilder p = must(t.add_partition(rows), "add_partition");
      std::memcpy(p.values<int64_t>(0).data(), b.source.get(), rows * 8);
      must(b.client->publish_dataset(name, t), "publish");
      took.push_back(us_between(t0, now_ns()));
      if (i + 1 < kSamples) continue;
      for (int j = 0; j < kSamples; ++j) {
        must(b.client->unpublish_dataset("small-" + std::to_string(j)), "unpublish");
      }
    }
    const double med = median(took);
    add_row("12", std::string("publish of ") + label + ", median (vs round trip)", med, "us", rtt,
            "us", med / rtt);
    double total_us = 0;
    for (double us : took) total_us += us;
    add_row("12", "  publishes per second, one after another", 1e6 * kSamples / total_us, "/s");
    add_row("12", "  p99", percentile(took, 0.99), "us");
  }
}

void figure_restart(Bench& b) {
  progress("[11] kill -9 and restart with %s published, x%d per thread count", b.big_label.c_str(),
           b.repeat);
  const std::string big = "bench-restart", small = "bench-restart-small";
  // Only these are checked at each restart: what other figures left goes.
  for (const shelf::DatasetInfo& d : must(b.client->list_datasets(), "list_datasets")) {
    must(b.client->unpublish_dataset(d.name), "unpublish");
  }
  publish_partitioned(*b.client, big, b.source.get(), b.rows, 16);
  publish_partitioned(*b.client, small, b.source.get(), b.small_rows, 1);
  std::vector<double> hash_ms;
  for (int r = 0; r < b.repeat; ++r) {
    const int64_t t0 = now_ns();
    volatile uint64_t hash = XXH3_64bits(b.source.get(), b.bytes);
    (void)hash;
    hash_ms.push_back(ms_between(t0, now_ns()));
  }
  const double hash = median(hash_ms);
  std::vector<RestartSample> one, two;
  for (int r = 0; r < b.repeat; ++r) {
    one.push_back(kill_and_restart(b, 1, small));
    two.push_back(kill_and_restart(b, 2, small));
  }
  auto med = [](const std::vector<RestartSample>& v, double RestartSample::*field) {
    return median(collect(v, [&](const RestartSample& x) { return x.*field; }));
  };
  const double serving = med(two, &RestartSample::serving_ms);
  const double small_get = med(two, &RestartSample::small_get_ms);
  add_row("11", "restart after kill -9 with " + b.big_label + ": serving (vs XXH3 of it, 1 thread)",
          serving, "ms", hash, "ms", serving / hash);
  add_row("11a", "  a get of a " + b.small_label + " dataset queued last (vs the same XXH3)",
          small_get, "ms", hash, "ms", small_get / hash);
  const double checked1 = med(one, &RestartSample::checked_ms);
  const double checked2 = med(two, &RestartSample::checked_ms);
  add_row("11b", "  every checksum checked, --verify-threads 1 (vs the same XXH3)",
          gbps(b.bytes, checked1), "GB/s", gbps(b.bytes, hash), "GB/s", hash / checked1);
  add_row("11c", "  every checksum checked, --verify-threads 2 (vs 1 thread)",
          gbps(b.bytes, checked2), "GB/s", gbps(b.bytes, checked1), "GB/s", checked1 / checked2);
  must(b.client->unpublish_dataset(big), "unpublish");
  must(b.client->unpublish_dataset(small), "unpublish");
}

// ----------------------------------------------------------- figure 13 --

// What one round of figure 13 measured, in milliseconds (the other
// client's requests in microseconds).
struct SpillRound {
  double spill_ms = 0;           // from the publish's return until the list says spilled
  double write_ms = 0;           // write + fsync of the same bytes from private memory
  double restore_ms = 0;         // get_dataset of the spilled dataset (room for it under the limit)
  double read_ms = 0;            // read() of the plain file (in the page cache) into private memory
  std::vector<double> other_us;  // another client's requests during the spill
};

// Another process timing a 1-row publish + unpublish and a status every
// millisecond, warm from its first requests: it keeps the samples taken
// between the first byte on `control_fd` and the second, and writes them
// (count, then values) to `reply_fd`.
pid_t start_spill_watcher(Bench& b, int control_fd, int reply_fd) {
  return fork_connected(b, [&](shelf::Client& c) {
    LoopSamples warm, samples;
    int bytes_seen = 0;
    while (bytes_seen < 2) {
      pollfd p{control_fd, POLLIN, 0};
      if (::poll(&p, 1, 1) == 1) {
        char byte;
        if (::read(control_fd, &byte, 1) != 1) ::_exit(1);
        ++bytes_seen;
        continue;
      }
      time_daemon_requests(c, bytes_seen == 1 ? samples : warm);
    }
    std::vector<double> all = samples.publish_us;
    all.insert(all.end(), samples.status_us.begin(), samples.status_us.end());
    const uint64_t n = all.size();
    if (!write_all(reply_fd, &n, sizeof n) ||
        !write_all(reply_fd, all.data(), n * sizeof(double))) {
      ::_exit(1);
    }
  });
}

// Starts and ends the watcher's samples; the end returns them.
void tell_watcher(int control_fd) {
  const char byte = 1;
  if (!write_all(control_fd, &byte, 1)) die("the watcher process died");
}
std::vector<double> end_watcher(pid_t watcher, int control_fd, int reply_fd) {
  tell_watcher(control_fd);
  uint64_t n = 0;
  if (!read_all(reply_fd, &n, sizeof n)) die("the watcher process failed");
  std::vector<double> samples(n);
  if (!read_all(reply_fd, samples.data(), n * sizeof(double))) die("watcher: short reply");
  int status = 0;
  ::waitpid(watcher, &status, 0);
  return samples;
}

bool listed_as_spilled(shelf::Client& client, const std::string& name) {
  for (const shelf::DatasetInfo& d : must(client.list_datasets(), "list_datasets")) {
    if (d.name == name) return d.spilled;
  }
  return false;
}

// One round: publish the big dataset past --spill-above, so that shelfd
// spills it at once (another process's requests timed meanwhile); then a
// get restores it.
SpillRound spill_round(Bench& b, int r, const std::string& plain_path, char* sink) {
  SpillRound round;
  auto write_plain = [&] { round.write_ms = write_new_file(plain_path, b.source.get(), b.bytes); };
  if (r % 2 == 0) write_plain();  // as figure 6: neither always writes first
  int control[2], reply[2];
  if (::pipe2(control, O_CLOEXEC) != 0 || ::pipe2(reply, O_CLOEXEC) != 0) {
    die("pipe: %s", std::strerror(errno));
  }
  const pid_t watcher = start_spill_watcher(b, control[0], reply[1]);
  ::close(reply[1]);
  sleep_ms(20);  // its first requests (connecting, mapping) before it is timed
  (void)publish_int64(*b.client, "spill-a", b.source.get(), b.rows, b.daemon_pid);
  const int64_t t0 = now_ns();
  tell_watcher(control[1]);
  while (!listed_as_spilled(*b.client, "spill-a")) {
    if (now_ns() - t0 > 600'000'000'000) die("'spill-a' was not spilled in 10 minutes");
    sleep_ms(1);
  }
  round.spill_ms = ms_between(t0, now_ns());
  round.other_us = end_watcher(watcher, control[1], reply[0]);
  for (int fd : {control[0], control[1], reply[0]}) ::close(fd);
  if (r % 2 == 1) write_plain();
  // Its memory back, so that the restore needs no spill first.
  while (must(b.client->status(), "status").pending_free_bytes > 0) sleep_ms(1);
  int64_t t1 = now_ns();
  {
    shelf::Dataset a = must(b.client->get_dataset("spill-a"), "get_dataset");
    round.restore_ms = ms_between(t1, now_ns());
    if (a.column(0, 0).values<int64_t>()[b.rows - 1] != b.source[b.rows - 1]) {
      die("'spill-a' came back wrong");
    }
  }
  round.read_ms = read_file(plain_path, sink, b.bytes);
  must(b.client->unpublish_dataset("spill-a"), "unpublish");
  while (must(b.client->status(), "status").pending_free_bytes > 0) sleep_ms(1);
  ::unlink(plain_path.c_str());
  if (int dfd = ::open(g_left.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::syncfs(dfd);  // the deletes' discards, outside the next round's timing (figure 6)
    ::close(dfd);
  }
  return round;
}

// get_dataset + release of `name`, kLatencySamples times: the median in us.
double get_release_us(Bench& b, const std::string& name) {
  std::vector<double> get, rel, both;
  for (int i = 0; i < kLatencySamples; ++i) get_once(b, name, true, &get, &rel, &both);
  return median(both);
}

// Spilling: shelfd again with --spill-dir, a limit of 1.5 times the big
// dataset and --spill-above 50%, so that the big dataset is spilled as
// soon as it is published.
void figure_spill(Bench& b) {
  progress("[13] spill %s to disk and restore it on a get, x%d", b.big_label.c_str(), b.repeat);
  for (const shelf::DatasetInfo& d : must(b.client->list_datasets(), "list_datasets")) {
    must(b.client->unpublish_dataset(d.name), "unpublish");
  }
  (void)publish_int64(*b.client, "spill-small", b.source.get(), b.small_rows, b.daemon_pid);
  const double get_plain_us = get_release_us(b, "spill-small");
  must(b.client->unpublish_dataset("spill-small"), "unpublish");
  const std::string spill_dir = std::string(g_left.dir) + "/spill";
  const std::string plain_path = std::string(g_left.dir) + "/spill-plain.bin";
  const uint64_t limit = b.bytes + b.bytes / 2 + 16 * kMiB;  // the index: ~5 MiB
  relaunch_daemon(b, {"--spill-dir", spill_dir, "--memory-limit", std::to_string(limit),
                      "--spill-above", "50%"});
  std::vector<double> alone;  // the watcher's requests with nothing spilled, for comparison
  {
    int control[2], reply[2];
    if (::pipe2(control, O_CLOEXEC) != 0 || ::pipe2(reply, O_CLOEXEC) != 0) {
      die("pipe: %s", std::strerror(errno));
    }
    const pid_t watcher = start_spill_watcher(b, control[0], reply[1]);
    ::close(reply[1]);
    sleep_ms(20);
    tell_watcher(control[1]);
    sleep_ms(500);
    alone = end_watcher(watcher, control[1], reply[0]);
    for (int fd : {control[0], control[1], reply[0]}) ::close(fd);
  }
  std::unique_ptr<char[]> sink(new char[b.bytes]);
  std::memset(sink.get(), 1, b.bytes);
  std::vector<SpillRound> rounds;
  for (int r = 0; r < b.repeat; ++r) rounds.push_back(spill_round(b, r, plain_path, sink.get()));
  sink.reset();
  // A resident get with a dataset spilled, against the same before.
  {
    shelf::TableBuilder t = must(b.client->create_table({{"v", shelf::Type::kInt64}}), "table");
    shelf::PartitionBuilder p = must(t.add_partition(b.small_rows), "add_partition");
    std::memcpy(p.values<int64_t>(0).data(), b.source.get(), b.small_rows * sizeof(int64_t));
    shelf::PublishOptions pinned;
    pinned.pin = true;  // the big ones go, not this one
    must(b.client->publish_dataset("spill-small", t, pinned), "publish_dataset");
  }
  (void)publish_int64(*b.client, "spill-a", b.source.get(), b.rows, b.daemon_pid);
  while (!listed_as_spilled(*b.client, "spill-a")) sleep_ms(1);
  const double get_spilling_us = get_release_us(b, "spill-small");
  for (const char* name : {"spill-small", "spill-a"}) {
    must(b.client->unpublish_dataset(name), "unpublish");
  }
  relaunch_daemon(b, {"--memory-limit", std::to_string(2 * b.bytes + kGiB)});
  std::filesystem::remove_all(spill_dir);

  auto med = [&](double SpillRound::*field) {
    return median(collect(rounds, [&](const SpillRound& x) { return x.*field; }));
  };
  const double spill_ms = med(&SpillRound::spill_ms);
  const double write_ms = med(&SpillRound::write_ms);
  add_row("13", "spill " + b.big_label + " past --spill-above (vs write + fsync, private memory)",
          gbps(b.bytes, spill_ms), "GB/s", gbps(b.bytes, write_ms), "GB/s", write_ms / spill_ms);
  const double restore_ms = med(&SpillRound::restore_ms);
  const double read_publish_ms = med(&SpillRound::read_ms) + b.publish_ms;
  add_row("13a", "restore on get, file in the page cache (vs read() + publish of fig. 1)",
          gbps(b.bytes, restore_ms), "GB/s", gbps(b.bytes, read_publish_ms), "GB/s",
          read_publish_ms / restore_ms);
  add_row("13b", "get_dataset + release, resident, with --spill-dir and one spilled (vs without)",
          get_spilling_us, "us", get_plain_us, "us", get_spilling_us / get_plain_us, "<=", 1.25);
  std::vector<double> other;
  for (const SpillRound& round : rounds) {
    other.insert(other.end(), round.other_us.begin(), round.other_us.end());
  }
  const double worst_ms = *std::max_element(other.begin(), other.end()) / 1e3;
  add_row("13c",
          "worst request of another client during the spills, of " + std::to_string(other.size()) +
              " (vs the 10 ms target)",
          worst_ms, "ms", 10.0, "ms", worst_ms / 10.0, "<=", 1.0);
  const double alone_worst_ms = *std::max_element(alone.begin(), alone.end()) / 1e3;
  add_row("13d", "  the same requests with no spill, worst", alone_worst_ms, "ms");
  add_row("13e", "  its median during the spills (vs with no spill)", median(other), "us",
          median(alone), "us", median(other) / median(alone));
  add_row("13e", "  its p99 during the spills (vs with no spill)", percentile(other, 0.99), "us",
          percentile(alone, 0.99), "us", percentile(other, 0.99) / percentile(alone, 0.99));
}

// ------------------------------------------------------- the table of them --

struct Figure {
  const char* id;     // the first column of its rows
  const char* name;   // for --figure (its id works too)
  const char* needs;  // ids of the figures whose results it uses: they run before it
  const char* what;
  void (*run)(Bench&);
};

// In the order they run: each needs only figures above it.
constexpr Figure kFigures[] = {
    {"1", "publish", "", "publish bandwidth of an int64 dataset vs memcpy into fresh tmpfs pages",
     figure_publish},
    {"2", "latency", "1",
     "get_dataset latency (1 MiB and the big dataset) vs a bare 64-byte Unix-socket round trip",
     figure_latency},
    {"3", "scan", "1",
     "a reader process scanning the published column (first scan with several madvise "
     "options, repeated scan) vs a private in-process scan",
     figure_scan},
    {"4", "unpublish", "1", "unpublish until the memory is back vs fallocate(PUNCH_HOLE)",
     figure_unpublish},
    {"5", "list", "24", "list_datasets with 10,000 datasets vs the round trip", figure_list},
    {"6", "snapshot", "1",
     "shelf save / shelf load of the big dataset to and from disk vs write + fsync of the same "
     "bytes from private memory, and vs read() of them plus figure 1's publish",
     figure_snapshot},
    {"7", "readers", "",
     "1, 2, 4 and 8 reader processes getting + releasing a small dataset in a loop: "
     "gets/s, p50/p99 and shelfd's CPU time",
     figure_readers},
    {"8", "lookup", "5", "contains, size and keys among 10,001 datasets vs the round trip",
     figure_lookup},
    {"9", "wait", "",
     "wait_for_datasets in another process: a publish's return to the waiter's return vs the "
     "round trip",
     figure_wait},
    {"10", "loop", "",
     "requests of one client that need shelfd (a 1-row publish + unpublish, a status) while "
     "another process publishes and unpublishes the big dataset in a loop, vs the same alone",
     figure_loop},
    {"11", "restart", "",
     "kill -9 of shelfd with the big dataset published, and a restart: when it serves, when a "
     "get of a small dataset returns, when every checksum is checked (1 and 2 threads), vs "
     "XXH3 of the same bytes on one thread",
     figure_restart},
    {"12", "small", "",
     "publishes of 1 KiB, 64 KiB and 1 MiB datasets one after another vs the round trip",
     figure_small},
    {"13", "spill", "1",
     "shelfd --spill-dir: a spill of the big dataset vs write + fsync, its restore on a get "
     "vs read() + publish, a resident get, and another client's worst request during the "
     "spills",
     figure_spill},
};

// --------------------------------------------------------------- options --

struct Options {
  uint64_t size_mib = 1024;
  int repeat = 5;
  bool json = false;
  bool run[std::size(kFigures)] = {};  // which figures run
};

// The index in kFigures of figure `arg` (its id or name), or -1.
int find_figure(const std::string& arg) {
  for (size_t f = 0; f < std::size(kFigures); ++f) {
    if (arg == kFigures[f].id || arg == kFigures[f].name) return static_cast<int>(f);
  }
  return -1;
}

// Marks figure `f` to run, and the figures it needs.
void select_figure(Options& o, int f) {
  o.run[f] = true;
  for (const char* id = kFigures[f].needs; *id != '\0'; ++id) {
    select_figure(o, find_figure(std::string(1, *id)));
  }
}

void print_help() {
  std::printf(
      "Usage: shelf_bench [--size-mib N] [--repeat N] [--figure NAME]... [--shm-dir DIR] [--json]\n"
      "                   [--list]\n\n"
      "Measures shelf against baselines of this machine, in one run:\n"
      "  --size-mib N    size of the big int64 dataset (default 1024)\n"
      "  --repeat N      runs of each bandwidth figure; the median is reported (default 5)\n"
      "  --figure NAME   run this figure (its number or name; repeatable), and the figures\n"
      "                  whose results it compares with; default: all\n"
      "  --shm-dir DIR   the tmpfs for shelfd's segment and the baselines' files, e.g. one\n"
      "                  mounted huge=within_size (default /dev/shm)\n"
      "  --list          list the figures and exit\n"
      "  --json          print the figures as JSON instead of a table\n"
      "It starts its own shelfd (%s) and stops it at the end.\n",
      SHELFD_PATH);
}

void print_figures() {
  for (const Figure& f : kFigures) {
    std::printf("%s  %-10s %s", f.id, f.name, f.what);
    const std::string needs = f.needs;
    if (needs.size() == 1) std::printf(" (runs figure %s first)", needs.c_str());
    if (needs.size() == 2) std::printf(" (runs figures %c and %c first)", needs[0], needs[1]);
    std::printf("\n");
  }
}

Options parse_options(int argc, char** argv) {
  Options o;
  bool any_figure = false;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) die("%s needs a value", argv[i]);
    return argv[++i];
  };
  auto number = [&](int& i) -> long long {
    const std::string text = value(i);
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\0' || v <= 0)
      die("%s: '%s' is not a positive number", argv[i - 1], argv[i]);
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--size-mib") {
      o.size_mib = static_cast<uint64_t>(number(i));
    } else if (a == "--repeat") {
      o.repeat = static_cast<int>(std::min(number(i), 1000LL));
    } else if (a == "--figure") {
      const int f = find_figure(value(i));
      if (f < 0) die("--figure: no figure '%s' (see --list)", argv[i]);
      select_figure(o, f);
      any_figure = true;
    } else if (a == "--shm-dir") {
      const std::string dir = value(i);
      if (dir.empty() || dir.front() != '/' || dir.size() >= sizeof g_left.shm_dir) {
        die("--shm-dir: '%s' is not an absolute path (of under %zu bytes)", dir.c_str(),
            sizeof g_left.shm_dir);
      }
      std::snprintf(g_left.shm_dir, sizeof g_left.shm_dir, "%s", dir.c_str());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--list") {
      print_figures();
      std::exit(0);
    } else if (a == "--help" || a == "-h") {
      print_help();
      std::exit(0);
    } else {
      die("unknown option '%s' (try --help)", a.c_str());
    }
  }
  if (!any_figure) std::fill(std::begin(o.run), std::end(o.run), true);
  return o;
}

// ------------------------------------------------------ start and finish --

// Checks that the --shm-dir and RAM can hold the run, then starts the echo
// and reader children and shelfd, connects and fills the source.
void start(Bench& b, uint64_t memory_limit) {
  struct statvfs vfs;
  if (::statvfs(g_left.shm_dir, &vfs) != 0) {
    die("statvfs %s: %s", g_left.shm_dir, std::strerror(errno));
  }
  const uint64_t shm_free = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  if (shm_free < memory_limit + b.bytes + 256 * kMiB) {
    die("%s has %llu MiB free; this run needs %llu MiB (--memory-limit %llu MiB for shelfd "
        "plus a baseline file of the dataset's size): lower --size-mib",
        g_left.shm_dir, static_cast<unsigned long long>(shm_free / kMiB),
        static_cast<unsigned long long>((memory_limit + b.bytes + 256 * kMiB) / kMiB),
        static_cast<unsigned long long>(memory_limit / kMiB));
  }
  // RAM: the private source, the reader's private copy, the published
  // dataset and a baseline file, all at once.
  const uint64_t ram = mem_available_bytes();
  if (ram != 0 && ram < 4 * b.bytes + 512 * kMiB) {
    die("only %llu MiB of RAM available; this run needs about %llu MiB: lower --size-mib",
        static_cast<unsigned long long>(ram / kMiB),
        static_cast<unsigned long long>((4 * b.bytes + 512 * kMiB) / kMiB));
  }

  std::snprintf(g_left.scratch, sizeof g_left.scratch, "%s/shelf-bench-%d-copy", g_left.shm_dir,
                static_cast<int>(::getpid()));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  // Children first, while this process is small and has no Client.
  b.echo_fd = start_echo_child();
  b.reader = start_reader_child(b.echo_fd);
  start_daemon(memory_limit);
  b.daemon_pid = g_left.daemon_pid;
  progress("shelfd pid %d on %s, segment %s, limit %llu MiB", static_cast<int>(b.daemon_pid),
           g_left.socket_path, g_left.segment_path,
           static_cast<unsigned long long>(memory_limit / kMiB));

  b.client_options.socket = g_left.socket_path;
  b.client_options.client_name = "shelf_bench";
  b.client.emplace(must(shelf::Client::connect(b.client_options), "connect"));

  // The warm private source every copy reads from: value i at row i.
  b.source.reset(new int64_t[b.rows]);
  for (uint64_t i = 0; i < b.rows; ++i) b.source[i] = static_cast<int64_t>(i);
}

// Stops the children and shelfd and checks that nothing is left in the --shm-dir.
void stop(Bench& b) {
  b.client.reset();
  b.source.reset();
  ReaderCommand quit;
  quit.op = ReaderOp::kQuit;
  (void)write_all(b.reader.cmd_fd, &quit, sizeof quit);
  ::close(b.reader.cmd_fd);
  ::close(b.reader.reply_fd);
  ::close(b.echo_fd);
  for (pid_t& child : g_left.children) {
    if (child > 0) ::waitpid(child, nullptr, 0);
    child = -1;
  }
  cleanup();
  struct stat st;
  if (::stat(g_left.segment_path, &st) == 0) die("%s is still there", g_left.segment_path);
}

// Prints the rows, as a table or JSON, after a line about the run.
void report(const Options& opt, const Bench& b, double seconds, double busy_before,
            double busy_after) {
  char load[160];
  std::snprintf(load, sizeof load, "CPU busy before/after the run: %.0f%%/%.0f%%%s",
                100 * busy_before, 100 * busy_after,
                std::max(busy_before, busy_after) > 0.10
                    ? " -- other programs were running: figures are noisy"
                    : "");
  utsname u{};
  ::uname(&u);
  const std::string kernel = std::string(u.sysname) + " " + u.release;
  if (opt.json) {
    print_json(opt.size_mib, opt.repeat, kernel, seconds, busy_before, busy_after);
  } else {
    char header[768];
    std::snprintf(header, sizeof header,
                  "shelf_bench: %s int64 dataset, median of %d runs (latencies: %d samples), "
                  "%u CPUs, %s, %.1f s\n%s",
                  b.big_label.c_str(), opt.repeat, kLatencySamples,
                  std::thread::hardware_concurrency(), kernel.c_str(), seconds, load);
    print_table(header);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  Bench b;
  b.repeat = opt.repeat;
  b.bytes = opt.size_mib * kMiB;
  b.rows = b.bytes / sizeof(int64_t);
  b.small_bytes = std::min<uint64_t>(kMiB, b.bytes);
  b.small_rows = b.small_bytes / sizeof(int64_t);
  b.big_label = size_label(b.bytes);
  b.small_label = size_label(b.small_bytes);
  const int64_t started = now_ns();
  // Other programs on the machine during the run make every figure noisy: say so.
  const double busy_before = cpu_busy_fraction(500);
  // Room: the daemon holds at most two big datasets, plus the small ones,
  // or figure 12's small publishes.
  start(b, std::max(2 * b.bytes + kGiB, kSmallFigureBytes));
  for (size_t f = 0; f < std::size(kFigures); ++f) {
    if (opt.run[f]) kFigures[f].run(b);
  }
  stop(b);
  const double seconds = static_cast<double>(now_ns() - started) / 1e9;
  progress("done in %.1f s; shelfd stopped, %s clean", seconds, g_left.shm_dir);
  report(opt, b, seconds, busy_before, cpu_busy_fraction(500));
  return 0;
}
