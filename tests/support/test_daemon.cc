#include "tests/support/test_daemon.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>

namespace shelf::test {

std::string unique_name() {
  static std::atomic<int> counter{0};
  return "shelf-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

CommandResult run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          const std::string& stdin_text) {
  CommandResult result;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return result;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  // Feed stdin and drain both outputs together, so no pipe can fill and block.
  size_t fed = 0;
  if (stdin_text.empty()) ::close(in[1]);
  std::vector<pollfd> fds = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  if (!stdin_text.empty()) fds.push_back({in[1], POLLOUT, 0});
  int open_outputs = 2;
  while (open_outputs > 0) {
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      if (i == 2) {
        ssize_t n = ::write(in[1], stdin_text.data() + fed, stdin_text.size() - fed);
        if (n > 0) fed += static_cast<size_t>(n);
        if (n <= 0 || fed == stdin_text.size()) {
          ::close(in[1]);
          fds[i].fd = -1;
        }
        continue;
      }
      char buf[65536];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_outputs;
      }
    }
  }
  if (fds.size() == 3 && fds[2].fd >= 0) ::close(in[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

void fail_test(const std::string& what) {
  ADD_FAILURE() << what;
  throw TestFailure(what);
}

void run_body_and_exit(const std::function<void()>& body) {
  bool failed = false;
  try {
    body();
  } catch (const TestFailure&) {
    failed = true;  // already recorded
  }
  failed = failed || ::testing::Test::HasFailure();
  std::fflush(nullptr);
  ::_exit(failed ? 1 : 0);
}

int run_in_child(const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) fail_test(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) run_body_and_exit(body);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::unique_ptr<TestDaemon> TestDaemon::start() { return start(Options()); }
std::unique_ptr<TestDaemon> TestDaemon::unstarted() { return unstarted(Options()); }

std::unique_ptr<TestDaemon> TestDaemon::unstarted(const Options& options) {
  std::unique_ptr<TestDaemon> d(new TestDaemon());
  const std::string name = unique_name();
  d->dir_ = (std::filesystem::temp_directory_path() / name).string();
  std::filesystem::create_directories(d->dir_);
  d->socket_ = d->dir_ + "/shelf.sock";
  d->segment_ = name;
  d->shm_dir_ = options.shm_dir.empty() ? "/dev/shm" : options.shm_dir;
  std::vector<std::string> argv = {
      SHELFD_PATH,          "--socket",       d->socket_,
      "--segment",          d->segment_,      "--memory-limit",
      options.memory_limit, "--max-datasets", std::to_string(options.max_datasets),
      "--log-level",        "debug"};
  if (!options.shm_dir.empty()) argv.insert(argv.end(), {"--shm-dir", options.shm_dir});
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  d->argv_ = argv;
  return d;
}

std::unique_ptr<TestDaemon> TestDaemon::start(const Options& options) {
  std::unique_ptr<TestDaemon> d = unstarted(options);
  // Without --foreground shelfd returns only once it serves: no polling.
  CommandResult r = run_command(d->argv_);
  d->start_result_ = r;
  if (r.exit_code != 0) {
    ADD_FAILURE() << "shelfd did not start (exit " << r.exit_code << "): " << r.err;
    std::filesystem::remove_all(d->dir_);
    return nullptr;
  }
  std::ifstream lock(d->socket_ + ".lock");
  lock >> d->pid_;
  if (d->pid_ <= 0) {
    ADD_FAILURE() << "no pid in " << d->socket_ << ".lock";
    return nullptr;
  }
  return d;
}

TestDaemon::~TestDaemon() {
  // A test may have started another shelfd on this socket by hand (a
  // restart with other flags): the lock file names whichever runs now.
  pid_t current = 0;
  std::ifstream(socket_ + ".lock") >> current;
  if (current > 0) pid_ = current;
  if (alive()) {
    ::kill(pid_, SIGTERM);
    wait_until_gone();
  }
  // After a crash the daemon could not clean up: do it here.
  ::unlink(segment_path().c_str());
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void wait_for_exit(pid_t pid) {
  // Gone means the kernel has closed the process's files, so a daemon's
  // sockets report POLLRDHUP. Neither its flock being released nor a zombie
  // leader means that (shelfd's metrics thread may still be exiting, and the
  // files close with the last thread); a pidfd is readable only once the
  // whole thread group has exited, and works for a process that is not ours.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return;  // ESRCH: already reaped
  pollfd p{pidfd, POLLIN, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
  ::close(pidfd);
}

void TestDaemon::wait_until_gone() { wait_for_exit(pid_); }

bool TestDaemon::alive() const {
  if (pid_ <= 0 || ::kill(pid_, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
  std::string pid, comm, state;
  stat >> pid >> comm >> state;
  // A pid from a stale lock file may name another program by now.
  return stat && state != "Z" && comm == "(shelfd)";
}

void TestDaemon::kill9() {
  ::kill(pid_, SIGKILL);
  wait_until_gone();
}

void TestDaemon::stop() {
  if (!alive()) return;
  ::kill(pid_, SIGTERM);
  wait_until_gone();
}

CommandResult TestDaemon::restart(const std::vector<std::string>& extra_args) {
  CommandResult r = restart_serving(extra_args);
  if (r.exit_code != 0) return r;
  Client client = connect();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    auto st = client.status();
    if (!st.ok()) fail_test("status after the restart: " + st.status().to_string());
    if (st->verifying.datasets_left == 0) return r;
    if (std::chrono::steady_clock::now() > deadline) fail_test("the restart's checks never ended");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

CommandResult TestDaemon::restart_serving(const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = argv_;
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  CommandResult r = run_command(argv);
  if (r.exit_code == 0) {
    pid_t pid = 0;
    std::ifstream(socket_ + ".lock") >> pid;
    if (pid > 0) pid_ = pid;
  }
  return r;
}

CommandResult TestDaemon::restart_with_memory_limit(const std::string& limit) {
  const std::vector<std::string> first = argv_;
  auto flag = std::find(argv_.begin(), argv_.end(), std::string("--memory-limit"));
  if (flag == argv_.end() || std::next(flag) == argv_.end()) fail_test("no --memory-limit");
  *std::next(flag) = limit;
  CommandResult r = restart();
  if (r.exit_code != 0) argv_ = first;
  return r;
}

ClientOptions TestDaemon::client_options() const {
  ClientOptions o;
  o.socket = socket_;
  o.client_name = "test";
  return o;
}

Client TestDaemon::connect() const {
  auto c = Client::connect(client_options());
  if (!c.ok()) fail_test("connect to " + socket_ + ": " + c.status().to_string());
  return std::move(c).value();
}

uint64_t TestDaemon::resident_bytes() const {
  struct stat st;
  if (::stat(segment_path().c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace shelf::test
