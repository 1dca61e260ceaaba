// ShmObject and Mapping against real /dev/shm objects. Every object is named
// shelf-test-<pid>-unit-<n> and removed by a ScopedShmName, also when a test
// fails; the fixture checks that none of this process's objects is left.
#include "shm/segment.h"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sched.h>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "shm/layout.h"

namespace shelf::shm {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

std::string test_prefix() { return "shelf-test-" + std::to_string(::getpid()) + "-unit-"; }

// A fresh object name, unlinked again when the guard goes out of scope.
class ScopedShmName {
 public:
  ScopedShmName() : name_(test_prefix() + std::to_string(next_++)) {}
  ~ScopedShmName() {
    Status s = ShmObject::unlink(kDefaultShmDir, name_);
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  ScopedShmName(const ScopedShmName&) = delete;
  ScopedShmName& operator=(const ScopedShmName&) = delete;

  const std::string& get() const { return name_; }
  std::string path() const { return "/dev/shm/" + name_; }

 private:
  static inline std::atomic<int> next_{0};
  std::string name_;
};

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Names of /dev/shm entries that start with `prefix`.
std::vector<std::string> shm_entries(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    if (std::string(e->d_name).rfind(prefix, 0) == 0) out.push_back(e->d_name);
  }
  ::closedir(dir);
  return out;
}

// Declares `lhs` from the value of `expr` (a Result), or fails the test here.
#define TEST_CONCAT_IMPL_(a, b) a##b
#define TEST_CONCAT_(a, b) TEST_CONCAT_IMPL_(a, b)
#define ASSERT_OK_AND_MOVE(lhs, expr) \
  ASSERT_OK_AND_MOVE_IMPL_(TEST_CONCAT_(result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_MOVE_IMPL_(tmp, lhs, expr)                      \
  auto tmp = (expr);                                                  \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().to_string(); \
  lhs = std::move(tmp).value()

class SegmentTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // Every ScopedShmName of the test body is gone by now.
    EXPECT_TRUE(shm_entries(test_prefix()).empty()) << "a test left an object in /dev/shm";
  }
};

TEST_F(SegmentTest, CreateOpenUnlink) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject created,
                     ShmObject::create(kDefaultShmDir, name.get(), 3 * kPageSize, 0600));
  EXPECT_EQ(created.name(), name.get());
  EXPECT_TRUE(created.writable());
  EXPECT_GE(created.fd(), 0);
  EXPECT_TRUE(exists(name.path()));
  Result<uint64_t> size = created.size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 3 * kPageSize);

  ASSERT_OK_AND_MOVE(ShmObject opened,
                     ShmObject::open(kDefaultShmDir, name.get(), /*writable=*/false));
  EXPECT_FALSE(opened.writable());
  EXPECT_NE(opened.fd(), created.fd());
  Result<uint64_t> opened_size = opened.size();
  ASSERT_TRUE(opened_size.ok());
  EXPECT_EQ(*opened_size, 3 * kPageSize);

  ASSERT_TRUE(ShmObject::unlink(kDefaultShmDir, name.get()).ok());
  EXPECT_FALSE(exists(name.path()));
  EXPECT_EQ(ShmObject::open(kDefaultShmDir, name.get(), false).status().sys_errno(), ENOENT);
  // Unlinking what does not exist is fine.
  EXPECT_TRUE(ShmObject::unlink(kDefaultShmDir, name.get()).ok());
}

TEST_F(SegmentTest, DestroyingAnObjectDoesNotUnlinkIt) {
  ScopedShmName name;
  {
    ASSERT_OK_AND_MOVE(ShmObject created,
                       ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600));
  }
  EXPECT_TRUE(exists(name.path()));
  EXPECT_TRUE(ShmObject::open(kDefaultShmDir, name.get(), true).ok());
}

TEST_F(SegmentTest, ModeIsExactly0600) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject created,
                     ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600));
  struct stat st;
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::getuid());
}

TEST_F(SegmentTest, ModeIsNotNarrowedByTheUmask) {
  ScopedShmName name;
  const mode_t old_umask = ::umask(077);
  Result<ShmObject> created = ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0640);
  ::umask(old_umask);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  struct stat st;
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_F(SegmentTest, CreateTwiceIsAlreadyExists) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject first,
                     ShmObject::create(kDefaultShmDir, name.get(), 2 * kPageSize, 0600));
  Result<ShmObject> second = ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kAlreadyExists) << second.status().to_string();
  EXPECT_NE(second.status().message().find(name.get()), std::string::npos);
  // The failed create neither removed nor resized the first object.
  EXPECT_TRUE(exists(name.path()));
  Result<uint64_t> size = first.size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 2 * kPageSize);
}

TEST_F(SegmentTest, OpenMissingIsNotFound) {
  ScopedShmName name;  // never created
  for (bool writable : {false, true}) {
    Result<ShmObject> opened = ShmObject::open(kDefaultShmDir, name.get(), writable);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().sys_errno(), ENOENT) << opened.status().to_string();
  }
  EXPECT_FALSE(exists(name.path()));
}

TEST_F(SegmentTest, ValidNames) {
  EXPECT_TRUE(ShmObject::is_valid_name("shelf-1000-0123456789abcdef"));
  EXPECT_TRUE(ShmObject::is_valid_name("a.b_c-D9"));
  EXPECT_TRUE(ShmObject::is_valid_name("..."));
  EXPECT_TRUE(ShmObject::is_valid_name(std::string(200, 'x')));

  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
        std::string("/shelf"), std::string("a b"), std::string("tab\there"),
        std::string("caf\xc3\xa9"), std::string("nul\0byte", 8), std::string(201, 'x')}) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_FALSE(ShmObject::is_valid_name(bad));
  }
}

TEST_F(SegmentTest, InvalidNamesAreRefused) {
  for (const std::string& bad : {std::string(""), std::string(".."), std::string("a/b"),
                                 std::string("../../tmp/x"), std::string(201, 'x')}) {
    SCOPED_TRACE("'" + bad + "'");
    Result<ShmObject> created = ShmObject::create(kDefaultShmDir, bad, kPageSize, 0600);
    ASSERT_FALSE(created.ok());
    EXPECT_EQ(created.status().code(), Status::Code::kInvalidArgument);
    Result<ShmObject> opened = ShmObject::open(kDefaultShmDir, bad, true);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), Status::Code::kInvalidArgument);
  }
}

// The huge-page case is ShmDirTest's (a tmpfs mounted huge=, as root).
TEST_F(SegmentTest, ProbePageSizeSaysFourKiBOnThisDevShmAndLeavesAHole) {
  // /dev/shm's page size is its mount's huge= option.
  std::ifstream mounts("/proc/self/mounts");
  bool huge = false;
  for (std::string line; std::getline(mounts, line);) {
    if (line.find(" /dev/shm ") != std::string::npos)
      huge = line.find("huge=") != std::string::npos;
  }
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject object,
                     ShmObject::create(kDefaultShmDir, name.get(), 8 * kMiB, 0600));
  Result<uint64_t> page = object.probe_page_size(2 * kMiB);
  ASSERT_TRUE(page.ok()) << page.status().to_string();
  if (!huge) {
    EXPECT_EQ(*page, kPageSize);
  }
  // Nothing stays of the byte it wrote.
  Result<uint64_t> resident = object.resident_bytes();
  ASSERT_TRUE(resident.ok());
  EXPECT_EQ(*resident, 0u);
  // Only whole huge pages: the range it punches must be one.
  Result<uint64_t> unaligned = object.probe_page_size(kPageSize);
  ASSERT_FALSE(unaligned.ok());
  EXPECT_EQ(unaligned.status().code(), Status::Code::kInternal);
}

TEST_F(SegmentTest, ReserveMakesResidentBytesGrowAndPunchShrinksThemBack) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject object,
                     ShmObject::create(kDefaultShmDir, name.get(), 8 * kMiB, 0600));
  Result<uint64_t> sparse = object.resident_bytes();
  ASSERT_TRUE(sparse.ok());
  EXPECT_LT(*sparse, kMiB);  // created sparse

  ASSERT_TRUE(object.reserve(kMiB, 2 * kMiB).ok());
  Result<uint64_t> reserved = object.resident_bytes();
  ASSERT_TRUE(reserved.ok());
  EXPECT_GE(*reserved, *sparse + 2 * kMiB);
  // At most [0, 4 MiB) even if tmpfs backs the range with 2 MiB huge pages.
  EXPECT_LE(*reserved, *sparse + 4 * kMiB);

  ASSERT_TRUE(object.punch(kMiB, kMiB).ok());  // half of it
  Result<uint64_t> half = object.resident_bytes();
  ASSERT_TRUE(half.ok());
  EXPECT_GE(*half, *sparse + kMiB);
  EXPECT_LT(*half, *reserved);

  ASSERT_TRUE(object.punch(2 * kMiB, kMiB).ok());  // the other half
  Result<uint64_t> punched = object.resident_bytes();
  ASSERT_TRUE(punched.ok());
  EXPECT_EQ(*punched, *sparse);
  // The size of the object does not change.
  Result<uint64_t> size = object.size();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 8 * kMiB);
}

// Each thread reserves its own run of the range: together every page of it
// once, and nothing outside it. An odd page count does not split evenly.
TEST_F(SegmentTest, ReserveThroughOnSeveralThreadsReservesTheWholeRangeAndNothingElse) {
  ScopedShmName name;
  const uint64_t size = 8 * kMiB;
  ASSERT_OK_AND_MOVE(ShmObject object, ShmObject::create(kDefaultShmDir, name.get(), size, 0600));
  ASSERT_OK_AND_MOVE(Mapping map, Mapping::map(object, 0, size, /*writable=*/true));
  ASSERT_OK_AND_MOVE(uint64_t sparse, object.resident_bytes());
  const uint64_t offset = kPageSize, length = 1027 * kPageSize;  // 1027: a prime
  Status s = object.reserve_through(map.data() + offset, offset, length, /*threads=*/4);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_OK_AND_MOVE(bool whole, object.is_reserved(offset, length));
  EXPECT_TRUE(whole);
  ASSERT_OK_AND_MOVE(bool before, object.is_reserved(0, kPageSize));
  EXPECT_FALSE(before);
  ASSERT_OK_AND_MOVE(bool after, object.is_reserved(offset + length, kPageSize));
  EXPECT_FALSE(after);
  ASSERT_OK_AND_MOVE(uint64_t reserved, object.resident_bytes());
  EXPECT_EQ(reserved, sparse + length);
}

// More threads than pages: a thread per page at most, each page once.
TEST_F(SegmentTest, MadviseInParallelWithMoreThreadsThanPagesCoversEveryRange) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject object,
                     ShmObject::create(kDefaultShmDir, name.get(), 8 * kPageSize, 0600));
  ASSERT_OK_AND_MOVE(Mapping map, Mapping::map(object, 0, 8 * kPageSize, /*writable=*/true));
  const MappedRange ranges[] = {{map.data(), kPageSize},
                                {map.data() + 4 * kPageSize, 2 * kPageSize}};
  EXPECT_EQ(madvise_in_parallel(ranges, MADV_POPULATE_WRITE, /*threads=*/64), 0);
  ASSERT_OK_AND_MOVE(bool first, object.is_reserved(0, kPageSize));
  EXPECT_TRUE(first);
  ASSERT_OK_AND_MOVE(bool second, object.is_reserved(4 * kPageSize, 2 * kPageSize));
  EXPECT_TRUE(second);
  ASSERT_OK_AND_MOVE(bool gap, object.is_reserved(kPageSize, kPageSize));
  EXPECT_FALSE(gap);
  EXPECT_EQ(madvise_in_parallel({}, MADV_POPULATE_WRITE, 4), 0);  // nothing to do
}

// A full tmpfs fails the reservation on whichever threads run out, and the
// pages the others got are given back: nothing of the range stays.
TEST_F(SegmentTest, ReserveThroughOnSeveralThreadsIntoAFullTmpfsFailsAndKeepsNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a private tmpfs needs root";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // In a private mount namespace: a 4 MiB /dev/shm, of which 16 MiB are asked.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=4m,mode=1777") != 0) {
      _exit(10);
    }
    auto object = ShmObject::create(kDefaultShmDir, "shelf-test-full", 32 * kMiB, 0600);
    if (!object.ok()) _exit(11);
    auto map = Mapping::map(*object, 0, 32 * kMiB, /*writable=*/true);
    if (!map.ok()) _exit(12);
    Status s = object->reserve_through(map->data(), 0, 16 * kMiB, /*threads=*/4);
    if (!s.is_resource_exhausted()) _exit(13);
    if (s.message().find("/dev/shm is full") == std::string::npos) _exit(14);
    auto resident = object->resident_bytes();
    if (!resident.ok() || *resident != 0) _exit(15);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: no private tmpfs, 13: not ResourceExhausted, "
                                       "14: the message, 15: pages left reserved";
}

TEST_F(SegmentTest, PunchedPagesReadAsZeros) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject object,
                     ShmObject::create(kDefaultShmDir, name.get(), 4 * kPageSize, 0600));
  ASSERT_OK_AND_MOVE(Mapping map, Mapping::map(object, 0, 4 * kPageSize, /*writable=*/true));
  std::memset(map.data(), 0xAB, 4 * kPageSize);
  ASSERT_TRUE(object.punch(kPageSize, 2 * kPageSize).ok());
  EXPECT_EQ(map.data()[kPageSize - 1], std::byte{0xAB});
  for (uint64_t i = kPageSize; i < 3 * kPageSize; ++i) {
    ASSERT_EQ(map.data()[i], std::byte{0}) << "at " << i;
  }
  EXPECT_EQ(map.data()[3 * kPageSize], std::byte{0xAB});
}

TEST_F(SegmentTest, TryLockFromASecondOpenIsAlreadyExists) {
  ScopedShmName name;
  Result<ShmObject> first = ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  ASSERT_TRUE(first->try_lock().ok());
  EXPECT_TRUE(first->try_lock().ok());  // the holder may take it again

  // flock belongs to the open file description, so a second open in this
  // same process conflicts as another process would.
  ASSERT_OK_AND_MOVE(ShmObject second,
                     ShmObject::open(kDefaultShmDir, name.get(), /*writable=*/false));
  Status locked = second.try_lock();
  EXPECT_EQ(locked.code(), Status::Code::kAlreadyExists) << locked.to_string();
  EXPECT_NE(locked.message().find(name.get()), std::string::npos);

  // Closing the holder drops the lock.
  { ShmObject gone = std::move(first).value(); }
  EXPECT_TRUE(second.try_lock().ok());
}

TEST_F(SegmentTest, MovedObjectKeepsItsState) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject a, ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600));
  const int fd = a.fd();
  ShmObject b = std::move(a);
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(b.name(), name.get());
  EXPECT_TRUE(b.writable());
  EXPECT_TRUE(b.size().ok());
}

TEST_F(SegmentTest, WritesAreVisibleThroughASecondReadOnlyMapping) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject writer,
                     ShmObject::create(kDefaultShmDir, name.get(), 4 * kPageSize, 0600));
  ASSERT_OK_AND_MOVE(ShmObject reader,
                     ShmObject::open(kDefaultShmDir, name.get(), /*writable=*/false));
  ASSERT_OK_AND_MOVE(Mapping w, Mapping::map(writer, 0, 4 * kPageSize, /*writable=*/true));
  ASSERT_OK_AND_MOVE(Mapping r, Mapping::map(reader, 0, 4 * kPageSize, /*writable=*/false));
  // A mapping of the last two pages only: offsets are relative to it.
  ASSERT_OK_AND_MOVE(Mapping tail, Mapping::map(reader, 2 * kPageSize, 2 * kPageSize, false,
                                                /*populate=*/true));
  EXPECT_EQ(w.size(), 4 * kPageSize);
  EXPECT_EQ(tail.size(), 2 * kPageSize);
  EXPECT_EQ(w.bytes().size(), 4 * kPageSize);
  EXPECT_NE(w.data(), r.data());  // two mappings of the same pages

  for (uint64_t i = 0; i < 4 * kPageSize; ++i) w.data()[i] = std::byte(i * 7 % 251);
  for (uint64_t i = 0; i < 4 * kPageSize; ++i) {
    ASSERT_EQ(r.data()[i], std::byte(i * 7 % 251)) << "at " << i;
  }
  for (uint64_t i = 0; i < 2 * kPageSize; ++i) {
    ASSERT_EQ(tail.data()[i], std::byte((i + 2 * kPageSize) * 7 % 251)) << "at " << i;
  }

  // Moving a mapping keeps the same pages mapped.
  std::byte* before = r.data();
  Mapping moved = std::move(r);
  EXPECT_EQ(moved.data(), before);
  w.data()[5] = std::byte{0xEE};
  EXPECT_EQ(moved.data()[5], std::byte{0xEE});
}

TEST_F(SegmentTest, MappingsOutliveTheName) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject object,
                     ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600));
  ASSERT_OK_AND_MOVE(Mapping map, Mapping::map(object, 0, kPageSize, true));
  ASSERT_TRUE(ShmObject::unlink(kDefaultShmDir, name.get()).ok());
  map.data()[0] = std::byte{42};
  EXPECT_EQ(map.data()[0], std::byte{42});
}

TEST_F(SegmentTest, MapRefusesWhatItCannotMap) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject writer,
                     ShmObject::create(kDefaultShmDir, name.get(), 4 * kPageSize, 0600));
  ASSERT_OK_AND_MOVE(ShmObject reader,
                     ShmObject::open(kDefaultShmDir, name.get(), /*writable=*/false));

  Result<Mapping> writable_from_read_only = Mapping::map(reader, 0, kPageSize, true);
  ASSERT_FALSE(writable_from_read_only.ok());
  EXPECT_EQ(writable_from_read_only.status().code(), Status::Code::kPermissionDenied);

  EXPECT_FALSE(Mapping::map(writer, 100, kPageSize, false).ok());  // unaligned offset
  EXPECT_FALSE(Mapping::map(writer, kPageSize / 2, kPageSize, false).ok());
  EXPECT_FALSE(Mapping::map(writer, 0, 0, false).ok());  // empty
  EXPECT_TRUE(Mapping::map(writer, kPageSize, kPageSize, false).ok());
}

using SegmentDeathTest = SegmentTest;

TEST_F(SegmentDeathTest, WritingThroughAReadOnlyMappingIsSigsegv) {
  ScopedShmName name;
  ASSERT_OK_AND_MOVE(ShmObject writer,
                     ShmObject::create(kDefaultShmDir, name.get(), kPageSize, 0600));
  ASSERT_OK_AND_MOVE(ShmObject reader,
                     ShmObject::open(kDefaultShmDir, name.get(), /*writable=*/false));
  ASSERT_OK_AND_MOVE(Mapping ro, Mapping::map(reader, 0, kPageSize, /*writable=*/false));
  // A read-only mapping of a read-write object is read-only too.
  ASSERT_OK_AND_MOVE(Mapping ro_of_rw, Mapping::map(writer, 0, kPageSize, /*writable=*/false));
  // Unlink before the child dies, so that no death-test style can leave the
  // object behind; the mappings stay valid.
  ASSERT_TRUE(ShmObject::unlink(kDefaultShmDir, name.get()).ok());
  auto* ro_byte = reinterpret_cast<volatile uint8_t*>(ro.data());
  auto* ro_of_rw_byte = reinterpret_cast<volatile uint8_t*>(ro_of_rw.data() + 100);
  EXPECT_EQ(*ro_byte, 0);  // reading is fine

#if defined(__SANITIZE_ADDRESS__)
  // ASan turns the SIGSEGV into its own report and exit status.
  EXPECT_DEATH(*ro_byte = 1, "SEGV");
  EXPECT_DEATH(*ro_of_rw_byte = 1, "SEGV");
#else
  EXPECT_EXIT(*ro_byte = 1, ::testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(*ro_of_rw_byte = 1, ::testing::KilledBySignal(SIGSEGV), "");
#endif
  EXPECT_EQ(*ro_byte, 0);  // the child's write did not happen
}

}  // namespace
}  // namespace shelf::shm
