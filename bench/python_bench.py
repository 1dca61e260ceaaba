#!/usr/bin/python3
"""Reading a published 1 GiB float64 column from Python: shelf against the
ways one would do it without shelf, all measured in this run.

    /usr/bin/python3 bench/python_bench.py [--size-mib 1024] [--repeat 5] [--lookup-only]

(with the package importable: PYTHONPATH=build-bench/python, or installed by
scripts/demo.sh; SHELFD=path/to/shelfd, default build-bench/server/shelfd).

What each line times, from "I have a name" to "I have the sum":
  in-process array    np.sum of a private array this process already holds: the floor
  shelf, warm         get_dataset + ds['x'] + sum, in a process that has read it before
  .npy mmap, warm     np.load(mmap_mode='r') + sum of the same column in /dev/shm, again
  shelf, new process  the same in a process that never mapped it (connect, map, fault in)
    same, prefault(2)  with ds.prefault(2) first: the page tables filled on two threads
  .npy, new process   np.load(mmap_mode='r') + sum in a new process
  dask, new client    distributed: get_dataset + .compute() + sum, from a LocalCluster on
                      127.0.0.1 (2 worker processes) holding the same data, persisted
Ratios are time / the in-process time (1.00x is as fast as memory allows).
First, the lookup figures: get_dataset of a small dataset with nulls (against
the extension's bare get in the same run), list_datasets and `in` among
10,001 names.
"""

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def best_of(repeat, fn):
    """The fastest of `repeat` runs of fn(), in seconds, and fn's last value."""
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def in_new_process(code, env, repeat):
    """Runs `code` (which prints its own elapsed seconds) in fresh processes."""
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
        times.append(float(out.split()[-1]))
    return min(times)


SHELF_READER = """
import time, shelf
t0 = time.perf_counter()
total = shelf.Client().get_dataset('x')['x'].sum()
print(time.perf_counter() - t0)
"""

SHELF_PREFAULT_READER = """
import time, shelf
t0 = time.perf_counter()
ds = shelf.Client().get_dataset('x')
ds.prefault(2)
total = ds['x'].sum()
print(time.perf_counter() - t0)
"""

NPY_READER = """
import time, numpy as np
t0 = time.perf_counter()
total = np.load({path!r}, mmap_mode='r').sum()
print(time.perf_counter() - t0)
"""


def start_shelfd(size_bytes):
    work = tempfile.mkdtemp(prefix="shelf-pybench-")
    os.chmod(work, 0o700)
    socket = os.path.join(work, "shelf.sock")
    segment = f"shelf-pybench-{os.getpid()}"
    shelfd = os.environ.get("SHELFD", os.path.join(ROOT, "build-bench", "server", "shelfd"))
    subprocess.run([shelfd, "--socket", socket, "--segment", segment,
                    "--memory-limit", str(2 * size_bytes + (64 << 20))],
                   check=True, stdout=subprocess.DEVNULL)
    with open(socket + ".lock") as f:
        pid = int(f.read())

    def stop():
        os.kill(pid, signal.SIGTERM)
        # shelfd holds an flock on its lock file until it exits (it is not our
        # child, and an unreaped zombie would keep /proc/<pid> forever).
        with open(socket + ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(f"/dev/shm/{segment}"):
            os.unlink(f"/dev/shm/{segment}")
        shutil.rmtree(work, ignore_errors=True)

    return socket, stop


def dask_figure(data, repeat):
    """Seconds for a second client to get the published dataset and sum it."""
    import dask.dataframe as dd
    import pandas as pd
    from dask.distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit=0) as cluster:
        with Client(cluster) as publisher:
            frame = publisher.persist(dd.from_pandas(pd.DataFrame({"x": data}), npartitions=8))
            # In the workers' memory before it is published: distributed 2022.12
            # hands a reader a graph of bare keys if the persist is still running.
            wait(frame)
            publisher.publish_dataset(x=frame)

            def read():
                with Client(cluster.scheduler_address) as reader:
                    return reader.get_dataset("x").compute()["x"].to_numpy().sum()

            return best_of(repeat, read)


def median_us(samples, fn):
    """The median of `samples` runs of fn(), in microseconds."""
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6


def lookup_figures(many=10_000):
    """get_dataset of a small dataset with nulls, and list_datasets / `in`
    among `many` + 1 names, against the extension's bare get (the C++
    get_dataset and nothing of the Python wrapper) measured in the same run."""
    import pandas as pd

    import shelf

    socket, stop = start_shelfd(128 << 20)
    try:
        client = shelf.Client(socket)
        small = pd.DataFrame({"i": pd.array([1, None, 3] * 100, dtype="Int64"),
                              "f": np.arange(300.0),
                              "b": pd.array([True, False, None] * 100, dtype="boolean")})
        client.publish_dataset(small=small)
        for start in range(0, many, 1000):
            client.publish_dataset(**{f"tiny-{i:05d}": {"v": np.arange(4)}
                                      for i in range(start, min(start + 1000, many))})
        assert client.get_dataset("small").to_pandas()["i"].isna().sum() == 100
        names = client.list_datasets()
        assert len(names) == many + 1
        bare = median_us(2000, lambda: client._client.get("small"))
        get = median_us(2000, lambda: client.get_dataset("small"))
        listed = median_us(20, client.list_datasets)
        contains = median_us(2000, lambda: "tiny-00042" in client.datasets)
        client.close()
    finally:
        stop()
    print(f"python_bench: lookups among {many + 1} datasets, medians")
    print(f"  get_dataset of a 300-row dataset with nulls: {get:.1f} us "
          f"(the extension's bare get: {bare:.1f} us; the wrapper: {get - bare:.1f} us)")
    print(f"  list_datasets of {many + 1}: {listed / 1e3:.2f} ms")
    print(f"  'name' in client.datasets: {contains:.1f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-dask", action="store_true", help="skip the distributed figure")
    parser.add_argument("--lookup-only", action="store_true",
                        help="only the lookup figures (get of a small dataset, list, in)")
    args = parser.parse_args()

    lookup_figures()
    if args.lookup_only:
        return

    import shelf

    n = args.size_mib * (1 << 20) // 8
    data = np.random.default_rng(1).random(n)
    expected = data.sum()
    rows = []

    t_private, total = best_of(args.repeat, data.sum)
    assert total == expected
    rows.append(("in-process array", t_private))

    socket, stop = start_shelfd(data.nbytes)
    npy_dir = tempfile.mkdtemp(prefix="shelf-pybench-npy-", dir="/dev/shm")
    try:
        env = dict(os.environ, SHELF_SOCKET=socket)
        client = shelf.Client(socket)
        t0 = time.perf_counter()
        client.publish_dataset(x={"x": data})
        t_publish = time.perf_counter() - t0

        def shelf_read():
            return client.get_dataset("x")["x"].sum()

        shelf_read()  # this process maps the pages once
        t_get, _ = best_of(args.repeat * 20, lambda: client.get_dataset("x"))
        t_shelf, total = best_of(args.repeat, shelf_read)
        assert total == expected
        rows.append(("shelf, warm", t_shelf))

        path = os.path.join(npy_dir, "x.npy")
        np.save(path, data)

        def npy_read():
            return np.load(path, mmap_mode="r").sum()

        npy_read()
        t_npy, total = best_of(args.repeat, npy_read)
        assert total == expected
        rows.append((".npy mmap, warm", t_npy))

        rows.append(("shelf, new process", in_new_process(SHELF_READER, env, args.repeat)))
        rows.append(("  same, prefault(2)", in_new_process(SHELF_PREFAULT_READER, env,
                                                          args.repeat)))
        rows.append((".npy, new process",
                     in_new_process(NPY_READER.format(path=path), env, args.repeat)))
        client.close()
    finally:
        stop()
        shutil.rmtree(npy_dir, ignore_errors=True)

    if not args.no_dask:
        t_dask, total = dask_figure(data, max(1, args.repeat // 2))
        assert np.isclose(total, expected)
        rows.append(("dask, new client", t_dask))

    gib = data.nbytes / (1 << 30)
    print(f"python_bench: {args.size_mib} MiB float64 column, best of {args.repeat}")
    print(f"  publish (dict of one numpy array, one copy): {t_publish * 1e3:.0f} ms, "
          f"{data.nbytes / t_publish / 1e9:.2f} GB/s")
    print(f"  get_dataset alone: {t_get * 1e6:.1f} us")
    print(f"  {'read + sum':24} {'ms':>9} {'GB/s':>7} {'vs in-process':>14}")
    for name, seconds in rows:
        print(f"  {name:24} {seconds * 1e3:9.1f} {data.nbytes / seconds / 1e9:7.2f} "
              f"{seconds / t_private:13.2f}x")
    print(f"  ({gib:.2f} GiB; ratios are time / in-process time)")


if __name__ == "__main__":
    main()
