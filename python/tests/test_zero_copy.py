"""Reads are views on the daemon's shared memory, and a view keeps its lease."""

import gc

import numpy as np
import pandas as pd
import pytest

from conftest import eventually


def segment_ranges(segment):
    """The address ranges of this process's mappings of /dev/shm/<segment>."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == f"/dev/shm/{segment}":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def in_segment(array, segment):
    address = array.__array_interface__["data"][0]
    end = address + array.nbytes
    return any(start <= address and end <= stop for start, stop in segment_ranges(segment))


def owner_chain(array):
    """array.base, array.base.base, ... (what keeps the memory alive)."""
    chain = []
    while array is not None:
        chain.append(array)
        array = getattr(array, "base", None)
    return chain


@pytest.mark.parametrize("dtype", ["int8", "int64", "uint32", "float32", "float64", "bool",
                                   "datetime64[ns]"])
def test_columns_are_read_only_views_into_the_segment(client, daemon, dtype):
    values = (np.arange(1000) % 7).astype(dtype)
    client.publish_dataset(t=pd.DataFrame({"v": values}))
    column = client.get_dataset("t")["v"]
    assert column.dtype == np.dtype(dtype)
    assert not column.flags.owndata
    assert not column.flags.writeable
    assert in_segment(column, daemon.segment)
    np.testing.assert_array_equal(column, values)
    with pytest.raises(ValueError, match="read-only"):
        column[0] = column[1]


def test_writing_through_a_forced_writeable_view_is_refused_by_the_kernel(daemon):
    # numpy refuses to make a view writeable when its base is not; the page
    # itself is PROT_READ as well, which a child process shows by dying.
    daemon.client().publish_dataset(t={"v": np.arange(10)})
    done = daemon.run("""
        import ctypes, shelf
        column = shelf.Client().get_dataset('t')['v']
        try:
            column.flags.writeable = True
            print('writeable', flush=True)
        except ValueError:
            print('refused', flush=True)  # flushed: the process dies next
        address = column.__array_interface__['data'][0]
        ctypes.c_int64.from_address(address).value = 1   # a raw store: faults
        print('wrote')
    """, check=False, env={"ASAN_OPTIONS": "detect_leaks=0:handle_segv=0"})  # let it die
    assert done.stdout.strip() == "refused"
    assert done.returncode == -11  # SIGSEGV


def test_dataframe_columns_are_views_too(client, daemon):
    client.publish_dataset(t=pd.DataFrame({"a": np.arange(100, dtype="int64"),
                                           "b": np.linspace(0, 1, 100)}))
    frame = client.get_dataset("t").to_pandas()
    for name in ("a", "b"):
        array = frame[name].to_numpy()
        assert in_segment(array, daemon.segment), name


def test_pickled_arrays_come_back_as_views(client, daemon):
    big = np.arange(100_000, dtype="float64")
    client.publish_dataset(obj={"weights": big, "label": "w"})
    back = client.get_dataset("obj")
    assert back["label"] == "w"
    assert in_segment(back["weights"], daemon.segment)
    assert not back["weights"].flags.writeable
    np.testing.assert_array_equal(back["weights"], big)


def leases(client, name):
    for d in client.status()["datasets"]:
        if d["name"] == name:
            return d["leases"]
    return None


def test_a_view_keeps_the_lease_after_unpublish_and_close(daemon):
    values = np.arange(1 << 20, dtype="int64")  # 8 MiB
    with daemon.client() as publisher:
        publisher.publish_dataset(big={"v": values})
    observer = daemon.client()
    used_published = observer.status()["used_bytes"]

    reader = daemon.client()
    dataset = reader.get_dataset("big")
    column = dataset["v"]
    assert leases(observer, "big") == 1
    reader.unpublish_dataset("big")
    reader.close()
    del dataset
    gc.collect()
    assert observer.list_datasets() == []
    # The memory stays (pending), and the bytes stay right.
    status = observer.status()
    assert status["num_leases"] == 1
    assert status["pending_free_bytes"] >= values.nbytes
    assert column.sum() == values.sum()
    assert any(isinstance(x, object) and type(x).__name__ == "_Dataset"
               for x in owner_chain(column))

    del column
    gc.collect()
    assert eventually(lambda: observer.status()["num_leases"] == 0)
    status = eventually(lambda: (lambda s: s if s["pending_free_bytes"] == 0 else None)(
        observer.status()))
    assert status is not None
    assert status["used_bytes"] < used_published - values.nbytes + 1


def test_a_slice_keeps_the_lease_too(daemon):
    daemon.client().publish_dataset(t={"v": np.arange(1000)})
    observer = daemon.client()
    reader = daemon.client()
    part = reader.get_dataset("t")["v"][10:20]
    reader.close()
    gc.collect()
    assert observer.status()["num_leases"] == 1
    assert part.tolist() == list(range(10, 20))
    del part
    gc.collect()
    assert eventually(lambda: observer.status()["num_leases"] == 0)


def test_a_forked_child_cannot_end_its_parents_lease(daemon):
    import os

    with daemon.client() as publisher:
        publisher.publish_dataset(v={"v": np.full(1 << 20, 7)})
    observer = daemon.client()
    reader = daemon.client()
    column = reader.get_dataset("v")["v"]
    pid = os.fork()
    if pid == 0:  # the child lets go of its copy of the view and the client
        code = 0
        try:
            del column
            gc.collect()
            try:
                reader.list_datasets()
                code = 2
            except ConnectionError as e:
                code = 0 if "before a fork" in str(e) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert observer.status()["num_leases"] == 1
    observer.unpublish_dataset("v")
    observer.publish_dataset(w={"w": np.full(1 << 20, 9)})  # would take the freed memory
    assert column[:3].tolist() == [7, 7, 7]
    assert reader.list_datasets() == ["w"]


def test_verify_catches_bytes_changed_in_shared_memory(client, daemon):
    import shelf

    client.publish_dataset(t={"v": np.arange(1000, dtype="int64")})
    ds = client.get_dataset("t")
    ds.prefault()
    ds.verify()
    column = ds["v"]
    # Change one value behind shelf's back, in the segment's file itself.
    address = column.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == f"/dev/shm/{daemon.segment}":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= address < end:
                    offset = address - start + int(fields[2], 16)
    with open(f"/dev/shm/{daemon.segment}", "r+b") as segment:
        segment.seek(offset)
        segment.write((12345).to_bytes(8, "little"))
    assert column[0] == 12345  # the view sees shared memory, no copy
    with pytest.raises(shelf.CorruptionError, match="column 'v'"):
        ds.verify()
