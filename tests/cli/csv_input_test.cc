// The inputs of `shelf publish` through the real CLI and a real shelfd:
// gzip and zstd files (found by their first bytes), standard input, FIFOs
// and process substitution give the dataset the plain file gives; broken
// compressed streams and FIFOs without a writer fail at once, naming the
// input, and publish nothing; TSV, --no-header/--names, --null; values
// stay what they were (BOM, uint64, integers float64 would round, inf);
// the progress line appears on a terminal only.
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>
#include <zstd.h>

#include <gtest/gtest.h>

#include "tests/cli/csv_dump.h"
#include "tests/support/test_daemon.h"
#include "tools/csv_source.h"
#include "tools/progress.h"

namespace shelf {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A CSV with every kind of column, quoting, a quoted newline and CRLFs.
std::string sample_csv(int rows) {
  std::string text = "id,name,score,active,note\r\n";
  for (int i = 0; i < rows; ++i) {
    text += std::to_string(i * 7 - 50) + "," +
            (i % 5 == 0 ? "\"x, \"\"y\"\"\nz\"" : "n" + std::to_string(i)) + "," +
            (i % 3 == 0 ? "" : std::to_string(i) + ".25") + "," + (i % 2 ? "true" : "false") + "," +
            (i % 4 == 0 ? "" : "\"caf\xc3\xa9\"") + "\r\n";
  }
  return text;
}

std::string gzip(const std::string& text) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, text.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// With a checksum, as the zstd tool writes by default.
std::string zstd(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, 1);
  const size_t n = ZSTD_compress2(ctx, out.data(), out.size(), text.data(), text.size());
  ZSTD_freeCCtx(ctx);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

class CsvInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestDaemon::Options o;
    o.memory_limit = "512MiB";
    daemon_ = test::TestDaemon::start(o);
    ASSERT_NE(daemon_, nullptr);
  }
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }
  std::vector<std::string> shelf_argv(std::vector<std::string> args) {
    args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", daemon_->socket()});
    return args;
  }
  // Every command under `timeout`: a hang fails the test (exit 124) instead
  // of stalling it.
  test::CommandResult shelf(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = shelf_argv(std::move(args));
    argv.insert(argv.begin(), {"/usr/bin/timeout", "60"});
    return test::run_command(argv, {}, stdin_text);
  }
  std::string dump(const std::string& name) {
    Client c = daemon_->connect();
    return test::dump_dataset(c, name);
  }
  void expect_nothing_published() {
    Client c = daemon_->connect();
    auto names = c.list_datasets();
    ASSERT_TRUE(names.ok());
    EXPECT_TRUE(names->empty());
    EXPECT_EQ(c.status()->unsealed_bytes, 0u);
  }
  std::unique_ptr<test::TestDaemon> daemon_;
};

TEST_F(CsvInputTest, CompressedPipedAndFifoInputsGiveThePlainFilesDataset) {
  const std::string text = sample_csv(3000);
  const std::string plain = write("plain.csv", text);
  ASSERT_EQ(shelf({"publish", "plain", plain}).exit_code, 0);
  const std::string expected = dump("plain");
  ASSERT_FALSE(expected.empty());
  // By their first bytes, not their names.
  const std::string gz = write("data.bin", gzip(text));
  const std::string zst = write("data.csv", zstd(text));
  test::CommandResult r = shelf({"publish", "gz", gz});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("gz"), expected);
  r = shelf({"publish", "zst", zst});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("zst"), expected);
  // Two gzip members one after the other are one stream (as gzip -d sees it).
  const std::string two = write("two.gz", gzip(text.substr(0, 1000)) + gzip(text.substr(1000)));
  r = shelf({"publish", "two", two});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("two"), expected);
  // Standard input, plain and compressed.
  r = shelf({"publish", "stdin", "-"}, text);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("stdin"), expected);
  r = shelf({"publish", "stdin_zst", "-"}, zstd(text));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("stdin_zst"), expected);
  // Process substitution: /dev/fd/N, a pipe.
  std::string cmd;
  for (const std::string& a : shelf_argv({"publish", "subst"})) cmd += "'" + a + "' ";
  r = test::run_command({"/usr/bin/timeout", "60", "/bin/bash", "-c", cmd + "<(cat '" + gz + "')"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("subst"), expected);
  // A pipe's writer is a process: a slow one is waited for, past the bound
  // a named FIFO without a writer gets.
  cmd.clear();
  for (const std::string& a : shelf_argv({"publish", "slow"})) cmd += "'" + a + "' ";
  const std::string delay = std::to_string(kFifoWriterWaitMs / 1000 + 1);
  r = test::run_command({"/usr/bin/timeout", "60", "/bin/bash", "-c",
                         cmd + "<(sleep " + delay + "; cat '" + gz + "')"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(dump("slow"), expected);
}

// Today's hang: the FIFO was read twice, and the second open waited for a
// writer for ever.
TEST_F(CsvInputTest, FifoIsReadOnceAndNeverWaitedOnForever) {
  const std::string text = sample_csv(500);
  const std::string plain = write("plain.csv", text);
  ASSERT_EQ(shelf({"publish", "plain", plain}).exit_code, 0);
  const std::string fifo = daemon_->dir() + "/in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t writer = ::fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    const int fd = ::open(fifo.c_str(), O_WRONLY);
    const bool ok =
        fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::_exit(ok ? 0 : 1);
  }
  test::CommandResult r = shelf({"publish", "fifo", fifo});
  int status = 0;
  ::waitpid(writer, &status, 0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "changed while it was read")) << r.err;
  EXPECT_EQ(dump("fifo"), dump("plain"));
  // Nobody writes to it: refused after a bounded wait, with the reason.
  const auto start = std::chrono::steady_clock::now();
  r = shelf({"publish", "lonely", fifo});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, fifo) && contains(r.err, "FIFO")) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  // A device has no end: refused at once, not read for ever.
  r = shelf({"publish", "zero", "/dev/zero"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "/dev/zero is a device")) << r.err;
  // As standard input too (it was spooled for ever, into a hidden temporary file).
  std::string cmd;
  for (const std::string& a : shelf_argv({"publish", "zero", "-"})) cmd += "'" + a + "' ";
  r = test::run_command({"/usr/bin/timeout", "60", "/bin/bash", "-c", cmd + "< /dev/zero"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "<stdin> is a device")) << r.err;
  ASSERT_TRUE(daemon_->connect().unpublish_dataset("plain").ok());
  ASSERT_TRUE(daemon_->connect().unpublish_dataset("fifo").ok());
  expect_nothing_published();
}

TEST_F(CsvInputTest, TruncatedOrCorruptCompressedInputFailsNamingFileAndOffset) {
  const std::string text = sample_csv(2000);
  std::string gz = gzip(text), zs = zstd(text);
  std::string gz_bad = gz, zs_bad = zs;
  gz_bad[gz.size() / 2] = static_cast<char>(gz_bad[gz.size() / 2] ^ 0x55);
  gz_bad[gz.size() / 2 + 1] = static_cast<char>(gz_bad[gz.size() / 2 + 1] ^ 0x55);
  zs_bad[zs.size() / 2] = static_cast<char>(zs_bad[zs.size() / 2] ^ 0x55);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"cut.gz", gz.substr(0, gz.size() - 20)},
      {"bad.gz", gz_bad},
      {"cut.zst", zs.substr(0, zs.size() - 20)},
      {"bad.zst", zs_bad},
  };
  for (const auto& [name, bytes] : cases) {
    const std::string path = write(name, bytes);
    test::CommandResult r = shelf({"publish", "broken", path});
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, path + ": ") && contains(r.err, "at compressed byte"))
        << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "truncated") || contains(r.err, "corrupt")) << r.err;
    // The same through standard input.
    r = shelf({"publish", "broken", "-"}, bytes);
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "<stdin>: ")) << r.err;
    expect_nothing_published();
  }
}

TEST_F(CsvInputTest, TsvWithoutHeaderWithNamesAndNullValues) {
  const std::string path = write("t.tsv", "1\tx y\tNA\n2\t\"a\tb\"\t3\n3\tNA\t\\N\n");
  test::CommandResult r = shelf({"publish", "t", path, "--delimiter", "tab", "--no-header",
                                 "--names", "a,b,c", "--null", "NA", "--null", "\\N"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client c = daemon_->connect();
  auto ds = c.get_dataset("t");
  ASSERT_TRUE(ds.ok());
  ASSERT_EQ(ds->schema(), (Schema{{"a", Type::kInt64}, {"b", Type::kString}, {"c", Type::kInt64}}));
  ASSERT_EQ(ds->num_rows(), 3u);
  EXPECT_EQ(ds->column(0, 1).string(1), "a\tb");
  EXPECT_FALSE(ds->column(0, 1).is_valid(2));
  EXPECT_FALSE(ds->column(0, 2).is_valid(0));
  EXPECT_EQ(ds->column(0, 2).values<int64_t>()[1], 3);
  EXPECT_FALSE(ds->column(0, 2).is_valid(2));
  // --names without --no-header, and a delimiter that cannot be one.
  EXPECT_EQ(shelf({"publish", "u", path, "--names", "a,b,c"}).exit_code, 2);
  EXPECT_EQ(shelf({"publish", "u", path, "--delimiter", "\""}).exit_code, 2);
  EXPECT_EQ(shelf({"publish", "u", path, "--threads", "0"}).exit_code, 2);
}

// Issue 16, item 6: the BOM was part of the first column's name.
TEST_F(CsvInputTest, ByteOrderMarkIsNotPartOfTheFirstName) {
  const std::string path = write("bom.csv", "\xef\xbb\xbfid,v\n1,2\n");
  ASSERT_EQ(shelf({"publish", "bom", path}).exit_code, 0);
  auto ds = daemon_->connect().get_dataset("bom");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->schema()[0].name, "id");
}

// Issue 16, item 6: these columns became float64 with digits lost.
TEST_F(CsvInputTest, IntegersBeyondInt64AreUint64OrStringsNeverRoundedFloats) {
  const std::string path = write("big.csv",
                                 "u,mixed,huge,small\n"
                                 "18446744073709551615,-1,1.5,1\n"
                                 "9223372036854775808,18446744073709551615,"
                                 "123456789012345678901234567890,9007199254740993\n");
  test::CommandResult r = shelf({"publish", "big", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: column 'mixed' is kept as strings")) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: column 'huge' is kept as strings")) << r.err;
  auto ds = daemon_->connect().get_dataset("big");
  ASSERT_TRUE(ds.ok());
  ASSERT_EQ(ds->schema(), (Schema{{"u", Type::kUInt64},
                                  {"mixed", Type::kString},
                                  {"huge", Type::kString},
                                  {"small", Type::kInt64}}));
  EXPECT_EQ(ds->column(0, 0).values<uint64_t>()[0], 18446744073709551615ull);
  EXPECT_EQ(ds->column(0, 0).values<uint64_t>()[1], 9223372036854775808ull);
  EXPECT_EQ(ds->column(0, 1).string(1), "18446744073709551615");
  EXPECT_EQ(ds->column(0, 2).string(1), "123456789012345678901234567890");
  EXPECT_EQ(ds->column(0, 3).values<int64_t>()[1], 9007199254740993);
  // Forcing float64 accepts the rounding, and says nothing.
  r = shelf({"publish", "forced", path, "--schema", "huge:float64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "'huge'")) << r.err;
}

// Issue 16, item 6: "inf" was a float and "1e400" a string.
TEST_F(CsvInputTest, OutOfRangeFloatsAreInfinityAsInfIs) {
  const std::string path = write("inf.csv", "x,y\n1e400,inf\n-1e400,-inf\n1.5,1e-400\n");
  test::CommandResult r = shelf({"publish", "inf", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ds = daemon_->connect().get_dataset("inf");
  ASSERT_TRUE(ds.ok());
  ASSERT_EQ(ds->schema(), (Schema{{"x", Type::kFloat64}, {"y", Type::kFloat64}}));
  const auto x = ds->column(0, 0).values<double>();
  const auto y = ds->column(0, 1).values<double>();
  EXPECT_EQ(x[0], std::numeric_limits<double>::infinity());
  EXPECT_EQ(x[1], -std::numeric_limits<double>::infinity());
  EXPECT_EQ(y[0], std::numeric_limits<double>::infinity());
  EXPECT_EQ(y[2], 0.0);
  r = shelf({"publish", "f32", path, "--schema", "x:float32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ds = daemon_->connect().get_dataset("f32");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->column(0, 0).values<float>()[0], std::numeric_limits<float>::infinity());
}

// Issue 16, item 6: the second type silently won.
TEST_F(CsvInputTest, SchemaNamingAColumnTwiceIsRefused) {
  const std::string path = write("a.csv", "a\n1\n");
  test::CommandResult r = shelf({"publish", "a", path, "--schema", "a:int8,a:int16"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "'a' twice")) << r.err;
  expect_nothing_published();
}

TEST_F(CsvInputTest, AnyThreadCountGivesTheSameDataset) {
  // Over 8 MiB: more than one chunk at the default size.
  const std::string path = write("big.csv", sample_csv(300000));
  ASSERT_EQ(shelf({"publish", "t1", path, "--threads", "1"}).exit_code, 0);
  ASSERT_EQ(shelf({"publish", "t3", path, "--threads", "3"}).exit_code, 0);
  EXPECT_EQ(dump("t1"), dump("t3"));
}

// `script` gives the command a terminal; run_command gives it pipes.
TEST_F(CsvInputTest, ProgressLineOnlyOnATerminalUnlessForcedOrQuiet) {
  const std::string path = write("p.csv", sample_csv(20000));
  auto in_terminal = [&](std::vector<std::string> args) {
    std::string cmd;
    for (const std::string& a : shelf_argv(std::move(args))) cmd += "'" + a + "' ";
    return test::run_command(
        {"/usr/bin/timeout", "60", "/usr/bin/script", "-qec", cmd, "/dev/null"});
  };
  test::CommandResult r = in_terminal({"publish", "a", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "\rpublish: ") && contains(r.out, "MB/s")) << r.out;
  EXPECT_TRUE(contains(r.out, "\r\x1b[K")) << "the line is erased at the end";
  r = in_terminal({"publish", "b", path, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "MB/s")) << r.out;
  r = shelf({"publish", "c", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "MB/s")) << r.err;
  r = shelf({"publish", "d", path, "--progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "publish: ") && contains(r.err, "MB/s")) << r.err;
  // save and load draw the same line.
  const std::string dir = daemon_->dir() + "/snap";
  std::filesystem::create_directories(dir);
  r = in_terminal({"save", dir, "a"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "\rsave: ") && contains(r.out, "MB/s")) << r.out;
  r = shelf({"save", dir, "a"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "MB/s")) << r.err;
  r = in_terminal({"load", dir, "a", "--override"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "\rload: ") && contains(r.out, "MB/s")) << r.out;
  r = in_terminal({"load", dir, "a", "--override", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_FALSE(contains(r.out, "MB/s")) << r.out;
}

TEST(ProgressLine, SaysBytesOfTotalRowsRateAndEta) {
  EXPECT_EQ(tools::Progress::format_line("publish", 512ull << 20, 1ull << 30, 1000, 2.0),
            "publish: 512.0 MB of 1.00 GB (50%), 1000 rows, 256 MB/s, ETA 2 s");
  // An unknown total (a pipe): no percentage, no ETA.
  EXPECT_EQ(tools::Progress::format_line("publish", 1ull << 20, 0, 0, 1.0),
            "publish: 1.0 MB, 1 MB/s");
}

}  // namespace
}  // namespace shelf
