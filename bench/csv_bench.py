#!/usr/bin/python3
"""`shelf publish` from CSV against libcsv's tokenising and pandas' read_csv,
on the same generated file, measured in the same run.

    /usr/bin/python3 bench/csv_bench.py [--size-mib 1024] [--repeat 3] [--build build-bench]
                                        [--shm-dir DIR]

Needs a build with the bench targets (shelf, shelfd, csv_tokenize_baseline):
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release
    cmake --build build-bench -j2 --target shelf shelfd csv_tokenize_baseline

The file has five columns as in the README's demo (int64 id, a string that
is sometimes quoted with a comma inside, int64, float64, bool), made by
repeating a 16 MiB block of random rows up to --size-mib. What each line
times (best of --repeat, wall clock, file in the page cache):
  libcsv tokenise     libcsv over the bytes, counting fields: no types, no output (1 core)
  shelf publish -t N  the whole publish with N threads: two parallel passes, into shelfd
  pandas read_csv     pandas' C engine into a DataFrame (1 core), import not counted
  before: ...         with --before SHELF, that binary's publish of the plain file
and the same for the gzip'd file (gzip -1) where it applies. Figures are
GB/s of CSV text and ratios against pandas and libcsv of the same run.
"""

import argparse
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_block(rows, seed=7):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    lines = []
    for i in range(rows):
        name = rng.choice(words) + str(rng.randrange(1000))
        if rng.random() < 0.1:
            name = '"' + name + ", " + rng.choice(words) + '"'
        lines.append("%d,%s,%d,%.6f,%s\n" % (i, name, rng.randrange(-10**9, 10**9),
                                            rng.uniform(-1e4, 1e4),
                                            "true" if rng.random() < 0.5 else "false"))
    return "".join(lines).encode()


def make_csv(path, size_bytes):
    block = make_block(300000)
    with open(path, "wb") as f:
        f.write(b"id,name,qty,price,active\n")
        written = 0
        while written < size_bytes:
            f.write(block)
            written += len(block)
    return os.path.getsize(path)


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        sys.exit("csv_bench: %s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


PANDAS = """
import sys, time, pandas
t = time.perf_counter()
df = pandas.read_csv(sys.argv[1])
print(time.perf_counter() - t, len(df))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--no-gzip", action="store_true")
    ap.add_argument("--shm-dir", help="shelfd's --shm-dir, e.g. a tmpfs mounted huge=within_size "
                                      "(default: shelfd's, /dev/shm)")
    ap.add_argument("--before", metavar="SHELF",
                    help="another shelf binary (e.g. one built from main) timed on the plain "
                         "file in the same run, as the before figure")
    args = ap.parse_args()
    shelf = os.path.join(args.build, "tools", "shelf")
    shelfd = os.path.join(args.build, "server", "shelfd")
    libcsv = os.path.join(args.build, "bench", "csv_tokenize_baseline")
    for p in (shelf, shelfd, libcsv):
        if not os.access(p, os.X_OK):
            sys.exit("csv_bench: %s is missing; build the bench targets (see --help)" % p)
    work = tempfile.mkdtemp(prefix="shelf-csv-bench-")
    sock = os.path.join(work, "s.sock")
    try:
        csv = os.path.join(work, "data.csv")
        size = make_csv(csv, args.size_mib << 20)
        gz = None
        if not args.no_gzip:
            gz = csv + ".gz"
            with open(gz, "wb") as out:
                subprocess.run(["gzip", "-1", "-c", csv], stdout=out, check=True)
        os.chmod(work, 0o700)
        run([shelfd, "--socket", sock, "--segment", "shelf-csvbench-%d" % os.getpid(),
             "--memory-limit", "%dMiB" % (4 * (size >> 20) + 1024), "--remove-segment-on-exit"] +
            (["--shm-dir", args.shm_dir] if args.shm_dir else []))
        env = dict(os.environ, SHELF_SOCKET=sock)

        def publish(path, threads):
            run([shelf, "publish", "d", path, "--threads", str(threads), "--override",
                 "--quiet"], env=env)

        def publish_before():
            run([args.before, "publish", "d", csv, "--override"], env=env)

        rows = []
        def add(label, seconds):
            rows.append((label, seconds))

        out = None
        def tokenise():
            nonlocal out
            out = run([libcsv, csv])
        add("libcsv tokenise (1 core)", best_of(args.repeat, tokenise))
        if args.before:
            add("before: " + os.path.basename(os.path.dirname(os.path.dirname(args.before))) +
                " shelf publish", best_of(args.repeat, publish_before))
        for t in (1, 2):
            add("shelf publish --threads %d" % t, best_of(args.repeat, lambda: publish(csv, t)))
        pandas_s = min(float(run(["/usr/bin/python3", "-c", PANDAS, csv]).split()[0])
                       for _ in range(args.repeat))
        add("pandas read_csv (C engine)", pandas_s)
        if gz:
            for t in (1, 2):
                add("shelf publish --threads %d, gzip" % t,
                    best_of(args.repeat, lambda: publish(gz, t)))
            add("pandas read_csv, gzip",
                min(float(run(["/usr/bin/python3", "-c", PANDAS, gz]).split()[0])
                    for _ in range(args.repeat)))
        libcsv_s = rows[0][1]
        print("CSV: %.0f MiB, %s records; %d cores; best of %d; segment in %s" %
              (size / 2**20, out.split()[2], os.cpu_count(), args.repeat,
               args.shm_dir or "/dev/shm"))
        print("%-36s %9s %8s %10s %10s" % ("", "seconds", "GB/s", "x pandas", "x libcsv"))
        for label, s in rows:
            print("%-36s %9.3f %8.3f %10.2f %10.2f" %
                  (label, s, size / s / 1e9, pandas_s / s, libcsv_s / s))
    finally:
        if os.path.exists(sock + ".lock"):
            with open(sock + ".lock") as f:
                pid = int(f.read() or 0)
            if pid:
                os.kill(pid, signal.SIGTERM)
                # shelfd holds an flock on its lock file until it exits.
                with open(sock + ".lock") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
