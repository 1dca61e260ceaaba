"""shelf: Dask's published datasets on one machine, in shared memory.

    import shelf
    client = shelf.Client()                       # $SHELF_SOCKET, or the default socket
    client.publish_dataset(negative_accounts=df2) # written once, into shared memory
    client.list_datasets()                        # ['negative_accounts'], from any process
    ds = client.get_dataset('negative_accounts')  # a shelf.Dataset: a lease, no copy
    ds.head()                                     # a pandas DataFrame
    ds['balance']                                 # a read-only numpy view of shared memory
    client.datasets['x'] = df                     # the dict-like view

The method names and their errors are Dask's (distributed.Client): a name
that exists raises KeyError(... exists ...), a missing one KeyError(... not
found ...), too much data MemoryError, no daemon ConnectionError. A
published dataset stays after every client has gone, until someone
unpublishes it.
"""

import collections.abc
import functools
import os
import time

import numpy as np

from . import _convert, _shelf
from ._shelf import CorruptionError

__all__ = ["Client", "Dataset", "Datasets", "Events", "CorruptionError"]

_NO_DEFAULT = object()


class Client:
    """A connection to the local shelfd.

    `socket` is the daemon's socket path; by default $SHELF_SOCKET, else the
    per-user default that `shelfd` uses too. Not thread-safe: use one per
    thread (or share one under a lock). Datasets and arrays taken from a
    client stay valid after it is closed.
    """

    def __init__(self, socket=None):
        self._client = _shelf._Client(os.fspath(socket) if socket is not None else "")

    @property
    def socket(self):
        """The path of the daemon's socket."""
        return self._client.socket_path

    def publish_dataset(self, *args, override=False, pin=False, **kwargs):
        """Publishes datasets, all or nothing: publish_dataset(name=value, ...).

        Positional values are published under their `.name` (as Dask does),
        or a single one under name=: publish_dataset(df, name="ds").
        Unpickling runs code the publisher chose: publish and read only
        among people you trust (all the users of one shelfd are).
        A value can be a pandas DataFrame (one partition), a list of
        DataFrames (one partition each), a persisted Dask DataFrame
        (client.persist(df), or dd.from_pandas: its partitions are copied in
        turn), a dict of 1-D numpy arrays (the columns), bytes or a
        memoryview (raw bytes), or any other picklable object (pickle
        protocol 5: the arrays inside it go to shared memory). As in Dask,
        an un-persisted Dask collection (tasks still to run) is published as
        a view: its graph, pickled, which whoever gets it computes from
        scratch; it takes no shared memory beyond the pickle, and the shelf
        datasets its graph reads (to_dask()) cannot be unpublished without
        cascade=True (docs/views.md). Views are published after the data,
        each on its own.
        pin=True keeps them in memory: shelfd never spills them to disk
        (shelfd --spill-dir) until unpin_dataset(name).

        Raises KeyError if a name exists and not override, TypeError for a
        column shelf cannot store, a name that is not a str or an override
        or pin that is not a bool, ValueError for a dict of 1-D arrays of several
        lengths or a string UTF-8 cannot hold (naming its column and row),
        MemoryError over the daemon's memory limit. Nothing is published
        then, and what was written gives its memory back at once.
        """
        items = {}
        if "name" in kwargs:
            # Dask's other spelling, and Dask's rule: name= goes with one
            # positional value, publish_dataset(df, name="ds"); so a dataset
            # called "name" is published through client.datasets["name"].
            name = kwargs.pop("name")
            if len(args) != 1 or not isinstance(name, str):
                raise ValueError("if name is given, expecting call signature like "
                                 "publish_dataset(df, name='ds')")
            kwargs[name] = args[0]
            args = ()
        for value in args:
            name = getattr(value, "name", None)
            if not isinstance(name, str):
                raise TypeError(
                    f"publish_dataset: a {type(value).__name__} has no .name to publish it "
                    "under; pass it as a keyword: publish_dataset(my_name=value)")
            if name in items:
                raise ValueError(f"publish_dataset: the name {name!r} is given twice")
            items[name] = value
        for name, value in kwargs.items():
            if name in items:
                raise ValueError(f"publish_dataset: the name {name!r} is given twice")
            items[name] = value
        if not items:
            raise TypeError("publish_dataset: nothing to publish; use publish_dataset(name=value)")
        self._publish(items, override, pin)

    def _publish(self, items, override, pin=False, function="publish_dataset"):
        # Names and flags are checked before any memory is taken.
        _check_flag(override, "override", "replaces datasets of the same names", function)
        _check_flag(pin, "pin", "keeps them in memory, never spilled", function)
        for name in items:
            _check_name(name, function)
        # Every table is written (and checked) before anything is published;
        # on any error the tables written so far give their memory back at
        # once (not when the garbage collector finds them).
        # An un-persisted Dask collection is published as a view of its graph,
        # as Dask does (docs/views.md); after the data, each on its own.
        views = {name: value for name, value in items.items() if _convert.is_unpersisted(value)}
        tables = []
        try:
            for name, value in items.items():
                if name not in views:
                    tables.append((name, _convert.build_table(self._client, value)))
            if tables:
                self._client.publish(tables, override, pin)
        except BaseException:
            for _, table in tables:
                table.abort()
            raise
        for name, value in views.items():
            graph, bases = _convert.graph_view(value)
            self._client.publish_graph_view(name, graph, bases, override, pin)

    def persist(self, collection):
        """collection.persist() on the local Dask scheduler, so that code
        written for distributed.Client runs unchanged: as in Dask,
        publish_dataset of the result stores its data, while an un-persisted
        collection is published as a view of its graph."""
        return collection.persist()

    def list_datasets(self):
        """The names of the published datasets, sorted."""
        return self._client.names()

    def get_dataset(self, name, default=_NO_DEFAULT):
        """The dataset published as `name`.

        A table comes back as a shelf.Dataset (a view's computed here from
        its base); raw bytes as a read-only memoryview (a list of them for
        several partitions); any other object unpickled, its arrays viewing
        shared memory; a view of a Dask graph as the Dask collection, to be
        computed from scratch. Raises KeyError if there is no such dataset,
        unless `default` is given.
        """
        _check_name(name, "get_dataset")
        try:
            handle = self._client.get(name)
        except KeyError:
            if default is _NO_DEFAULT:
                raise
            return default
        if handle.is_bytes:
            view = handle.view
            if view is not None and view["kind"] == "graph":
                return _convert.load_graph(handle)
            return _convert.load_object(handle)
        return Dataset(handle, self.socket)

    def publish_filtered(self, name, base, where="", columns=(), limit=None, override=False,
                         pin=False):
        """Publishes the rows of the published dataset `base` where `where`
        holds (the filter language of docs/filter.md, e.g. "balance < 0";
        empty: every row), the columns `columns` (default all), at most
        `limit` rows, as the new dataset `name` (pinned with pin=True).
        `base` is read in place and the kept rows are written once into
        shared memory.

        Errors: KeyError (no `base`, or `name` taken without override),
        ValueError (a bad expression or column list, with its position),
        MemoryError (over the daemon's limit); on any error nothing is
        published.
        """
        _check_name(name, "publish_filtered")
        _check_name(base, "publish_filtered")
        _check_flag(override, "override", "replaces a dataset of the same name",
                    "publish_filtered")
        _check_flag(pin, "pin", "keeps it in memory, never spilled", "publish_filtered")
        self._client.publish_filtered(name, base, where, list(columns), limit, override, pin)

    def publish_view(self, name, base, where="", columns=(), limit=None, override=False):
        """Publishes a view: `name` holds only the definition (the rows of
        `base` where `where` holds, the columns `columns`, at most `limit`
        rows), which costs no shared memory beyond a page, and every
        get_dataset of it evaluates against `base` as published then
        (docs/views.md). `base` may be a view too.

        Errors: KeyError (no `base`, or `name` taken without override),
        ValueError (a bad expression or column list, with its position; a
        view that would read itself), MemoryError.
        """
        _check_name(name, "publish_view")
        _check_name(base, "publish_view")
        _check_flag(override, "override", "replaces a dataset of the same name", "publish_view")
        self._client.publish_view(name, base, where, list(columns), limit, override)

    def persist_view(self, view, name, override=False, pin=False):
        """Materialises the view `view`: evaluates it and publishes its rows
        as the dataset `name` (`shelf persist`). ValueError when `view` is a
        dataset; otherwise the errors of publish_filtered."""
        _check_name(view, "persist_view")
        _check_name(name, "persist_view")
        _check_flag(override, "override", "replaces a dataset of the same name", "persist_view")
        _check_flag(pin, "pin", "keeps it in memory, never spilled", "persist_view")
        handle = self._client.get(view)
        if handle.view is not None and handle.view["kind"] == "graph":  # computed here
            collection = _convert.load_graph(handle)
            self._publish({name: self.persist(collection)}, override, pin, "persist_view")
            return
        self._client.persist_view(view, name, override, pin)

    def wait_for_dataset(self, name, timeout=None):
        """Waits until `name` is published, then returns what get_dataset
        returns. The daemon says when (no polling); `timeout` is in seconds
        (None: without bound). Raises TimeoutError naming the dataset when
        the timeout passes first, ConnectionError when shelfd stops or
        restarts meanwhile. The GIL is released while waiting. In the main
        thread, Ctrl-C ends the wait with KeyboardInterrupt (and so does any
        signal handler that raises, with its exception).
        """
        _check_name(name, "wait_for_dataset")
        if timeout is not None and not timeout >= 0:
            raise ValueError("wait_for_dataset: timeout must be a number of seconds >= 0, or None")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._client.wait([name], left)
            try:
                return self.get_dataset(name)
            except KeyError:
                continue  # unpublished again before we got it: wait again

    def wait_for_datasets(self, names, timeout=None):
        """Waits until every name of `names` is published (see
        wait_for_dataset); returns None. TimeoutError names the missing ones.
        """
        names = list(names)
        for name in names:
            _check_name(name, "wait_for_datasets")
        self._client.wait(names, timeout)

    def events(self, timeout=None, last_generation=0):
        """Publishes, overrides and unpublishes, as they happen: an iterator
        of dicts, one per event, with the keys and values of `shelf events
        --json` (kind, time, time_ns and the keys of its kind; see Events).

        The daemon sends them (no polling) on a connection of its own, opened
        by this call: the events from now on. Each wait for the next event
        lasts at most `timeout` seconds (None: without bound); when it passes,
        the iteration ends. The GIL is released while waiting; in the main
        thread Ctrl-C raises KeyboardInterrupt. ConnectionError when shelfd
        stops or dies; a new Client's events(last_generation=it.generation)
        then starts with a "restart" event and the "quarantine" events of what
        the new daemon found damaged.
        """
        return Events(self._client, timeout, last_generation)

    def unpublish_dataset(self, name, cascade=False):
        """Removes `name`; readers holding it keep reading until they let go.

        A dataset that views read (publish_view) is removed only with
        cascade=True, which removes those views too; otherwise ValueError
        names them.
        """
        _check_name(name, "unpublish_dataset")
        _check_flag(cascade, "cascade", "also removes the views that read it",
                    "unpublish_dataset")
        self._client.unpublish(name, cascade)

    def pin_dataset(self, name):
        """Keeps `name` in memory: shelfd never spills it to disk (shelfd
        --spill-dir), also after a restart, until unpin_dataset(name). A
        spilled dataset is read back first, as get_dataset does. Any client
        may pin or unpin. Raises KeyError if there is no such dataset."""
        _check_name(name, "pin_dataset")
        self._client.pin(name, True)

    def unpin_dataset(self, name):
        """Lets shelfd spill `name` again (see pin_dataset)."""
        _check_name(name, "unpin_dataset")
        self._client.pin(name, False)

    @property
    def datasets(self):
        """The published datasets as a dict-like, shared by every client."""
        return Datasets(self)

    def status(self):
        """The daemon's memory and datasets, as a dict (what `shelf status` shows).

        Keys: socket_path, segment_name, shm_dir (the segment's directory),
        daemon_pid, generation (bumped each time a shelfd attaches the
        segment), started_ns, memory_limit, used_bytes, free_bytes,
        index_bytes, unsealed_bytes, pending_free_bytes, resident_bytes,
        page_bytes (4096, or 2 MiB on a huge-page tmpfs), huge_page_bytes
        (what of used_bytes can be in huge pages), num_connections, num_leases,
        datasets (a dict per published dataset, as in `shelf list`),
        quarantined (name, memory_bytes and reason of each dataset found
        damaged at a restart: kept, never served, until unpublished),
        unpublished (name, memory_bytes, leases, restart_hold of each dataset
        unpublished or replaced but still read: pending_free_bytes) and
        clients: who holds what, a dict per process using shelfd (all its
        connections together), by pid, as in `shelf status --clients --json`
        (pid, uid, command, client_name, connected_ns, connections, leases, datasets_held,
        held_bytes, unpublished_bytes — the unpublished datasets only it
        holds, which come back when it lets go or exits —, writing_bytes, and
        held: name, published, memory_bytes, leases, held_alone per dataset),
        and spill: dir, above_bytes, datasets and file_bytes of shelfd
        --spill-dir (empty and 0 without). Each dataset's dict says whether
        it is spilled and whether it is pinned.
        """
        status = self._client.status()
        # The keys of `shelf status --json` too, with the same values, so
        # that code written against either reads both.
        status.update(socket=status["socket_path"], segment=status["segment_name"],
                      connections=status["num_connections"], leases=status["num_leases"],
                      num_datasets=len(status["datasets"]))
        return status

    def close(self):
        """Closes the connection once no dataset taken from it is in use."""
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        try:
            return f"<shelf.Client socket={self.socket!r}>"
        except ValueError:
            return "<shelf.Client closed>"


def _utc_text(ns):
    """"2026-11-25T16:40:39.5Z": the time as `shelf events` prints it."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += f".{fraction:09d}".rstrip("0")
    return text + "Z"


# The keys of each kind of event after kind, time and time_ns: those of
# `shelf events --json` (tools/shelf.cc, event_json), in its order.
_EVENT_KEYS = {
    "publish": ("name", "pid", "uid", "rows", "partitions", "memory_bytes"),
    "override": ("name", "pid", "uid", "rows", "partitions", "memory_bytes"),
    "unpublish": ("name", "pid", "uid", "rows", "partitions", "memory_bytes"),
    "quarantine": ("name", "memory_bytes", "reason"),
    "restart": ("generation", "previous_generation"),
    "dropped": ("dropped",),
}


class Events:
    """The iterator Client.events() returns: one dict per event.

    Keys: kind ("publish", "override", "unpublish", "quarantine", "restart"
    or "dropped"), time (UTC text), time_ns, then by kind: name, pid, uid,
    rows, partitions, memory_bytes (publish, override, and unpublish: of what
    was removed); name, memory_bytes, reason (quarantine); generation,
    previous_generation (restart); dropped (how many events this iterator
    missed for reading too slowly). Use it from one thread at a time; close()
    (or a with block) closes its connection.
    """

    def __init__(self, client, timeout=None, last_generation=0):
        if timeout is not None and not timeout >= 0:
            raise ValueError("events: timeout must be a number of seconds >= 0, or None")
        self._timeout = timeout
        self._stream = client.subscribe(last_generation)

    @property
    def generation(self):
        """The generation of the daemon these events come from."""
        return self._stream.generation

    def __iter__(self):
        return self

    def __next__(self):
        raw = self._stream.next(self._timeout)
        if raw is None:
            raise StopIteration
        event = {"kind": raw["kind"], "time": _utc_text(raw["time_ns"]), "time_ns": raw["time_ns"]}
        for key in _EVENT_KEYS[raw["kind"]]:
            event[key] = raw[key]
        return event

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_flag(value, flag, meaning, function):
    """TypeError naming the flag when it is not a bool: publish_dataset(pin=df)
    most likely meant a dataset named "pin"."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{function}: {flag} is a flag ({flag}=True {meaning}), not a "
            f"{type(value).__name__}; to publish a dataset named '{flag}' use "
            f"client.datasets['{flag}'] = value")


def _check_name(name, function):
    """TypeError naming the argument when a dataset name is not a str."""
    if not isinstance(name, str):
        raise TypeError(f"{function}: a dataset name must be a str, not "
                        f"{type(name).__name__} ({name!r})")


class Datasets(collections.abc.MutableMapping):
    """client.datasets: get, set, del, iter, len and `in` over published datasets.

    Setting a name that exists raises KeyError, as Dask's mapping does; use
    client.publish_dataset(name=value, override=True) to replace.
    """

    def __init__(self, client):
        self._client = client

    def __getitem__(self, name):
        if not isinstance(name, str):
            raise KeyError(name)  # dataset names are str
        return self._client.get_dataset(name)

    def __setitem__(self, name, value):
        self._client._publish({name: value}, override=False, function="datasets[name] = value")

    def __delitem__(self, name):
        if not isinstance(name, str):
            raise KeyError(name)  # dataset names are str
        self._client.unpublish_dataset(name)

    def __iter__(self):
        return iter(self._client.list_datasets())

    def __len__(self):
        return self._client._client.count()

    def __contains__(self, name):
        return isinstance(name, str) and self._client._client.contains(name)

    def __repr__(self):
        return f"<shelf.Datasets {self._client.list_datasets()!r}>"


class Dataset:
    """A published table, read-only and zero-copy, from client.get_dataset().

    It holds a lease: the daemon keeps its memory, even after an unpublish,
    while this object or any array taken from it lives. Numbers, bools and
    timestamps come out as read-only numpy views on shared memory; strings
    are turned into Python objects only when asked for.
    """

    def __init__(self, handle, socket, nullable=None):
        # Only the handle at get: the schema, the stored index and the null
        # counts are worked out on first use (get_dataset() is on the hot
        # path of readers that only take a column, or only a lease).
        self._handle = handle
        self._socket = socket
        if nullable is not None:
            self._nullable = nullable

    @functools.cached_property
    def _schema(self):
        return self._handle.schema

    @functools.cached_property
    def _index(self):
        return next((i for i, (name, _) in enumerate(self._schema)
                     if _convert.is_index_column(name)), None)

    @functools.cached_property
    def _nullable(self):
        # Integer and bool columns with nulls anywhere read as pandas'
        # nullable dtypes (Int64, boolean), the same in every partition.
        # to_dask() tasks pass it in: working it out reads every partition.
        handle = self._handle
        return [type_ not in ("float32", "float64", "timestamp", "string") and any(
                    handle.null_count(p, c) > 0 for p in range(handle.num_partitions))
                for c, (_, type_) in enumerate(self._schema)]

    @property
    def name(self):
        return self._handle.name

    @property
    def view(self):
        """For a view (publish_view), its definition: a dict of base, where,
        columns and limit; None for a dataset. A view's rows are computed
        in this process from its base, a partition when first used."""
        return self._handle.view

    @property
    def columns(self):
        """The column names (the stored index excluded)."""
        return [name for c, (name, _) in enumerate(self._schema) if c != self._index]

    @property
    def dtypes(self):
        """The dtype of each column, as a pandas Series (DataFrame.dtypes)."""
        import pandas as pd

        return pd.Series({name: self._dtype(c) for c, (name, _) in enumerate(self._schema)
                          if c != self._index}, dtype=object)

    @property
    def npartitions(self):
        return self._handle.num_partitions

    @property
    def nbytes(self):
        """Bytes of data in shared memory."""
        return self._handle.data_bytes

    def __len__(self):
        return self._handle.num_rows

    def column(self, name, partition=None):
        """The column `name` as a read-only numpy array.

        A number, bool or timestamp column of one partition (or of the given
        `partition`) is a view on shared memory, no copy; null rows hold
        whatever the publisher wrote there (0, NaN or NaT). Over several
        partitions the views are concatenated, which copies. A string column
        is an object array of str (and None), always a copy.
        """
        c = self._column_index(name)
        type_ = self._schema[c][1]
        parts = range(self.npartitions) if partition is None else [self._partition_index(partition)]
        arrays = []
        for p in parts:
            if type_ == "string":
                arrays.append(self._handle.strings(p, c, self._handle.partition_rows(p)))
            else:
                arrays.append(self._handle.values(p, c))
        if len(arrays) == 1:
            return arrays[0]
        if not arrays:
            return np.empty(0, dtype=_convert.numpy_dtype(type_))
        joined = np.concatenate(arrays)
        joined.flags.writeable = False
        return joined

    def __getitem__(self, name):
        return self.column(name)

    def __iter__(self):
        """The column names, as iterating a DataFrame gives."""
        return iter(self.columns)

    def __contains__(self, name):
        return name in self.columns

    def partition(self, i):
        """Partition `i` as a pandas DataFrame (numbers are views, not copies)."""
        return self._frame(self._partition_index(i), None)

    def head(self, n=5):
        """The first `n` rows as a pandas DataFrame."""
        import pandas as pd

        if n < 0:  # all but the last -n rows, as pandas does
            return self.to_pandas().head(n)
        frames = []
        left = n
        for p in range(self.npartitions):
            if left <= 0:
                break
            frame = self._frame(p, left)
            frames.append(frame)
            left -= len(frame)
        if not frames:
            return self._frame(None, 0)
        return frames[0] if len(frames) == 1 else pd.concat(frames)

    def to_pandas(self):
        """The whole dataset as one pandas DataFrame.

        One partition: its numbers are views on shared memory (the frame is
        read-only there). Several: concatenated, a copy.
        """
        import pandas as pd

        if self.npartitions == 1:
            return self._frame(0, None)
        if self.npartitions == 0:
            return self._frame(None, 0)
        return pd.concat([self._frame(p, None) for p in range(self.npartitions)])

    def to_dask(self):
        """A dask.dataframe whose partitions load from shelf in whatever
        local process computes them (each takes its own lease)."""
        import dask.dataframe as dd

        meta = self._frame(None, 0)
        return dd.from_map(_load_partition, list(range(self.npartitions)), socket=self._socket,
                           name=self.name, created_ns=self._handle.created_ns,
                           nullable=self._nullable, meta=meta, label=f"shelf-{self.name}",
                           enforce_metadata=False)

    # Arrow's PyCapsule interface: pyarrow.table(ds), polars.from_arrow(ds),
    # DuckDB and pandas >= 2.2 read the dataset without copying its buffers
    # (bools are bit-packed per export, unless requested_schema asks for
    # uint8). Every column is exported, a stored index too. The export holds
    # the lease until the consumer releases the last array. No
    # __arrow_c_array__: one array of several partitions would be a copy, and
    # consumers that prefer it would then fail where the stream works.
    def __arrow_c_schema__(self):
        """An "arrow_schema" capsule: a struct of the dataset's columns."""
        return self._handle.arrow_c_schema()

    def __arrow_c_stream__(self, requested_schema=None):
        """An "arrow_array_stream" capsule: one struct array per partition."""
        return self._handle.arrow_c_stream(requested_schema)

    def verify(self):
        """Recomputes every buffer's checksum; raises shelf.CorruptionError on a mismatch."""
        self._handle.verify()

    def prefault(self, threads=2):
        """Maps every page now (worth it before one scan of most of a large dataset)."""
        self._handle.prefault(threads)

    def __repr__(self):
        return (f"<shelf.Dataset {self.name!r}: {len(self)} rows x {len(self.columns)} columns, "
                f"{self.npartitions} partitions>")

    def _column_index(self, name):
        for c, (column, _) in enumerate(self._schema):
            if column == name and c != self._index:
                return c
        raise KeyError(f"dataset {self.name!r} has no column {name!r}; columns: {self.columns}")

    def _partition_index(self, i):
        if not -self.npartitions <= i < self.npartitions:
            raise IndexError(f"partition {i} out of range: dataset {self.name!r} has "
                             f"{self.npartitions}")
        return i % self.npartitions

    def _dtype(self, c):
        type_ = self._schema[c][1]
        return _convert.nullable_dtype(type_) if self._nullable[c] else _convert.numpy_dtype(type_)

    def _frame(self, p, rows):
        """Partition `p` (its first `rows` rows, or all) as a DataFrame; p None: empty."""
        import pandas as pd

        data = {}
        index = None
        for c, (name, type_) in enumerate(self._schema):
            if p is None:
                column = pd.array([], dtype=self._dtype(c)) if self._nullable[c] else \
                    np.empty(0, dtype=_convert.numpy_dtype(type_))
            else:
                count = self._handle.partition_rows(p) if rows is None else rows
                column = _convert.column_as_pandas(self._handle, p, c, type_, count,
                                                   self._nullable[c])
            if c == self._index:
                index_name = name[len(_convert.INDEX_COLUMN) + 1:] or None
                index = pd.Index(column, name=index_name)
            else:
                data[name] = column
        return pd.DataFrame(data, index=index, copy=False)


# One client per daemon socket in each process that loads Dask partitions.
# A forked worker must not use its parent's (libclient refuses it): forget
# them in the child.
_loader_clients = {}
os.register_at_fork(after_in_child=_loader_clients.clear)


def _load_partition(i, socket, name, created_ns, nullable):
    """Partition `i` of dataset `name` as a pandas DataFrame (a to_dask() task)."""
    handle = None
    client = _loader_clients.get(socket)
    if client is not None:
        try:
            handle = client._client.get(name)
        except ConnectionError:
            pass  # the daemon restarted since: connect again below
    if handle is None:
        client = _loader_clients[socket] = Client(socket)
        handle = client._client.get(name)
    if handle.created_ns != created_ns:
        raise RuntimeError(f"dataset {name!r} was republished after to_dask() was called; "
                           "call get_dataset() and to_dask() again")
    return Dataset(handle, socket, nullable).partition(i)

