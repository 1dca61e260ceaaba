// Test support: a real shelfd per test, real child processes, real commands.
//
// Nothing here mocks the daemon or the segment. Each TestDaemon gets a fresh
// directory, a unique socket and a unique segment ("shelf-test-<pid>-<n>"),
// and removes all of them when it goes, so tests can run in parallel.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <sys/types.h>
#include <vector>

#include <shelf/client.h>

namespace shelf::test {

// "shelf-test-<pid>-<n>": unique within the machine while this process lives.
std::string unique_name();

// Helpers that cannot return their value throw TestFailure after recording a
// gtest failure. gtest reports the exception as a failure of the test, and
// unwinding runs TestDaemon's destructor, which stops the daemon and removes
// its segment; std::abort would leak both and end every other test of the
// executable too. In a child process (run_in_child, spawn_child) the
// exception ends the child with exit code 1.
struct TestFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// ADD_FAILURE() << what, then throws TestFailure(what).
[[noreturn]] void fail_test(const std::string& what);

// For a forked child: runs `body`, then _exit()s with 1 if it threw
// TestFailure or recorded a gtest failure, else 0. Never returns into the test.
[[noreturn]] void run_body_and_exit(const std::function<void()>& body);

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};
// Runs argv[0] (a path) with extra environment entries "K=V", feeding
// `stdin_text`; waits for it and captures stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env = {},
                          const std::string& stdin_text = "");

// Runs `body` in a forked child process and returns its exit code (0 on
// success; a gtest failure or a TestFailure inside the child exits 1; death by
// a signal gives 128 + signal). The child never returns into the test.
int run_in_child(const std::function<void()>& body);

// Returns once process `pid` (any process, not only a child) has exited with
// all its threads, and so the kernel has closed its files and released its
// locks; at once if there is no such process.
void wait_for_exit(pid_t pid);

class TestDaemon {
 public:
  struct Options {
    std::string memory_limit = "64MiB";
    uint32_t max_datasets = 256;
    std::vector<std::string> extra_args = {};
    // --shm-dir; empty: shelfd's default, /dev/shm.
    std::string shm_dir = {};
  };
  // Starts shelfd (detached; it returns once it serves) and waits for it.
  // On failure records a gtest failure and returns nullptr.
  static std::unique_ptr<TestDaemon> start();
  static std::unique_ptr<TestDaemon> start(const Options& options);
  // A fresh directory, socket and segment name, with no shelfd yet: restart()
  // starts the first one (for tests of clients that come before the daemon).
  static std::unique_ptr<TestDaemon> unstarted();
  static std::unique_ptr<TestDaemon> unstarted(const Options& options);
  // Stops the daemon (SIGTERM, waits until it is gone) and removes its files,
  // the segment included (shelfd itself keeps it for the next daemon).
  ~TestDaemon();

  const std::string& socket() const { return socket_; }
  const std::string& segment() const { return segment_; }
  // The segment's directory (Options::shm_dir, or /dev/shm) and its path.
  const std::string& shm_dir() const { return shm_dir_; }
  std::string segment_path() const { return shm_dir_ + "/" + segment_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  ClientOptions client_options() const;
  // Connects with client_options(); on error throws TestFailure. The one way
  // tests connect: use Client::connect(client_options()) only to check an error.
  Client connect() const;
  // SIGKILLs the daemon and waits until the kernel has reaped its lock.
  void kill9();
  // Stops the daemon with SIGTERM and waits until it is gone. The segment
  // stays, as it does for any shelfd that stops.
  void stop();
  // Starts shelfd again on the same socket and segment, with the arguments
  // of the first start plus `extra_args` (flags not given at first). Returns what it
  // printed and its exit code; on success pid() is the new daemon's. A
  // restarted shelfd serves at once and checks the checksums of what it
  // found in the background; restart() returns once they are checked, so
  // that a test sees what the restart found (a quarantine, memory freed at
  // once), and restart_serving() as soon as it serves.
  CommandResult restart(const std::vector<std::string>& extra_args = {});
  CommandResult restart_serving(const std::vector<std::string>& extra_args = {});
  // restart() with `--memory-limit limit` instead of the first start's value;
  // once one succeeds, later restarts use its limit too.
  CommandResult restart_with_memory_limit(const std::string& limit);
  // What the first start printed (stdout: the "serving" line).
  const CommandResult& start_result() const { return start_result_; }
  // True while the daemon process exists.
  bool alive() const;
  // Bytes the segment's tmpfs holds for it (0 if it is gone).
  uint64_t resident_bytes() const;

 private:
  TestDaemon() = default;
  void wait_until_gone();
  std::string dir_, socket_, segment_, shm_dir_;
  std::vector<std::string> argv_;
  CommandResult start_result_;
  pid_t pid_ = -1;
};

}  // namespace shelf::test
