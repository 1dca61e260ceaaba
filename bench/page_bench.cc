// page_bench: what the pages of a memory filesystem cost shelf's paths,
// without shelf, for each directory given, in one run. It is the measurement
// behind shelfd --shm-dir's advice (docs/benchmarks.md, "Huge pages"): a
// tmpfs with 4 KiB pages, one mounted huge=within_size or huge=always, and a
// hugetlbfs, side by side.
//
//   page_bench [--size-mib N] [--repeat N] DIR...
//
// For each DIR, on a fresh file of N MiB (the median of --repeat runs):
//   write    ftruncate, mmap, MADV_POPULATE_WRITE, memcpy from a warm
//            private buffer: a publish's copy (GB/s)
//   scan     a sum over the file through a fresh mapping in another process,
//            first touch (GB/s), and warm (GB/s)
//   unmap    munmap of the writer's touched mapping (ms)
//   punch    fallocate(PUNCH_HOLE) of the whole file until the memory is
//            back (ms)
// and, once, the baselines: the same sum over a warm private buffer, of
// 4 KiB pages and of huge pages (MADV_HUGEPAGE) (GB/s).
// The file is removed afterwards; a hugetlbfs needs enough huge pages
// reserved (/proc/sys/vm/nr_hugepages) for N MiB.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr uint64_t kMiB = 1ull << 20;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "page_bench: %s\n", what.c_str());
  std::exit(1);
}

double now_s() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The sum of `bytes` of int64 at `p`: what a reader's scan does.
int64_t sum(const void* p, uint64_t bytes) {
  const auto* v = static_cast<const int64_t*>(p);
  int64_t s = 0;
  for (uint64_t i = 0; i < bytes / 8; ++i) s += v[i];
  return s;
}

struct Run {
  double write_gbs, first_scan_gbs, warm_scan_gbs, unmap_ms, punch_ms;
};

// A scan in a child process, through a mapping of its own, twice: the first
// touch and warm. Its two times come back through a pipe.
void scan_in_child(const std::string& path, uint64_t bytes, int64_t want, double out[2]) {
  int fds[2];
  if (::pipe(fds) != 0) die("pipe");
  const pid_t child = ::fork();
  if (child == 0) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    void* p = fd < 0 ? MAP_FAILED : ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) ::_exit(2);
    double t[2];
    for (double& seconds : t) {
      const double t0 = now_s();
      if (sum(p, bytes) != want) ::_exit(3);
      seconds = now_s() - t0;
    }
    if (::write(fds[1], t, sizeof t) != sizeof t) ::_exit(4);
    ::_exit(0);
  }
  ::close(fds[1]);
  double t[2] = {0, 0};
  const bool got = ::read(fds[0], t, sizeof t) == sizeof t;
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    die("the scan of " + path + " failed");
  out[0] = t[0];
  out[1] = t[1];
}

Run run_once(const std::string& dir, const int64_t* source, uint64_t bytes, int64_t want) {
  const std::string path = dir + "/page-bench-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) die("open " + path + ": " + std::strerror(errno));
  Run r{};
  const double t0 = now_s();
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    die("ftruncate: " + std::string(std::strerror(errno)));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap " + path + ": " + std::strerror(errno));
  if (::madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
    ::unlink(path.c_str());
    die("MADV_POPULATE_WRITE on " + path + ": " + std::strerror(errno) +
        " (a hugetlbfs needs /proc/sys/vm/nr_hugepages for the size)");
  }
  std::memcpy(p, source, bytes);
  const double t1 = now_s();
  ::munmap(p, bytes);
  const double t2 = now_s();
  double scan[2];
  scan_in_child(path, bytes, want, scan);
  const double t3 = now_s();
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes)) !=
      0) {
    die("punch " + path + ": " + std::strerror(errno));
  }
  const double t4 = now_s();
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_blocks != 0) die("the punch of " + path + " left pages");
  ::close(fd);
  ::unlink(path.c_str());
  const double gb = static_cast<double>(bytes) / 1e9;
  r.write_gbs = gb / (t1 - t0);
  r.unmap_ms = (t2 - t1) * 1e3;
  r.first_scan_gbs = gb / scan[0];
  r.warm_scan_gbs = gb / scan[1];
  r.punch_ms = (t4 - t3) * 1e3;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t size_mib = 1024;
  int repeat = 5;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--size-mib" || a == "--repeat") && i + 1 < argc) {
      const long v = std::strtol(argv[++i], nullptr, 10);
      if (v <= 0) die(a + " needs a positive number");
      if (a == "--size-mib") {
        size_mib = static_cast<uint64_t>(v);
      } else {
        repeat = static_cast<int>(std::min(v, 1000L));
      }
    } else if (a == "--help" || a == "-h") {
      std::printf("Usage: page_bench [--size-mib N] [--repeat N] DIR...\n");
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option " + a + " (try --help)");
    } else {
      dirs.push_back(a);
    }
  }
  if (dirs.empty()) die("give one or more directories (try --help)");
  const uint64_t bytes = size_mib * kMiB;
  // The source every write copies from, and the private baselines: the
  // same values in 4 KiB pages (NOHUGEPAGE) and in huge pages.
  int64_t* buffers[2];
  for (int huge = 0; huge < 2; ++huge) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap a private buffer: " + std::string(std::strerror(errno)));
    (void)::madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    buffers[huge] = static_cast<int64_t*>(p);
    for (uint64_t i = 0; i < bytes / 8; ++i) buffers[huge][i] = static_cast<int64_t>(i);
  }
  const int64_t* source = buffers[1];
  const int64_t want = sum(source, bytes);
  std::vector<double> private_scan[2];
  for (int i = 0; i < repeat; ++i) {
    for (int huge = 0; huge < 2; ++huge) {
      const double t0 = now_s();
      if (sum(buffers[huge], bytes) != want) die("the private scan is wrong");
      private_scan[huge].push_back(static_cast<double>(bytes) / 1e9 / (now_s() - t0));
    }
  }
  std::printf(
      "page_bench: %llu MiB, median of %d runs; a warm private scan: %.2f GB/s in 4 KiB pages, "
      "%.2f GB/s in huge pages\n",
      static_cast<unsigned long long>(size_mib), repeat, median(private_scan[0]),
      median(private_scan[1]));
  std::printf("%-28s %10s %12s %11s %9s %9s\n", "directory", "write GB/s", "first scan",
              "warm scan", "unmap ms", "punch ms");
  for (const std::string& dir : dirs) {
    std::vector<double> w, f, s, u, p;
    for (int i = 0; i < repeat; ++i) {
      const Run r = run_once(dir, source, bytes, want);
      w.push_back(r.write_gbs);
      f.push_back(r.first_scan_gbs);
      s.push_back(r.warm_scan_gbs);
      u.push_back(r.unmap_ms);
      p.push_back(r.punch_ms);
    }
    std::printf("%-28s %10.2f %12.2f %11.2f %9.1f %9.1f\n", dir.c_str(), median(w), median(f),
                median(s), median(u), median(p));
  }
  return 0;
}
