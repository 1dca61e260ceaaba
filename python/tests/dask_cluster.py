"""A multi-host Dask cluster on one machine, for tests and bench/dask_cluster_bench.py.

Each "host" is a loopback address (127.0.0.2, 127.0.0.3, ...) with its own
shelfd (own socket, own segment, its own --memory-limit) and its own
`dask worker` processes bound to that address with that host's
$SHELF_SOCKET. The scheduler listens on 127.0.0.1 at a free port. Nothing is
mocked: these are the real daemons and Dask's own command-line programs
(Debian's python3-distributed), started with timeouts and killed by stop().
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from conftest import Daemon

START_TIMEOUT = 60.0
_HERE = os.path.dirname(os.path.abspath(__file__))


def make_partition(i, rows):
    """Partition i of a test frame, computed on a worker: it records the IP of
    the worker that computed it (the workers import this module)."""
    import numpy as np
    import pandas as pd

    try:
        from distributed import get_worker
        where = get_worker().ip
    except ValueError:
        where = "local"
    rng = np.random.default_rng(i)
    ids = np.arange(i * rows, (i + 1) * rows, dtype="int64")
    return pd.DataFrame({"id": ids, "k": ids % 97, "x": rng.random(rows),
                         "s": np.array(["a", "bb", "ccc"], dtype=object)[ids % 3],
                         "computed_on": where}, index=pd.RangeIndex(i * rows, (i + 1) * rows))


def make_numeric_partition(i, rows):
    """Partition i of the benchmark's frame: four 8-byte columns, 32 bytes a row."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    ids = np.arange(i * rows, (i + 1) * rows, dtype="int64")
    return pd.DataFrame({"id": ids, "k": ids % 1000, "x": rng.random(rows),
                         "y": rng.standard_normal(rows)},
                        index=pd.RangeIndex(i * rows, (i + 1) * rows))


def frame(npartitions, rows, maker=make_partition):
    """A Dask DataFrame of maker(0..npartitions-1), computed on the cluster."""
    import dask.dataframe as dd

    return dd.from_map(maker, list(range(npartitions)), rows=rows,
                       divisions=[i * rows for i in range(npartitions)] + [npartitions * rows - 1],
                       label=f"test-frame-{maker.__name__}", enforce_metadata=False)


def source(npartitions, rows):
    """The same frame built here, in pandas."""
    import pandas as pd

    return pd.concat([make_partition(i, rows) for i in range(npartitions)])


def _wait(predicate, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    tail = ""
    if log is not None and os.path.exists(log):
        with open(log) as f:
            tail = "\n" + f.read()[-4000:]
    raise TimeoutError(f"{what} did not happen within {timeout}s{tail}")


class Host:
    """One pretend machine: an IP on lo, a shelfd, and workers."""

    def __init__(self, bed, name, ip, memory_limit):
        self.bed = bed
        self.name = name
        self.ip = ip
        self.daemon = Daemon(memory_limit=memory_limit, extra_args=("--remove-segment-on-exit",))
        self.workers = {}  # worker name -> Popen

    @property
    def socket(self):
        return self.daemon.socket

    @property
    def segment(self):
        return self.daemon.segment

    def start_worker(self, name):
        log = os.path.join(self.bed.dir, f"{name}.log")
        env = dict(_env(), SHELF_SOCKET=self.socket)
        argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.bed.scheduler_address,
                "--host", self.ip, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--memory-limit", "0", "--name", name, "--death-timeout", "60",
                "--local-directory", os.path.join(self.bed.dir, name)]
        with open(log, "ab") as out:
            self.workers[name] = subprocess.Popen(argv, env=env, stdout=out,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True)
        return name

    def kill_worker(self, name):
        proc = self.workers.pop(name)
        _kill(proc, signal.SIGKILL)


class TestBed:
    """Scheduler + hosts. hosts: [(workers per host, memory limit), ...]."""

    __test__ = False  # not a pytest class

    def __init__(self, hosts=((2, "64MiB"), (1, "64MiB"))):
        self.dir = tempfile.mkdtemp(prefix="shelf-dask-bed-")
        self.scheduler = None
        self.hosts = []
        self.layout = hosts
        try:
            for k, (_workers, limit) in enumerate(hosts):
                self.hosts.append(Host(self, f"host{k}", f"127.0.0.{k + 2}", limit))
            self.start_dask()
        except BaseException:
            self.stop()
            raise

    # ---- Dask processes
    def start_dask(self):
        """A new scheduler and every host's workers; waits until all have joined."""
        self.scheduler_file = os.path.join(self.dir, f"scheduler-{time.monotonic_ns()}.json")
        log = os.path.join(self.dir, "scheduler.log")
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", "0", "--no-dashboard", "--scheduler-file", self.scheduler_file]
        with open(log, "ab") as out:
            self.scheduler = subprocess.Popen(argv, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        _wait(lambda: self._scheduler_address(), START_TIMEOUT, "the scheduler start", log)
        for host, (count, _limit) in zip(self.hosts, self.layout):
            for w in range(count):
                host.start_worker(f"{host.name}-w{w}")
        self.wait_for_workers()

    def _scheduler_address(self):
        try:
            with open(self.scheduler_file) as f:
                self.scheduler_address = json.load(f)["address"]
            return True
        except (FileNotFoundError, ValueError, KeyError):
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"the scheduler exited with {self.scheduler.returncode}")
            return False

    def client(self):
        from distributed import Client

        return Client(self.scheduler_address, timeout=30, set_as_default=False)

    def worker_names(self):
        return [name for host in self.hosts for name in host.workers]

    def wait_for_workers(self):
        """Until every worker we started is in the scheduler; {name: address}."""
        want = set(self.worker_names())
        with self.client() as client:
            def joined():
                for host in self.hosts:
                    for name, proc in host.workers.items():
                        if proc.poll() is not None:
                            raise RuntimeError(f"worker {name} exited with {proc.returncode}: "
                                               + self.log(name))
                info = client.scheduler_info()["workers"]
                names = {w["name"]: a for a, w in info.items()}
                return names if want <= set(names) else None
            return _wait(joined, START_TIMEOUT, f"workers {sorted(want)} joining")

    def addresses(self, client):
        """{worker name: address} as the scheduler sees them now."""
        return {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}

    def host_of(self, address):
        ip = address.split("://")[1].rsplit(":", 1)[0]
        return next(h for h in self.hosts if h.ip == ip)

    def kill_scheduler(self):
        if self.scheduler is not None:
            _kill(self.scheduler, signal.SIGKILL)
            self.scheduler = None

    def stop_dask(self):
        for host in self.hosts:
            for name in list(host.workers):
                host.kill_worker(name)
        self.kill_scheduler()

    def log(self, name):
        path = os.path.join(self.dir, f"{name}.log")
        try:
            with open(path) as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self):
        self.stop_dask()
        for host in self.hosts:
            host.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _env():
    """The environment of the Dask processes: this one, and this directory
    importable (the tests' functions that run there live in this module)."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), _HERE) if p)
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)


def _kill(proc, sig):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)  # the worker and anything it started
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _mappings():
    """[(start, end, file offset, path)] of this process's file mappings under /dev/shm."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/dev/shm/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                out.append((start, end, int(fields[2], 16), fields[5]))
    return out


def where_is(array, mappings=None):
    """(path of the /dev/shm file, offset in it) holding `array`, or None."""
    address = array.__array_interface__["data"][0]
    for start, end, offset, path in mappings or _mappings():
        if start <= address and address + array.nbytes <= end:
            return path, offset + address - start
    return None


def held_frames(dask_worker):
    """For Client.run: {key: {column: where_is(its values)}} of every pandas
    DataFrame this worker holds in memory (numeric columns)."""
    import pandas as pd

    mappings = _mappings()
    out = {}
    for key, value in list(dask_worker.data.items()):
        if isinstance(value, pd.DataFrame):
            out[str(key)] = {c: where_is(value[c].to_numpy(), mappings)
                             for c in value.columns if value[c].dtype.kind in "iufb"}
    return out


def memory(dask_worker):
    """For Client.run: this worker process's /proc/self/smaps_rollup, in bytes."""
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3 and fields[2] == "kB":
                out[fields[0].rstrip(":")] = int(fields[1]) * 1024
    return out


def transfers(dask_worker):
    """For Client.run: (incoming, outgoing) transfer log lengths."""
    return len(dask_worker.transfer_incoming_log), len(dask_worker.transfer_outgoing_log)


def clear_transfers(dask_worker):
    dask_worker.transfer_incoming_log.clear()
    dask_worker.transfer_outgoing_log.clear()


def run_task_then_select(task, dask_worker):
    """For Client.run: runs one read task here, then operations that make
    pandas consolidate a frame's blocks (df[['k', 'x']], as every
    ddf.groupby('k').x does); where the frame's numeric columns lie after."""
    func, arg = task
    frame = func(arg)
    frame[["k", "x"]].groupby("k").x.sum()
    return {c: where_is(frame[c].to_numpy()) for c in frame.columns if frame[c].dtype.kind in "iuf"}


def run_task(task, dask_worker):
    """For Client.run: runs one task of a graph, (func, arg), here; where its
    numeric columns lie."""
    func, arg = task
    frame = func(arg)
    return {c: where_is(frame[c].to_numpy()) for c in frame.columns if frame[c].dtype.kind in "iuf"}
