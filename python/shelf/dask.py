"""shelf under a Dask distributed cluster: each host's shelf keeps the
partitions its workers computed.

    import shelf.dask
    shelf.dask.publish(client, accounts=ddf)      # computed on the cluster, stored per host
    client.get_dataset("accounts")                # Dask's own call, from any client
    shelf.dask.get_dataset(client, "accounts")    # rebuilt from the hosts' shelves: works
                                                  # after a scheduler restart too
    shelf.dask.list_datasets(client); shelf.dask.unpublish(client, "accounts")
    shelf.dask.status(client)

Scheduling, transfers between hosts and naming stay Dask's. shelf adds:
  * a worker plugin (ShelfPlugin, registered as "shelf") connecting each
    worker to its own host's shelfd ($SHELF_SOCKET of the worker, else the
    default socket) and reading that shelf's host id;
  * publish(): the worker holding each computed partition writes it into its
    own host's shelf (nothing crosses the network to be stored), a manifest
    of the dataset goes into every host's shelf, and Dask's publish_dataset
    gets a collection whose task for partition i reads it zero-copy from its
    host's shelf, restricted to that host's workers;
  * get_dataset(): the same collection rebuilt from the manifests.

Host identity. "The same shelf" is what matters (two workers sharing one
copy), not the same IP: one machine may run two shelfds (this package's
test bed does), and a machine may have several addresses. So each shelf
holds a small dataset "dask-host" with a random id, written by the first
worker that connects to it; it lives as long as that shelf's data (a shelfd
restart that keeps its segment keeps it). Tasks are restricted to the IPs of
the workers that report that id (Dask's host restrictions, so a restarted
worker on a new port still qualifies), or to their addresses when one IP
serves more than one shelf.

Manifest ("dask-manifest/<name>" in every host's shelf, a pickled dict; see
docs/dask-cluster.md): format, name, publish_id (random: tells a republished
dataset from the old one), created_ns, kind (DataFrame or Series), meta,
divisions, hosts {host id: label, ips, socket} and, per partition,
(host id, shelf dataset name, the shelf's created_ns for it, rows, bytes,
its RangeIndex (start, step, name) or None when the index is stored).
Partition i is the shelf dataset "dask-part/<publish_id>/<i>" on its host.

Pickle: the manifest and the published collection are pickles, as Dask's
own published datasets are. Read and publish only among people you trust.
"""

import os
import pickle
import socket as _socket
import threading
import time
import uuid

from dask.highlevelgraph import MaterializedLayer
from distributed.diagnostics.plugin import WorkerPlugin

import shelf

__all__ = ["ShelfPlugin", "MissingPartitionsError", "publish", "get_dataset", "list_datasets",
           "unpublish", "status", "register"]

PLUGIN_NAME = "shelf"
MANIFEST_FORMAT = "shelf.dask/1"
_HOST_ID = "dask-host"
_MANIFEST = "dask-manifest/"
_PART = "dask-part/"


class MissingPartitionsError(LookupError):
    """Partitions of a published dataset cannot be read: their host's shelfd is
    down, or they are gone from it. The message names the host and partitions."""


# --------------------------------------------------------------------------- worker side

class _LocalShelf:
    """One worker process's connection to its host's shelfd, shared by its
    threads under a lock (a shelf.Client is not thread-safe). Connects
    again after the daemon restarted."""

    def __init__(self, socket):
        self.socket = socket
        self.lock = threading.Lock()
        self._client = None
        self.host_id = None

    def client(self):
        if self._client is None:
            self._client = shelf.Client(self.socket)
        return self._client

    def call(self, fn):
        """fn(shelf.Client) under the lock; one reconnect on ConnectionError."""
        with self.lock:
            try:
                return fn(self.client())
            except ConnectionError:
                self._client = None
            return fn(self.client())

    def read_host_id(self):
        def read(client):
            try:
                client.publish_dataset(**{_HOST_ID: uuid.uuid4().hex.encode()})
            except KeyError:
                pass  # another worker of this host was first
            return bytes(client.get_dataset(_HOST_ID)).decode()
        self.host_id = self.call(read)
        return self.host_id


_local = {}
_local_lock = threading.Lock()
os.register_at_fork(after_in_child=_local.clear)


def _local_shelf(socket):
    with _local_lock:
        local = _local.get(socket)
        if local is None:
            local = _local[socket] = _LocalShelf(socket)
        return local


def _worker_shelf(dask_worker=None):
    """This worker's _LocalShelf: the plugin's socket, else $SHELF_SOCKET/default."""
    if dask_worker is None:
        from distributed import get_worker
        dask_worker = get_worker()
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    socket = plugin.socket_path if plugin is not None else _default_socket()
    return _local_shelf(socket)


def _default_socket():
    # As libclient derives it ($SHELF_SOCKET, else the per-user path), without
    # connecting: a daemon that is down is reported by the call that needs it.
    return shelf._shelf.default_socket_path()


class ShelfPlugin(WorkerPlugin):
    """Connects each worker to its host's shelfd (a distributed WorkerPlugin).

    socket: the daemon's socket on every host; None (the default) takes
    each worker's $SHELF_SOCKET, else the default socket. Setup never fails
    the worker: a daemon that is down is reported by info() and by the
    reads and writes that need it.
    """

    name = PLUGIN_NAME

    def __init__(self, socket=None):
        self.socket = socket
        self.socket_path = None
        self.error = None

    def setup(self, worker):
        self.socket_path = self.socket or _default_socket()
        try:
            _local_shelf(self.socket_path).read_host_id()
        except (ConnectionError, OSError) as e:
            self.error = f"{type(e).__name__}: {e}"

    def info(self, worker):
        local = _local_shelf(self.socket_path)
        host_id = local.host_id
        error = self.error
        if host_id is None:
            try:
                host_id = local.read_host_id()
                error = None
            except (ConnectionError, OSError) as e:
                error = f"{type(e).__name__}: {e}"
        return {"host_id": host_id, "ip": worker.ip, "socket": self.socket_path,
                "hostname": _socket.gethostname(), "error": error}


def _worker_info(dask_worker):
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return None
    return plugin.info(dask_worker)


def _store_partition(part, name, index, publish_id):
    """Writes one computed partition into this worker's host's shelf (a task)."""
    import pandas as pd

    local = _worker_shelf()
    frame = part.to_frame(name="__series__") if isinstance(part, pd.Series) else part
    shelf_name = f"{_PART}{publish_id}/{index}"
    range_index = None
    if isinstance(frame.index, pd.RangeIndex) and not (frame.index.start == 0 and
                                                       frame.index.step == 1 and
                                                       frame.index.name is None):
        # A RangeIndex other than 0..n-1 would be stored as an int64 column:
        # keep its three numbers in the manifest instead (a shallow copy
        # with the default index, no data copied).
        range_index = (frame.index.start, frame.index.step, frame.index.name)
        frame = frame.copy(deep=False)
        frame.index = pd.RangeIndex(len(frame))
    frame = _by_dtype(frame)

    def store(client):
        try:
            client.publish_dataset(**{shelf_name: frame})
        except MemoryError as e:
            s = client.status()
            raise MemoryError(
                f"host {_label(local)}: partition {index} of {name!r} "
                f"({int(frame.memory_usage(deep=True).sum())} bytes in pandas) does not fit "
                f"its shelf: memory limit {s['memory_limit']}, used {s['used_bytes']}, "
                f"free {s['free_bytes']} bytes ({e})") from None
        info = next(d for d in client._client.list() if d["name"] == shelf_name)
        return (local.host_id, shelf_name, info["created_ns"], len(frame), info["memory_bytes"],
                range_index)

    try:
        return local.call(store)
    except ConnectionError as e:
        raise ConnectionError(f"host {_label(local)}: partition {index} of {name!r} cannot be "
                              f"stored: its shelfd is not running ({e})") from None


def _by_dtype(frame):
    """`frame` with its columns of one fixed-width numpy dtype next to each
    other (in order of first appearance), the others after them: each
    dtype's columns then lie at equal distances in the shelf, which is what
    _consolidated() needs. No data is copied; the reader puts the columns
    back in the collection's order by name (column names are unique in
    shelf)."""
    import numpy as np
    import pandas as pd

    if frame.shape[1] < 3 or not frame.columns.is_unique:
        return frame  # two columns of one dtype lie at equal distances anyway
    groups = {}
    for name, dtype in frame.dtypes.items():
        fixed = isinstance(dtype, np.dtype) and dtype.kind in "biufmM"
        groups.setdefault(dtype if fixed else None, []).append(name)
    order = [n for dtype, names in groups.items() if dtype is not None for n in names]
    order += groups.get(None, [])
    if order == list(frame.columns):
        return frame
    return pd.DataFrame({n: frame[n] for n in order}, index=frame.index, copy=False)


def _label(local):
    """The host as _hosts() labels it: hostname (IP, shelf id, socket)."""
    from distributed import get_worker

    return (f"{_socket.gethostname()} ({get_worker().ip}, shelf {(local.host_id or '?')[:8]}, "
            f"socket {local.socket})")


def _on_host(fn, *args, dask_worker):
    """Runs fn(shelf.Client, *args) on this worker's shelf (for Client.run)."""
    return _worker_shelf(dask_worker).call(lambda client: fn(client, *args))


def _h_remove_prefix(client, prefix):
    removed = 0
    for name in client.list_datasets():
        if name.startswith(prefix):
            try:
                client.unpublish_dataset(name)
                removed += 1
            except KeyError:
                pass
    return removed


def _h_write(client, name, payload):
    client.publish_dataset(**{name: payload}, override=True)


def _h_manifests(client, name=None):
    out = {}
    for dataset in client.list_datasets():
        if dataset.startswith(_MANIFEST) and (name is None or dataset == _MANIFEST + name):
            out[dataset[len(_MANIFEST):]] = bytes(client.get_dataset(dataset))
    return out


def _h_present(client, names):
    """{shelf name: created_ns} of those of `names` this shelf holds."""
    wanted = set(names)
    return {d["name"]: d["created_ns"] for d in client._client.list() if d["name"] in wanted}


def _h_status(client):
    return client.status()


class _Part:
    """The arguments of one read task, opaque to Dask's graph traversal."""

    __slots__ = ("name", "index", "shelf_name", "created_ns", "host_id", "host_label", "kind",
                 "series_name", "host_parts", "range_index", "columns")

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for key, value in state.items():
            setattr(self, key, value)


def _load_partition(part):
    """Partition part.index from this worker's host's shelf: pandas over
    shared memory, no copy (a task of the published collection)."""
    import pandas as pd

    local = _worker_shelf()

    def unavailable(why):
        missing = sorted(part.host_parts)
        try:
            names = {f"{part.shelf_name.rsplit('/', 1)[0]}/{i}": i for i in part.host_parts}
            present = local.call(lambda c: _h_present(c, names))
            missing = sorted(i for n, i in names.items() if n not in present) or [part.index]
        except (ConnectionError, OSError):
            pass
        return MissingPartitionsError(
            f"dataset {part.name!r}: host {part.host_label}: {why}; partitions {missing} of it "
            f"are unavailable there")

    if local.host_id is not None and local.host_id != part.host_id:
        raise RuntimeError(f"shelf.dask: the read of partition {part.index} of {part.name!r} ran "
                           f"on a worker of shelf {local.host_id}, not on its host "
                           f"{part.host_label}: its worker restrictions were lost")
    try:
        handle = local.call(lambda c: c._client.get(part.shelf_name))
    except (ConnectionError, OSError) as e:
        raise unavailable(f"its shelfd at {local.socket} is not running ({e})") from None
    except KeyError:
        raise unavailable("its shelf no longer holds it") from None
    if handle.created_ns != part.created_ns:
        raise unavailable("its shelf holds another dataset under that name")
    frame = _consolidated(shelf.Dataset(handle, local.socket).partition(0),
                          getattr(part, "columns", None))
    if part.range_index is not None:
        start, step, index_name = part.range_index
        frame.index = pd.RangeIndex(start, start + step * len(frame), step, name=index_name)
    if part.kind == "Series":
        frame = frame["__series__"].rename(part.series_name)
    return frame


def _consolidated(frame, columns=None):
    """`frame` (as shelf.Dataset.partition builds it: one pandas block per
    column) with one block per dtype, its numbers still viewing shared
    memory, and its columns in the order `columns` (names) if given.

    Why: pandas merges the blocks of one dtype ("consolidates") the first
    time an operation needs it, df[['k', 'x']] for one (every
    ddf.groupby('k').x does it). That copies every column of the dtype twice
    (np.vstack, then a take) and keeps the copy in the frame instead of the
    views: the partition is no longer zero-copy, and each computation pays
    for the copies (measured: 16 ms instead of 3 ms per 4 MiB partition, and
    two page faults per 4 KiB page; the groupby of the benchmark ran at
    half Dask's speed). _store_partition stores the columns of one dtype
    next to each other (_by_dtype), and the builder gives each column the
    same validity + data space, so they lie at equal distances: the rows of
    one strided 2-D view, a block pandas keeps as it is. Columns of a dtype
    that are not evenly spaced (a float column with nulls is read as a
    copy, say) keep a block each, and pandas copies them when it
    consolidates, as before; object columns (strings, Python objects
    already) are stacked into one block.
    Uses pandas' internals API for downstream libraries (as pyarrow's
    to_pandas does); without it, the frame is returned as it is.
    """
    import numpy as np
    import pandas as pd

    columns = frame.columns if columns is None else pd.Index(columns)
    if not (columns.is_unique and len(columns) == frame.shape[1] and
            set(columns) == set(frame.columns)):
        columns = frame.columns  # not the meta's columns: as stored, as Dask would give it
    try:
        from pandas.core.internals import BlockManager
        from pandas.core.internals.api import make_block
    except ImportError:
        return frame if columns.equals(frame.columns) else frame[list(columns)]
    if frame.shape[1] < 2:
        return frame
    position = {name: j for j, name in enumerate(columns)} if frame.columns.is_unique else None
    groups = {}  # numpy dtype -> [(position, 1-D array)]
    others = []  # (position, extension array) of pandas' own dtypes
    for stored, (name, column) in enumerate(frame.items()):
        j = stored if position is None else position[name]
        if isinstance(column.dtype, np.dtype):
            groups.setdefault(column.dtype, []).append((j, column.to_numpy()))
        else:
            others.append((j, column.array))
    blocks = []
    for dtype, members in groups.items():
        arrays = [a for _, a in members]
        stacked = np.stack(arrays) if dtype == object else _rows_view(arrays)
        if stacked is not None:
            blocks.append(make_block(stacked, placement=[j for j, _ in members]))
        else:
            blocks.extend(make_block(a.reshape(1, -1), placement=[j]) for j, a in members)
    blocks.extend(make_block(a, placement=[j], ndim=2) for j, a in others)
    return pd.DataFrame(BlockManager(blocks, [columns, frame.index]))


def _rows_view(arrays):
    """One read-only 2-D view whose rows are `arrays` (1-D, one dtype and
    length, from one lease), or None unless they lie at equal distances."""
    import numpy as np

    first = arrays[0]
    if len(arrays) == 1:
        return first.reshape(1, -1)
    item = first.itemsize
    address = [a.__array_interface__["data"][0] for a in arrays]
    step = address[1] - address[0]
    if step < first.nbytes or any(a.strides != (item,) for a in arrays) or any(
            address[i] != address[0] + i * step for i in range(len(arrays))):
        return None
    # The view spans the gaps between the columns (other buffers of the same
    # mapped extent), never reads them, and keeps the lease through `first`.
    return np.lib.stride_tricks.as_strided(first, shape=(len(arrays), len(first)),
                                           strides=(step, item), writeable=False)


class _Restrictions:
    """workers= for each key of the read layer (a callable annotation: Dask
    expands it over the layer's keys when it sends the graph)."""

    def __init__(self, per_partition):
        self.per_partition = per_partition

    def __call__(self, key):
        return self.per_partition[key[1]]


class _ReadLayer(MaterializedLayer):
    """The read tasks with their worker restrictions.

    Dask's Layer pickles as a plain MaterializedLayer without its
    annotations, which would drop the restrictions when the collection goes
    through publish_dataset: this one pickles with them. Its __module__ is
    None so that the scheduler unpacks it with Layer's default code (as a
    MaterializedLayer) instead of importing shelf.dask, which its
    allowed-imports setting refuses."""

    __module__ = None

    def __reduce__(self):
        return (_read_layer, (dict(self.mapping), self.annotations))


def _read_layer(mapping, annotations):
    return _ReadLayer(mapping, annotations=annotations)


# --------------------------------------------------------------------------- client side

def register(client, socket=None):
    """Registers ShelfPlugin on every worker (and on workers that join later)."""
    client.register_worker_plugin(ShelfPlugin(socket), name=PLUGIN_NAME)


def _hosts(client, require_all=True):
    """{host id: {"label", "ips", "workers", "socket"}} of the cluster's workers
    (registering the plugin when a worker lacks it). require_all: raise
    ConnectionError naming every worker whose shelfd is down."""
    infos = client.run(_worker_info)
    if not infos or any(v is None for v in infos.values()):
        register(client)
        infos = client.run(_worker_info)
    if not infos:
        raise RuntimeError("shelf.dask: the cluster has no workers")
    down = {w: i for w, i in infos.items() if i["host_id"] is None}
    if down and require_all:
        raise ConnectionError("shelf.dask: no shelfd for " + "; ".join(
            f"worker {w} on {i['hostname']} ({i['ip']}): socket {i['socket']}: {i['error']}"
            for w, i in sorted(down.items())))
    hosts = {}
    for worker, info in sorted(infos.items()):
        if info["host_id"] is None:
            continue
        host = hosts.setdefault(info["host_id"], {
            "label": f"{info['hostname']} ({info['ip']}, shelf {info['host_id'][:8]}, "
                     f"socket {info['socket']})",
            "ips": set(), "workers": [], "socket": info["socket"]})
        host["ips"].add(info["ip"])
        host["workers"].append(worker)
    shelves_of_ip = {}
    for host_id, host in hosts.items():
        for ip in host["ips"]:
            shelves_of_ip.setdefault(ip, set()).add(host_id)
    for host in hosts.values():
        shared = any(len(shelves_of_ip[ip]) > 1 for ip in host["ips"])
        host["restriction"] = sorted(host["workers"]) if shared else sorted(host["ips"])
    return hosts


def _run_on_hosts(client, hosts, fn, *args):
    """fn(shelf.Client, *args) once on each host: {host id: result or exception}."""
    out = {}
    for host_id, host in hosts.items():
        try:
            out[host_id] = client.run(_on_host, fn, *args, workers=host["workers"][:1])[
                host["workers"][0]]
        except Exception as e:  # noqa: BLE001 - reported per host by the callers
            out[host_id] = e
    return out


def _manifests(client, hosts, name=None):
    """{dataset name: newest manifest} over every host's shelf."""
    found = {}
    for result in _run_on_hosts(client, hosts, _h_manifests, name).values():
        if isinstance(result, Exception):
            continue  # a host that is down: the others hold the same manifests
        for dataset, payload in result.items():
            manifest = pickle.loads(payload)
            if dataset not in found or manifest["created_ns"] > found[dataset]["created_ns"]:
                found[dataset] = manifest
    return found


def publish(client, override=False, **collections):
    """Publishes Dask DataFrames (or Series) into the hosts' shelves and with
    client.publish_dataset: publish(client, name=collection, ...).

    Each collection is computed on the cluster; each partition is written by
    the worker holding it into its own host's shelf; every host's shelf gets
    the manifest. Raises KeyError if a name is published (in shelf or in
    Dask) and not override; MemoryError naming the host and its figures if a
    partition does not fit its host's shelf; ConnectionError if a worker's
    shelfd is down. On any error that dataset is published nowhere: the
    partitions and manifests already written are removed from every host.
    """
    import dask.dataframe as dd
    from distributed import futures_of, wait

    if not collections:
        raise TypeError("shelf.dask.publish: nothing to publish; use publish(client, name=ddf)")
    for name, collection in collections.items():
        if not isinstance(collection, (dd.DataFrame, dd.Series)):
            raise TypeError(f"shelf.dask.publish: {name!r} is a {type(collection).__name__}; "
                            "a Dask DataFrame or Series is expected")
    hosts = _hosts(client)
    old = _manifests(client, hosts)
    for name in collections:
        if not override and (name in old or name in client.list_datasets()):
            raise KeyError(f"Dataset {name} already exists")

    for name, collection in collections.items():
        publish_id = uuid.uuid4().hex
        persisted = client.persist(collection)
        parts = futures_of(persisted)
        with client.as_current():
            wait(parts)
        by_key = {f.key: f for f in parts}
        keys = [k for k in persisted.__dask_keys__()]
        futures = [by_key[k] for k in keys]
        who_has = client.who_has(futures)
        stores = []
        for i, future in enumerate(futures):
            holders = who_has.get(future.key) or who_has.get(str(future.key))
            stores.append(client.submit(_store_partition, future, name, i, publish_id,
                                        workers=list(holders)[:1] if holders else None,
                                        allow_other_workers=not holders, pure=False,
                                        key=f"shelf-store-{publish_id}-{i}"))
        with client.as_current():
            wait(stores)
        del parts, by_key, futures
        errors = [f.exception() for f in stores if f.status == "error"]
        try:
            if errors:
                raise errors[0]
            records = client.gather(stores)
            persisted = None
            manifest = {
                "format": MANIFEST_FORMAT, "name": name, "publish_id": publish_id,
                "created_ns": time.time_ns(), "kind": type(collection).__name__,
                "meta": collection._meta, "divisions": tuple(collection.divisions),
                "hosts": {h: {"label": hosts[h]["label"], "ips": sorted(hosts[h]["ips"]),
                              "socket": hosts[h]["socket"]} for h in hosts},
                "partitions": [tuple(r) for r in records]}
            payload = pickle.dumps(manifest, protocol=5)
            written = _run_on_hosts(client, hosts, _h_write, _MANIFEST + name, payload)
            failed = {h: r for h, r in written.items() if isinstance(r, Exception)}
            if failed:
                raise ConnectionError("shelf.dask.publish: the manifest could not be written on " +
                                      "; ".join(f"host {hosts[h]['label']}: {e}"
                                                for h, e in failed.items()))
            client.publish_dataset(**{name: _collection(manifest, hosts)}, override=True)
        except BaseException:
            _run_on_hosts(client, hosts, _h_remove_prefix, f"{_PART}{publish_id}/")
            if not errors:  # a manifest may have been written: put the old one back or none
                if name in old:
                    _run_on_hosts(client, hosts, _h_write, _MANIFEST + name,
                                  pickle.dumps(old[name], protocol=5))
                else:
                    _run_on_hosts(client, hosts, _h_remove_prefix, _MANIFEST + name)
            raise
        finally:
            del stores
        if name in old and old[name]["publish_id"] != publish_id:
            _run_on_hosts(client, hosts, _h_remove_prefix, f"{_PART}{old[name]['publish_id']}/")


def _collection(manifest, hosts):
    """The Dask collection reading `manifest`'s partitions from their hosts."""
    import dask.dataframe as dd
    from dask.highlevelgraph import HighLevelGraph

    parts_of = {}
    for i, (host_id, *_rest) in enumerate(manifest["partitions"]):
        parts_of.setdefault(host_id, []).append(i)
    missing_hosts = [h for h in parts_of if h not in hosts]
    if missing_hosts:
        raise MissingPartitionsError("; ".join(
            f"dataset {manifest['name']!r}: host "
            f"{manifest['hosts'].get(h, {}).get('label', h)} has no worker in this cluster; "
            f"partitions {parts_of[h]} of it are unavailable" for h in missing_hosts))
    # Keys of their own for each build: a rebuilt collection (after a shelfd
    # came back, say) must not share keys that Dask still holds as erred.
    layer_name = f"shelf-{manifest['name']}-{uuid.uuid4().hex[:16]}"
    host_parts = {h: tuple(v) for h, v in parts_of.items()}
    meta = manifest["meta"]
    tasks = {}
    restrictions = []
    for i, record in enumerate(manifest["partitions"]):
        host_id, shelf_name, created_ns, _rows, _bytes, range_index = record
        tasks[(layer_name, i)] = (_load_partition, _Part(
            name=manifest["name"], index=i, shelf_name=shelf_name, created_ns=created_ns,
            host_id=host_id, host_label=hosts[host_id]["label"], kind=manifest["kind"],
            series_name=getattr(meta, "name", None), host_parts=host_parts[host_id],
            range_index=range_index,
            columns=tuple(meta.columns) if manifest["kind"] == "DataFrame" else None))
        restrictions.append(hosts[host_id]["restriction"])
    layer = _read_layer(tasks, {"workers": _Restrictions(restrictions),
                                "allow_other_workers": False})
    graph = HighLevelGraph({layer_name: layer}, {layer_name: set()})
    return dd.core.new_dd_object(graph, layer_name, meta, manifest["divisions"])


_NO_DEFAULT = object()


def get_dataset(client, name, default=_NO_DEFAULT, check=True):
    """The collection published as `name`, rebuilt from the manifests in the
    hosts' shelves (so it works after the scheduler restarted, or on a new
    cluster over the same hosts). check: first ask each host's shelf for its
    partitions. Raises KeyError if no host has it (unless default is given),
    MissingPartitionsError naming the host and partitions that are gone or
    whose host has no worker or no running shelfd."""
    hosts = _hosts(client, require_all=False)
    manifest = _manifests(client, hosts, name).get(name)
    if manifest is None:
        if default is not _NO_DEFAULT:
            return default
        raise KeyError(f"Dataset '{name}' not found")
    collection = _collection(manifest, hosts)
    if check:
        problems = []
        by_host = {}
        for i, (host_id, shelf_name, created_ns, *_rest) in enumerate(manifest["partitions"]):
            by_host.setdefault(host_id, {})[shelf_name] = (i, created_ns)
        for host_id, wanted in by_host.items():
            result = _run_on_hosts(client, {host_id: hosts[host_id]}, _h_present, list(wanted))
            result = result[host_id]
            label = hosts[host_id]["label"]
            if isinstance(result, Exception):
                problems.append(f"host {label}: its shelfd is not running ({result}); partitions "
                                f"{sorted(i for i, _ in wanted.values())} of it are unavailable")
                continue
            gone = sorted(i for n, (i, c) in wanted.items() if result.get(n) != c)
            if gone:
                problems.append(f"host {label}: its shelf no longer holds partitions {gone}")
        if problems:
            raise MissingPartitionsError(f"dataset {name!r}: " + "; ".join(problems))
    return collection


def list_datasets(client):
    """The names of the datasets whose manifest some host's shelf holds, sorted."""
    return sorted(_manifests(client, _hosts(client, require_all=False)))


def unpublish(client, name):
    """Removes `name` from every host's shelf (its memory comes back once no
    task still reads it) and from Dask's published datasets. Raises KeyError
    if neither knows it."""
    hosts = _hosts(client, require_all=False)
    manifests = _manifests(client, hosts, name)
    in_dask = name in client.list_datasets()
    if name not in manifests and not in_dask:
        raise KeyError(f"Dataset '{name}' not found")
    if in_dask:
        client.unpublish_dataset(name)
    ids = {m["publish_id"] for m in manifests.values()}
    for publish_id in ids:
        _run_on_hosts(client, hosts, _h_remove_prefix, f"{_PART}{publish_id}/")
    _run_on_hosts(client, hosts, _h_remove_prefix, _MANIFEST + name)


def status(client):
    """Each host's shelf status and their sum: {"hosts": {label: status or
    {"error": ...}}, "memory_limit", "used_bytes", "free_bytes"}."""
    hosts = _hosts(client, require_all=False)
    per_host = {}
    total = {"memory_limit": 0, "used_bytes": 0, "free_bytes": 0}
    for host_id, result in _run_on_hosts(client, hosts, _h_status).items():
        label = hosts[host_id]["label"]
        if isinstance(result, Exception):
            per_host[label] = {"error": f"{type(result).__name__}: {result}"}
            continue
        per_host[label] = result
        for key in total:
            total[key] += result[key]
    return {"hosts": per_host, **total}
