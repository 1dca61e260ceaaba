// Crash torture: rounds of publishers, readers and unpublishers on random
// datasets, SIGKILLed at random moments and at the fault points (mid-write,
// between seal and publish, inside the daemon's commit, holding leases), and
// now and then a kill -9 and restart of shelfd itself. After every round:
// nothing half-written is listed or readable, every listed dataset reads
// back value for value with its checksums, and with the clients gone the
// daemon's used bytes and what /dev/shm holds are exactly what the listed
// datasets take: no leak.
//
// SHELF_TORTURE_ROUNDS sets the rounds (default 300: CI); SHELF_TORTURE_SEED
// the random seed (default: time; printed, so a failure can be replayed).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/client.h>

#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

// A dataset's name says how to rebuild it: "t-<seed>-<rows>-<partitions>".
struct Recipe {
  int64_t seed;
  uint64_t rows;  // per partition
  uint64_t partitions;
  std::string name() const {
    return "t-" + std::to_string(seed) + "-" + std::to_string(rows) + "-" +
           std::to_string(partitions);
  }
  static bool parse(const std::string& name, Recipe* out) {
    return std::sscanf(name.c_str(), "t-%ld-%lu-%lu", &out->seed, &out->rows, &out->partitions) ==
           3;
  }
};

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  return text != nullptr ? std::strtoull(text, nullptr, 10) : fallback;
}

struct Counts {
  uint64_t children = 0;
  uint64_t killed_at_random = 0;
  uint64_t killed_at_fault_point = 0;
  uint64_t published = 0;  // children that finished a publish
  uint64_t daemon_kills = 0;
  uint64_t datasets_verified = 0;
  uint64_t bytes_verified = 0;
  uint64_t max_leak = 0;
};

// The fault points a child may stop at before its SIGKILL.
const char* const kFaultPoints[] = {
    "client.seal.before_written",  // buffers written, nothing sealed
    "client.seal.after_written",   // sealed, publish not sent
};

enum class Role { kPublisher, kReader, kUnpublisher };

class Torture {
 public:
  Torture(uint64_t seed, Counts* counts) : rng_(seed), counts_(counts) {}

  void run(uint64_t rounds) {
    daemon_ = TestDaemon::start({.memory_limit = "48MiB", .max_datasets = 256, .extra_args = {}});
    ASSERT_NE(daemon_, nullptr);
    for (uint64_t round = 0; round < rounds && !::testing::Test::HasFailure(); ++round) {
      // Every tenth round the daemon is killed while the clients work.
      run_round(round, /*kill_daemon=*/round % 10 == 9);
      check_invariants(round);
    }
  }

 private:
  void run_round(uint64_t round, bool kill_daemon) {
    const int children = 2 + static_cast<int>(rng_() % 3);
    std::vector<pid_t> pids;
    std::vector<int> fates;  // 0 runs out, 1 killed at random, 2 killed at a fault point
    std::vector<Pipe> notify(children);
    for (int i = 0; i < children; ++i) {
      const Role role = pick_role();
      const int fate = static_cast<int>(rng_() % 3);
      // Up to 4 partitions of up to 1.5 MiB: a few exceed what is left of the limit.
      const Recipe recipe{static_cast<int64_t>(round * 8 + i), 1 + rng_() % 200000, 1 + rng_() % 4};
      const std::string victim = random_listed_name();
      const char* fault = kFaultPoints[rng_() % std::size(kFaultPoints)];
      Pipe& pipe = notify[i];
      pids.push_back(spawn_child([&, role, fate, recipe, victim, fault] {
        std::optional<ScopedFaultPoint> armed;
        if (fate == 2 && role == Role::kPublisher) armed.emplace(fault, pipe);
        child(role, recipe, victim);
      }));
      fates.push_back(role == Role::kPublisher || fate != 2 ? fate : 1);
      ++counts_->children;
    }
    if (kill_daemon) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 3000));
      daemon_->kill9();
      ++counts_->daemon_kills;
    }
    for (size_t i = 0; i < pids.size(); ++i) {
      if (fates[i] == 1) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 3000));
        kill_child(pids[i]);
        ++counts_->killed_at_random;
      } else if (fates[i] == 2) {
        // It stops at the point, or finishes first if it never gets there
        // (e.g. over the limit): either way it ends up dead or done.
        notify[i].close_write();
        if (notify[i].read_line(5s)) ++counts_->killed_at_fault_point;
        kill_child(pids[i]);
      } else {
        const int code = wait_child(pids[i]);
        EXPECT_EQ(code, 0) << "a child that was left alone failed";
      }
    }
    if (kill_daemon) {
      const CommandResult restarted = daemon_->restart();
      ASSERT_EQ(restarted.exit_code, 0) << "shelfd did not come back: " << restarted.err;
    }
  }

  Role pick_role() {
    const uint32_t r = rng_() % 10;
    return r < 5 ? Role::kPublisher : r < 8 ? Role::kReader : Role::kUnpublisher;
  }

  // In a child: one client's work. Errors the races allow (over the limit,
  // the name taken or gone, the daemon killed) are fine; wrong bytes are not.
  void child(Role role, const Recipe& recipe, const std::string& victim) {
    auto connected = Client::connect(daemon_->client_options());
    if (!connected.ok()) return;  // a daemon restart can race with a child; nothing to check
    Client client = std::move(connected).value();
    if (role == Role::kPublisher) {
      auto table = client.create_table({{"v", Type::kInt64}});
      if (!table.ok()) return;
      for (uint64_t p = 0; p < recipe.partitions; ++p) {
        auto part = table->add_partition(recipe.rows);
        if (!part.ok()) return;  // over the limit
        std::span<int64_t> v = part->values<int64_t>(0);
        for (uint64_t r = 0; r < recipe.rows; ++r) {
          v[r] = recipe.seed * 1000003 + static_cast<int64_t>(p * recipe.rows + r);
        }
      }
      Status st = client.publish_dataset(recipe.name(), *table);
      EXPECT_TRUE(st.ok() || st.is_resource_exhausted() || st.is_already_exists() ||
                  st.code() == Status::Code::kUnavailable)
          << st.to_string();
    } else if (role == Role::kReader) {
      if (victim.empty()) return;
      auto ds = client.get_dataset(victim);
      if (!ds.ok()) return;  // unpublished meanwhile
      verify(*ds);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // hold the lease a while
    } else if (!victim.empty()) {
      Status st = client.unpublish_dataset(victim);
      EXPECT_TRUE(st.ok() || st.is_not_found() || st.code() == Status::Code::kUnavailable)
          << st.to_string();
    }
  }

  // Checks every value and checksum of a dataset against its recipe.
  uint64_t verify(const Dataset& ds) {
    Recipe recipe;
    EXPECT_TRUE(Recipe::parse(ds.name(), &recipe)) << ds.name();
    EXPECT_EQ(ds.num_partitions(), recipe.partitions) << ds.name();
    EXPECT_EQ(ds.num_rows(), recipe.rows * recipe.partitions) << ds.name();
    EXPECT_TRUE(ds.verify().ok()) << ds.name();
    for (uint64_t p = 0; p < ds.num_partitions() && p < recipe.partitions; ++p) {
      std::span<const int64_t> v = ds.column(p, 0).values<int64_t>();
      EXPECT_EQ(v.size(), recipe.rows);
      for (uint64_t r = 0; r < v.size(); ++r) {
        const int64_t want = recipe.seed * 1000003 + static_cast<int64_t>(p * recipe.rows + r);
        if (v[r] != want) {
          ADD_FAILURE() << ds.name() << " partition " << p << " row " << r << ": " << v[r]
                        << " != " << want;
          break;
        }
      }
    }
    return ds.data_bytes();
  }

  std::string random_listed_name() {
    auto client = Client::connect(daemon_->client_options());
    if (!client.ok()) return "";
    auto list = client->list_datasets();
    if (!list.ok() || list->empty()) return "";
    return (*list)[rng_() % list->size()].name;
  }

  void check_invariants(uint64_t round) {
    Client client = daemon_->connect();
    // The daemon notices dead clients on its own; wait until only we remain
    // and every freed page is back.
    const bool settled = eventually([&] {
      const MemoryStats st = status_of(client);
      return st.num_connections == 1 && st.num_leases == 0 && st.unsealed_bytes == 0 &&
             st.pending_free_bytes == 0;
    });
    EXPECT_TRUE(settled) << "round " << round << ": clients' sessions did not end";
    const MemoryStats st = status_of(client);
    uint64_t expected_used = st.index_bytes;
    for (const DatasetInfo& info : st.datasets) {
      auto ds = client.get_dataset(info.name);
      ASSERT_TRUE(ds.ok()) << "round " << round << ": listed but not readable: " << info.name;
      counts_->bytes_verified += verify(*ds);
      ++counts_->datasets_verified;
      expected_used += info.memory_bytes;
    }
    // Our own leases are released (posted); the accounting must match exactly.
    const uint64_t leak = st.used_bytes > expected_used ? st.used_bytes - expected_used
                                                        : expected_used - st.used_bytes;
    counts_->max_leak = std::max(counts_->max_leak, leak);
    EXPECT_EQ(st.used_bytes, expected_used) << "round " << round;
    EXPECT_EQ(daemon_->resident_bytes(), st.used_bytes)
        << "round " << round << ": /dev/shm holds other than what is accounted";
    // Keep room for the next rounds.
    if (st.used_bytes > st.memory_limit / 2 && !st.datasets.empty()) {
      const std::string& victim = st.datasets[rng_() % st.datasets.size()].name;
      EXPECT_TRUE(client.unpublish_dataset(victim).ok());
    }
  }

  std::mt19937_64 rng_;
  Counts* counts_;
  std::unique_ptr<TestDaemon> daemon_;
};

TEST(TortureTest, RandomKillsLoseAndLeakNothing) {
  const uint64_t rounds = env_or("SHELF_TORTURE_ROUNDS", 300);
  const uint64_t seed =
      env_or("SHELF_TORTURE_SEED",
             static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::printf("torture: %lu rounds, seed %lu (SHELF_TORTURE_SEED=%lu replays it)\n", rounds, seed,
              seed);
  Counts counts;
  const auto start = std::chrono::steady_clock::now();
  Torture(seed, &counts).run(rounds);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "torture: %lu rounds in %.1f s: %lu client processes, %lu killed at random moments, %lu "
      "killed at fault points, %lu daemon kill -9s mid-round + restarts; %lu dataset checks (%.1f "
      "MiB "
      "verified); bytes leaked: %lu\n",
      rounds, seconds, counts.children, counts.killed_at_random, counts.killed_at_fault_point,
      counts.daemon_kills, counts.datasets_verified, counts.bytes_verified / 1048576.0,
      counts.max_leak);
}

}  // namespace
}  // namespace shelf::test
