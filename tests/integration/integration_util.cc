#include "tests/integration/integration_util.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace shelf::test {

namespace {

// Milliseconds left until `deadline`, for poll(); 0 once it passed.
int millis_left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Reads one byte into `out`, waiting until `deadline`; false on timeout or EOF.
bool read_byte(int fd, char* out, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, millis_left(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    ssize_t n = ::read(fd, out, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

[[noreturn]] void die(const std::string& what) { fail_test(what); }

}  // namespace

// ---------------------------------------------------------------- Pipe --

Pipe::Pipe(bool cloexec) {
  int fds[2];
  if (::pipe2(fds, cloexec ? O_CLOEXEC : 0) != 0) die(std::string("pipe: ") + std::strerror(errno));
  read_.reset(fds[0]);
  write_.reset(fds[1]);
}

bool Pipe::signal(size_t n) {
  std::string bytes(n, 'x');
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(write_.get(), bytes.data() + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<size_t>(w);
  }
  return true;
}

bool Pipe::wait(size_t n, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char c;
  for (size_t i = 0; i < n; ++i) {
    if (!read_byte(read_.get(), &c, deadline)) return false;
  }
  return true;
}

std::optional<std::string> Pipe::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line;
  char c;
  while (read_byte(read_.get(), &c, deadline)) {
    if (c == '\n') return line;
    line.push_back(c);
  }
  return std::nullopt;
}

// --------------------------------------------------------- fault points --

ScopedFaultPoint::ScopedFaultPoint(const std::string& point, const Pipe& notify) {
  ::setenv("SHELF_FAULT_POINT", point.c_str(), 1);
  ::setenv("SHELF_FAULT_NOTIFY_FD", std::to_string(notify.write_fd()).c_str(), 1);
}

ScopedFaultPoint::~ScopedFaultPoint() {
  ::unsetenv("SHELF_FAULT_POINT");
  ::unsetenv("SHELF_FAULT_NOTIFY_FD");
}

std::unique_ptr<TestDaemon> start_daemon_stopping_at(const std::string& point, const Pipe& notify) {
  ScopedFaultPoint armed(point, notify);
  return TestDaemon::start();
}

// ------------------------------------------------------------ children --

pid_t spawn_child(const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Default SIGALRM action: terminate. A child stuck on a broken daemon dies.
    ::alarm(static_cast<unsigned>(
        std::chrono::duration_cast<std::chrono::seconds>(kWaitTimeout).count() * 2));
    run_body_and_exit(body);
  }
  return pid;
}

int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int kill_child(pid_t pid) {
  ::kill(pid, SIGKILL);
  return wait_child(pid);
}

bool resume_when_stopped(pid_t pid) {
  // The state is the field after the command, which ends at the last ')'.
  auto stopped = [pid] {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t end = stat.rfind(')');
    return end != std::string::npos && end + 2 < stat.size() && stat[end + 2] == 'T';
  };
  if (!eventually(stopped)) {
    ADD_FAILURE() << "process " << pid << " never stopped";
    return false;
  }
  return ::kill(pid, SIGCONT) == 0;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    // A short pause between polls leaves the CPU to the daemon (2 cores).
    timespec pause{0, 1000 * 1000};
    ::nanosleep(&pause, nullptr);
  }
}

bool use_private_dev_shm(const char* size) {
  return use_private_tmpfs("/dev/shm", std::string("size=") + size + ",mode=1777");
}

bool use_private_tmpfs(const std::string& dir, const std::string& options) {
  return ::unshare(CLONE_NEWNS) == 0 &&
         ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
         ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
}

MemoryStats status_of(Client& client) {
  auto s = client.status();
  if (!s.ok()) die("status: " + s.status().to_string());
  return std::move(s).value();
}

MemoryStats status_once_freed(Client& client) {
  MemoryStats st;
  if (!eventually([&] {
        st = status_of(client);
        return st.pending_free_bytes == 0;
      })) {
    ADD_FAILURE() << st.pending_free_bytes << " bytes freed were not given back";
  }
  return st;
}

std::vector<std::string> listed_names(Client& client) {
  auto list = client.list_datasets();
  if (!list.ok()) die("list_datasets: " + list.status().to_string());
  std::vector<std::string> names;
  for (const DatasetInfo& info : *list) names.push_back(info.name);
  return names;
}

// -------------------------------------------------------------- tables --

TableBuilder make_int64_table(Client& client, uint64_t rows, int64_t seed, uint64_t partitions) {
  auto table = client.create_table({{"v", Type::kInt64}});
  if (!table.ok()) die("create_table: " + table.status().to_string());
  for (uint64_t p = 0; p < partitions; ++p) {
    auto part = table->add_partition(rows);
    if (!part.ok()) die("add_partition: " + part.status().to_string());
    std::span<int64_t> values = part->values<int64_t>(0);
    if (values.size() != rows) die("values<int64_t> has the wrong size");
    for (uint64_t r = 0; r < rows; ++r) values[r] = seed + static_cast<int64_t>(p * rows + r);
  }
  return std::move(table).value();
}

void expect_int64_dataset(const Dataset& ds, uint64_t rows, int64_t seed, uint64_t partitions) {
  ASSERT_EQ(ds.schema(), (Schema{{"v", Type::kInt64}}));
  ASSERT_EQ(ds.num_partitions(), partitions);
  ASSERT_EQ(ds.num_rows(), rows * partitions);
  for (uint64_t p = 0; p < partitions; ++p) {
    ASSERT_EQ(ds.num_rows(p), rows);
    ColumnView col = ds.column(p, 0);
    ASSERT_EQ(col.null_count(), 0u);
    std::span<const int64_t> values = col.values<int64_t>();
    ASSERT_EQ(values.size(), rows);
    uint64_t wrong = 0;
    for (uint64_t r = 0; r < rows; ++r) {
      wrong += values[r] != seed + static_cast<int64_t>(p * rows + r) ? 1 : 0;
    }
    ASSERT_EQ(wrong, 0u) << "partition " << p << " of " << ds.name();
  }
  EXPECT_TRUE(ds.verify().ok()) << ds.verify().to_string();
}

void publish_int64(Client& client, const std::string& name, uint64_t rows, int64_t seed) {
  TableBuilder table = make_int64_table(client, rows, seed);
  Status s = client.publish_dataset(name, table);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

void expect_int64_published(Client& client, const std::string& name, uint64_t rows, int64_t seed) {
  auto ds = client.get_dataset(name);
  ASSERT_TRUE(ds.ok()) << ds.status().to_string();
  expect_int64_dataset(*ds, rows, seed);
}

void expect_daemon_serves(const TestDaemon& daemon) {
  static std::atomic<int> counter{0};
  const std::string name = "probe-" + std::to_string(counter++);
  ASSERT_TRUE(daemon.alive());
  Client writer = daemon.connect();
  publish_int64(writer, name, 1000, 77);
  {
    Client reader = daemon.connect();
    expect_int64_published(reader, name, 1000, 77);
  }
  Status s = writer.unpublish_dataset(name);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

}  // namespace shelf::test
