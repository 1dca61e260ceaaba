// `shelf save` / `shelf load` against real daemons: datasets go to disk,
// the daemon is replaced by a fresh one, and they come back byte for byte,
// or a damaged snapshot is refused with nothing published.
#include "tools/snapshot.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <limits>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Every byte a reader can see of a dataset, for comparing two of them.
struct Image {
  Schema schema;
  bool bytes = false;
  struct Chunk {
    uint64_t rows = 0, nulls = 0;
    std::vector<uint8_t> validity;
    std::vector<int64_t> offsets;
    std::vector<std::byte> data;
    uint64_t xxh3[3] = {};
    bool operator==(const Chunk&) const = default;
  };
  std::vector<std::vector<Chunk>> partitions;
  bool operator==(const Image&) const = default;
};

Image image_of(const Dataset& ds) {
  Image im;
  im.schema = ds.schema();
  im.bytes = ds.is_bytes();
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    std::vector<Image::Chunk> chunks;
    for (size_t c = 0; c < ds.schema().size(); ++c) {
      const ColumnView v = ds.column(p, c);
      Image::Chunk ch;
      ch.rows = v.length();
      ch.nulls = v.null_count();
      ch.validity.assign(v.validity_bitmap().begin(), v.validity_bitmap().end());
      ch.offsets.assign(v.string_offsets().begin(), v.string_offsets().end());
      ch.data.assign(v.data().begin(), v.data().end());
      for (int b = 0; b < 3; ++b) ch.xxh3[b] = ds.checksum(p, c, b);
      chunks.push_back(std::move(ch));
    }
    im.partitions.push_back(std::move(chunks));
  }
  return im;
}

const Schema kAllTypes = {
    {"i8", Type::kInt8},       {"i16", Type::kInt16},  {"i32", Type::kInt32},
    {"i64", Type::kInt64},     {"u8", Type::kUInt8},   {"u16", Type::kUInt16},
    {"u32", Type::kUInt32},    {"u64", Type::kUInt64}, {"f32", Type::kFloat32},
    {"f64", Type::kFloat64},   {"flag", Type::kBool},  {"when", Type::kTimestamp},
    {"text ü", Type::kString},
};

template <class V>
void fill(PartitionBuilder& p, size_t column, uint64_t seed) {
  std::span<V> values = p.values<V>(column);
  ASSERT_EQ(values.size(), p.num_rows());
  for (uint64_t r = 0; r < values.size(); ++r) {
    values[r] = static_cast<V>((r + 1) * 2654435761u + seed * 97 + column);
  }
}

// One partition of every type through the in-place path, with nulls in
// some columns and non-ASCII strings.
void add_all_types_partition(TableBuilder& t, uint64_t rows, uint64_t seed) {
  std::vector<std::string> strings;
  uint64_t string_bytes = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    strings.push_back(
        r % 3 == 0 ? "" : "row " + std::to_string(r) + " ünïcødé 😀 " + std::string(r % 17, 'x'));
    string_bytes += strings.back().size();
  }
  const uint64_t sizes[1] = {string_bytes};
  PartitionBuilder p = t.add_partition(rows, sizes).value();
  fill<int8_t>(p, 0, seed);
  fill<int16_t>(p, 1, seed);
  fill<int32_t>(p, 2, seed);
  fill<int64_t>(p, 3, seed);
  fill<uint8_t>(p, 4, seed);
  fill<uint16_t>(p, 5, seed);
  fill<uint32_t>(p, 6, seed);
  fill<uint64_t>(p, 7, seed);
  fill<float>(p, 8, seed);
  fill<double>(p, 9, seed);
  std::span<uint8_t> flags = p.values<uint8_t>(10);
  for (uint64_t r = 0; r < rows; ++r) flags[r] = (r + seed) % 2;
  fill<int64_t>(p, 11, seed);
  StringColumnWriter w = p.strings(12);
  for (uint64_t r = 0; r < rows; ++r) {
    if (r % 5 == 4) {
      ASSERT_TRUE(w.append_null().ok());
    } else {
      ASSERT_TRUE(w.append(strings[r]).ok());
    }
  }
  for (uint64_t r = 1; r < rows; r += 7) {
    p.values<int64_t>(3)[r] = 0;
    p.set_null(3, r);
    p.values<double>(9)[r] = std::numeric_limits<double>::quiet_NaN();
    p.set_null(9, r);
  }
}

// A partition copied from caller buffers: a validity bitmap whose padding
// bits are 0 (as Arrow writes them) and a null string that still has bytes.
// Only a byte-exact load reproduces these.
void add_copied_partition(TableBuilder& t) {
  const uint64_t rows = 5;
  std::vector<ColumnData> cols(kAllTypes.size());
  std::vector<std::vector<std::byte>> storage(kAllTypes.size());
  const uint8_t validity[1] = {0x0b};                // rows 2 and 4 null, bits 5..7 zero
  const int64_t offsets[6] = {3, 5, 9, 12, 12, 15};  // need not start at 0
  const char text[] = "xxxabNULLcdeXYZ";             // row 2 is null but holds "cde"
  for (size_t c = 0; c < kAllTypes.size(); ++c) {
    if (kAllTypes[c].type == Type::kString) {
      cols[c] = ColumnData{text, sizeof text - 1, offsets, validity};
      continue;
    }
    storage[c].resize(rows * fixed_width(kAllTypes[c].type));
    for (size_t i = 0; i < storage[c].size(); ++i) storage[c][i] = std::byte(i * 31 + c);
    cols[c] = ColumnData{storage[c].data(), storage[c].size(), nullptr, c % 2 ? validity : nullptr};
  }
  ASSERT_TRUE(t.append_partition(rows, cols).ok());
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
    snap_ = (fs::temp_directory_path() / (unique_name() + "-snapshot")).string();
    fs::create_directories(snap_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(snap_, fs::perms::owner_all, fs::perm_options::add, ec);
    for (const char* suffix : {"", ".orig", ".err"}) {
      fs::remove_all(snap_ + suffix, ec);
      EXPECT_FALSE(fs::exists(snap_ + suffix));
    }
  }
  CommandResult shelf(std::vector<std::string> args) {
    args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", daemon_->socket()});
    return run_command(args);
  }
  // Replaces the daemon with a fresh one: nothing survives but the files.
  void restart(const TestDaemon::Options& options = {}) {
    daemon_.reset();
    daemon_ = TestDaemon::start(options);
    ASSERT_NE(daemon_, nullptr);
  }
  std::vector<std::string> names() {
    Client c = daemon_->connect();
    std::vector<std::string> out;
    const std::vector<DatasetInfo> all = c.list_datasets().value();
    for (const DatasetInfo& d : all) out.push_back(d.name);
    return out;
  }
  uint64_t used_bytes() { return daemon_->connect().status().value().used_bytes; }
  // used_bytes() once it is `want`, or after 10 s whatever it is. A failed
  // load's partitions are given back when the daemon reads the aborts and
  // hang-up of the dead CLI process, which it may do after our request.
  uint64_t used_bytes_settled(uint64_t want) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    uint64_t used = used_bytes();
    while (used != want && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      used = used_bytes();
    }
    return used;
  }
  Image image(const std::string& name) {
    Client c = daemon_->connect();
    auto ds = c.get_dataset(name);
    EXPECT_TRUE(ds.ok()) << ds.status().to_string();
    return ds.ok() ? image_of(*ds) : Image{};
  }
  void publish_int64(const std::string& name, uint64_t rows, int64_t seed) {
    Client c = daemon_->connect();
    TableBuilder t = c.create_table({{"v", Type::kInt64}}).value();
    PartitionBuilder p = t.add_partition(rows).value();
    for (uint64_t r = 0; r < rows; ++r) p.values<int64_t>(0)[r] = seed + static_cast<int64_t>(r);
    ASSERT_TRUE(c.publish_dataset(name, t).ok());
  }
  // The single .part file of the dataset saved as `name`.
  std::string part_file(const std::string& name) {
    std::vector<std::string> parts;
    for (const auto& e : fs::directory_iterator(snap_ + "/" + tools::escape_name(name))) {
      if (e.path().extension() == ".part") parts.push_back(e.path().string());
    }
    EXPECT_EQ(parts.size(), 1u);
    return parts.empty() ? "" : parts[0];
  }
  // Loading `snap_` fails with `error` in one line of stderr, and nothing is
  // published or left taking memory.
  void expect_load_refused(const std::string& error, std::vector<std::string> extra = {}) {
    const uint64_t before = used_bytes();
    const std::vector<std::string> before_names = names();
    std::vector<std::string> args = {"load", snap_};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = shelf(args);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_TRUE(contains(r.err, error)) << "want '" << error << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_EQ(names(), before_names);
    EXPECT_EQ(used_bytes_settled(before), before);
  }
  std::unique_ptr<TestDaemon> daemon_;
  std::string snap_;
};

TEST_F(SnapshotTest, EveryTypeSurvivesADaemonRestartByteForByte) {
  const std::string all = "all types/ünï 😀";
  {
    Client c = daemon_->connect();
    TableBuilder t = c.create_table(kAllTypes).value();
    add_all_types_partition(t, 1000, 1);
    add_all_types_partition(t, 0, 2);  // an empty partition
    add_copied_partition(t);
    add_all_types_partition(t, 77, 3);
    ASSERT_TRUE(c.publish_dataset(all, t).ok());
    TableBuilder empty = c.create_table({{"x", Type::kInt32}}).value();  // no partitions
    ASSERT_TRUE(c.publish_dataset("empty", empty).ok());
    TableBuilder raw = c.create_table(bytes_schema()).value();
    std::vector<std::byte> payload(100000);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = std::byte(i * 7);
    ASSERT_TRUE(raw.append_bytes(payload).ok());
    ASSERT_TRUE(raw.append_bytes({}).ok());
    ASSERT_TRUE(c.publish_dataset("raw", raw).ok());
  }
  const Image all_before = image(all), empty_before = image("empty"), raw_before = image("raw");
  ASSERT_EQ(all_before.partitions.size(), 4u);
  ASSERT_EQ(all_before.partitions[2][12].validity, std::vector<uint8_t>{0x0b});

  CommandResult r = shelf({"save", snap_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "saved 3 datasets")) << r.out;
  EXPECT_TRUE(contains(r.out, "saved 'raw' to " + snap_ + "/raw: 100000 rows in 2 partitions"))
      << r.out;
  EXPECT_TRUE(fs::exists(snap_ + "/all%20types%2F%C3%BCn%C3%AF%20%F0%9F%98%80/manifest"));
  // The files hold the datasets' contents: their owner's alone.
  EXPECT_EQ(fs::status(snap_ + "/raw").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(snap_ + "/raw/manifest").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  restart();
  ASSERT_TRUE(names().empty());
  r = shelf({"load", snap_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "loaded 3 datasets")) << r.out;
  EXPECT_EQ(names(), (std::vector<std::string>{all, "empty", "raw"}));
  EXPECT_TRUE(image(all) == all_before);
  EXPECT_TRUE(image("empty") == empty_before);
  EXPECT_TRUE(image("raw") == raw_before);
  Client c = daemon_->connect();
  Dataset ds = c.get_dataset(all).value();
  EXPECT_TRUE(ds.verify().ok());
  EXPECT_EQ(ds.column(0, 12).string(1), "row 1 ünïcødé 😀 x");
  EXPECT_FALSE(ds.column(0, 12).is_valid(4));
  EXPECT_EQ(ds.column(2, 12).string(0), "ab");
  EXPECT_EQ(ds.column(2, 12).null_count(), 2u);
}

TEST_F(SnapshotTest, SaveAndLoadChosenNames) {
  publish_int64("a", 10, 1);
  publish_int64("b", 10, 2);
  publish_int64("c", 10, 3);
  CommandResult r = shelf({"save", snap_ + "//", "a", "c"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "saved 'a' to " + snap_ + "/a: 10 rows in 1 partition, 80 B"))
      << r.out;
  EXPECT_FALSE(fs::exists(snap_ + "/b"));
  restart();
  r = shelf({"load", snap_, "c"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(names(), std::vector<std::string>{"c"});
  EXPECT_EQ(image("c").partitions[0][0].data.size(), 80u);
  r = shelf({"load", snap_, "b"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no snapshot of 'b' in " + snap_)) << r.err;
  r = shelf({"save", snap_, "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'nope' not found")) << r.err;
  EXPECT_FALSE(fs::exists(snap_ + "/nope"));
}

TEST_F(SnapshotTest, ExistingNamesAreRefusedUnlessOverride) {
  publish_int64("keep", 10, 1);
  publish_int64("other", 10, 5);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  publish_int64("fresh", 3, 0);  // not in the snapshot
  Client c = daemon_->connect();
  ASSERT_TRUE(c.unpublish_dataset("other").ok());
  publish_int64("other", 4, 100);  // changed since the save
  const Image other_now = image("other");
  // "keep" and "other" exist: nothing at all is loaded, "other" is unchanged.
  expect_load_refused("'keep' already exists; unpublish it or load with --override");
  EXPECT_TRUE(image("other") == other_now);
  CommandResult r = shelf({"load", snap_, "--override"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(image("other").partitions[0][0].rows, 10u);
  EXPECT_EQ(names(), (std::vector<std::string>{"fresh", "keep", "other"}));
}

TEST_F(SnapshotTest, CorruptByteIsRefusedNamingTheFile) {
  publish_int64("good", 100, 0);
  publish_int64("bad", 1000, 7);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  const std::string part = part_file("bad");
  {
    std::fstream f(part, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4000);
    char byte;
    f.read(&byte, 1);
    f.seekp(4000);
    byte ^= 0x10;
    f.write(&byte, 1);
  }
  restart();
  // "good" is fine, but the load is all or nothing.
  expect_load_refused(part + " is damaged: the data of column 'v' does not match its checksum");
  // The undamaged dataset alone still loads.
  CommandResult r = shelf({"load", snap_, "good"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(SnapshotTest, DamagedSnapshotsAreRefusedWithNothingPublished) {
  publish_int64("d", 1000, 3);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  const std::string dir = snap_ + "/d";
  const std::string manifest = dir + "/manifest";
  const std::string part = part_file("d");
  const std::string saved = snap_ + ".orig";
  fs::copy(dir, saved, fs::copy_options::recursive);
  auto restore = [&] {
    fs::remove_all(dir);
    fs::copy(saved, dir, fs::copy_options::recursive);
  };
  auto write_file = [](const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  };
  auto read_file = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  restart();

  fs::resize_file(part, 5000);
  expect_load_refused(part + " has 5000 bytes; its manifest says 8000 (truncated)");
  restore();

  fs::remove(part);
  expect_load_refused(part + " is missing");
  restore();

  fs::remove(manifest);
  expect_load_refused(manifest + " is missing");
  restore();

  write_file(manifest,
             "\x7f"
             "ELF garbage\n\x01\x02");
  expect_load_refused(manifest + " is not a shelf snapshot manifest");
  restore();

  const std::string text = read_file(manifest);
  write_file(manifest, "shelf-snapshot 2" + text.substr(text.find('\n')));
  expect_load_refused(manifest + " has snapshot format version '2'; this shelf reads version 1");
  restore();

  write_file(manifest, text.substr(0, text.size() / 2));
  expect_load_refused(manifest + " is damaged: it is cut short");
  restore();

  // An edit that keeps the format: the manifest's own checksum catches it.
  std::string edited = text;
  edited.replace(edited.find("partition 1000 "), 15, "partition 1001 ");
  write_file(manifest, edited);
  expect_load_refused(manifest + " is damaged: its checksum does not match its contents");
  restore();

  // A directory without a manifest (an interrupted first save) is refused.
  fs::create_directory(snap_ + "/half");
  expect_load_refused(snap_ + "/half/manifest is missing");
  fs::remove(snap_ + "/half");

  CommandResult r = shelf({"load", snap_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(image("d").partitions[0][0].rows, 1000u);
}

// Loading is all or nothing past the checks too: a daemon too small for the
// whole snapshot publishes none of it and gets every byte back.
TEST_F(SnapshotTest, OverTheLimitLoadsNothing) {
  publish_int64("first", 2 << 20, 1);  // 16 MiB each
  publish_int64("second", 2 << 20, 2);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  TestDaemon::Options small;
  small.memory_limit = "24MiB";
  restart(small);
  const uint64_t before = used_bytes();
  CommandResult r = shelf({"load", snap_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "limit")) << r.err;
  EXPECT_TRUE(names().empty());
  EXPECT_EQ(used_bytes_settled(before), before);
  // One of them fits.
  r = shelf({"load", snap_, "second"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int64_t first;
  std::memcpy(&first, image("second").partitions[0][0].data.data(), 8);
  EXPECT_EQ(first, 2);
}

TEST_F(SnapshotTest, SaveRefusesDirectoriesItCannotUse) {
  publish_int64("x", 10, 0);
  CommandResult r = shelf({"save", snap_ + "/does/not/exist"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, snap_ + "/does/not/exist does not exist; create it first")) << r.err;
  std::ofstream(snap_ + "/file") << "x";
  r = shelf({"save", snap_ + "/file"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "is not a directory")) << r.err;
  // root may write into a 0555 directory; nobody may create one in /sys.
  std::string unwritable = snap_ + "/ro";
  fs::create_directory(unwritable);
  fs::permissions(unwritable, fs::perms::owner_read | fs::perms::owner_exec);
  if (::geteuid() == 0) unwritable = "/sys";
  r = shelf({"save", unwritable});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, unwritable)) << r.err;
  EXPECT_TRUE(contains(r.err, "ermission denied") || contains(r.err, "not permitted") ||
              contains(r.err, "ead-only"))
      << r.err;
  r = shelf({"load", snap_ + "/nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;
  fs::create_directory(snap_ + "/empty");
  r = shelf({"load", snap_ + "/empty"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no dataset snapshots in " + snap_ + "/empty")) << r.err;
}

TEST_F(SnapshotTest, AnyNameRoundTrips) {
  std::string long_name;
  while (long_name.size() + 2 <= 200) long_name += "é";  // 200 bytes, 600 escaped
  const std::vector<std::string> tricky = {"a/b/c", "../up",  ".hidden", "with space",
                                           "100%",  "日本語", "%41",     long_name};
  for (size_t i = 0; i < tricky.size(); ++i) publish_int64(tricky[i], 5, static_cast<int64_t>(i));
  CommandResult r = shelf({"save", snap_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One flat directory per name: no '/' made a subdirectory, nothing escaped upwards.
  size_t dirs = 0;
  for (const auto& e : fs::directory_iterator(snap_)) {
    EXPECT_TRUE(e.is_directory()) << e.path();
    EXPECT_LE(e.path().filename().string().size(), 255u);
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
    ++dirs;
  }
  EXPECT_EQ(dirs, tricky.size());
  EXPECT_FALSE(fs::exists(fs::path(snap_).parent_path() / "up"));
  restart();
  r = shelf({"load", snap_, "a/b/c", long_name});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(names(), (std::vector<std::string>{"a/b/c", long_name}));
  r = shelf({"load", snap_, "--override"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> want = tricky;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names(), want);
  for (size_t i = 0; i < tricky.size(); ++i) {
    Image im = image(tricky[i]);
    ASSERT_EQ(im.partitions.size(), 1u) << tricky[i];
    int64_t first;
    std::memcpy(&first, im.partitions[0][0].data.data(), 8);
    EXPECT_EQ(first, static_cast<int64_t>(i)) << tricky[i];
  }
}

TEST_F(SnapshotTest, SavingAgainReplacesTheSnapshotAndItsFiles) {
  publish_int64("v", 100, 1);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  const std::string first = part_file("v");
  // Leftovers of an interrupted save: removed by the next save.
  std::ofstream(snap_ + "/v/0123456789abcdef-000000.part") << "partial";
  std::ofstream(snap_ + "/v/.manifest.tmp") << "partial";
  Client c = daemon_->connect();
  ASSERT_TRUE(c.unpublish_dataset("v").ok());
  publish_int64("v", 200, 9);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  const std::string second = part_file("v");  // exactly one .part: the new one
  EXPECT_NE(first, second);
  EXPECT_FALSE(fs::exists(snap_ + "/v/.manifest.tmp"));
  restart();
  ASSERT_EQ(shelf({"load", snap_}).exit_code, 0);
  EXPECT_EQ(image("v").partitions[0][0].rows, 200u);
}

TEST(SnapshotNames, EscapeIsFlatReadableAndUnique) {
  EXPECT_EQ(tools::escape_name("accounts_2024-01.v2"), "accounts_2024-01.v2");
  EXPECT_EQ(tools::escape_name("a/b c"), "a%2Fb%20c");
  EXPECT_EQ(tools::escape_name(".."), "%2E.");
  EXPECT_EQ(tools::escape_name("100%"), "100%25");
  EXPECT_EQ(tools::escape_name("é"), "%C3%A9");
  // Long names are cut and told apart by a hash of the whole name.
  const std::string a = std::string(150, 'x') + std::string(50, '/');
  const std::string b = std::string(150, 'x') + std::string(49, '/') + "+";
  EXPECT_LE(tools::escape_name(a).size(), 200u);
  EXPECT_NE(tools::escape_name(a), tools::escape_name(b));
  EXPECT_EQ(tools::escape_name(a).rfind(std::string(150, 'x'), 0), 0u);
}

// Runs the CLI with a file size limit, so that a write fails part way
// (EFBIG, as a full disk fails with ENOSPC). Returns exit code and stderr.
std::pair<int, std::string> run_with_file_limit(const std::vector<std::string>& args,
                                                uint64_t limit, const std::string& err_path) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const rlimit r{limit, limit};
    ::setrlimit(RLIMIT_FSIZE, &r);
    ::signal(SIGXFSZ, SIG_IGN);  // ignored signals stay ignored across exec
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream f(err_path);
  std::string err(std::istreambuf_iterator<char>(f), {});
  ::unlink(err_path.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), err};
}

TEST_F(SnapshotTest, AFailedSaveLeavesThePreviousSnapshot) {
  publish_int64("small", 100, 1);
  publish_int64("big", 100000, 2);  // 800000 bytes: past the limit below
  ASSERT_EQ(shelf({"save", snap_, "small"}).exit_code, 0);
  const std::string cli = SHELF_CLI_PATH;
  auto [code, err] = run_with_file_limit({cli, "--socket", daemon_->socket(), "save", snap_},
                                         100000, snap_ + ".err");
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(contains(err, "cannot write " + snap_ + "/big/")) << err;
  // A first save that failed leaves no directory behind to trip up `load`.
  EXPECT_FALSE(fs::exists(snap_ + "/big"));
  Client c = daemon_->connect();
  ASSERT_TRUE(c.unpublish_dataset("small").ok());
  publish_int64("small", 20000, 3);  // 160000 bytes
  std::tie(code, err) = run_with_file_limit(
      {cli, "--socket", daemon_->socket(), "save", snap_, "small"}, 100000, snap_ + ".err");
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(contains(err, "cannot write " + snap_ + "/small/")) << err;
  // The old snapshot is whole: one .part file, and it loads.
  part_file("small");
  restart();
  CommandResult r = shelf({"load", snap_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(names(), std::vector<std::string>{"small"});
  EXPECT_EQ(image("small").partitions[0][0].rows, 100u);
}

// A save holds an exclusive flock on DIR/<name>/.lock while it writes and
// removes files; another save or a load of that dataset is refused meanwhile.
TEST_F(SnapshotTest, OneSaveAtATimePerDataset) {
  publish_int64("v", 10, 1);
  ASSERT_EQ(shelf({"save", snap_}).exit_code, 0);
  const int fd = ::open((snap_ + "/v/.lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  CommandResult r = shelf({"save", snap_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, snap_ + "/v is being saved or loaded by another shelf process"))
      << r.err;
  r = shelf({"load", snap_, "--override"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "is being saved")) << r.err;
  ::close(fd);
  r = shelf({"load", snap_, "--override"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(SnapshotTest, NothingPublishedSavesNothing) {
  CommandResult r = shelf({"save", snap_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "nothing saved")) << r.out;
  EXPECT_TRUE(fs::is_empty(snap_));
  r = shelf({"save", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "save DIR [NAME...]")) << r.out;
  r = run_command({SHELF_CLI_PATH, "--help"});
  EXPECT_TRUE(contains(r.out, "load DIR [NAME...]")) << r.out;
}

}  // namespace
}  // namespace shelf::test
