// Helpers shared by the integration and crash tests: pipes to synchronise
// with child processes, children that run concurrently, bounded waits for
// state the daemon changes on its own (a dead client's session), and the
// tables the tests publish.
//
// Every wait here has a deadline, so a broken daemon fails a test instead of
// hanging the suite.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <shelf/client.h>

#include "base/unique_fd.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {

using namespace std::chrono_literals;

// Helpers that cannot return their value throw TestFailure
// (tests/support/test_daemon.h) after recording a gtest failure.

// How long any single wait on another process may take before the test
// fails. Generous: the ASan build on 2 cores is slow.
inline constexpr std::chrono::milliseconds kWaitTimeout = 20s;

// A pipe; both ends close themselves. Children inherit both ends, so each side
// closes the end it does not use when the protocol relies on EOF.
class Pipe {
 public:
  // `cloexec` false: the ends survive exec (for SHELF_FAULT_NOTIFY_FD in shelfd).
  explicit Pipe(bool cloexec = true);
  int read_fd() const { return read_.get(); }
  int write_fd() const { return write_.get(); }
  void close_read() { read_.reset(); }
  void close_write() { write_.reset(); }

  // Writes `n` bytes; false if the reader is gone.
  bool signal(size_t n = 1);
  // Reads exactly `n` bytes, waiting at most `timeout`; false on timeout or EOF.
  bool wait(size_t n = 1, std::chrono::milliseconds timeout = kWaitTimeout);
  // Reads up to and including a '\n' (returned without it); nullopt on
  // timeout or EOF.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = kWaitTimeout);

 private:
  UniqueFd read_, write_;
};

// Arms the fault point `point` (base/fault_point.h) for this process and
// every process it starts while this object lives: a test build stops there
// and writes "point\n" to `notify`. A point in a child of spawn_child() needs
// only this; for a point in shelfd use start_daemon_stopping_at().
class ScopedFaultPoint {
 public:
  ScopedFaultPoint(const std::string& point, const Pipe& notify);
  ~ScopedFaultPoint();
  ScopedFaultPoint(const ScopedFaultPoint&) = delete;
  ScopedFaultPoint& operator=(const ScopedFaultPoint&) = delete;
};
// Starts a TestDaemon whose shelfd stops at `point` and says so on `notify`,
// which must be a Pipe(/*cloexec=*/false) so shelfd inherits its write end.
// Only that daemon is armed: the fault point is disarmed again on return.
// nullptr (and a gtest failure) if it did not start.
std::unique_ptr<TestDaemon> start_daemon_stopping_at(const std::string& point, const Pipe& notify);

// Forks a child that runs `body` and exits, like run_in_child(), but returns
// at once with its pid so several children can run together. The child exits
// 1 if `body` recorded a gtest failure, 0 otherwise; it is killed by SIGALRM
// if it runs past kWaitTimeout * 2, so it can never outlive a broken test.
pid_t spawn_child(const std::function<void()>& body);
// Waits for a child of spawn_child(): its exit code, or 128 + signal.
int wait_child(pid_t pid);
// SIGKILLs a child of spawn_child() and reaps it; returns what wait_child does.
int kill_child(pid_t pid);
// Lets a child stopped at a fault point (ScopedFaultPoint) go on: waits
// until it is stopped, then sends SIGCONT, which would be lost if it came
// between the child's notice and its stop. False (and a gtest failure) if
// it never stopped.
bool resume_when_stopped(pid_t pid);

// Polls `condition` until it holds or `timeout` passes; returns the last
// result. Only for state the daemon changes on its own, e.g. when it reads the
// EOF of a client that was killed: there is no reply to wait for.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = kWaitTimeout);

// For a child process (run_in_child): moves it into a mount namespace of its
// own with a fresh tmpfs of `size` ("16m") at /dev/shm, so a test can fill
// /dev/shm without touching the machine's. False where that is not allowed
// (not root, no namespaces): the test should skip.
bool use_private_dev_shm(const char* size);
// As use_private_dev_shm, with a tmpfs mounted at `dir` (an existing
// directory) with mount `options` ("size=256m,huge=within_size"): the mount
// goes with the namespace, when the child exits.
bool use_private_tmpfs(const std::string& dir, const std::string& options);

// status(); throws TestFailure on error.
MemoryStats status_of(Client& client);

// status() once nothing freed is still on its way back (pending_free_bytes
// 0): shelfd's segment worker gives large frees back after the call that
// freed them. A gtest failure if that takes past kWaitTimeout.
MemoryStats status_once_freed(Client& client);

// The names `client` lists.
std::vector<std::string> listed_names(Client& client);

// ------------------------------------------------------------ tables --

// A one-column int64 table "v" of `partitions` partitions of `rows` rows,
// value = seed + global row index. Throws TestFailure on error.
TableBuilder make_int64_table(Client& client, uint64_t rows, int64_t seed, uint64_t partitions = 1);
// Checks that `ds` is what make_int64_table(rows, seed, partitions) made:
// schema, sizes, every value, verify().
void expect_int64_dataset(const Dataset& ds, uint64_t rows, int64_t seed, uint64_t partitions = 1);
// Publishes make_int64_table under `name`; a failed publish fails the test.
void publish_int64(Client& client, const std::string& name, uint64_t rows, int64_t seed);
// Gets `name` and checks it with expect_int64_dataset.
void expect_int64_published(Client& client, const std::string& name, uint64_t rows, int64_t seed);
// Publishes a small dataset under a fresh name, reads it back from a new
// connection and unpublishes it: the daemon still serves correctly.
void expect_daemon_serves(const TestDaemon& daemon);

}  // namespace shelf::test
