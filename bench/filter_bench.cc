// filter_bench: the speed of shelf/filter.h, as ratios against baselines
// measured in the same run on the same data (issue 9, item 5):
//
//   filter_vs_sum      `balance < 0` evaluated over a SIZE MiB int64 column
//                      read in place (Filter::evaluate into a row bitmap),
//                      against the plain scan (sum) of that column. Target >= 0.7.
//   publish_vs_ready   create_table + write_filtered + publish of the rows
//                      with balance < 0 (about half, a random pattern), against
//                      create_table + append_partition + publish of the same
//                      output from ready private buffers. Target >= 0.7.
//   pandas             df[df.balance < 0] in /usr/bin/python3 on the same
//                      number of rows (and the mask alone), against the shelf
//                      figures above. Target: shelf >= 2x faster.
//   view read          get_dataset of that view and a read of every
//                      partition, which evaluates it into this process's
//                      memory (to_pandas() of a view): against pandas too.
//   view head          get_dataset of a view `balance < 0` of the base with
//                      max_rows 11 and a read of its first 10 rows (what
//                      `shelf head -n 10` does), against the same of the
//                      stored base. Target: <= 1 ms (it must not scan the base).
//
//   cmake --build build-bench -j2 --target filter_bench shelfd
//   ./build-bench/bench/filter_bench [--size-mib N] [--repeat N] [--no-pandas]
//                                    [--shm-dir DIR]
//
// --shm-dir puts shelfd's segment in DIR (default /dev/shm), e.g. a tmpfs
// mounted huge=within_size (README, "Huge pages").
//
// It starts its own shelfd (SHELFD_PATH) on a private socket and segment and
// stops it at the end (also on SIGINT/SIGTERM). Every figure is the median of
// --repeat runs, baseline and candidate interleaved in each.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <shelf/client.h>
#include <shelf/filter.h>

namespace {

// What the bench leaves outside its memory, for the cleanup on any exit.
char g_dir[128] = "";
char g_socket[192] = "";
char g_lock[200] = "";
char g_log[200] = "";
char g_shm_dir[160] = "/dev/shm";  // --shm-dir: shelfd's tmpfs
char g_segment_path[256] = "";     // <shm_dir>/<segment>
pid_t g_daemon = -1;

void cleanup() {
  if (g_daemon > 0) {
    ::kill(g_daemon, SIGTERM);
    const int fd = ::open(g_lock, O_RDONLY | O_CLOEXEC);
    for (int waited = 0; fd >= 0 && waited < 10000; waited += 10) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;  // the daemon let go: it is gone
      ::usleep(10000);
    }
    if (fd >= 0) ::close(fd);
    g_daemon = -1;
  }
  for (const char* path : {g_segment_path, g_socket, g_lock, g_log}) {
    if (path[0] != '\0') ::unlink(path);
  }
  if (g_dir[0] != '\0') ::rmdir(g_dir);
}

void on_signal(int sig) {
  cleanup();
  ::_exit(128 + sig);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "filter_bench: %s\n", what.c_str());
  cleanup();
  std::exit(1);
}
void must(const shelf::Status& s, const char* what) {
  if (!s.ok()) die(std::string(what) + ": " + s.to_string());
}
template <class T>
T must(shelf::Result<T> r, const char* what) {
  if (!r.ok()) die(std::string(what) + ": " + r.status().to_string());
  return std::move(r).value();
}

void start_daemon(uint64_t memory_limit) {
  std::snprintf(g_dir, sizeof g_dir, "/tmp/shelf-filter-bench-XXXXXX");
  if (::mkdtemp(g_dir) == nullptr) die(std::string("mkdtemp: ") + std::strerror(errno));
  std::snprintf(g_socket, sizeof g_socket, "%s/shelf.sock", g_dir);
  std::snprintf(g_lock, sizeof g_lock, "%s.lock", g_socket);
  std::snprintf(g_log, sizeof g_log, "%s.log", g_socket);
  const std::string segment = "shelf-filter-bench-" + std::to_string(::getpid());
  std::snprintf(g_segment_path, sizeof g_segment_path, "%s/%s", g_shm_dir, segment.c_str());
  std::vector<std::string> args = {SHELFD_PATH,
                                   "--socket",
                                   g_socket,
                                   "--segment",
                                   segment,
                                   "--memory-limit",
                                   std::to_string(memory_limit),
                                   "--shm-dir",
                                   g_shm_dir};
  std::fflush(nullptr);
  const pid_t launcher = ::fork();
  if (launcher < 0) die(std::string("fork: ") + std::strerror(errno));
  if (launcher == 0) {
    const int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(launcher, &status, 0) < 0 && errno == EINTR) {
  }
  // Without --foreground shelfd returns once it serves; its pid is in the lock file.
  std::ifstream(g_lock) >> g_daemon;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || g_daemon <= 0) die("shelfd did not start");
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The base: one int64 column "balance", `partitions` partitions, values
// uniform in [-2^20, 2^20): about half negative, in a random pattern.
void publish_base(shelf::Client& client, uint64_t rows_per_partition, uint64_t partitions) {
  shelf::TableBuilder table =
      must(client.create_table({{"balance", shelf::Type::kInt64}}), "table");
  uint64_t x = 88172645463325252ULL;  // xorshift64
  for (uint64_t p = 0; p < partitions; ++p) {
    shelf::PartitionBuilder part = must(table.add_partition(rows_per_partition), "add_partition");
    std::span<int64_t> v = part.values<int64_t>(0);
    for (int64_t& value : v) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      value = static_cast<int64_t>(x >> 43) - (int64_t{1} << 20);
    }
  }
  must(client.publish_dataset("accounts", table), "publish accounts");
}

int64_t sum_scan(const shelf::Dataset& d) {
  int64_t sum = 0;
  for (uint64_t p = 0; p < d.num_partitions(); ++p) {
    for (int64_t v : d.column(p, 0).values<int64_t>()) sum += v;
  }
  return sum;
}

uint64_t filter_scan(const shelf::Dataset& d, const shelf::Filter& f) {
  uint64_t kept = 0;
  for (uint64_t p = 0; p < d.num_partitions(); ++p) {
    kept += must(f.evaluate(d, p), "evaluate").count();
  }
  return kept;
}

// *write_s: the time to the filled table, before publish checksums it.
double publish_filtered(shelf::Client& client, const shelf::Dataset& d, const shelf::Filter& f,
                        double* write_s) {
  const double t0 = now_s();
  shelf::TableBuilder out = must(client.create_table(f.output_schema()), "table");
  must(shelf::write_filtered(d, f, out), "write_filtered");
  *write_s = now_s() - t0;
  must(client.publish_dataset("negative", out), "publish negative");
  const double t = now_s() - t0;
  must(client.unpublish_dataset("negative"), "unpublish");
  return t;
}

// What `shelf head NAME -n 10` does once connected: a get with max_rows 11
// (a view evaluates no further) and a read of the first 10 rows.
double head_of(shelf::Client& client, const std::string& name) {
  const double t0 = now_s();
  shelf::Dataset d = must(client.get_dataset(name, shelf::GetOptions{11}), "get for head");
  int64_t sum = 0;
  uint64_t shown = 0;
  for (uint64_t p = 0; p < d.num_partitions() && shown < 10; ++p) {
    const std::span<const int64_t> v = d.column(p, 0).values<int64_t>();
    for (size_t i = 0; i < v.size() && shown < 10; ++i, ++shown) sum += v[i];
  }
  const double t = now_s() - t0;
  if (shown != 10 || sum == 1) die("head read " + std::to_string(shown) + " rows");
  return t;
}

// A view read whole: a get, then every partition's column, which evaluates
// the view into this process's memory (what to_pandas() of a view does).
double view_read(shelf::Client& client, const std::string& name, uint64_t expected_rows) {
  const double t0 = now_s();
  shelf::Dataset d = must(client.get_dataset(name), "get view");
  uint64_t rows = 0;
  for (uint64_t p = 0; p < d.num_partitions(); ++p) rows += d.column(p, 0).values<int64_t>().size();
  const double t = now_s() - t0;
  if (rows != expected_rows) die("the view read " + std::to_string(rows) + " rows");
  return t;
}

double publish_ready(shelf::Client& client, const std::vector<std::vector<int64_t>>& ready) {
  const double t0 = now_s();
  shelf::TableBuilder out = must(client.create_table({{"balance", shelf::Type::kInt64}}), "table");
  for (const std::vector<int64_t>& part : ready) {
    const shelf::ColumnData column = shelf::ColumnData::of(std::span<const int64_t>(part));
    must(out.append_partition(part.size(), std::span(&column, 1)), "append_partition");
  }
  must(client.publish_dataset("negative_ready", out), "publish ready");
  const double t = now_s() - t0;
  must(client.unpublish_dataset("negative_ready"), "unpublish");
  return t;
}

// pandas on the same rows: prints "mask_s filter_s" (medians).
bool run_pandas(uint64_t rows, int repeat, double* mask_s, double* filter_s) {
  const std::string script =
      "import time, numpy as np, pandas as pd\n"
      "rng = np.random.default_rng(1)\n"
      "df = pd.DataFrame({'balance': rng.integers(-2**20, 2**20, " +
      std::to_string(rows) +
      ", dtype=np.int64)})\n"
      "m, f = [], []\n"
      "for _ in range(" +
      std::to_string(repeat) +
      "):\n"
      "    t = time.perf_counter(); mask = df.balance < 0; m.append(time.perf_counter() - t)\n"
      "    t = time.perf_counter(); out = df[df.balance < 0]; f.append(time.perf_counter() - t)\n"
      "    del out, mask\n"
      "print(sorted(m)[len(m) // 2], sorted(f)[len(f) // 2])\n";
  const std::string path = std::string(g_dir) + "/pandas_filter.py";
  std::ofstream(path) << script;
  FILE* p = ::popen(("/usr/bin/python3 " + path + " 2>&1").c_str(), "r");
  if (p == nullptr) return false;
  char line[512] = "";
  const bool got = std::fgets(line, sizeof line, p) != nullptr;
  ::pclose(p);
  ::unlink(path.c_str());
  return got && std::sscanf(line, "%lf %lf", mask_s, filter_s) == 2;
}

// The medians of one run, and what they are ratios of.
struct Figures {
  uint64_t rows, partitions, kept;
  int repeat;
  double gib, sum_s, filter_s, filtered_s, ready_s, write_s;
  double view_head_s, base_head_s, view_read_s;
};

void report(const Figures& f, bool pandas) {
  std::printf("rows %llu (%.2f GiB int64, %llu partitions), kept %llu (%.1f%%), repeat %d\n",
              static_cast<unsigned long long>(f.rows), f.gib,
              static_cast<unsigned long long>(f.partitions),
              static_cast<unsigned long long>(f.kept),
              100.0 * static_cast<double>(f.kept) / static_cast<double>(f.rows), f.repeat);
  std::printf("sum scan            %8.1f ms  %6.2f GiB/s\n", f.sum_s * 1e3, f.gib / f.sum_s);
  std::printf("filter balance < 0  %8.1f ms  %6.2f GiB/s   filter_vs_sum %.2fx (target >= 0.7)\n",
              f.filter_s * 1e3, f.gib / f.filter_s, f.sum_s / f.filter_s);
  std::printf("publish from ready  %8.1f ms\n", f.ready_s * 1e3);
  std::printf("publish --where     %8.1f ms              publish_vs_ready %.2fx (target >= 0.7)\n",
              f.filtered_s * 1e3, f.ready_s / f.filtered_s);
  std::printf("  of which write_filtered (no publish) %8.1f ms\n", f.write_s * 1e3);
  std::printf("view read whole     %8.1f ms\n", f.view_read_s * 1e3);
  std::printf("head -n 10 of a view %8.3f ms (target <= 1 ms); of the stored base %.3f ms\n",
              f.view_head_s * 1e3, f.base_head_s * 1e3);
  double mask_s = 0, pandas_s = 0;
  if (pandas && run_pandas(f.rows, f.repeat, &mask_s, &pandas_s)) {
    std::printf("pandas df.balance < 0    %8.1f ms   shelf filter is %.2fx faster\n", mask_s * 1e3,
                mask_s / f.filter_s);
    std::printf(
        "pandas df[df.balance<0]  %8.1f ms   shelf publish --where is %.2fx faster "
        "(target >= 2)\n",
        pandas_s * 1e3, pandas_s / f.filtered_s);
    std::printf("                                        write_filtered alone is %.2fx faster\n",
                pandas_s / f.write_s);
    std::printf("                                        a view read whole is %.2fx faster\n",
                pandas_s / f.view_read_s);
  } else if (pandas) {
    std::printf("pandas: /usr/bin/python3 with numpy and pandas did not run\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t size_mib = 1024;
  int repeat = 5;
  bool pandas = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--size-mib" && i + 1 < argc) {
      size_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--no-pandas") {
      pandas = false;
    } else if (a == "--shm-dir" && i + 1 < argc && argv[i + 1][0] == '/' &&
               std::strlen(argv[i + 1]) < sizeof g_shm_dir) {
      std::snprintf(g_shm_dir, sizeof g_shm_dir, "%s", argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: filter_bench [--size-mib N] [--repeat N] [--no-pandas] "
                   "[--shm-dir DIR]\n");
      return 2;
    }
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_signal);
  const uint64_t partitions = 8;
  const uint64_t rows_per_partition = std::max<uint64_t>(1, (size_mib << 20) / 8 / partitions);
  const uint64_t rows = rows_per_partition * partitions;
  const uint64_t bytes = rows * 8;
  start_daemon(bytes * 5 / 2 + (64 << 20));
  shelf::ClientOptions options;
  options.socket = g_socket;
  shelf::Client client = must(shelf::Client::connect(options), "connect");
  publish_base(client, rows_per_partition, partitions);
  shelf::Dataset d = must(client.get_dataset("accounts"), "get accounts");
  must(d.prefault(), "prefault");
  const shelf::Filter f = must(shelf::Filter::parse(d.schema(), "balance < 0"), "parse");

  // The ready buffers: the kept rows of each partition, computed once.
  std::vector<std::vector<int64_t>> ready(partitions);
  for (uint64_t p = 0; p < partitions; ++p) {
    for (int64_t v : d.column(p, 0).values<int64_t>()) {
      if (v < 0) ready[p].push_back(v);
    }
  }
  must(client.publish_view("negative_view", {"accounts", "balance < 0", {}, std::nullopt}),
       "publish view");
  volatile int64_t sink = sum_scan(d);  // warm
  std::vector<double> sum_t, filter_t, filtered_t, ready_t, write_t, view_head_t, base_head_t,
      view_read_t;
  uint64_t kept = 0;
  for (int r = 0; r < repeat; ++r) {
    double t0 = now_s();
    sink = sink + sum_scan(d);
    sum_t.push_back(now_s() - t0);
    t0 = now_s();
    kept = filter_scan(d, f);
    filter_t.push_back(now_s() - t0);
    ready_t.push_back(publish_ready(client, ready));
    double write_s = 0;
    filtered_t.push_back(publish_filtered(client, d, f, &write_s));
    write_t.push_back(write_s);
    view_read_t.push_back(view_read(client, "negative_view", kept));
    for (int k = 0; k < 10; ++k) {
      view_head_t.push_back(head_of(client, "negative_view"));
      base_head_t.push_back(head_of(client, "accounts"));
    }
  }
  Figures fig{rows,
              partitions,
              kept,
              repeat,
              static_cast<double>(bytes) / (1 << 30),
              median(sum_t),
              median(filter_t),
              median(filtered_t),
              median(ready_t),
              median(write_t),
              median(view_head_t),
              median(base_head_t),
              median(view_read_t)};
  report(fig, pandas);
  d.release();
  cleanup();
  return 0;
}
