// Spilling (shelfd --spill-dir): datasets past the memory limit go to files
// and come back on a get, byte for byte, from other processes; leased
// and pinned datasets stay; --spill-above spills ahead of need; a kill -9 at each step of a spill
// or a restore loses nothing; a restart finds the spilled datasets again and removes the files of
// its own nobody names; a damaged file is caught at restore; a spill directory others may write is
// refused.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using ::testing::HasSubstr;

// 120,000 int64 rows: a 960 KiB partition, about a quarter of a 4 MiB limit.
constexpr uint64_t kRows = 120'000;

// A spill directory of the test's own (shelfd makes it, 0700), removed
// with what is in it.
class SpillDir {
 public:
  SpillDir() {
    char pattern[] = "/tmp/shelf-spill-test-XXXXXX";
    parent_ = ::mkdtemp(pattern);
    path_ = parent_ + "/spill";
  }
  ~SpillDir() {
    std::error_code ec;  // a tmpfs mounted on path() (a child's) is left to its namespace
    std::filesystem::remove_all(parent_, ec);
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(path_, ec)) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string parent_;
  std::string path_;
};

TestDaemon::Options spilling(const SpillDir& dir, const std::string& limit = "4MiB") {
  TestDaemon::Options o;
  o.memory_limit = limit;
  o.max_datasets = 64;
  o.extra_args = {"--spill-dir", dir.path()};
  return o;
}

std::string name_of(int i) { return "d" + std::to_string(i); }

// What list_datasets() says of `name` (an empty DatasetInfo when it does not list it).
DatasetInfo listed(Client& client, const std::string& name) {
  auto list = client.list_datasets();
  for (const DatasetInfo& d : list.ok() ? *list : std::vector<DatasetInfo>{}) {
    if (d.name == name) return d;
  }
  return DatasetInfo{};
}
bool is_spilled(Client& client, const std::string& name) { return listed(client, name).spilled; }
bool is_pinned(Client& client, const std::string& name) { return listed(client, name).pinned; }

void publish_pinned(Client& client, const std::string& name, int64_t seed) {
  TableBuilder table = make_int64_table(client, kRows, seed);
  PublishOptions options;
  options.pin = true;
  Status s = client.publish_dataset(name, table, options);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

// d0..d5, ~1.4 times the 4 MiB limit: d0 (the least recently used) and
// more are spilled.
void publish_past_the_limit(Client& client) {
  for (int i = 0; i < 6; ++i) publish_int64(client, name_of(i), kRows, i);
  ASSERT_TRUE(is_spilled(client, name_of(0)));
}

int spilled_count(Client& client) {
  auto list = client.list_datasets();
  if (!list.ok()) return -1;
  return static_cast<int>(
      std::count_if(list->begin(), list->end(), [](const DatasetInfo& d) { return d.spilled; }));
}

// Three times the limit in all, published by one process and read back by
// two others in orders of their own: every dataset, byte for byte.
TEST(SpillTest, ThreeTimesTheLimitStaysPublishedAndReadsBackFromOtherProcesses) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  constexpr int kDatasets = 12;  // ~11.3 MiB under a 4 MiB limit
  const pid_t publisher = spawn_child([&] {
    Client client = daemon->connect();
    for (int i = 0; i < kDatasets; ++i) publish_int64(client, name_of(i), kRows, i);
  });
  ASSERT_EQ(wait_child(publisher), 0);
  Client client = daemon->connect();
  EXPECT_EQ(listed_names(client).size(), static_cast<size_t>(kDatasets));
  EXPECT_GE(spilled_count(client), kDatasets / 2);
  EXPECT_TRUE(is_spilled(client, name_of(0))) << "least recently used first";
  EXPECT_FALSE(is_spilled(client, name_of(kDatasets - 1)));
  EXPECT_EQ(dir.files().size(), static_cast<size_t>(spilled_count(client)));
  std::vector<pid_t> readers;
  for (unsigned seed : {1u, 2u}) {
    readers.push_back(spawn_child([&, seed] {
      Client reader = daemon->connect();
      std::vector<int> order(kDatasets);
      for (int i = 0; i < kDatasets; ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), std::mt19937(seed));
      for (int i : order) expect_int64_published(reader, name_of(i), kRows, i);
    }));
  }
  for (pid_t r : readers) EXPECT_EQ(wait_child(r), 0);
  const MemoryStats st = status_of(client);
  EXPECT_LE(st.used_bytes, st.memory_limit);
  EXPECT_EQ(listed_names(client).size(), static_cast<size_t>(kDatasets));
}

// Four processes get the same spilled dataset at the same moment: each
// reads it whole, and shelfd restores it once (its log says so once).
TEST(SpillTest, ConcurrentGetsOfASpilledDatasetRestoreItOnce) {
  SpillDir dir;
  TestDaemon::Options options = spilling(dir);
  // Beside the spill directory: removed with it.
  const std::string log = std::filesystem::path(dir.path()).parent_path() / "shelfd.log";
  options.extra_args.insert(options.extra_args.end(), {"--log-file", log});
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_past_the_limit(client);
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  std::vector<pid_t> readers;
  for (int r = 0; r < 4; ++r) {
    readers.push_back(spawn_child([&] {
      ::close(gate[1]);
      Client reader = daemon->connect();
      char byte;
      (void)::read(gate[0], &byte, 1);  // returns once the parent closes its end: all at once
      expect_int64_published(reader, name_of(0), kRows, 0);
    }));
  }
  ::close(gate[0]);
  ::close(gate[1]);
  for (pid_t r : readers) EXPECT_EQ(wait_child(r), 0);
  EXPECT_FALSE(is_spilled(client, name_of(0)));
  std::ifstream in(log);
  int restores = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.find("spill: restored '" + name_of(0) + "'") != std::string::npos) ++restores;
  }
  EXPECT_EQ(restores, 1);
}

// A dataset someone holds stays in memory however full it gets: when only
// held datasets are left, a publish is refused as without --spill-dir.
TEST(SpillTest, ALeasedDatasetIsNeverSpilled) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_int64(client, "held", kRows, 7);
  auto held = client.get_dataset("held");
  ASSERT_TRUE(held.ok()) << held.status().to_string();
  for (int i = 0; i < 6; ++i) publish_int64(client, name_of(i), kRows, i);
  EXPECT_FALSE(is_spilled(client, "held"));
  EXPECT_TRUE(is_spilled(client, name_of(0)));
  expect_int64_dataset(*held, kRows, 7);
  // Hold everything resident: nothing is left to spill.
  std::vector<Dataset> all;
  for (int i = 3; i < 6; ++i) {
    auto d = client.get_dataset(name_of(i));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    all.push_back(std::move(*d));
  }
  auto more = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(more.ok()) << more.status().to_string();
  auto refused = more->add_partition(kRows);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--spill-dir could not make room"));
  EXPECT_FALSE(is_spilled(client, "held"));
  expect_int64_dataset(*held, kRows, 7);
}

// The oldest dataset, pinned, stays in memory however much is published
// after it, also after a kill -9 and a restart; unpinned, it is the first
// to go.
TEST(SpillTest, APinnedDatasetIsNeverSpilledAlsoAfterARestart) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_pinned(client, "pinned", 7);
    for (int i = 0; i < 6; ++i) publish_int64(client, name_of(i), kRows, i);
    EXPECT_TRUE(is_pinned(client, "pinned"));
    EXPECT_FALSE(is_spilled(client, "pinned"));
    EXPECT_TRUE(is_spilled(client, name_of(0)));
    EXPECT_FALSE(is_pinned(client, name_of(0)));
  }
  daemon->kill9();
  const CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  EXPECT_TRUE(is_pinned(client, "pinned")) << "the pin is in the index entry";
  // What a restart finds is spilled only once its checksums are checked.
  for (int tries = 0; tries < 1000 && status_of(client).verifying.datasets_left > 0; ++tries) {
    ::usleep(10'000);
  }
  for (int i = 6; i < 12; ++i) publish_int64(client, name_of(i), kRows, i);
  EXPECT_FALSE(is_spilled(client, "pinned"));
  expect_int64_published(client, "pinned", kRows, 7);
  ASSERT_TRUE(client.pin_dataset("pinned", false).ok());
  EXPECT_FALSE(is_pinned(client, "pinned"));
  publish_int64(client, name_of(12), kRows, 12);
  EXPECT_TRUE(is_spilled(client, "pinned")) << "unpinned, and the least recently used";
  expect_int64_published(client, "pinned", kRows, 7);
}

// A process that mapped the segment before a restart may still read what
// was there; a restore writes the moved descriptor into a new extent, so it
// goes ahead beside such a process, and the old descriptor is kept for it.
TEST(SpillTest, ARestoreAfterARestartGoesAheadBesideProcessesFromBefore) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_past_the_limit(client);
  }
  // Another process, mapping the segment across the restart until told.
  Pipe ready, go;
  const pid_t from_before = spawn_child([&] {
    Client c = daemon->connect();
    ready.signal();
    go.wait(1, std::chrono::seconds(60));
  });
  ASSERT_TRUE(ready.wait());
  daemon->kill9();
  // Room for the restore: what is there is held for that process, so it
  // cannot be spilled (or freed) to make any.
  const CommandResult r = daemon->restart_with_memory_limit("8MiB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client client = daemon->connect();
  const uint64_t pending = status_of(client).pending_free_bytes;
  expect_int64_published(client, name_of(0), kRows, 0);
  EXPECT_FALSE(is_spilled(client, name_of(0)));
  EXPECT_GT(status_of(client).pending_free_bytes, pending) << "the old descriptor is kept";
  go.signal();
  EXPECT_EQ(wait_child(from_before), 0);
  for (int tries = 0; tries < 500 && status_of(client).pending_free_bytes > 0; ++tries) {
    ::usleep(10'000);
  }
  EXPECT_EQ(status_of(client).pending_free_bytes, 0u) << "given back once that process is gone";
  expect_int64_published(client, name_of(0), kRows, 0);
}

// Pinning a spilled dataset reads it back first: pinned means in memory.
TEST(SpillTest, PinningASpilledDatasetRestoresItAndKeepsIt) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_past_the_limit(client);
  Status s = client.pin_dataset(name_of(0));
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_FALSE(is_spilled(client, name_of(0)));
  EXPECT_TRUE(is_pinned(client, name_of(0)));
  for (int i = 6; i < 12; ++i) publish_int64(client, name_of(i), kRows, i);
  EXPECT_FALSE(is_spilled(client, name_of(0)));
  expect_int64_published(client, name_of(0), kRows, 0);
  // Pinning twice is no error; a name nobody published is.
  EXPECT_TRUE(client.pin_dataset(name_of(0)).ok());
  for (bool pinned : {true, false}) {
    Status missing = client.pin_dataset("nobody", pinned);
    EXPECT_EQ(missing.code(), Status::Code::kNotFound) << missing.to_string();
    EXPECT_THAT(missing.message(), HasSubstr("'nobody' not found"));
  }
  // Everything left in memory pinned: a publish is refused, and says why.
  for (int i = 7; i < 12; ++i) {
    if (!is_spilled(client, name_of(i))) {
      ASSERT_TRUE(client.pin_dataset(name_of(i)).ok());
    }
  }
  auto more = client.create_table({{"v", Type::kInt64}});
  ASSERT_TRUE(more.ok()) << more.status().to_string();
  auto refused = more->add_partition(kRows);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("pinned (shelf unpin NAME)"));
}

// --spill-above 50%: past half the limit, datasets are spilled at once,
// before any request needs the memory; status says where and how much.
TEST(SpillTest, SpillAboveSpillsBeforeARequestNeedsTheMemory) {
  SpillDir dir;
  TestDaemon::Options options = spilling(dir);
  options.extra_args.insert(options.extra_args.end(), {"--spill-above", "50%"});
  auto daemon = TestDaemon::start(options);
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  for (int i = 0; i < 3; ++i) publish_int64(client, name_of(i), kRows, i);  // ~70% of 4 MiB
  MemoryStats st = status_of(client);
  for (int tries = 0; tries < 500 && st.used_bytes > st.spilling.above_bytes; ++tries) {
    ::usleep(10'000);  // the spiller writes in the background
    st = status_of(client);
  }
  EXPECT_EQ(st.spilling.above_bytes, st.memory_limit / 100 * 50);
  EXPECT_LE(st.used_bytes, st.spilling.above_bytes);
  EXPECT_TRUE(is_spilled(client, name_of(0)));
  EXPECT_FALSE(is_spilled(client, name_of(2)));
  EXPECT_EQ(st.spilling.dir, dir.path());
  EXPECT_EQ(st.spilling.datasets, static_cast<uint32_t>(spilled_count(client)));
  EXPECT_GE(st.spilling.file_bytes, st.spilling.datasets * kRows * sizeof(int64_t));
  for (int i = 0; i < 3; ++i) expect_int64_published(client, name_of(i), kRows, i);
  // Without --spill-dir, and out of range: usage errors.
  auto bare = TestDaemon::unstarted();
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--spill-above", "90%"},
                                             {"--spill-dir", dir.path(), "--spill-above", "0"},
                                             {"--spill-dir", dir.path(), "--spill-above", "101%"},
                                             {"--spill-dir", dir.path(), "--spill-above", "x"}}) {
    const CommandResult usage = bare->restart(args);
    EXPECT_EQ(usage.exit_code, 2) << args.back() << ": " << usage.err;
    EXPECT_THAT(usage.err, HasSubstr("--spill-above")) << usage.err;
  }
}

TEST(SpillTest, UnpublishingASpilledDatasetRemovesItsFile) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_past_the_limit(client);
  const size_t before = dir.files().size();
  ASSERT_GT(before, 0u);
  ASSERT_TRUE(client.unpublish_dataset(name_of(0)).ok());
  EXPECT_EQ(dir.files().size(), before - 1);
  for (int i = 1; i < 6; ++i) ASSERT_TRUE(client.unpublish_dataset(name_of(i)).ok());
  EXPECT_TRUE(dir.files().empty());
}

// kill -9, then a restart: the spilled datasets are found again; a file of
// this segment's that no entry names is removed, anything else is left.
TEST(SpillTest, ARestartFindsSpilledDatasetsAgainAndRemovesOnlyItsOwnStrayFiles) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    publish_past_the_limit(client);
  }
  daemon->kill9();
  // <segment>.<created_ns>.<publish id>.spill: a file of this segment's.
  const std::string spilled = dir.files().front();
  const std::string prefix = spilled.substr(0, spilled.rfind('.', spilled.rfind('.') - 1));
  ASSERT_TRUE(prefix.starts_with(daemon->segment() + ".")) << spilled;
  const std::string stray = dir.path() + "/" + prefix + ".999999.spill.tmp";
  const std::string other_segment = dir.path() + "/" + prefix + "1.5.spill";
  const std::string other = dir.path() + "/not-shelf.txt";
  std::ofstream(stray) << "left by a spill cut short";
  std::ofstream(other) << "not ours";
  std::ofstream(other_segment) << "another segment's";
  const CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("6 datasets served again, 0 quarantined"));
  EXPECT_FALSE(std::filesystem::exists(stray));
  EXPECT_TRUE(std::filesystem::exists(other));
  EXPECT_TRUE(std::filesystem::exists(other_segment)) << "a segment of the same name, made later";
  Client client = daemon->connect();
  EXPECT_TRUE(is_spilled(client, name_of(0)));
  for (int i = 5; i >= 0; --i) expect_int64_published(client, name_of(i), kRows, i);
}

// Without its files a restart cannot read a spilled dataset: quarantined,
// and said why; a restart that finds them again serves it.
TEST(SpillTest, ARestartWithoutTheSpillFilesQuarantinesWhatWasSpilledUntilTheyAreBack) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  {
    Client client = daemon->connect();
    for (int i = 0; i < 6; ++i) publish_int64(client, name_of(i), kRows, i);
  }
  daemon->kill9();
  // The files go; the restart makes an empty directory in their place.
  std::filesystem::rename(dir.path(), dir.path() + ".moved");
  const CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("quarantined"));
  auto client = std::make_unique<Client>(daemon->connect());
  auto got = client->get_dataset(name_of(0));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Status::Code::kCorruption);
  EXPECT_THAT(got.status().message(), HasSubstr("spill file"));
  expect_int64_published(*client, name_of(5), kRows, 5);
  // The files back, and another restart: served again, and its files kept.
  daemon->kill9();
  std::filesystem::remove_all(dir.path());
  std::filesystem::rename(dir.path() + ".moved", dir.path());
  const CommandResult again = daemon->restart();
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("6 datasets served again, 0 quarantined"));
  client.reset();
  daemon->kill9();
  ASSERT_EQ(daemon->restart().exit_code, 0);
  Client after = daemon->connect();
  for (int i = 0; i < 6; ++i) expect_int64_published(after, name_of(i), kRows, i);
}

TEST(SpillTest, ADamagedSpillFileIsCaughtAtRestoreAndNothingWrongIsServed) {
  SpillDir dir;
  auto daemon = TestDaemon::start(spilling(dir));
  ASSERT_NE(daemon, nullptr);
  Client client = daemon->connect();
  publish_past_the_limit(client);
  // The first spilled is d0: the file with the lowest publish id. Its
  // partition starts at 4 KiB (after the header and the descriptor); its
  // values fill the next 937 KiB, after a few KiB of the table's own.
  constexpr std::streamoff kByteInValues = 4096 + 100'000;
  const std::vector<std::string> files = dir.files();
  ASSERT_FALSE(files.empty());
  const std::string path = dir.path() + "/" + files.front();
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(kByteInValues);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(kByteInValues);
    f.write(&c, 1);
  }
  std::vector<std::string> corrupt;
  for (int i = 0; i < 6; ++i) {
    auto got = client.get_dataset(name_of(i));
    if (got.ok()) {
      expect_int64_dataset(*got, kRows, i);
      continue;
    }
    EXPECT_EQ(got.status().code(), Status::Code::kCorruption) << got.status().to_string();
    EXPECT_THAT(got.status().message(), HasSubstr("checksum mismatch"));
    corrupt.push_back(name_of(i));
  }
  EXPECT_EQ(corrupt.size(), 1u);
}

// A full disk: the spill fails and is cleaned up, the dataset stays in
// memory and served, and the publish that needed the room is refused.
TEST(SpillTest, AFullDiskFailsThePublishCleanlyAndLosesNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  constexpr int kSkip = 77;
  const int code = run_in_child([] {
    SpillDir dir;
    ASSERT_EQ(::mkdir(dir.path().c_str(), 0700), 0);
    // Room for no spill file of a 960 KiB dataset.
    if (!use_private_tmpfs(dir.path(), "size=512k,mode=0700")) ::_exit(kSkip);
    auto daemon = TestDaemon::start(spilling(dir));
    ASSERT_NE(daemon, nullptr);
    Client client = daemon->connect();
    for (int i = 0; i < 4; ++i) publish_int64(client, name_of(i), kRows, i);
    auto more = client.create_table({{"v", Type::kInt64}});
    ASSERT_TRUE(more.ok()) << more.status().to_string();
    auto refused = more->add_partition(kRows);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
    EXPECT_THAT(refused.status().message(), HasSubstr("--spill-dir could not make room"));
    EXPECT_TRUE(dir.files().empty()) << "a partial spill file is left";
    EXPECT_EQ(spilled_count(client), 0);
    for (int i = 0; i < 4; ++i) expect_int64_published(client, name_of(i), kRows, i);
    daemon.reset();
    EXPECT_EQ(::umount2(dir.path().c_str(), MNT_DETACH), 0);
  });
  if (code == kSkip) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(code, 0);
}

// A restore into a full tmpfs fails with a clear error and leaves the
// dataset spilled; once there is room the next get restores it.
TEST(SpillTest, ARestoreIntoAFullSegmentFilesystemFailsCleanlyAndWorksOnceThereIsRoom) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  constexpr int kSkip = 77;
  const int code = run_in_child([] {
    SpillDir dir;
    char pattern[] = "/tmp/shelf-spill-shm-XXXXXX";
    const std::string shm_dir = ::mkdtemp(pattern);
    if (!use_private_tmpfs(shm_dir, "size=8m,mode=0700")) ::_exit(kSkip);
    TestDaemon::Options options = spilling(dir);
    options.shm_dir = shm_dir;
    auto daemon = TestDaemon::start(options);
    ASSERT_NE(daemon, nullptr);
    Client client = daemon->connect();
    publish_past_the_limit(client);
    ASSERT_TRUE(client.unpublish_dataset(name_of(5)).ok());  // room under the limit
    // Fill the tmpfs, then give back a little: room for an extent's header
    // page, not for its partition.
    const std::string filler = shm_dir + "/filler";
    {
      std::ofstream out(filler, std::ios::binary);
      const std::vector<char> block(64 << 10, 'x');
      while (out.write(block.data(), static_cast<std::streamsize>(block.size()))) {
      }
    }
    std::filesystem::resize_file(filler, std::filesystem::file_size(filler) - (64 << 10));
    auto failed = client.get_dataset(name_of(0));
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.status().code(), Status::Code::kResourceExhausted)
        << failed.status().to_string();
    EXPECT_THAT(failed.status().message(), HasSubstr("spilled to disk and could not be read back"));
    EXPECT_THAT(failed.status().message(), HasSubstr("cannot reserve its pages"));
    EXPECT_TRUE(is_spilled(client, name_of(0)));
    std::filesystem::remove(filler);
    expect_int64_published(client, name_of(0), kRows, 0);
    EXPECT_FALSE(is_spilled(client, name_of(0)));
    daemon.reset();
    EXPECT_EQ(::umount2(shm_dir.c_str(), MNT_DETACH), 0);
    ::rmdir(shm_dir.c_str());
  });
  if (code == kSkip) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(code, 0);
}

// shelfd killed at each step of a spill and of a restore: after a restart
// every dataset is resident or spilled, and reads back whole.
class SpillKillTest : public ::testing::TestWithParam<const char*> {};

TEST_P(SpillKillTest, ARestartServesEveryDatasetWhole) {
  SpillDir dir;
  Pipe notify(/*cloexec=*/false);
  std::unique_ptr<TestDaemon> daemon;
  {
    ScopedFaultPoint armed(GetParam(), notify);
    daemon = TestDaemon::start(spilling(dir));
  }
  ASSERT_NE(daemon, nullptr);
  const bool at_restore = std::string(GetParam()).find("restore") != std::string::npos;
  // The publishes (and, for a restore, a get) wait for the stopped daemon.
  // They end with an error when shelfd is killed: not a failure here.
  const pid_t client_process = spawn_child([&] {
    auto client = Client::connect(daemon->client_options());
    if (!client.ok()) return;
    for (int i = 0; i < 6; ++i) {
      auto t = client->create_table({{"v", Type::kInt64}});
      if (!t.ok()) return;
      auto part = t->add_partition(kRows);
      if (!part.ok()) return;
      std::span<int64_t> values = part->values<int64_t>(0);
      for (uint64_t r = 0; r < kRows; ++r) values[r] = i + static_cast<int64_t>(r);
      if (!client->publish_dataset(name_of(i), *t).ok()) return;
    }
    if (at_restore) (void)client->get_dataset(name_of(0));
  });
  ASSERT_EQ(notify.read_line(), GetParam());
  daemon->kill9();
  (void)wait_child(client_process);
  const CommandResult r = daemon->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("0 quarantined"));
  Client client = daemon->connect();
  for (const std::string& name : listed_names(client)) {
    const int i = std::stoi(name.substr(1));
    expect_int64_published(client, name, kRows, i);
  }
  EXPECT_GE(listed_names(client).size(), 4u);
  for (const std::string& f : dir.files()) {
    EXPECT_THAT(f, ::testing::EndsWith(".spill")) << "a temporary file is left";
  }
  const MemoryStats st = status_once_freed(client);
  EXPECT_EQ(st.used_bytes, st.resident_bytes) << "memory nobody owns is freed";
}

INSTANTIATE_TEST_SUITE_P(Steps, SpillKillTest,
                         ::testing::Values("daemon.spill.before_rename", "daemon.spill.before_scan",
                                           "daemon.restore.before_check",
                                           "daemon.restore.before_unlink"));

TEST(SpillTest, ASpillDirectoryOthersMayWriteIsRefusedAndARelativeOneIsAUsageError) {
  SpillDir dir;
  ASSERT_EQ(::mkdir(dir.path().c_str(), 0777), 0);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  auto daemon = TestDaemon::unstarted(spilling(dir));
  const CommandResult open = daemon->restart();
  EXPECT_NE(open.exit_code, 0);
  EXPECT_THAT(open.err, HasSubstr("may be written by others"));
  EXPECT_THAT(open.err, HasSubstr("chmod 700"));
  auto relative = TestDaemon::unstarted();
  const CommandResult usage = relative->restart({"--spill-dir", "spill"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("--spill-dir must be an absolute path"));
}

}  // namespace
}  // namespace shelf::test
