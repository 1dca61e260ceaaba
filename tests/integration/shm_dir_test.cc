// shelfd --shm-dir: the segment in a tmpfs of the user's choice, clients
// that find it there, a directory shelf must not use refused with the
// reason, and huge pages (a tmpfs mounted huge=within_size, in a private
// mount namespace): large partitions lie in them, readers map them as huge
// pages, unpublishing gives them back, a restart re-attaches the segment.
#include <filesystem>
#include <fstream>
#include <linux/magic.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kHugePage = 2ull << 20;
constexpr int kSkip = 77;

// A fresh directory `dir` with `mode`, removed (with what is in it) when it goes.
class ScratchDir {
 public:
  ScratchDir(std::string dir, std::filesystem::perms mode) : dir_(std::move(dir)) {
    std::filesystem::create_directory(dir_);
    std::filesystem::permissions(dir_, mode);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
};

// What of this process's mappings of `path` the kernel maps with huge (PMD)
// page-table entries, from /proc/self/smaps.
uint64_t pmd_mapped_bytes(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  uint64_t total = 0;
  bool in_mapping = false;
  for (std::string line; std::getline(smaps, line);) {
    // A mapping's first line ends with its path; its fields follow it.
    if (line.size() > path.size() &&
        line.compare(line.size() - path.size(), path.size(), path) == 0) {
      in_mapping = true;
    } else if (line.rfind("VmFlags:", 0) == 0) {
      in_mapping = false;
    } else if (in_mapping && line.rfind("ShmemPmdMapped:", 0) == 0) {
      total += std::stoull(line.substr(15)) * 1024;
    }
  }
  return total;
}

uint64_t free_bytes_of(const std::string& dir) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) fail_test("statvfs " + dir);
  return uint64_t{vfs.f_bavail} * vfs.f_frsize;
}

TEST(ShmDirTest, ClientsFindTheSegmentInTheDirectoryShelfdWasGiven) {
  ScratchDir dir("/dev/shm/" + unique_name() + "-dir", std::filesystem::perms::owner_all);
  auto daemon = TestDaemon::start({.shm_dir = dir.path()});
  ASSERT_NE(daemon, nullptr);
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/" + daemon->segment()));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + daemon->segment()));
  Client writer = daemon->connect();
  publish_int64(writer, "here", 10000, 3);
  // Another process knows nothing of the directory but the socket.
  EXPECT_EQ(run_in_child([&] {
              Client reader = daemon->connect();
              expect_int64_published(reader, "here", 10000, 3);
            }),
            0);
  const MemoryStats s = status_of(writer);
  EXPECT_EQ(s.shm_dir, dir.path());
  // /dev/shm's page size is its mount's huge= option, which few machines set.
  std::ifstream mounts("/proc/self/mounts");
  bool huge = false;
  for (std::string line; std::getline(mounts, line);) {
    if (line.find(" /dev/shm ") != std::string::npos)
      huge = line.find("huge=") != std::string::npos;
  }
  if (!huge) {
    EXPECT_EQ(s.page_bytes, 4096u);
    EXPECT_EQ(s.huge_page_bytes, 0u);
  }
  CommandResult status = run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status"});
  EXPECT_THAT(status.out, HasSubstr("segment " + daemon->segment_path()));
  if (!huge) {
    EXPECT_THAT(status.out, HasSubstr("pages:    4 KiB"));
  }
  // A restart finds it there again.
  daemon->stop();
  ASSERT_EQ(daemon->restart().exit_code, 0);
  Client again = daemon->connect();
  expect_int64_published(again, "here", 10000, 3);
}

// A directory that is not on a tmpfs (where /tmp is one, /var/tmp or the
// build directory usually is not), or "" if there is none.
std::string disk_directory() {
  for (const std::string& dir :
       {std::string("/var/tmp"), std::string("/tmp"), std::filesystem::current_path().string()}) {
    struct statfs fs;
    if (::statfs(dir.c_str(), &fs) == 0 && fs.f_type != TMPFS_MAGIC) return dir;
  }
  return "";
}

TEST(ShmDirTest, ADirectoryShelfCannotUseIsRefusedAndNothingIsMade) {
  const std::string disk = disk_directory();
  if (disk.empty()) GTEST_SKIP() << "every directory here is on a tmpfs";
  ScratchDir on_disk(disk + "/" + unique_name() + "-disk", std::filesystem::perms::owner_all);
  ScratchDir open_to_all("/dev/shm/" + unique_name() + "-open", std::filesystem::perms::all);
  struct Case {
    std::string dir;
    int exit_code;
    std::string says;
  };
  const Case cases[] = {
      {"relative/dir", 2, "--shm-dir must be an absolute path, not 'relative/dir'"},
      {on_disk.path(), 1, on_disk.path() + " is not a tmpfs: datasets there would be written"},
      {open_to_all.path(), 1, open_to_all.path() + " is writable by every user and not sticky"},
      {"/dev/shm/" + unique_name() + "-none", 1, "No such file or directory"},
      {"/proc/self/status", 1, "/proc/self/status is not a directory"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dir);
    auto daemon = TestDaemon::unstarted({.shm_dir = c.dir});
    CommandResult r = daemon->restart_serving();
    EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says));
    EXPECT_FALSE(std::filesystem::exists(c.dir + "/" + daemon->segment()));
    EXPECT_FALSE(std::filesystem::exists(daemon->socket())) << "a refused start serves";
  }
}

TEST(ShmDirTest, LargePartitionsLieInHugePagesAndComeBackWhenUnpublished) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  const int code = run_in_child([] {
    ScratchDir dir("/tmp/" + unique_name() + "-huge", std::filesystem::perms::owner_all);
    if (!use_private_tmpfs(dir.path(), "size=256m,huge=within_size,mode=0700")) ::_exit(kSkip);
    {
      auto daemon = TestDaemon::start({.memory_limit = "128MiB", .shm_dir = dir.path()});
      ASSERT_NE(daemon, nullptr);
      Client client = daemon->connect();
      EXPECT_EQ(status_of(client).page_bytes, kHugePage);
      publish_int64(client, "small", 100, 9);  // packed: it takes no huge page of its own
      const uint64_t resident_small = daemon->resident_bytes();
      const uint64_t free_small = free_bytes_of(dir.path());

      constexpr uint64_t kRows = 4 << 20;  // 32 MiB, one partition
      publish_int64(client, "big", kRows, 5);
      const MemoryStats s = status_of(client);
      // All of it in whole huge pages; its extent is rounded to them.
      EXPECT_GE(s.huge_page_bytes, kRows * 8);
      EXPECT_GE(daemon->resident_bytes(), resident_small + kRows * 8);
      // Another process reads it through huge page-table entries.
      EXPECT_EQ(run_in_child([&] {
                  Client reader = daemon->connect();
                  expect_int64_published(reader, "big", kRows, 5);
                  expect_int64_published(reader, "small", 100, 9);
                  EXPECT_GE(pmd_mapped_bytes(daemon->segment_path()), 16 * kHugePage);
                }),
                0);
      CommandResult status = run_command({SHELF_CLI_PATH, "--socket", daemon->socket(), "status"});
      EXPECT_THAT(status.out, HasSubstr("pages:    2.00 MiB (huge): "));

      // Unpublished, every huge page of it comes back: to the segment and
      // to the tmpfs (df). (Not to the byte: a page of the index or a
      // descriptor may have come and gone meanwhile.)
      ASSERT_TRUE(client.unpublish_dataset("big").ok());
      (void)status_once_freed(client);
      EXPECT_LE(daemon->resident_bytes(), resident_small);
      EXPECT_GE(free_bytes_of(dir.path()), free_small);

      // A restart re-attaches the segment in the same directory.
      publish_int64(client, "big", kRows, 6);
      daemon->stop();
      ASSERT_EQ(daemon->restart().exit_code, 0);
      Client again = daemon->connect();
      expect_int64_published(again, "big", kRows, 6);
      expect_int64_published(again, "small", 100, 9);
      const MemoryStats after = status_of(again);
      EXPECT_EQ(after.page_bytes, kHugePage);
      EXPECT_GE(after.huge_page_bytes, kRows * 8);
    }
    ::umount(dir.path().c_str());
  });
  if (code == kSkip) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace shelf::test
