"""Arrow's PyCapsule interface on shelf.Dataset, read by a consumer written
to the Arrow C Data and Stream Interface specs with ctypes (none of pyarrow,
polars or DuckDB is in Debian): capsule names, every format string, buffer
count, offset, length and null count; buffers at the addresses of the
dataset's own zero-copy views; release called exactly once per array,
children included; the lease held until the last release, and an unpublished
dataset's memory back after it."""

import ctypes
import gc

import numpy as np
import pandas as pd
import pytest

from conftest import eventually


class ArrowSchema(ctypes.Structure):
    pass


class ArrowArray(ctypes.Structure):
    pass


class ArrowArrayStream(ctypes.Structure):
    pass


SchemaRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowSchema))
ArrayRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArray))
ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowSchema))),
    ("dictionary", ctypes.POINTER(ArrowSchema)), ("release", SchemaRelease),
    ("private_data", ctypes.c_void_p)]
ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
    ("dictionary", ctypes.POINTER(ArrowArray)), ("release", ArrayRelease),
    ("private_data", ctypes.c_void_p)]
ArrowArrayStream._fields_ = [
    ("get_schema", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ArrowArrayStream),
                                    ctypes.POINTER(ArrowSchema))),
    ("get_next", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ArrowArrayStream),
                                  ctypes.POINTER(ArrowArray))),
    ("get_last_error", ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.POINTER(ArrowArrayStream))),
    ("release", ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArrayStream))),
    ("private_data", ctypes.c_void_p)]

ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
ctypes.pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
ctypes.pythonapi.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]


def from_capsule(capsule, name, struct):
    assert ctypes.pythonapi.PyCapsule_IsValid(capsule, name.encode()) == 1, name
    return struct.from_address(ctypes.pythonapi.PyCapsule_GetPointer(capsule, name.encode()))


FORMATS = {"i8": b"c", "i16": b"s", "i32": b"i", "i64": b"l", "u8": b"C", "u16": b"S",
           "u32": b"I", "u64": b"L", "f32": b"f", "f64": b"g", "flag": b"b", "label": b"U",
           "at": b"tsn:UTC", "__index__": b"l"}  # the stored index is a column too
DTYPES = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "u8": np.uint8,
          "u16": np.uint16, "u32": np.uint32, "u64": np.uint64, "f32": np.float32,
          "f64": np.float64}


def partition_frame(p, rows):
    frame = {name: (np.arange(rows) * 3 + p).astype(dtype) for name, dtype in DTYPES.items()}
    frame["flag"] = np.arange(rows) % 3 == 0
    frame["label"] = [None if i % 4 == 2 else f"row-{p}-{i}" for i in range(rows)]
    frame["at"] = pd.to_datetime(np.arange(rows) * 1000 + 1_700_000_000_000_000_000)
    frame = pd.DataFrame(frame)
    frame["f64"] = frame["f64"].where(frame.index % 5 != 1)  # NaN: nulls
    return frame


@pytest.fixture
def every_type(client):
    import dask.dataframe as dd

    parts = [partition_frame(p, rows) for p, rows in enumerate((40, 1, 300))]
    frame = pd.concat(parts, ignore_index=True)
    client.publish_dataset(t=dd.from_pandas(frame, npartitions=3, sort=False))
    return client.get_dataset("t")


def address(array):
    return array.__array_interface__["data"][0]


def check_schema(schema, names, bools_as_uint8=False):
    assert schema.format == b"+s"
    assert schema.flags == 0 and not schema.dictionary
    assert schema.n_children == len(names)
    for c, name in enumerate(names):
        child = schema.children[c].contents
        assert child.name.decode() == name
        expected = b"C" if name == "flag" and bools_as_uint8 else FORMATS[name]
        assert child.format == expected, name
        assert child.flags == 2  # ARROW_FLAG_NULLABLE
        assert child.n_children == 0 and not child.dictionary and child.release


class ReleaseCounter:
    """Wraps the release callback of an array and each child with one that
    counts, then calls the producer's."""

    def __init__(self):
        self.calls = {}
        self._keep = []

    def wrap(self, array):
        key = ctypes.addressof(array)
        # The producer's callback by its raw address (reading the field as a
        # ctypes function may hand back what was last assigned to it).
        original = ArrayRelease(
            ctypes.c_void_p.from_address(key + ArrowArray.release.offset).value)

        def counting(pointer):
            self.calls[key] = self.calls.get(key, 0) + 1
            original(pointer)
            assert not pointer.contents.release, "a released array must be marked released"

        callback = ArrayRelease(counting)
        self._keep += [callback, original]
        array.release = callback
        for c in range(array.n_children):
            self.wrap(array.children[c].contents)


def check_partition(ds, p, array, bools_as_uint8=False):
    names = [name for name, _ in ds._schema]
    rows = ds._handle.partition_rows(p)
    assert array.length == rows and array.offset == 0 and array.null_count == 0
    assert array.n_buffers == 1 and array.buffers[0] is None
    assert array.n_children == len(names)
    for c, name in enumerate(names):
        child = array.children[c].contents
        assert child.length == rows and child.offset == 0 and child.n_children == 0
        assert child.null_count == ds._handle.null_count(p, c), name
        mask = ds._handle.null_mask(p, c, rows)
        if child.null_count > 0:
            bitmap = np.ctypeslib.as_array(ctypes.cast(child.buffers[0],
                                                       ctypes.POINTER(ctypes.c_uint8)),
                                           ((rows + 7) // 8,))
            valid = np.unpackbits(bitmap, bitorder="little")[:rows].astype(bool)
            assert (valid == ~mask).all(), name
        if name == "label":
            assert child.n_buffers == 3
            offsets = np.ctypeslib.as_array(ctypes.cast(child.buffers[1],
                                                        ctypes.POINTER(ctypes.c_int64)),
                                            (rows + 1,))
            strings = ds._handle.strings(p, c, rows)
            for i in range(rows):
                got = ctypes.string_at(child.buffers[2] + int(offsets[i]),
                                       int(offsets[i + 1] - offsets[i])).decode()
                assert got == (strings[i] or ""), (p, i)
            continue
        assert child.n_buffers == 2
        values = ds._handle.values(p, c)
        if name == "flag" and not bools_as_uint8:
            assert child.buffers[1] != address(values), "bools are packed per export"
            bits = np.ctypeslib.as_array(ctypes.cast(child.buffers[1],
                                                     ctypes.POINTER(ctypes.c_uint8)),
                                         (max(1, (rows + 7) // 8),))
            unpacked = np.unpackbits(bits, bitorder="little")[:rows]
            assert (unpacked == values.view(np.uint8)).all()
        else:
            # The very buffer the zero-copy numpy view reads: no copy.
            assert child.buffers[1] == address(values), name


def read_stream(capsule):
    stream = from_capsule(capsule, "arrow_array_stream", ArrowArrayStream)
    schema = ArrowSchema()
    assert stream.get_schema(ctypes.byref(stream), ctypes.byref(schema)) == 0
    arrays = []
    while True:
        array = ArrowArray()
        assert stream.get_next(ctypes.byref(stream), ctypes.byref(array)) == 0, \
            stream.get_last_error(ctypes.byref(stream))
        if not array.release:
            break  # the end of the stream
        arrays.append(array)
    return stream, schema, arrays


def test_schema_capsule_names_every_format(every_type):
    capsule = every_type.__arrow_c_schema__()
    schema = from_capsule(capsule, "arrow_schema", ArrowSchema)
    check_schema(schema, [name for name, _ in every_type._schema])
    del capsule  # its destructor releases the schema


def test_stream_gives_the_segments_buffers_and_releases_each_array_once(every_type, client):
    ds = every_type
    names = [name for name, _ in ds._schema]
    stream, schema, arrays = read_stream(ds.__arrow_c_stream__())
    check_schema(schema, names)
    schema.release(ctypes.byref(schema))
    assert not schema.release
    assert len(arrays) == ds.npartitions == 3
    counter = ReleaseCounter()
    for p, array in enumerate(arrays):
        check_partition(ds, p, array)
        counter.wrap(array)
    for array in arrays:
        array.release(ctypes.byref(array))
    assert len(counter.calls) == 3 * (1 + len(names))
    assert set(counter.calls.values()) == {1}


def test_requested_schema_can_ask_for_bools_as_uint8(every_type):
    ds = every_type
    wanted = ds.__arrow_c_schema__()
    request = from_capsule(wanted, "arrow_schema", ArrowSchema)
    flag = [name for name, _ in ds._schema].index("flag")
    request.children[flag].contents.format = b"C"
    stream_capsule = ds.__arrow_c_stream__(requested_schema=wanted)
    stream, schema, arrays = read_stream(stream_capsule)
    check_schema(schema, [name for name, _ in ds._schema], bools_as_uint8=True)
    for p, array in enumerate(arrays):
        check_partition(ds, p, array, bools_as_uint8=True)
        array.release(ctypes.byref(array))
    schema.release(ctypes.byref(schema))
    request.children[flag].contents.format = b"b"  # the producer's string, before its release
    with pytest.raises(ValueError):
        ds.__arrow_c_stream__(requested_schema=object())


def test_the_lease_lives_until_the_last_release_then_the_memory_comes_back(daemon, client):
    client.publish_dataset(gone={"v": np.arange(100_000, dtype=np.int64)})
    before = client.status()["used_bytes"]
    ds = client.get_dataset("gone")
    capsule = ds.__arrow_c_stream__()
    stream, schema, arrays = read_stream(capsule)
    schema.release(ctypes.byref(schema))
    del ds, capsule  # the capsule's destructor releases the stream: arrays remain
    gc.collect()
    client.unpublish_dataset("gone")
    status = client.status()
    assert status["num_leases"] == 1 and status["pending_free_bytes"] > 0
    values = np.ctypeslib.as_array(ctypes.cast(arrays[0].children[0].contents.buffers[1],
                                               ctypes.POINTER(ctypes.c_int64)), (100_000,))
    assert values[99_999] == 99_999  # still readable under the export's lease
    arrays[0].release(ctypes.byref(arrays[0]))
    assert eventually(lambda: client.status()["num_leases"] == 0
                      and client.status()["pending_free_bytes"] == 0)
    assert client.status()["used_bytes"] < before
