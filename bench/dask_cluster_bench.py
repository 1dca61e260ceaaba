#!/usr/bin/python3
"""A published DataFrame under a Dask cluster of two "hosts": shelf.dask
against Dask's own persisted + published collection, in the same run.

    SHELFD=build/plain/server/shelfd PYTHONPATH=build/plain/python \\
        /usr/bin/python3 bench/dask_cluster_bench.py [--size-mib 1024] [--repeat 3] \\
        [--order shelf,persisted,dask] [--huge-shm]

The test bed is python/tests/dask_cluster.py: host0 = 127.0.0.2 with two
workers, host1 = 127.0.0.3 with one, each host its own shelfd; every worker
--nthreads 1, no nanny, no memory limit (so Dask never spills). The frame
has four 8-byte columns (id, k = id % 1000, x, y) in 64 partitions,
computed on the workers.

The sides, each on a freshly started set of workers:
  shelf      shelf.dask.publish: partitions in each host's shelf; every
             computation runs a read task per partition (zero-copy views)
  persisted  the same, and the new client persists the read: the workers
             hold the views, later computations have no read tasks
  dask       client.persist + publish_dataset: partitions in the workers' heaps
and what is measured:
  publish            compute and publish (shelf: and write into the shelves)
  new client: get_dataset, len   a new Client: get_dataset(name), then
                     get_dataset + len() over the cluster
  groupby.sum        ddf.groupby('k').x.sum(), best of --repeat
  full scan          ddf.sum() (every column of every row), best of --repeat
  MiB moved          what the workers fetched from each other per computation
  workers' memory    after the scans: the sum over workers of Pss_Anon +
                     Pss_File (their heaps, libraries shared among them
                     counted once), plus each host's shelf segment once
                     (its resident bytes); naive sum of Rss alongside
Ratios are against dask.

What one machine cannot show: the hosts share one memory bus, two cores and
a loopback "network", so what crosses between hosts here (the groupby's
partial sums, the partitions work stealing moves) costs far less than on a
real network; with both sides doing
the same transfers this favours neither, but nothing here measures a real
network's cost of Dask's transfers, nor the cross-host reads shelf avoids
only when each task runs on the host holding its partition.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python", "tests"))

import dask_cluster  # noqa: E402
import shelf  # noqa: E402
import shelf.dask  # noqa: E402

ROW_BYTES = 32
NPARTITIONS = 64


def scheduler_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


def best_of(repeat, fn, times=None, client=None):
    """The fastest of `repeat` runs of fn(). With client: before each run, wait
    until the scheduler has forgotten the last run's keys (a run of the same
    graph would otherwise find its results still in memory)."""
    best, value = float("inf"), None
    settled = client.run_on_scheduler(scheduler_tasks) if client is not None else None
    for _ in range(repeat):
        deadline = time.monotonic() + 10
        while settled is not None and time.monotonic() < deadline and \
                client.run_on_scheduler(scheduler_tasks) > settled:
            time.sleep(0.02)
        t0 = time.perf_counter()
        value = fn()
        took = time.perf_counter() - t0
        best = min(best, took)
        if times is not None:
            times.append(round(took, 4))
    return best, value


def transferred(dask_worker):
    """For Client.run: bytes this worker fetched from others since the last clear."""
    return sum(t["total"] for t in dask_worker.transfer_incoming_log)


def with_transfers(client, fn, into):
    """fn(), appending to `into` the MiB the workers moved between them for it."""
    client.run(dask_cluster.clear_transfers)
    value = fn()
    into.append(round(sum(client.run(transferred).values()) / 2**20, 1))
    return value


def workers_memory(client, bed):
    mem = client.run(dask_cluster.memory)
    heaps = sum(m.get("Pss_Anon", 0) + m.get("Pss_File", 0) for m in mem.values())
    rss = sum(m["Rss"] for m in mem.values())
    segments = 0
    for host in bed.hosts:
        with shelf.Client(host.socket) as c:
            segments += c.status()["resident_bytes"]
    return heaps + segments, rss, segments


def measure(bed, kind, rows, repeat):
    from distributed import wait

    out = {}
    name = f"bench_{kind}"
    ddf = dask_cluster.frame(NPARTITIONS, rows, maker=dask_cluster.make_numeric_partition)
    with bed.client() as client:
        t0 = time.perf_counter()
        if kind in ("shelf", "persisted"):
            shelf.dask.publish(client, **{name: ddf})
        else:
            held = client.persist(ddf)
            with client.as_current():
                wait(held)
            client.publish_dataset(**{name: held})
            del held
        out["publish"] = time.perf_counter() - t0

    with bed.client() as client:  # a new client, as another user would
        t0 = time.perf_counter()
        back = client.get_dataset(name)
        out["new client: get_dataset"] = time.perf_counter() - t0
        out["rows"] = int(client.compute(back.id.count()).result())
        out["new client: len"] = time.perf_counter() - t0
        if kind == "persisted":
            # The workers hold the read tasks' frames: views of their hosts'
            # shelves, no copies; later computations have no read tasks.
            back = client.persist(back)
            with client.as_current():
                wait(back)
            views = [w for frames in client.run(dask_cluster.held_frames).values()
                     for columns in frames.values() for w in columns.values()]
            assert views and all(w is not None for w in views), "a persisted read is a copy"
        out["groupby.sum times"], out["full scan times"] = [], []
        out["groupby.sum MiB moved"], out["full scan MiB moved"] = [], []
        out["groupby.sum"], sums = best_of(
            repeat, lambda: with_transfers(
                client, lambda: client.compute(back.groupby("k").x.sum()).result(),
                out["groupby.sum MiB moved"]), out["groupby.sum times"], client)
        out["full scan"], total = best_of(
            repeat, lambda: with_transfers(client, lambda: client.compute(back.sum()).result(),
                                           out["full scan MiB moved"]),
            out["full scan times"], client)
        out["check"] = (float(sums.sum()), float(total["y"]))
        time.sleep(1)  # let the workers release the scans' results
        out["workers' memory"], out["workers' Rss summed"], out["segments"] = \
            workers_memory(client, bed)
        if kind in ("shelf", "persisted"):
            del back
            shelf.dask.unpublish(client, name)
        else:
            client.unpublish_dataset(name)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--order", default="shelf,persisted,dask",
                        help="which sides run, in this order (the other engineers' load varies)")
    parser.add_argument("--huge-shm", action="store_true",
                        help="run in a private mount namespace whose /dev/shm is a tmpfs with "
                             "huge=within_size (2 MiB pages for the shelves; needs root)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.huge_shm and os.environ.get("SHELF_BENCH_HUGE_SHM") != "1":
        return _rerun_with_huge_shm(args)
    rows = args.size_mib * 2**20 // ROW_BYTES // NPARTITIONS
    limit = f"{args.size_mib + 256}MiB"  # either host could get all of it
    os.environ.setdefault("SHELFD", os.path.join(os.path.dirname(HERE), "build", "plain",
                                                 "server", "shelfd"))
    bed = dask_cluster.TestBed(hosts=((2, limit), (1, limit)))
    try:
        results = {}
        for kind in args.order.split(","):
            bed.stop_dask()
            bed.start_dask()  # fresh workers: their memory is this run's
            results[kind] = measure(bed, kind, rows, args.repeat)
    finally:
        bed.stop()
    for r in results.values():
        assert r["rows"] == rows * NPARTITIONS
        for a, b in zip(r["check"], next(iter(results.values()))["check"]):
            assert abs(a - b) <= 1e-6 * max(1.0, abs(b)), (a, b)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results, args, rows)


def report(results, args, rows):
    mib = 2**20
    kinds = list(results)
    base = results.get("dask")
    print(f"{args.size_mib} MiB DataFrame ({rows * NPARTITIONS} rows x 4 int64/float64 columns, "
          f"{NPARTITIONS} partitions) over 2 hosts (2 + 1 workers, 1 thread each)"
          + (", shelves on huge pages" if args.huge_shm else ""))
    print(f"{'':24}" + "".join(f"{k:>12}" for k in kinds) +
          "".join(f"{k + '/dask':>16}" for k in kinds if base and k != "dask"))
    for key in ("publish", "new client: get_dataset", "new client: len", "groupby.sum",
                "full scan"):
        row = "".join(f"{results[k][key]:11.3f}s" for k in kinds)
        if base:
            row += "".join(f"{results[k][key] / base[key]:15.2f}x" for k in kinds if k != "dask")
        print(f"{key:24}{row}")
    for key in ("workers' memory", "workers' Rss summed", "segments"):
        row = "".join(f"{results[k][key] / mib:8.0f} MiB" for k in kinds)
        if base and base[key]:
            row += "".join(f"{results[k][key] / base[key]:15.2f}x" for k in kinds if k != "dask")
        print(f"{key:24}{row}")
    for key in ("groupby.sum times", "full scan times", "groupby.sum MiB moved",
                "full scan MiB moved"):
        print(f"{key:24}" + "  ".join(f"{k} {results[k][key]}" for k in kinds))


def _rerun_with_huge_shm(args):
    """This benchmark again, in a mount namespace of its own whose /dev/shm is
    a huge-page tmpfs (the machine's /dev/shm is not touched)."""
    import shlex
    import subprocess

    argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    script = ("mount --make-rprivate / && "
              "mount -t tmpfs -o huge=within_size,mode=1777,size=" +
              f"{2 * args.size_mib + 1024}M tmpfs /dev/shm && exec " + shlex.join(argv))
    env = dict(os.environ, SHELF_BENCH_HUGE_SHM="1")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=env, check=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
