// Load: 16 client processes against one shelfd for a bounded time, each
// doing a random mix of publish / get + full scan / unpublish / list on a
// shared pool of names. Every dataset's bytes derive from a seed stored in
// it, so any reader checks every byte it maps. Reports operations per
// second per kind and the latency of get_dataset; fails on any wrong byte
// or unexpected error, and if the memory in use at the end is not exactly
// the index plus the datasets left.
//
//   SHELF_LOAD_SECONDS=60 ./shelf_load_test      (default 10 s; ctest runs the default)
//   SHELF_LOAD_PROCESSES=16                      (default 16)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kNames = 64;           // the pool every process draws from
constexpr uint64_t kMaxRows = 4000;  // per partition
constexpr uint64_t kMaxPartitions = 3;

// ------------------------------------------------ verifiable contents --

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The low bits of a seed name its dataset, so a reader also checks that
// the name holds a dataset published for it.
std::string name_of(int index) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "load-%02d", index);
  return buf;
}

uint64_t partitions_of(uint64_t seed) { return 1 + mix(seed) % kMaxPartitions; }
uint64_t rows_of(uint64_t seed, uint64_t p) { return 1 + mix(seed ^ ((p + 1) << 40)) % kMaxRows; }
uint64_t value_of(uint64_t seed, uint64_t p, uint64_t i) { return mix(seed + (p << 32) + i); }
// Column "v": row 0 of partition 0 holds the seed itself; some rows are null.
bool v_null(uint64_t seed, uint64_t p, uint64_t i) {
  return !(p == 0 && i == 0) && value_of(seed, p, i) % 17 == 5;
}
int64_t v_of(uint64_t seed, uint64_t p, uint64_t i) {
  if (p == 0 && i == 0) return static_cast<int64_t>(seed);
  return v_null(seed, p, i) ? 0 : static_cast<int64_t>(value_of(seed, p, i));
}
// Column "s": a string of 0..40 bytes, or null.
bool s_null(uint64_t seed, uint64_t p, uint64_t i) { return value_of(seed, p, i) % 11 == 3; }
std::string s_of(uint64_t seed, uint64_t p, uint64_t i) {
  if (s_null(seed, p, i)) return "";
  const uint64_t v = value_of(seed, p, i);
  std::string s = std::to_string(v % 1000003);
  s.append(static_cast<size_t>((v >> 20) % 34), static_cast<char>('a' + (v >> 8) % 26));
  return s;
}

const Schema kSchema = {{"v", Type::kInt64}, {"s", Type::kString}};

Status build(Client& client, uint64_t seed, TableBuilder* out) {
  SHELF_ASSIGN_OR_RETURN(TableBuilder t, client.create_table(kSchema));
  for (uint64_t p = 0; p < partitions_of(seed); ++p) {
    const uint64_t rows = rows_of(seed, p);
    uint64_t string_bytes = 0;
    for (uint64_t i = 0; i < rows; ++i) string_bytes += s_of(seed, p, i).size();
    const uint64_t sizes[1] = {string_bytes};
    SHELF_ASSIGN_OR_RETURN(PartitionBuilder part, t.add_partition(rows, sizes));
    std::span<int64_t> v = part.values<int64_t>(0);
    StringColumnWriter s = part.strings(1);
    for (uint64_t i = 0; i < rows; ++i) {
      v[i] = v_of(seed, p, i);
      if (v_null(seed, p, i)) part.set_null(0, i);
      SHELF_RETURN_IF_ERROR(s_null(seed, p, i) ? s.append_null() : s.append(s_of(seed, p, i)));
    }
  }
  *out = std::move(t);
  return Status();
}

// Every byte a reader can see, against what the seed in it says. Returns a
// description of the first wrong thing, or "".
std::string check(const Dataset& ds, int name_index, bool verify_checksums) {
  if (ds.schema() != kSchema) return "wrong schema";
  if (ds.num_partitions() == 0 || ds.num_rows(0) == 0) return "no rows";
  const auto seed = static_cast<uint64_t>(ds.column(0, 0).values<int64_t>()[0]);
  if (static_cast<int>(seed % kNames) != name_index) return "the seed is for another name";
  if (ds.num_partitions() != partitions_of(seed)) return "wrong number of partitions";
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    const uint64_t rows = rows_of(seed, p);
    if (ds.num_rows(p) != rows) return "wrong rows in partition " + std::to_string(p);
    const ColumnView v = ds.column(p, 0), s = ds.column(p, 1);
    const std::span<const int64_t> values = v.values<int64_t>();
    if (values.size() != rows) return "wrong length of v";
    for (uint64_t i = 0; i < rows; ++i) {
      if (v.is_valid(i) == v_null(seed, p, i) || values[i] != v_of(seed, p, i)) {
        return "wrong v at partition " + std::to_string(p) + " row " + std::to_string(i);
      }
      if (s.is_valid(i) == s_null(seed, p, i) || s.string(i) != s_of(seed, p, i)) {
        return "wrong s at partition " + std::to_string(p) + " row " + std::to_string(i);
      }
    }
  }
  if (verify_checksums) {
    if (Status st = ds.verify(); !st.ok()) return st.to_string();
  }
  return "";
}

// --------------------------------------------------- what children report --

enum Op { kPublish, kGet, kUnpublish, kList, kNumOps };
const char* kOpNames[kNumOps] = {"publish", "get + scan", "unpublish", "list"};

// Latency histogram: 16 buckets per power of two (~4% wide), 1 ns .. 2^40 ns.
constexpr int kBucketsPerOctave = 16;
constexpr int kBuckets = 41 * kBucketsPerOctave;
int bucket_of(uint64_t ns) {
  if (ns < 2) return 0;
  const int octave = 63 - __builtin_clzll(ns);
  const int sub = octave >= 4 ? static_cast<int>((ns >> (octave - 4)) & 15)
                              : static_cast<int>((ns << (4 - octave)) & 15);
  return std::min(kBuckets - 1, octave * kBucketsPerOctave + sub);
}
// The upper edge of a bucket: a percentile read from it errs high, never low.
double bucket_upper_ns(int b) {
  const int octave = b / kBucketsPerOctave, sub = b % kBucketsPerOctave;
  return std::ldexp(1.0 + (sub + 1) / 16.0, octave);
}

// One per child, in a MAP_SHARED page the parent reads after the child exits.
struct ChildReport {
  uint64_t ok[kNumOps];
  uint64_t expected_errors[kNumOps];  // NotFound / AlreadyExists lost to another process
  uint64_t unexpected_errors[kNumOps];
  uint64_t wrong_bytes;  // datasets whose contents were not what their seed says
  uint64_t bytes_scanned;
  uint64_t get_max_ns;
  uint64_t get_hist[kBuckets];
  char first_problem[256];
  bool finished;
};

void note(ChildReport* r, const std::string& what) {
  if (r->first_problem[0] == '\0') {
    std::snprintf(r->first_problem, sizeof r->first_problem, "%s", what.c_str());
  }
}

void child_main(const ClientOptions& options, int index, Clock::time_point until, ChildReport* r) {
  auto connected = Client::connect(options);
  if (!connected.ok()) {
    note(r, "connect: " + connected.status().to_string());
    ++r->unexpected_errors[kList];
    return;
  }
  Client client = std::move(connected).value();
  std::mt19937_64 rng(mix(static_cast<uint64_t>(index) * 7919 + ::getpid()));
  while (Clock::now() < until) {
    const int name_index = static_cast<int>(rng() % kNames);
    const std::string name = name_of(name_index);
    const uint64_t dice = rng() % 100;
    if (dice < 25) {
      const uint64_t seed = (rng() / kNames) * kNames + static_cast<uint64_t>(name_index);
      TableBuilder t = client.create_table(kSchema).value();
      Status s = build(client, seed, &t);
      PublishOptions po;
      po.override_existing = rng() % 2 == 0;
      if (s.ok()) s = client.publish_dataset(name, t, po);
      if (s.ok()) {
        ++r->ok[kPublish];
      } else if (s.is_already_exists() && !po.override_existing) {
        ++r->expected_errors[kPublish];
      } else {
        ++r->unexpected_errors[kPublish];
        note(r, "publish " + name + ": " + s.to_string());
      }
    } else if (dice < 75) {
      const auto t0 = Clock::now();
      auto ds = client.get_dataset(name);
      const auto ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (ds.ok()) {
        ++r->get_hist[bucket_of(ns)];
        r->get_max_ns = std::max(r->get_max_ns, ns);
        const std::string wrong = check(*ds, name_index, rng() % 4 == 0);
        if (!wrong.empty()) {
          ++r->wrong_bytes;
          note(r, "get " + name + ": " + wrong);
        } else {
          ++r->ok[kGet];
          r->bytes_scanned += ds->data_bytes();
        }
      } else if (ds.status().is_not_found()) {
        ++r->expected_errors[kGet];
      } else {
        ++r->unexpected_errors[kGet];
        note(r, "get " + name + ": " + ds.status().to_string());
      }
    } else if (dice < 90) {
      Status s = client.unpublish_dataset(name);
      if (s.ok()) {
        ++r->ok[kUnpublish];
      } else if (s.is_not_found()) {
        ++r->expected_errors[kUnpublish];
      } else {
        ++r->unexpected_errors[kUnpublish];
        note(r, "unpublish " + name + ": " + s.to_string());
      }
    } else {
      auto list = client.list_datasets();
      if (!list.ok()) {
        ++r->unexpected_errors[kList];
        note(r, "list: " + list.status().to_string());
        continue;
      }
      bool sane = std::is_sorted(list->begin(), list->end(),
                                 [](const auto& a, const auto& b) { return a.name < b.name; });
      for (const DatasetInfo& d : *list) {
        sane = sane && d.name.rfind("load-", 0) == 0 && d.num_columns == 2 && d.num_rows > 0 &&
               d.num_partitions >= 1 && d.num_partitions <= kMaxPartitions;
      }
      if (sane) {
        ++r->ok[kList];
      } else {
        ++r->unexpected_errors[kList];
        note(r, "list returned an entry no process published");
      }
    }
  }
  r->finished = true;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

TEST(LoadTest, ProcessesPublishGetScanUnpublishAndList) {
  const int seconds = env_int("SHELF_LOAD_SECONDS", 10);
  const int processes = env_int("SHELF_LOAD_PROCESSES", 16);
  TestDaemon::Options daemon_options;
  daemon_options.memory_limit = "512MiB";  // the pool needs ~70 MiB at most: never the limit
  auto daemon = TestDaemon::start(daemon_options);
  ASSERT_NE(daemon, nullptr);

  const size_t report_bytes = sizeof(ChildReport) * static_cast<size_t>(processes);
  void* shared =
      ::mmap(nullptr, report_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* reports = static_cast<ChildReport*>(shared);
  std::memset(reports, 0, report_bytes);

  const ClientOptions options = daemon->client_options();
  std::fflush(nullptr);
  const auto start = Clock::now();
  const auto until = start + std::chrono::seconds(seconds);
  std::vector<pid_t> children;
  for (int i = 0; i < processes; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      child_main(options, i, until, &reports[i]);
      std::fflush(nullptr);
      ::_exit(0);
    }
    ASSERT_GT(pid, 0);
    children.push_back(pid);
  }
  // A child that hangs past the deadline is a failure, not a hung suite.
  const auto give_up = until + std::chrono::seconds(60);
  for (pid_t pid : children) {
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > give_up) {
        ADD_FAILURE() << "child " << pid << " still running a minute past the deadline";
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << pid << " ended with status " << status;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  ChildReport total{};
  for (int i = 0; i < processes; ++i) {
    const ChildReport& r = reports[i];
    EXPECT_TRUE(r.finished) << "child " << i << " did not finish: " << r.first_problem;
    EXPECT_EQ(r.wrong_bytes, 0u) << "child " << i << ": " << r.first_problem;
    for (int op = 0; op < kNumOps; ++op) {
      EXPECT_EQ(r.unexpected_errors[op], 0u)
          << "child " << i << ", " << kOpNames[op] << ": " << r.first_problem;
      total.ok[op] += r.ok[op];
      total.expected_errors[op] += r.expected_errors[op];
      total.unexpected_errors[op] += r.unexpected_errors[op];
    }
    total.wrong_bytes += r.wrong_bytes;
    total.bytes_scanned += r.bytes_scanned;
    total.get_max_ns = std::max(total.get_max_ns, r.get_max_ns);
    for (int b = 0; b < kBuckets; ++b) total.get_hist[b] += r.get_hist[b];
  }
  ::munmap(shared, report_bytes);

  // Every child is gone: what is left is exactly the datasets still
  // published, every byte of them right.
  Client client = daemon->connect();
  MemoryStats m;
  uint64_t datasets_bytes = 0;
  const auto settle_until = Clock::now() + std::chrono::seconds(20);
  for (;;) {
    m = client.status().value();
    datasets_bytes = 0;
    for (const DatasetInfo& d : m.datasets) datasets_bytes += d.memory_bytes;
    // Leases and unsealed extents of the children go when the daemon reads
    // their hang-ups; freed memory comes back in steps.
    const bool settled = m.unsealed_bytes == 0 && m.pending_free_bytes == 0 && m.num_leases == 0;
    if (settled || Clock::now() > settle_until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(m.unsealed_bytes, 0u);
  EXPECT_EQ(m.pending_free_bytes, 0u);
  EXPECT_EQ(m.used_bytes, m.index_bytes + datasets_bytes)
      << "used " << m.used_bytes << " = index " << m.index_bytes << " + datasets " << datasets_bytes
      << " + something leaked";
  for (const DatasetInfo& d : m.datasets) {
    auto ds = client.get_dataset(d.name);
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    const int index = std::atoi(d.name.c_str() + 5);
    EXPECT_EQ(check(*ds, index, true), "") << d.name;
  }

  // The figures.
  uint64_t gets = 0;
  for (int b = 0; b < kBuckets; ++b) gets += total.get_hist[b];
  auto percentile_us = [&](double q) {
    const auto want = static_cast<uint64_t>(std::ceil(q * static_cast<double>(gets)));
    uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += total.get_hist[b];
      if (seen >= want && seen > 0) return bucket_upper_ns(b) / 1e3;
    }
    return 0.0;
  };
  std::printf("\nshelf load test: %d processes, %.1f s, %d names, shelfd pid %d\n\n", processes,
              elapsed, kNames, static_cast<int>(daemon->pid()));
  // OPS counts every attempt: an expected error (the name was taken or gone
  // by the time the request arrived) is still a request the daemon served.
  std::printf("%-12s %10s %10s %10s %16s %11s\n", "OPERATION", "OPS", "OPS/S", "OK",
              "EXPECTED ERRORS", "UNEXPECTED");
  uint64_t all[3] = {};
  auto row = [&](const char* what, uint64_t ok, uint64_t expected, uint64_t unexpected) {
    const uint64_t ops = ok + expected + unexpected;
    std::printf("%-12s %10" PRIu64 " %10.0f %10" PRIu64 " %16" PRIu64 " %11" PRIu64 "\n", what, ops,
                static_cast<double>(ops) / elapsed, ok, expected, unexpected);
  };
  for (int op = 0; op < kNumOps; ++op) {
    row(kOpNames[op], total.ok[op], total.expected_errors[op], total.unexpected_errors[op]);
    all[0] += total.ok[op];
    all[1] += total.expected_errors[op];
    all[2] += total.unexpected_errors[op];
  }
  row("all", all[0], all[1], all[2]);
  std::printf("\nget_dataset latency (%" PRIu64 " gets): p50 %.1f us, p99 %.1f us, max %.1f us\n",
              gets, percentile_us(0.50), percentile_us(0.99),
              static_cast<double>(total.get_max_ns) / 1e3);
  std::printf("scanned and checked %.1f MiB; wrong bytes: %" PRIu64
              "; left: %zu datasets, used %" PRIu64 " B = index %" PRIu64 " + datasets %" PRIu64
              "\n\n",
              static_cast<double>(total.bytes_scanned) / (1 << 20), total.wrong_bytes,
              m.datasets.size(), m.used_bytes, m.index_bytes, datasets_bytes);
  std::fflush(stdout);
  EXPECT_GT(total.ok[kPublish], 0u);
  EXPECT_GT(total.ok[kGet], 0u);
  EXPECT_GT(total.ok[kUnpublish], 0u);
  EXPECT_GT(total.ok[kList], 0u);
}

}  // namespace
}  // namespace shelf::test
