// Who may use a shelfd. By default its own user and root: the socket and the
// segment are 0600, and the daemon checks every connection's credentials
// (SO_PEERCRED) itself, since root ignores file permissions and a socket can
// be chmod-ed. With --group, the members of that group too (0660).
//
// Clients of another user are forked children that drop to `nobody`, and
// the shelf CLI run under setpriv, as an administrator would. Switching
// users needs root (CI runs as root): those tests skip otherwise.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <grp.h>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "shm/segment.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr gid_t kUsers = 100;  // Debian's "users" group
constexpr const char* kSetpriv = "/usr/bin/setpriv";

#define SKIP_UNLESS_ROOT()                                                     \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run clients as nobody"; \
  static_assert(true)

// In a child: becomes uid `uid`, gid `gid` with exactly the supplementary
// `groups`, or exits 90.
void become_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(gid, gid, gid) != 0 ||
      ::setresuid(uid, uid, uid) != 0) {
    std::fprintf(stderr, "cannot become uid %u: %s\n", uid, std::strerror(errno));
    ::_exit(90);
  }
}

// Runs `body` in a child that has become uid `uid`, gid `gid` with exactly
// the supplementary `groups`; returns its exit code as run_in_child does.
int as_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
            const std::function<void()>& body) {
  return run_in_child([&] {
    become_user(uid, gid, groups);
    body();
  });
}

// As `nobody`: connecting fails with PermissionDenied saying `why`.
void expect_refused(const TestDaemon& daemon, const std::string& why) {
  auto c = Client::connect(daemon.client_options());
  ASSERT_FALSE(c.ok()) << "connected as uid " << ::getuid();
  EXPECT_EQ(c.status().code(), Status::Code::kPermissionDenied) << c.status().to_string();
  EXPECT_THAT(c.status().message(), HasSubstr(why));
}

// As `nobody`: the segment cannot be opened at all, not even read-only.
void expect_segment_closed(const TestDaemon& daemon) {
  const std::string path = "/dev/shm/" + daemon.segment();
  errno = 0;
  EXPECT_EQ(::open(path.c_str(), O_RDONLY | O_CLOEXEC), -1);
  EXPECT_EQ(errno, EACCES) << std::strerror(errno);
  EXPECT_FALSE(
      shm::ShmObject::open(shm::kDefaultShmDir, daemon.segment(), /*writable=*/false).ok());
}

struct FileMode {
  uint32_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
FileMode mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return {st.st_mode & 07777, st.st_uid, st.st_gid};
}

// The shelf CLI as `nobody`, with extra setpriv group options.
CommandResult cli_as_nobody(const TestDaemon& daemon, const std::vector<std::string>& groups,
                            const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kSetpriv, "--reuid=" + std::to_string(kNobody)};
  argv.insert(argv.end(), groups.begin(), groups.end());
  argv.insert(argv.end(), {SHELF_CLI_PATH, "--socket", daemon.socket()});
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv);
}

// Stops the shelfd holding `lock_path` (SIGTERM) and waits until it is gone:
// the kernel drops its flock when it dies.
void stop_shelfd(const std::string& lock_path) {
  std::ifstream lock(lock_path);
  pid_t pid = 0;
  lock >> pid;
  ASSERT_GT(pid, 0) << "no pid in " << lock_path;
  ::kill(pid, SIGTERM);
  int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::flock(fd, LOCK_EX);
    ::close(fd);
  }
  wait_for_exit(pid);
}

// A shelfd run as nobody under --group users, in a directory of nobody's,
// with a segment of its own. The destructor stops it and removes what it
// made, also when the test fails half way (a leaked daemon and segment
// would fail the next run's no_leftover_segments).
class ShelfdOfNobody {
 public:
  ShelfdOfNobody()
      : dir_((std::filesystem::temp_directory_path() / unique_name()).string()),
        socket_(dir_ + "/run/shelf.sock"),
        segment_(unique_name()) {
    std::filesystem::create_directories(dir_);
    if (::chown(dir_.c_str(), kNobody, kNogroup) != 0) throw TestFailure("chown " + dir_);
  }
  ~ShelfdOfNobody() {
    if (std::filesystem::exists(socket_ + ".lock")) stop_shelfd(socket_ + ".lock");
    std::filesystem::remove_all(dir_);
    ::unlink(("/dev/shm/" + segment_).c_str());
  }
  ShelfdOfNobody(const ShelfdOfNobody&) = delete;
  ShelfdOfNobody& operator=(const ShelfdOfNobody&) = delete;

  // Starts (or restarts) it, as an administrator would: through setpriv.
  CommandResult start() const {
    return run_command({kSetpriv, "--reuid=" + std::to_string(kNobody),
                        "--regid=" + std::to_string(kNogroup), "--groups=" + std::to_string(kUsers),
                        SHELFD_PATH, "--socket", socket_, "--segment", segment_, "--memory-limit",
                        "64MiB", "--group", "users"});
  }
  // kill -9, and waits until it is gone.
  void kill9() const {
    pid_t pid = 0;
    std::ifstream(socket_ + ".lock") >> pid;
    if (pid <= 0 || ::kill(pid, SIGKILL) != 0) throw TestFailure("no shelfd to kill");
    wait_for_exit(pid);
  }
  ClientOptions client_options() const {
    ClientOptions options;
    options.socket = socket_;
    return options;
  }
  const std::string& socket() const { return socket_; }
  const std::string& segment() const { return segment_; }

 private:
  std::string dir_, socket_, segment_;
};

TEST(AccessTest, OnlyItsOwnUserByDefault) {
  SKIP_UNLESS_ROOT();
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client owner = daemon->connect();
  publish_int64(owner, "secret", 1000, 3);

  EXPECT_EQ(mode_of(daemon->socket()).mode, 0600u);
  EXPECT_EQ(mode_of("/dev/shm/" + daemon->segment()).mode, 0600u);
  EXPECT_EQ(as_user(kNobody, kNogroup, {},
                    [&] {
                      expect_refused(*daemon, "permission denied");
                      expect_segment_closed(*daemon);
                    }),
            0);
  CommandResult r =
      cli_as_nobody(*daemon, {"--regid=" + std::to_string(kNogroup), "--clear-groups"}, {"list"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.err, HasSubstr("may not use the shelfd at " + daemon->socket()));
  EXPECT_THAT(r.err, HasSubstr("--group"));
  // The owner is still served, its data intact.
  expect_int64_published(owner, "secret", 1000, 3);
  expect_daemon_serves(*daemon);
}

// File permissions are one fence; the daemon's own check of who connected is
// the other, and it holds with the socket open to everyone.
TEST(AccessTest, DaemonChecksCredentialsEvenWithTheSocketOpenToAll) {
  SKIP_UNLESS_ROOT();
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client owner = daemon->connect();
  publish_int64(owner, "secret", 1000, 3);
  ASSERT_EQ(::chmod(daemon->socket().c_str(), 0666), 0);
  EXPECT_EQ(as_user(kNobody, kNogroup, {},
                    [&] {
                      expect_refused(*daemon, "uid 65534 may not use the shelfd at " +
                                                  daemon->socket() + ": it serves uid 0 only");
                      expect_segment_closed(*daemon);
                    }),
            0);
  CommandResult r =
      cli_as_nobody(*daemon, {"--regid=" + std::to_string(kNogroup), "--clear-groups"}, {"status"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.err, HasSubstr("uid 65534 may not use"));
  EXPECT_THAT(r.err, HasSubstr("shelfd --group"));
  expect_int64_published(owner, "secret", 1000, 3);
  EXPECT_EQ(status_of(owner).num_connections, 1u) << "a refused connection kept a session";
}

TEST(AccessTest, GroupMembersMayReadAndPublishOthersMayNot) {
  SKIP_UNLESS_ROOT();
  TestDaemon::Options options;
  options.extra_args = {"--group", "users"};
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client owner = daemon->connect();
  publish_int64(owner, "shared", 1000, 7);

  for (const std::string& path : {daemon->socket(), "/dev/shm/" + daemon->segment()}) {
    FileMode m = mode_of(path);
    EXPECT_EQ(m.mode, 0660u) << path;
    EXPECT_EQ(m.gid, kUsers) << path;
    EXPECT_EQ(m.uid, 0u) << path;
  }
  EXPECT_EQ(mode_of(daemon->socket() + ".lock").mode, 0600u) << "the lock file stays private";

  // A member by supplementary group reads and publishes.
  EXPECT_EQ(as_user(kNobody, kNogroup, {kUsers},
                    [&] {
                      Client c = daemon->connect();
                      expect_int64_published(c, "shared", 1000, 7);
                      publish_int64(c, "from_member", 500, 9);
                    }),
            0);
  // And by primary group.
  EXPECT_EQ(as_user(kNobody, kUsers, {},
                    [&] {
                      Client c = daemon->connect();
                      expect_int64_published(c, "from_member", 500, 9);
                    }),
            0);
  auto info = owner.get_dataset("from_member");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->publisher_uid(), kNobody);

  // Anyone else: refused by the socket's mode, then by the daemon.
  EXPECT_EQ(as_user(kNobody, kNogroup, {},
                    [&] {
                      expect_refused(*daemon, "permission denied");
                      expect_segment_closed(*daemon);
                    }),
            0);
  ASSERT_EQ(::chmod(daemon->socket().c_str(), 0666), 0);
  EXPECT_EQ(
      as_user(kNobody, kNogroup, {},
              [&] { expect_refused(*daemon, "it serves uid 0 and members of group users only"); }),
      0);

  // The CLI, as an administrator would run it.
  CommandResult member = cli_as_nobody(
      *daemon, {"--regid=" + std::to_string(kNogroup), "--groups=" + std::to_string(kUsers)},
      {"list"});
  EXPECT_EQ(member.exit_code, 0) << member.err;
  EXPECT_THAT(member.out, HasSubstr("shared"));
  CommandResult stranger =
      cli_as_nobody(*daemon, {"--regid=" + std::to_string(kNogroup), "--clear-groups"}, {"list"});
  EXPECT_NE(stranger.exit_code, 0);
  EXPECT_THAT(stranger.err, HasSubstr("may not use"));

  // Restarted without --group, the daemon takes the segment back: members
  // can no longer open it, though it keeps their datasets.
  daemon->stop();
  CommandResult restarted =
      run_command({SHELFD_PATH, "--socket", daemon->socket(), "--segment", daemon->segment()});
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  EXPECT_EQ(mode_of("/dev/shm/" + daemon->segment()).mode, 0600u);
  EXPECT_EQ(as_user(kNobody, kUsers, {}, [&] { expect_segment_closed(*daemon); }), 0);
  Client again = daemon->connect();
  expect_int64_published(again, "from_member", 500, 9);
}

// What --group refuses at start, each with a reason.
TEST(AccessTest, GroupOptionErrors) {
  const std::string dir = (std::filesystem::temp_directory_path() / unique_name()).string();
  std::filesystem::create_directories(dir);
  std::string segment;  // the last one tried: a stopped shelfd keeps its segment
  auto shelfd = [&](const std::string& socket, const std::string& group) {
    segment = unique_name();
    return run_command({SHELFD_PATH, "--socket", socket, "--segment", segment, "--memory-limit",
                        "16MiB", "--group", group});
  };
  CommandResult r = shelfd(dir + "/shelf.sock", "no-such-group-here");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--group: there is no group 'no-such-group-here'"));

  // A socket directory the group cannot pass through.
  const std::string closed = dir + "/closed";
  ASSERT_EQ(::mkdir(closed.c_str(), 0700), 0);
  r = shelfd(closed + "/shelf.sock", "users");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("members of group users could not reach the socket: " + closed +
                               " (mode 0700)"));
  // A directory shelfd creates itself is made passable (0710, the group's).
  const std::string fresh = dir + "/fresh";
  r = shelfd(fresh + "/shelf.sock", "users");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  FileMode m = mode_of(fresh);
  EXPECT_EQ(m.mode, 0710u);
  EXPECT_EQ(m.gid, kUsers);
  stop_shelfd(fresh + "/shelf.sock.lock");
  std::filesystem::remove_all(dir);
  ::unlink(("/dev/shm/" + segment).c_str());
}

// A shelfd run by a user of its own (here nobody) for a group: a member of
// another uid uses it when told its socket, although clients otherwise refuse
// a daemon of another user (anyone could listen at a default path).
TEST(AccessTest, MembersTrustADaemonOfAnotherUserSharedWithTheirGroup) {
  SKIP_UNLESS_ROOT();
  ShelfdOfNobody shelfd;
  CommandResult r = shelfd.start();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  FileMode m = mode_of("/dev/shm/" + shelfd.segment());
  EXPECT_EQ(m.uid, kNobody);
  EXPECT_EQ(m.gid, kUsers);
  EXPECT_EQ(m.mode, 0660u);

  const ClientOptions options = shelfd.client_options();
  constexpr uid_t kMember = 4321;  // any uid but nobody's or root's
  EXPECT_EQ(as_user(kMember, kMember, {kUsers},
                    [&] {
                      auto c = Client::connect(options);
                      ASSERT_TRUE(c.ok()) << c.status().to_string();
                      publish_int64(*c, "by_member", 100, 1);
                      expect_int64_published(*c, "by_member", 100, 1);
                    }),
            0);
  // Root is not in the group: its client refuses the daemon, with the reason.
  auto root = Client::connect(options);
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.status().code(), Status::Code::kPermissionDenied);
  EXPECT_THAT(root.status().message(), HasSubstr("runs as uid 65534, not as you or root"));
}

// A reader of another user that outlives a restart keeps what it reads.
// shelfd runs as nobody under --group users, so it may not read a member's
// /proc/PID/maps; the member's presence lock (shm/presence.h) is what tells
// the restarted shelfd that a reader from before is still there. The
// dataset it reads is unpublished after the restart and another one
// published: its memory is held (pending), not reused, and the reader finds
// every value as it was; once the reader exits, the memory comes back.
TEST(AccessTest, AReaderOfAnotherUserThatOutlivesARestartKeepsWhatItReads) {
  SKIP_UNLESS_ROOT();
  ShelfdOfNobody shelfd;
  CommandResult r = shelfd.start();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const ClientOptions options = shelfd.client_options();
  constexpr uid_t kPublisher = 4321, kReader = 4322;  // members of users; not shelfd's uid
  constexpr uint64_t kRows = 500'000;                 // ~4 MiB
  auto as_member = [&](const std::function<void(Client&)>& body) {
    return as_user(kPublisher, kPublisher, {kUsers}, [&] {
      auto c = Client::connect(options);
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      body(*c);
    });
  };
  ASSERT_EQ(as_member([&](Client& c) { publish_int64(c, "read", kRows, 1); }), 0);

  Pipe holding, go;
  const pid_t reader = spawn_child([&] {
    become_user(kReader, kReader, {kUsers});
    auto c = Client::connect(options);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    auto ds = c->get_dataset("read");
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    ASSERT_TRUE(holding.signal());
    ASSERT_TRUE(go.wait());
    expect_int64_dataset(*ds, kRows, 1);  // every value, and its checksums
  });
  // A failed assertion below returns: the reader must not outlive the test.
  struct KillOnReturn {
    pid_t pid;
    ~KillOnReturn() {
      if (pid > 0) kill_child(pid);
    }
  } reader_guard{reader};
  ASSERT_TRUE(holding.wait()) << "the reader did not get its dataset";
  shelfd.kill9();
  r = shelfd.start();
  ASSERT_EQ(r.exit_code, 0) << r.err;

  ASSERT_EQ(as_member([&](Client& c) {
              const uint64_t before = status_of(c).used_bytes;
              ASSERT_TRUE(c.unpublish_dataset("read").ok());
              publish_int64(c, "after", kRows, 2);
              const MemoryStats st = status_of(c);
              EXPECT_GT(st.pending_free_bytes, kRows * 8) << "nothing held for the reader";
              EXPECT_GT(st.used_bytes, before) << "the reader's memory was reused";
            }),
            0);
  ASSERT_TRUE(go.signal());
  EXPECT_EQ(wait_child(std::exchange(reader_guard.pid, 0)), 0)
      << "the reader's values changed under it";
  // Its exit drops its lock; shelfd's next look (kHoldRecheckMs) frees.
  EXPECT_EQ(as_member([&](Client& c) {
              EXPECT_TRUE(eventually([&] { return status_of(c).pending_free_bytes == 0; }));
              const MemoryStats st = status_of(c);
              ASSERT_EQ(st.datasets.size(), 1u);
              EXPECT_EQ(st.used_bytes, st.index_bytes + st.datasets[0].memory_bytes);
            }),
            0);
}

// One user cannot take every connection: at its share
// (--max-connections-per-user, by default --max-connections less a quarter)
// its next connection is refused, naming the uid, its count and the option,
// while another user still gets the slot left; closing one of its own lets
// it in again.
TEST(AccessTest, OneUserCannotTakeEveryConnection) {
  SKIP_UNLESS_ROOT();
  auto daemon = TestDaemon::start({.extra_args = {"--group", "users", "--max-connections", "4"}});
  ASSERT_NE(daemon, nullptr);
  constexpr uid_t kUserA = 4321, kUserB = 4322;  // any uids but nobody's or root's
  const std::string refusal = "uid 4321 has 3 connections to the shelfd at " + daemon->socket() +
                              ", the most one user may have (--max-connections-per-user 3); " +
                              "close one, or start shelfd with a larger " +
                              "--max-connections-per-user";
  Pipe full, go;
  const pid_t a = spawn_child([&] {
    become_user(kUserA, kUserA, {kUsers});
    std::vector<Client> held;
    for (int i = 0; i < 3; ++i) held.push_back(daemon->connect());
    auto refused = Client::connect(daemon->client_options());
    ASSERT_FALSE(refused.ok()) << "a 4th connection of one user, with 1 slot of 4 free";
    EXPECT_EQ(refused.status().code(), Status::Code::kUnavailable);
    EXPECT_THAT(refused.status().message(), HasSubstr(refusal));
    ASSERT_TRUE(full.signal());
    ASSERT_TRUE(go.wait());
    held.pop_back();
    // shelfd reads the closed connection's EOF on its own time.
    EXPECT_TRUE(eventually([&] {
      auto again = Client::connect(daemon->client_options());
      return again.ok() && again->list_datasets().ok();
    }));
  });
  ASSERT_TRUE(full.wait()) << "user A did not get its 3 connections";
  // A's CLI is told why, on one line.
  CommandResult r = run_command(
      {kSetpriv, "--reuid=" + std::to_string(kUserA), "--regid=" + std::to_string(kUserA),
       "--groups=" + std::to_string(kUsers), SHELF_CLI_PATH, "--socket", daemon->socket(), "list"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.err, HasSubstr(refusal));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // User B gets the last slot and is served.
  EXPECT_EQ(as_user(kUserB, kUserB, {kUsers},
                    [&] {
                      Client c = daemon->connect();
                      publish_int64(c, "from_b", 100, 5);
                      expect_int64_published(c, "from_b", 100, 5);
                    }),
            0);
  ASSERT_TRUE(go.signal());
  EXPECT_EQ(wait_child(a), 0);
}

// A user's quota holds that user only: past it, its publish is refused
// naming its uid and numbers, while a user without one publishes on; an
// override by another user moves the charge to it. `shelf status` shows
// each user's use and quota.
TEST(AccessTest, OneUserOverItsQuotaLeavesAnotherServed) {
  SKIP_UNLESS_ROOT();
  auto daemon =
      TestDaemon::start({.extra_args = {"--group", "users", "--user-quota", "4321=1MiB"}});
  ASSERT_NE(daemon, nullptr);
  constexpr uid_t kUserA = 4321, kUserB = 4322;
  EXPECT_EQ(as_user(kUserA, kUserA, {kUsers},
                    [&] {
                      Client c = daemon->connect();
                      publish_int64(c, "from_a", 64 * 1024, 1);  // 512 KiB
                      auto table = c.create_table({{"v", Type::kInt64}});
                      ASSERT_TRUE(table.ok());
                      const Status refused = table->add_partition(128 * 1024).status();  // 1 MiB
                      EXPECT_EQ(refused.code(), Status::Code::kResourceExhausted);
                      EXPECT_THAT(refused.message(), HasSubstr("uid 4321 is over its quota: "));
                      EXPECT_THAT(refused.message(), HasSubstr(" used of 1.00 MiB, "));
                    }),
            0);
  EXPECT_EQ(
      as_user(kUserB, kUserB, {kUsers},
              [&] {
                Client c = daemon->connect();
                publish_int64(c, "from_b", 1 << 20, 2);  // 8 MiB: no quota of its own
                TableBuilder mine = make_int64_table(c, 16, 3);
                ASSERT_TRUE(c.publish_dataset("from_a", mine, {.override_existing = true}).ok());
              }),
      0);
  Client root = daemon->connect();
  const MemoryStats st = status_of(root);
  ASSERT_EQ(st.users.size(), 2u);
  EXPECT_EQ(st.users[0].uid, kUserA);
  EXPECT_EQ(st.users[0].used_bytes, 0u) << "B's override took A's dataset off A's quota";
  EXPECT_EQ(st.users[0].quota_bytes, 1u << 20);
  EXPECT_EQ(st.users[1].uid, kUserB);
  uint64_t b_datasets = 0;
  for (const DatasetInfo& d : st.datasets) b_datasets += d.memory_bytes;
  EXPECT_EQ(st.users[1].used_bytes, b_datasets);
  EXPECT_EQ(st.users[1].quota_bytes, 0u);

  CommandResult text = run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("users:\nUSER"));
  EXPECT_THAT(text.out, ::testing::ContainsRegex("4321 +0 B +1.00 MiB +0.0%"));
  EXPECT_THAT(text.out, ::testing::ContainsRegex("4322 +[0-9.]+ MiB +none +-"));
  CommandResult json =
      run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"users\":[{\"uid\":4321,"));
  EXPECT_THAT(json.out, HasSubstr("\"used_bytes\":0,\"quota_bytes\":1048576}"));
  EXPECT_THAT(json.out,
              HasSubstr("\"used_bytes\":" + std::to_string(b_datasets) + ",\"quota_bytes\":null}"));
}

// shelfd's own user is not held to the share: it may take every slot.
TEST(AccessTest, ShelfdsOwnUserMayTakeEveryConnection) {
  auto daemon = TestDaemon::start({.extra_args = {"--max-connections", "4"}});
  ASSERT_NE(daemon, nullptr);
  std::vector<Client> held;
  for (int i = 0; i < 4; ++i) held.push_back(daemon->connect());
  auto refused = Client::connect(daemon->client_options());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("its limit (--max-connections)"));
}

// Writes through a Dataset's view. Runs in a child only.
void write_through_view(const Dataset& ds) {
  // ASan installs its own SIGSEGV handler (it would exit 1): restore the
  // default so the kernel's verdict is what the test sees in every build.
  ::signal(SIGSEGV, SIG_DFL);
  const int64_t* value = ds.column(0, 0).values<int64_t>().data();
  *const_cast<volatile int64_t*>(value) = -1;
}

// A publisher holds writable mappings of its own partitions only: another
// dataset's buffers stay read-only for it, and the daemon will not publish
// another dataset's extents under its name (ProtocolAbuseTest,
// PublishedExtentsCannotBeTakenOver).
TEST(AccessTest, PublisherCannotWriteIntoAnotherDataset) {
  auto daemon = TestDaemon::start();
  ASSERT_NE(daemon, nullptr);
  Client owner = daemon->connect();
  publish_int64(owner, "theirs", 1000, 11);
  EXPECT_EQ(run_in_child([&] {
              Client c = daemon->connect();
              // Mid-publish: this process holds writable partitions of its own.
              TableBuilder mine = make_int64_table(c, 1000, 1);
              auto theirs = c.get_dataset("theirs");
              if (!theirs.ok()) ::_exit(2);
              write_through_view(*theirs);
              ::_exit(3);  // the write did not fault
            }),
            128 + SIGSEGV);
  expect_int64_published(owner, "theirs", 1000, 11);
}

}  // namespace
}  // namespace shelf::test
