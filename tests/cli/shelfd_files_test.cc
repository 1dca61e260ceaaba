// The files shelfd makes beside its socket (server/file_safety.h): it never
// replaces, truncates or appends to a file it did not create, it refuses
// unsafe directories, and a detached shelfd logs where it says it does.
// Each case starts a real shelfd process and checks what is left on disk.
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/unique_fd.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

class ShelfdFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    segment_ = unique_name();
    dir_ = (std::filesystem::temp_directory_path() / segment_).string();
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 0700);
  }
  void TearDown() override {
    stop(dir_ + "/shelf.sock");
    for (const std::string& s : started_) stop(s);
    ::unlink(("/dev/shm/" + segment_).c_str());
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Runs shelfd (detached) on `socket` with this test's segment.
  CommandResult shelfd(const std::string& socket, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {SHELFD_PATH, "--socket",       socket, "--segment",
                                     segment_,    "--memory-limit", "64MiB"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    CommandResult r = run_command(argv);
    if (r.exit_code == 0) started_.push_back(socket);
    return r;
  }
  // Stops the shelfd that holds <socket>.lock, if any, and waits until it is gone.
  static void stop(const std::string& socket) {
    UniqueFd lock(::open((socket + ".lock").c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!lock.valid() || ::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) return;
    pid_t pid = 0;
    std::ifstream(socket + ".lock") >> pid;
    if (pid > 0) ::kill(pid, SIGTERM);
    ::flock(lock.get(), LOCK_EX);
    if (pid > 0) wait_for_exit(pid);
  }
  // Expects shelfd to refuse `socket` with exit 1 and a message naming `path`
  // and `what`, leaving `path` exactly as it was.
  void expect_refused(const std::string& socket, const std::string& path, const std::string& what,
                      std::vector<std::string> extra = {}) {
    struct stat before {};
    ASSERT_EQ(::lstat(path.c_str(), &before), 0) << path;
    const std::string content = S_ISREG(before.st_mode) ? read_file(path) : "";
    CommandResult r = shelfd(socket, extra);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(path)) << r.err;
    EXPECT_THAT(r.err, HasSubstr(what)) << r.err;
    EXPECT_THAT(r.err, HasSubstr("never replaces or alters a file it did not create")) << r.err;
    struct stat after {};
    ASSERT_EQ(::lstat(path.c_str(), &after), 0) << path << " is gone";
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(after.st_mode, before.st_mode);
    if (S_ISREG(before.st_mode)) {
      EXPECT_EQ(read_file(path), content);
    }
    EXPECT_FALSE(exists("/dev/shm/" + segment_)) << "a refused start made a segment";
  }
  std::string segment_, dir_;
  std::vector<std::string> started_;
};

TEST_F(ShelfdFilesTest, AFileAtTheSocketPathIsRefusedAndKept) {
  const std::string csv = dir_ + "/accounts.csv";
  std::ofstream(csv) << "name,balance\nAlice,1\n";
  expect_refused(csv, csv, "is a regular file");

  const std::string fifo = dir_ + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_refused(fifo, fifo, "is a named pipe (FIFO)");

  const std::string sub = dir_ + "/subdir";
  ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0);
  expect_refused(sub, sub, "is a directory");

  const std::string link = dir_ + "/link";
  ASSERT_EQ(::symlink(csv.c_str(), link.c_str()), 0);
  expect_refused(link, link, "is a symlink");
  EXPECT_EQ(read_file(csv), "name,balance\nAlice,1\n");
}

// The metrics socket beside it (<socket>.metrics) follows the same rule.
TEST_F(ShelfdFilesTest, AFileAtTheMetricsSocketPathIsRefusedAndKept) {
  const std::string socket = dir_ + "/shelf.sock";
  const std::string metrics = socket + ".metrics";
  std::ofstream(metrics) << "not a socket\n";
  expect_refused(socket, metrics, "is a regular file");
  EXPECT_FALSE(exists(socket));
}

TEST_F(ShelfdFilesTest, ASocketSomethingListensOnIsRefused) {
  const std::string path = dir_ + "/other.sock";
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd.get(), 4), 0);
  CommandResult r = shelfd(path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(path + " is a socket another process is listening on")) << r.err;
  EXPECT_TRUE(exists(path));
  EXPECT_FALSE(exists("/dev/shm/" + segment_));
}

TEST_F(ShelfdFilesTest, AStaleSocketIsReplaced) {
  const std::string path = dir_ + "/shelf.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }  // closed: nobody listens on it any more, as after a kill -9
  CommandResult r = shelfd(path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(read_file(path + ".log"), HasSubstr("replaced stale socket " + path));
}

TEST_F(ShelfdFilesTest, ALockOrLogFileShelfdDidNotMakeIsRefusedAndKept) {
  const std::string socket = dir_ + "/shelf.sock";
  std::ofstream(socket + ".lock") << "my notes\n";
  expect_refused(socket, socket + ".lock", "is a regular file with other content");
  ASSERT_EQ(::unlink((socket + ".lock").c_str()), 0);

  ASSERT_EQ(::mkfifo((socket + ".lock").c_str(), 0600), 0);
  expect_refused(socket, socket + ".lock", "is a named pipe (FIFO)");
  ASSERT_EQ(::unlink((socket + ".lock").c_str()), 0);

  std::ofstream(socket + ".log") << "name,balance\nAlice,1\n";
  expect_refused(socket, socket + ".log", "is a regular file with other content");
  ASSERT_EQ(::unlink((socket + ".log").c_str()), 0);

  ASSERT_EQ(::mkfifo((socket + ".log").c_str(), 0600), 0);
  expect_refused(socket, socket + ".log", "is a named pipe (FIFO)");
  ASSERT_EQ(::unlink((socket + ".log").c_str()), 0);
  EXPECT_FALSE(exists(socket)) << "a refused start left a socket";
}

TEST_F(ShelfdFilesTest, APlantedLogSymlinkOrAnUnopenableLogStopsTheStart) {
  const std::string socket = dir_ + "/shelf.sock";
  const std::string target = dir_ + "/precious.txt";
  std::ofstream(target) << "keep me\n";
  ASSERT_EQ(::symlink(target.c_str(), (socket + ".log").c_str()), 0);
  CommandResult r = shelfd(socket);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not started"));
  EXPECT_THAT(r.err, HasSubstr(socket + ".log is a symlink")) << r.err;
  EXPECT_EQ(read_file(target), "keep me\n");
  ASSERT_EQ(::unlink((socket + ".log").c_str()), 0);

  r = shelfd(socket, {"--log-file", dir_ + "/no/such/dir/shelfd.log"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--log-file: create log " + dir_ + "/no/such/dir/shelfd.log"));
  EXPECT_THAT(r.err, HasSubstr("No such file or directory"));
  EXPECT_FALSE(exists(socket));
}

TEST_F(ShelfdFilesTest, ADetachedShelfdLogsWhereItSaysAlsoInADirectoryItMakes) {
  const std::string socket = dir_ + "/made/by/shelfd.sock";
  ASSERT_EQ(::mkdir((dir_ + "/made").c_str(), 0700), 0);
  CommandResult r = shelfd(socket);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("log " + socket + ".log"));
  EXPECT_THAT(read_file(socket + ".log"), HasSubstr("info: serving " + socket)) << r.out;
  stop(socket);
  // A shelfd log is appended to by the next one.
  r = shelfd(socket);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string log = read_file(socket + ".log");
  EXPECT_NE(log.find("info: stopped"), std::string::npos) << log;
  EXPECT_NE(log.find("info: serving", log.find("info: stopped")), std::string::npos) << log;
  stop(socket);

  // Under --group, in a directory shelfd makes for the group (the ones
  // above it let the group through).
  ASSERT_EQ(::chmod(dir_.c_str(), 0710), 0);
  ASSERT_EQ(::chmod((dir_ + "/made").c_str(), 0710), 0);
  const std::string grouped = dir_ + "/made/for-group/shelfd.sock";
  r = shelfd(grouped, {"--group", std::to_string(::getegid())});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(read_file(grouped + ".log"), HasSubstr("info: serving " + grouped));
}

TEST_F(ShelfdFilesTest, AnAncestorOthersMayWriteIsRefused) {
  const std::string open_dir = dir_ + "/open";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);  // not sticky: anyone may rename inside it
  ASSERT_EQ(::mkdir((open_dir + "/mine").c_str(), 0700), 0);
  CommandResult r = shelfd(open_dir + "/mine/shelf.sock");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ancestor " + open_dir + " (mode 0777) is writable by other users"))
      << r.err;
  EXPECT_FALSE(exists(open_dir + "/mine/shelf.sock"));
  ASSERT_EQ(::chmod(open_dir.c_str(), 01777), 0);  // sticky, as /tmp: fine
  r = shelfd(open_dir + "/mine/shelf.sock");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(ShelfdFilesTest, AtExitOnlyTheFilesItMadeAreRemoved) {
  const std::string socket = dir_ + "/shelf.sock";
  ASSERT_EQ(shelfd(socket).exit_code, 0);
  // Someone moves the socket away and puts a file of theirs in its place.
  ASSERT_EQ(::rename(socket.c_str(), (dir_ + "/moved.sock").c_str()), 0);
  std::ofstream(socket) << "theirs\n";
  stop(socket);
  EXPECT_EQ(read_file(socket), "theirs\n");
  EXPECT_FALSE(exists(socket + ".lock"));
}

}  // namespace
}  // namespace shelf::test
