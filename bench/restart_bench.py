#!/usr/bin/python3
"""A restart of shelfd after kill -9 with many GiB published: when it serves,
when a get of a small dataset returns, when every checksum is checked.

    /usr/bin/python3 bench/restart_bench.py [--gib 16] [--build build-bench]

shelf_bench's figure `restart` does the same for one dataset it publishes
from a private copy; this publishes N datasets of 1 GiB from one buffer, so
that N may be most of the machine's memory. Needs a build with shelfd
(any build type; Release for the figures) and its Python module:

    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release
    cmake --build build-bench -j2

The baseline, in the same run: one read of the same bytes through the
restarted daemon's segment (numpy sums of every dataset, one thread, pages
already mapped by the checks), i.e. what touching the data once costs.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wait_gone(lock_path):
    import fcntl
    with open(lock_path) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # shelfd holds it until it exits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=16, help="datasets of 1 GiB to publish")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    args = ap.parse_args()
    shelfd = os.path.join(args.build, "server", "shelfd")
    sys.path.insert(0, os.path.join(args.build, "python"))
    try:
        import numpy as np
        import shelf
    except ImportError as e:
        sys.exit("restart_bench: %s; build the Python module in %s (see --help)" % (e, args.build))
    work = tempfile.mkdtemp(prefix="shelf-restart-bench-")
    os.chmod(work, 0o700)
    sock = os.path.join(work, "s.sock")
    segment = "shelf-restart-bench-%d" % os.getpid()
    daemon = [shelfd, "--socket", sock, "--segment", segment,
              "--memory-limit", "%dGiB" % (args.gib + 1)]
    subprocess.run(daemon, check=True, stdout=subprocess.DEVNULL)
    try:
        client = shelf.Client(socket=sock)
        values = np.arange(1 << 27, dtype=np.int64)  # 1 GiB
        started = time.monotonic()
        for i in range(args.gib):
            client.publish_dataset(**{"big%03d" % i: values})
            if sys.stderr.isatty():
                print("\rrestart_bench: published %d of %d GiB" % (i + 1, args.gib), end="",
                      file=sys.stderr, flush=True)
        client.publish_dataset(small=np.arange(10, dtype=np.int64))
        print("\rrestart_bench: published %d GiB in %.1f s" %
              (args.gib, time.monotonic() - started), file=sys.stderr)
        del client
        with open(sock + ".lock") as f:
            os.kill(int(f.read()), signal.SIGKILL)
        wait_gone(sock + ".lock")

        t0 = time.monotonic()
        subprocess.run(daemon, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        serving = time.monotonic() - t0
        client = shelf.Client(socket=sock)
        small = client.get_dataset("small")
        small_get = time.monotonic() - t0
        while client.status()["verifying"]["datasets_left"] > 0:
            time.sleep(0.005)
        checked = time.monotonic() - t0
        del small
        t1 = time.monotonic()
        total = 0
        for i in range(args.gib):
            total += int(client.get_dataset("big%03d" % i).sum())
        read_once = time.monotonic() - t1
        if total != args.gib * int(values.sum()):
            sys.exit("restart_bench: the datasets read back wrong")
        del client
        gb = args.gib * 2**30 / 1e9
        print("restart after kill -9 with %d GiB published, %d cores:" % (args.gib, os.cpu_count()))
        print("  serving again            %8.1f ms" % (serving * 1e3))
        print("  a small dataset's get    %8.1f ms" % (small_get * 1e3))
        print("  every checksum checked   %8.2f s   %5.1f GB/s  (%.2fx one read of the data)" %
              (checked, gb / checked, checked / read_once))
        print("  baseline: one read of it %8.2f s   %5.1f GB/s" % (read_once, gb / read_once))
    finally:
        if os.path.exists(sock + ".lock"):
            with open(sock + ".lock") as f:
                pid = int(f.read() or 0)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                    wait_gone(sock + ".lock")
                except ProcessLookupError:
                    pass
        subprocess.run(["rm", "-rf", work, "/dev/shm/" + segment])


if __name__ == "__main__":
    main()
