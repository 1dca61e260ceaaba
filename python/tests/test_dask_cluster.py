"""shelf.dask under a real Dask cluster of two "hosts" on one machine.

Each host is a loopback address with its own shelfd and its own `dask
worker` processes (see dask_cluster.py); the scheduler is on 127.0.0.1.
Nothing is mocked: publish computes on the workers, each partition is
written by its worker into its own host's shelf, and the tests look at each
host's shelf with the plain shelf client.
"""

import os
import re

import pandas as pd
import pytest

import shelf
import shelf.dask
import dask_cluster
from conftest import eventually

# Under the ASan build the Dask processes inherit LD_PRELOAD of libasan, so
# the scheduler and every worker run the ASan-instrumented extension too
# (about twice as slow here; well within the time limit).

NPARTS = 24
ROWS = 2000


@pytest.fixture(scope="module")
def bed():
    b = dask_cluster.TestBed(hosts=((2, "64MiB"), (1, "64MiB")))
    with b.client() as c:
        shelf.dask.register(c)  # each shelf gets its host id now, not in a test's figures
        assert all(i["host_id"] for i in c.run(shelf.dask._worker_info).values())
    yield b
    b.stop()
    for host in b.hosts:
        assert not os.path.exists(f"/dev/shm/{host.segment}")


@pytest.fixture
def client(bed):
    with bed.client() as c:
        yield c


def host_datasets(host):
    with shelf.Client(host.socket) as c:
        return c.list_datasets()


def host_used(host):
    with shelf.Client(host.socket) as c:
        return c.status()["used_bytes"]


def parts_on(host):
    return {n: int(n.rsplit("/", 1)[1]) for n in host_datasets(host) if n.startswith("dask-part/")}


@pytest.fixture
def published(bed, client):
    """A 24-partition frame published as "accounts"; unpublished afterwards."""
    baseline = {h.name: host_used(h) for h in bed.hosts if h.daemon.pid}
    shelf.dask.publish(client, accounts=dask_cluster.frame(NPARTS, ROWS))
    yield "accounts"
    try:
        shelf.dask.unpublish(client, "accounts")
    except KeyError:
        pass
    for host in bed.hosts:
        assert eventually(lambda: host_used(host) == baseline[host.name]), host.name


def test_each_partition_lands_in_the_shelf_of_the_host_that_computed_it(bed, client, published):
    expected = dask_cluster.source(NPARTS, ROWS)
    seen = {}
    for host in bed.hosts:
        parts = parts_on(host)
        assert parts, f"{host.name} holds no partition"
        with shelf.Client(host.socket) as c:
            for name, i in parts.items():
                frame = c.get_dataset(name).to_pandas()
                assert set(frame["computed_on"]) == {host.ip}, (name, host.name)
                # Stored with the default index: its RangeIndex is in the manifest.
                want = expected.iloc[i * ROWS:(i + 1) * ROWS].reset_index(drop=True)
                # Stored with each dtype's columns together (the reader restores the order).
                pd.testing.assert_frame_equal(frame, want.assign(computed_on=host.ip),
                                              check_like=True)
                seen[i] = host.name
            assert "dask-manifest/accounts" in c.list_datasets()
    assert sorted(seen) == list(range(NPARTS))  # each partition on exactly one host


def test_another_client_computes_the_same_as_pandas(bed, published):
    expected = dask_cluster.source(NPARTS, ROWS)
    with bed.client() as other:  # Dask's own get_dataset, as with Dask alone
        ddf = other.get_dataset("accounts")
        assert ddf.npartitions == NPARTS
        assert list(ddf.columns) == list(expected.columns)
        sums = other.compute(ddf.groupby("k").x.sum()).result().sort_index()
        pd.testing.assert_series_equal(sums, expected.groupby("k").x.sum())
        assert other.compute(ddf[ddf.x < 0.5].id.count()).result() == (expected.x < 0.5).sum()
        assert other.compute(ddf.s.value_counts()).result().to_dict() == \
            expected.s.value_counts().to_dict()
        back = other.compute(ddf.drop(columns="computed_on")).result()
        pd.testing.assert_frame_equal(back, expected.drop(columns="computed_on"))


def test_a_read_on_the_holding_host_views_its_segment_without_transfer(bed, client, published):
    ddf = client.get_dataset(published)
    client.run(dask_cluster.clear_transfers)
    held = client.persist(ddf)
    from distributed import wait
    with client.as_current():
        wait(held)
    try:
        where = client.run(dask_cluster.held_frames)
        assert client.run(dask_cluster.transfers) == {w: (0, 0) for w in where}
        keys = set()
        for worker, frames in where.items():
            segment = f"/dev/shm/{bed.host_of(worker).segment}"
            for key, columns in frames.items():
                assert columns and all(w is not None and w[0] == segment
                                       for w in columns.values()), (worker, key, columns)
                keys.add(key)
        assert len(keys) == NPARTS
    finally:
        del held


def test_two_workers_on_one_host_read_one_copy(bed, client, published):
    ddf = client.get_dataset(published)
    host = bed.hosts[0]
    workers = [a for n, a in bed.addresses(client).items() if n.startswith(host.name)]
    assert len(workers) == 2
    i = min(parts_on(host).values())
    task = dict(ddf.__dask_graph__())[(ddf._name, i)]
    used = host_used(host)
    where = client.run(dask_cluster.run_task, task, workers=workers)
    a, b = (where[w] for w in workers)
    assert a == b  # the same file and the same offsets: one copy of each column
    assert {w[0] for w in a.values()} == {f"/dev/shm/{host.segment}"}
    assert host_used(host) == used


def test_pandas_operations_keep_a_read_partition_in_its_segment(bed, client, published):
    # pandas merges a frame's blocks of one dtype the first time an
    # operation needs it, copying them in place of the views: a read
    # partition has one block per dtype from the start.
    ddf = client.get_dataset(published)
    host = bed.hosts[1]
    i = min(parts_on(host).values())
    task = dict(ddf.__dask_graph__())[(ddf._name, i)]
    worker = next(a for n, a in bed.addresses(client).items() if n.startswith(host.name))
    where = client.run(dask_cluster.run_task_then_select, task, workers=[worker])[worker]
    assert set(where) == {"id", "k", "x"}
    assert {w[0] if w else None for w in where.values()} == {f"/dev/shm/{host.segment}"}


def test_kill_9_of_a_worker_and_its_restart_lose_nothing(bed, client, published):
    host = bed.hosts[0]
    name = f"{host.name}-w0"
    host.kill_worker(name)
    host.start_worker(name)
    bed.wait_for_workers()
    expected = dask_cluster.source(NPARTS, ROWS)
    ddf = client.get_dataset(published)
    assert client.compute(ddf.x.sum()).result() == pytest.approx(expected.x.sum())
    assert client.compute(ddf.id.count()).result() == len(expected)
    assert len(parts_on(bed.hosts[0])) + len(parts_on(bed.hosts[1])) == NPARTS


def test_after_kill_9_of_the_scheduler_get_dataset_brings_the_dataset_back(bed):
    expected = dask_cluster.source(NPARTS, ROWS)
    with bed.client() as first:  # closed before the kill: no client waits on a dead scheduler
        shelf.dask.publish(first, again=dask_cluster.frame(NPARTS, ROWS))
    bed.kill_scheduler()
    bed.stop_dask()  # its workers too: a new cluster over the same hosts
    bed.start_dask()
    with bed.client() as fresh:
        assert list(fresh.list_datasets()) == []  # Dask alone has lost it
        assert shelf.dask.list_datasets(fresh) == ["again"]
        ddf = shelf.dask.get_dataset(fresh, "again")
        assert ddf.npartitions == NPARTS
        back = fresh.compute(ddf).result()
        pd.testing.assert_frame_equal(back.drop(columns="computed_on"),
                                      expected.drop(columns="computed_on"))
        fresh.publish_dataset(again=ddf)  # and Dask's publish works with it again
        with bed.client() as other:
            assert other.compute(other.get_dataset("again").id.count()).result() == len(expected)
        shelf.dask.unpublish(fresh, "again")
        assert list(fresh.list_datasets()) == []
        assert all(host_datasets(h) == ["dask-host"] for h in bed.hosts)


def test_unpublish_gives_the_memory_back_on_every_host(bed, client):
    before = {h.name: host_used(h) for h in bed.hosts}
    shelf.dask.publish(client, tmp=dask_cluster.frame(NPARTS, 1000))
    assert all(parts_on(h) and host_used(h) > before[h.name] for h in bed.hosts)
    assert "tmp" in client.list_datasets()
    shelf.dask.unpublish(client, "tmp")
    for host in bed.hosts:
        assert eventually(lambda: host_used(host) == before[host.name]), host.name
        assert host_datasets(host) == ["dask-host"]
    assert "tmp" not in client.list_datasets()
    assert shelf.dask.list_datasets(client) == []
    with pytest.raises(KeyError, match="not found"):
        shelf.dask.unpublish(client, "tmp")
    with pytest.raises(KeyError, match="not found"):
        shelf.dask.get_dataset(client, "tmp")
    assert shelf.dask.get_dataset(client, "tmp", default=None) is None


def test_a_killed_shelfd_fails_the_read_naming_its_host_and_partitions(bed, client, published):
    host = bed.hosts[1]
    missing = sorted(parts_on(host).values())
    ddf = client.get_dataset(published)
    os.kill(host.daemon.pid, 9)
    host.daemon._wait_until_gone()
    total = client.compute(ddf.x.sum())
    try:
        with pytest.raises(shelf.dask.MissingPartitionsError) as e:
            total.result()
        message = str(e.value)
        assert host.ip in message and host.socket in message and "not running" in message
        assert f"partitions {missing}" in message
        with pytest.raises(shelf.dask.MissingPartitionsError, match=re.escape(str(missing))):
            shelf.dask.get_dataset(client, published)
        # Publishing needs every host: nothing is written on the one that is up.
        other = bed.hosts[0]
        held = host_datasets(other)
        with pytest.raises(ConnectionError) as e:
            shelf.dask.publish(client, while_down=dask_cluster.frame(NPARTS, 10))
        assert host.socket in str(e.value) and host.ip in str(e.value)
        assert host_datasets(other) == held
        assert "while_down" not in client.list_datasets()
    finally:
        host.daemon._start()  # the segment outlived the kill: the data comes back
    expected = dask_cluster.source(NPARTS, ROWS).x.sum()
    # The collection built again has keys of its own: the old ones stay
    # erred in Dask for as long as anything refers to them.
    again = shelf.dask.get_dataset(client, published)
    assert client.compute(again.x.sum()).result() == pytest.approx(expected)


def test_a_partition_gone_from_its_shelf_fails_the_read_naming_host_and_partition(bed, client):
    shelf.dask.publish(client, gone=dask_cluster.frame(NPARTS, 100))
    try:
        ddf = client.get_dataset("gone")
        host = bed.hosts[0]
        name, i = min(parts_on(host).items(), key=lambda item: item[1])
        with shelf.Client(host.socket) as c:
            c.unpublish_dataset(name)  # as a host's operator might
        with pytest.raises(shelf.dask.MissingPartitionsError) as e:
            client.compute(ddf.id.count()).result()
        message = str(e.value)
        assert host.ip in message and host.socket in message
        assert "no longer holds it" in message and f"partitions [{i}]" in message
        with pytest.raises(shelf.dask.MissingPartitionsError,
                           match=re.escape(f"{host.ip}") + ".*" + re.escape(f"partitions [{i}]")):
            shelf.dask.get_dataset(client, "gone")
    finally:
        shelf.dask.unpublish(client, "gone")
    assert all(host_datasets(h) == ["dask-host"] for h in bed.hosts)


def test_publishing_over_one_hosts_limit_publishes_nothing_anywhere(bed, client):
    before = {h.name: host_used(h) for h in bed.hosts}
    big = dask_cluster.frame(16, 250_000)  # 16 x ~10 MiB of numbers: more than 2 x 64 MiB
    with pytest.raises(MemoryError) as e:
        shelf.dask.publish(client, big=big)
    message = str(e.value)
    assert "memory limit 67108864" in message
    assert any(h.ip in message and h.socket in message for h in bed.hosts)
    for host in bed.hosts:
        assert eventually(lambda: host_used(host) == before[host.name]), host.name
        assert host_datasets(host) == ["dask-host"]
    assert "big" not in client.list_datasets()
    assert shelf.dask.list_datasets(client) == []


def test_a_published_name_needs_override_and_override_replaces_it(bed, client, published):
    with pytest.raises(KeyError, match="already exists"):
        shelf.dask.publish(client, accounts=dask_cluster.frame(2, 10))
    old = {n for h in bed.hosts for n in parts_on(h)}
    shelf.dask.publish(client, accounts=dask_cluster.frame(3, 10), override=True)
    new = {n for h in bed.hosts for n in parts_on(h)}
    assert len(new) == 3 and not new & old  # the old partitions are gone from every host
    ddf = client.get_dataset("accounts")
    assert client.compute(ddf.id.count()).result() == 30
    assert client.compute(shelf.dask.get_dataset(client, "accounts").id.count()).result() == 30


def test_status_sums_the_hosts(bed, client, published):
    st = shelf.dask.status(client)
    assert len(st["hosts"]) == 2
    per_host = [s for s in st["hosts"].values()]
    assert st["used_bytes"] == sum(s["used_bytes"] for s in per_host)
    assert st["memory_limit"] == 2 * 64 * 2**20
    assert sorted(s["used_bytes"] for s in per_host) == sorted(host_used(h) for h in bed.hosts)


def test_series_come_back_as_series(bed, client):
    series = dask_cluster.frame(4, 100).x
    shelf.dask.publish(client, xs=series)
    try:
        back = client.get_dataset("xs")
        assert type(back).__name__ == "Series" and back.name == "x"
        pd.testing.assert_series_equal(client.compute(back).result(),
                                       dask_cluster.source(4, 100).x)
    finally:
        shelf.dask.unpublish(client, "xs")


def test_a_read_frame_has_one_block_per_dtype_viewing_the_segment(daemon):
    # No Dask processes: shelf.dask's frame building on a published
    # partition of every column type, same-dtype columns evenly spaced (id,
    # k, m) or not (a, b, c around strings of another size).
    import numpy as np

    rows = 1000
    ids = np.arange(rows, dtype="int64")
    frame = pd.DataFrame({
        "id": ids, "x": ids * 0.5, "k": ids % 7, "y": ids * 2.5, "m": ids * 3,
        "a": ids + 1, "s": np.array(["p", "qq"], dtype=object)[ids % 2], "b": ids + 2,
        "t": np.array(["a fairly long string"] * rows, dtype=object), "c": ids + 3,
        "i32": ids.astype("int32"), "f32": ids.astype("float32"), "u8": (ids % 256).astype("uint8"),
        "flag": ids % 3 == 0, "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(ids, "s"),
        "maybe": pd.array([None if i % 5 == 0 else i for i in range(rows)], dtype="Int64"),
        "nan": np.where(ids % 4 == 0, np.nan, ids * 1.0)})
    with shelf.Client(daemon.socket) as c:
        c.publish_dataset(part=shelf.dask._by_dtype(frame))  # as _store_partition stores it
        back = shelf.dask._consolidated(c.get_dataset("part").partition(0), frame.columns)
        segment = f"/dev/shm/{daemon.segment}"
        pd.testing.assert_frame_equal(back, frame)
        back[["id", "k"]].groupby("k").id.sum()  # pandas consolidates what is not
        back[["x", "y", "f32"]].sum()
        back[["a", "b", "c"]].sum()
        for name in ("id", "k", "m", "a", "b", "c", "x", "y", "i32", "f32", "u8", "flag", "when"):
            where = dask_cluster.where_is(back[name].to_numpy())
            assert where is not None and where[0] == segment, name
        pd.testing.assert_frame_equal(back, frame)  # the copied ones hold the same values
        with pytest.raises(ValueError, match="read-only"):
            back["id"].to_numpy()[0] = 1
        # Stored in the frame's own order, the int64 columns around strings
        # are not evenly spaced: still the right frame, consolidated by
        # pandas when needed (a copy).
        c.publish_dataset(as_given=frame)
        plain = shelf.dask._consolidated(c.get_dataset("as_given").partition(0), frame.columns)
        plain[["id", "k"]].sum()
        pd.testing.assert_frame_equal(plain, frame)
