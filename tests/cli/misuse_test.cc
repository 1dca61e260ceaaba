// Every command of `shelf` and `shelfd` given wrong, missing, extra,
// negative, huge and odd arguments and names, against a real shelfd: exit 2
// for a usage error and 1 for a failure, a first line on stderr that names
// what is wrong, nothing outside shelf's own files changed, and a bounded
// run (each command runs under timeout(1): a hang is exit 124, a failure).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/unique_fd.h"
#include "tests/cli/misuse_checks.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Case {
  std::vector<std::string> args;  // after `shelf --socket S`
  int exit_code;
  std::string error;  // in the first line of stderr
};

class MisuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
    data_ = daemon_->dir() + "/data";
    std::filesystem::create_directories(data_);
    csv_ = data_ + "/a.csv";
    std::ofstream(csv_) << "name,balance\nAlice,1\nBob,2\n";
  }
  // Runs `argv` under timeout(1) with the test daemon's socket in the
  // environment and checks the case's exit code and first stderr line, and
  // the suite's rules (misuse_checks.h): the shape of stderr, nothing raw,
  // nothing in the data directory changed.
  void check(const std::vector<std::string>& argv, int exit_code, const std::string& error) {
    const FileSnapshot before = snapshot_files(data_);
    CommandResult r = run_bounded(argv, {"SHELF_SOCKET=" + daemon_->socket()}, 30);
    std::string what;
    for (size_t i = 1; i < argv.size(); ++i) what += " " + argv[i];
    EXPECT_EQ(r.exit_code, exit_code) << what << "\n" << r.out << r.err;
    const std::string first = r.err.substr(0, r.err.find('\n'));
    EXPECT_THAT(first, HasSubstr(error)) << what;
    EXPECT_EQ(stderr_shape_problem(r.err), "") << what << ":\n" << r.err;
    EXPECT_EQ(raw_output_problem(r.err), "") << what;
    EXPECT_EQ(snapshot_files(data_), before) << what << " changed a file it did not create";
  }
  void check_shelf(const Case& c) {
    std::vector<std::string> argv = {SHELF_CLI_PATH};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    check(argv, c.exit_code, c.error);
  }
  std::unique_ptr<TestDaemon> daemon_;
  std::string data_, csv_;
};

TEST_F(MisuseTest, EveryShelfCommandWithWrongArguments) {
  const std::string huge(300, 'x');
  const std::string dir = data_;
  const Case cases[] = {
      // No command, an unknown one, odd ones.
      {{}, 2, "no command given"},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {{"\x1b[31mred"}, 2, "unknown command '\\x1b[31mred'"},
      // Missing arguments name the argument as the usage writes it.
      {{"publish"}, 2, "missing FILE.csv; usage: shelf publish NAME FILE.csv..."},
      {{"publish", "x"}, 2, "missing FILE.csv; usage: shelf publish"},
      {{"head"}, 2, "missing NAME; usage: shelf head NAME [-n N]"},
      {{"info"}, 2, "missing NAME; usage: shelf info NAME"},
      {{"unpublish"}, 2, "missing NAME; usage: shelf unpublish NAME"},
      {{"publish-view"}, 2, "missing NAME; usage: shelf publish-view NAME --from BASE"},
      {{"publish-view", "v"}, 2, "missing --from; usage: shelf publish-view NAME --from BASE"},
      {{"persist", "v"}, 2, "missing NAME; usage: shelf persist VIEW NAME"},
      {{"persist"}, 2, "missing VIEW; usage: shelf persist VIEW NAME"},
      {{"save"}, 2, "missing DIR; usage: shelf save DIR"},
      {{"load"}, 2, "missing DIR; usage: shelf load DIR"},
      {{"head", "-n"}, 2, "the required argument for option '-n' is missing"},
      // Extra arguments.
      {{"head", "a", "b"}, 2, "too many arguments; usage: shelf head NAME [-n N]"},
      {{"info", "a", "b"}, 2, "too many arguments"},
      {{"unpublish", "a", "b"}, 2, "too many arguments"},
      {{"list", "extra"}, 2, "too many arguments; usage: shelf list"},
      {{"status", "extra"}, 2, "too many arguments; usage: shelf status"},
      // Negative, zero, huge and odd numbers: the option and its range.
      {{"head", "x", "-n", "-1"}, 2, "-n must be a whole number from 0 to 1000000000, not '-1'"},
      {{"head", "x", "-n", "abc"}, 2, "-n must be a whole number from 0 to"},
      {{"head", "x", "-n", "1e3"}, 2, "-n must be a whole number"},
      {{"head", "x", "-n", "99999999999999999999999"}, 2, "-n must be a whole number"},
      {{"publish", "x", csv_, "--partition-rows", "-1"},
       2,
       "--partition-rows must be a whole number from 1 to"},
      {{"publish", "x", csv_, "--partition-rows", "0"}, 2, "--partition-rows must be"},
      {{"status", "--watch", "1e-9"}, 2, "--watch must be a number of seconds from 0.01 to 86400"},
      {{"status", "--watch", "0"}, 2, "--watch must be a number of seconds"},
      {{"status", "--watch", "-1"}, 2, "--watch must be a number of seconds"},
      {{"status", "--watch", "nan"}, 2, "--watch must be a number of seconds"},
      {{"status", "--watch", "0.1", "--iterations", "-1"},
       2,
       "--iterations must be a whole number from 1 to"},
      {{"status", "--watch", "0.1", "--iterations", "0"}, 2, "--iterations must be"},
      {{"status", "--iterations", "2"}, 2, "--iterations needs --watch"},
      {{"status", "--clients", "--sort", "size"}, 2, "--sort 'size' is not an order; use pid,"},
      {{"status", "--clients", "--sort"}, 2, "--sort"},
      {{"status", "--sort", "bytes"}, 2, "--sort needs --clients or --json"},
      // Names that look like options; names no dataset can have.
      {{"head", "-x"},
       2,
       "unrecognised option '-x' (a dataset name that starts with '-' goes "
       "after '--', e.g. shelf head -- -x)"},
      {{"unpublish", "--bogus"}, 2, "unrecognised option '--bogus'"},
      {{"head", "--", "-x"}, 1, "dataset '-x' not found"},
      {{"unpublish", "--", "--help"}, 1, "dataset '--help' not found"},
      {{"head", "nosuch"}, 1, "dataset 'nosuch' not found"},
      {{"info", "nosuch"}, 1, "not found"},
      {{"unpublish", huge}, 1, "not found"},
      {{"publish", huge, csv_}, 1, "dataset name is 300 bytes; the limit is 200"},
      {{"publish", "bad\x1b[2Jname", csv_}, 1, "control character"},
      {{"publish", "", csv_}, 1, "a dataset name cannot be empty"},
      // Files that are not there or not files.
      {{"publish", "x", data_ + "/missing.csv"}, 1, "missing.csv"},
      {{"save", data_ + "/missing-dir"}, 1, "missing-dir"},
      {{"load", data_ + "/missing-dir"}, 1, "missing-dir"},
      {{"--socket", data_ + "/no.sock", "list"}, 1, "no shelfd at " + data_ + "/no.sock"},
  };
  for (const Case& c : cases) check_shelf(c);
}

TEST_F(MisuseTest, ShelfdWithWrongArguments) {
  const std::string sock = data_ + "/never.sock";
  const Case cases[] = {
      {{"8GiB"},
       2,
       "unexpected argument '8GiB': shelfd takes options only (did you mean --memory-limit "
       "8GiB?)"},
      {{"--verify-on-publish", "serve"},
       2,
       "unexpected argument 'serve': shelfd takes options only"},
      {{"--segment", ""}, 2, "--segment must not be empty"},
      {{"--socket", ""}, 2, "--socket must not be empty"},
      {{"--log-file", ""}, 2, "--log-file must not be empty"},
      {{"--max-connections", "-1"},
       2,
       "--max-connections must be a whole number from 1 to 1048576, not '-1'"},
      {{"--max-connections", "0"}, 2, "--max-connections must be"},
      {{"--verify-threads", "0"},
       2,
       "--verify-threads must be a whole number from 1 to 1024, not '0'"},
      {{"--verify-threads", ""}, 2, "--verify-threads must not be empty"},
      {{"--max-connections-per-user", "0"},
       2,
       "--max-connections-per-user must be a whole number from 1 to 1024, not '0'"},
      {{"--max-connections", "8", "--max-connections-per-user", "9"},
       2,
       "--max-connections-per-user must be a whole number from 1 to 8, not '9' (at most "
       "--max-connections)"},
      {{"--max-connections-per-user", "-1"}, 2, "--max-connections-per-user must be"},
      {{"--max-connections-per-user", "many"}, 2, "--max-connections-per-user must be"},
      {{"--max-datasets", "-5"}, 2, "--max-datasets must be a whole number from 1 to 1048576"},
      {{"--max-datasets", "99999999999"}, 2, "--max-datasets must be"},
      {{"--memory-limit", "-1GiB"}, 2, "--memory-limit: '-1GiB' is not a size"},
      {{"--log-level", "loud"}, 2, "--log-level must be error, warn, info or debug, not 'loud'"},
      {{"--user-quota", "lots"}, 2, "--user-quota 'lots': 'lots' is not a size"},
      {{"--user-quota", "1"}, 2, "--user-quota '1': a quota must be at least 4 KiB"},
      {{"--user-quota", "no-such-user-here=1GiB"},
       2,
       "--user-quota 'no-such-user-here=1GiB': there is no user 'no-such-user-here' (see getent "
       "passwd)"},
      {{"--user-quota", "1GiB", "--user-quota", "2GiB"},
       2,
       "--user-quota '2GiB': the quota of every user is given twice"},
      {{"--user-quota", "root=1GiB", "--user-quota", "0=2GiB"},
       2,
       "--user-quota '0=2GiB': uid 0 is given a quota twice"},
      {{"--bogus"}, 2, "unrecognised option '--bogus'"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {SHELFD_PATH, "--foreground"};
    if (c.args.front() != "--socket") argv.insert(argv.end(), {"--socket", sock});
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    check(argv, c.exit_code, c.error);
  }
  EXPECT_FALSE(std::filesystem::exists(sock));
}

TEST_F(MisuseTest, UnprintableNamesAndValuesAreEscapedOnOutput) {
  // A value with a terminal escape, a C1 NEXT LINE and a raw newline.
  std::ofstream(data_ + "/evil.csv") << "name,note\n\"a\x1b[2Jb\",\"c\xc2\x85"
                                        "d\ne\"\n";
  CommandResult r = run_command(
      {SHELF_CLI_PATH, "--socket", daemon_->socket(), "publish", "evil", data_ + "/evil.csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "head", "evil", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("a\\x1b[2Jb"));
  EXPECT_THAT(r.out, HasSubstr("c\\u0085d\\ne"));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b"))) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("\xc2\x85"))) << r.out;
  // A column name with a control character is refused, C1 included.
  for (const char* header : {"na\x1bme,x\n1,2\n", "na\xc2\x85me,x\n1,2\n"}) {
    std::ofstream(data_ + "/badname.csv") << header;
    r = run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "publish", "badname",
                     data_ + "/badname.csv"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_THAT(r.err, HasSubstr("contains a control character at byte 2")) << r.err;
    EXPECT_THAT(r.err, Not(HasSubstr("\x1b"))) << r.err;
  }
}

TEST_F(MisuseTest, HeadCountsAndRatesReadRight) {
  std::ofstream(data_ + "/one.csv") << "x\n1\n2\n";
  ASSERT_EQ(run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "publish", "two",
                         data_ + "/one.csv"})
                .exit_code,
            0);
  CommandResult r =
      run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "head", "two", "-n", "1"});
  EXPECT_THAT(r.out, HasSubstr("... 1 more row\n")) << r.out;
  r = run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "head", "two", "-n", "0"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("... 2 more rows\n")) << r.out;
}

TEST_F(MisuseTest, AStoppedDaemonIsNamedAsSuchAndTheWaitIsTheUsers) {
  ASSERT_EQ(::kill(daemon_->pid(), SIGSTOP), 0);
  CommandResult r = run_command({"/usr/bin/timeout", "20", SHELF_CLI_PATH, "--socket",
                                 daemon_->socket(), "--timeout", "0.5", "list"});
  ::kill(daemon_->pid(), SIGCONT);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("shelfd at " + daemon_->socket() +
                               " did not answer in 0.5 s and is still running, but stopped (pid " +
                               std::to_string(daemon_->pid())))
      << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("ClientOptions"))) << r.err;
  check({SHELF_CLI_PATH, "--timeout", "0", "list"}, 2,
        "--timeout must be a number of seconds from 0.1 to 86400, not '0'");
  check({SHELF_CLI_PATH, "--timeout", "-5", "list"}, 2, "--timeout must be a number of seconds");
}

TEST_F(MisuseTest, InfoJsonDoesNotCountItsOwnLease) {
  ASSERT_EQ(
      run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "publish", "accounts", csv_})
          .exit_code,
      0);
  CommandResult r =
      run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "info", "accounts", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"leases\":0")) << r.out;
}

TEST_F(MisuseTest, LoadOverrideThatNeedsOldAndNewAtOnceSaysSo) {
  Client c = daemon_->connect();
  publish_int64(c, "big", 5'000'000, 3);  // 40 MB of the 64 MiB limit
  const std::string snap = daemon_->dir() + "/snap";
  std::filesystem::create_directories(snap);
  CommandResult r = run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "save", snap});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_command(
      {SHELF_CLI_PATH, "--socket", daemon_->socket(), "load", snap, "big", "--override"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--override writes the new copy before it drops the old one, so "
                               "it needs room for both at once"))
      << r.err;
  expect_int64_published(c, "big", 5'000'000, 3);  // the old one is untouched
}

// A raw connection to `socket` that never says Hello.
UniqueFd connect_silently(const std::string& socket) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, socket.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  timeval wait{};
  wait.tv_sec = 20;  // far past shelfd's kHelloTimeoutMs: a hang shows as EAGAIN
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  return fd;
}

TEST(SilentClientTest, AConnectionThatNeverSaysHelloIsClosed) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  UniqueFd silent = connect_silently(daemon->socket());
  ASSERT_TRUE(silent.valid());
  // shelfd answers why and hangs up: read until EOF.
  char buf[512];
  ssize_t n;
  size_t total = 0;
  while ((n = ::recv(silent.get(), buf, sizeof buf, 0)) > 0) total += static_cast<size_t>(n);
  EXPECT_EQ(n, 0) << "no EOF: " << std::strerror(errno);
  EXPECT_GT(total, 0u) << "closed without saying why";
  expect_daemon_serves(*daemon);
}

TEST(SilentClientTest, AtTheConnectionLimitSilentConnectionsGiveWay) {
  auto daemon = TestDaemon::start({.extra_args = {"--max-connections", "3"}});
  ASSERT_NE(daemon, nullptr);
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(connect_silently(daemon->socket()));
  // A real client gets in at once: the oldest silent connection makes room.
  auto c = Client::connect(daemon->client_options());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->list_datasets().ok());
  // Greeted connections are not evicted: past the limit, a refusal that says so.
  std::vector<Client> clients;
  for (int i = 0; i < 2; ++i) {
    auto more = Client::connect(daemon->client_options());
    ASSERT_TRUE(more.ok()) << more.status().to_string();
    clients.push_back(std::move(more).value());
  }
  auto refused = Client::connect(daemon->client_options());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-connections"));
}

}  // namespace
}  // namespace shelf::test
