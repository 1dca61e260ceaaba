"""Every column type, nulls, partitions, indexes, raw bytes and pickled objects
round-trip exactly, read from another process."""

import datetime
import pickle

import numpy as np
import pandas as pd
import pytest


ALL_TYPES = pd.DataFrame({
    "i8": np.array([-128, 0, 127], dtype="int8"),
    "i16": np.array([-32768, 1, 32767], dtype="int16"),
    "i32": np.array([-2**31, 2, 2**31 - 1], dtype="int32"),
    "i64": np.array([-2**63, 3, 2**63 - 1], dtype="int64"),
    "u8": np.array([0, 1, 255], dtype="uint8"),
    "u16": np.array([0, 1, 65535], dtype="uint16"),
    "u32": np.array([0, 1, 2**32 - 1], dtype="uint32"),
    "u64": np.array([0, 1, 2**64 - 1], dtype="uint64"),
    "f32": np.array([-1.5, np.inf, 3.25], dtype="float32"),
    "f64": np.array([np.pi, -0.0, 1e300]),
    "b": np.array([True, False, True]),
    "t": pd.to_datetime(["1970-01-01", "2024-02-29 12:34:56.789012345", "2262-04-11"]),
    "s": ["", "héllo wörld ✓", "a,b\n\"c\""],
})


def test_every_type_round_trips_exactly_through_another_process(daemon):
    daemon.client().publish_dataset(all=ALL_TYPES)
    done = daemon.run("""
        import pickle, shelf
        df = shelf.Client().get_dataset('all').to_pandas()
        print(pickle.dumps(df.copy()).hex())
    """)
    frame = pickle.loads(bytes.fromhex(done.stdout.strip()))
    pd.testing.assert_frame_equal(frame, ALL_TYPES)
    assert list(frame.dtypes) == list(ALL_TYPES.dtypes)


def test_dataset_metadata(client):
    client.publish_dataset(all=ALL_TYPES)
    ds = client.get_dataset("all")
    assert ds.name == "all"
    assert ds.columns == list(ALL_TYPES.columns)
    pd.testing.assert_series_equal(ds.dtypes, ALL_TYPES.dtypes)
    assert ds.npartitions == 1
    assert len(ds) == 3
    assert ds["s"].tolist() == ALL_TYPES["s"].tolist()
    assert ds.column("u64").tolist() == [0, 1, 2**64 - 1]
    ds.verify()


def test_nulls_come_back_as_pandas_missing_values(client):
    frame = pd.DataFrame({
        "i": pd.array([1, None, 3], dtype="Int64"),
        "u": pd.array([None, 2, 3], dtype="UInt8"),
        "f": [1.0, None, 2.0],
        "nf": pd.array([1.5, None, 2.5], dtype="Float64"),
        "t": pd.to_datetime(["2020-01-01", None, "2021-01-01"]),
        "b": pd.array([True, None, False], dtype="boolean"),
        "s": ["a", None, "c"],
        "ps": pd.array(["x", None, "z"], dtype="string"),
        "na": ["p", pd.NA, np.nan],
    })
    client.publish_dataset(n=frame)
    back = client.get_dataset("n").to_pandas()
    expected = frame.assign(nf=[1.5, np.nan, 2.5], ps=["x", None, "z"], na=["p", None, None])
    pd.testing.assert_frame_equal(back, expected)


def test_a_list_of_frames_is_one_partition_each(client):
    parts = [pd.DataFrame({"x": np.arange(i * 10, i * 10 + 10), "s": [f"r{i}"] * 10})
             for i in range(3)]
    client.publish_dataset(p=parts)
    ds = client.get_dataset("p")
    assert ds.npartitions == 3 and len(ds) == 30
    for i in range(3):
        pd.testing.assert_frame_equal(ds.partition(i), parts[i])
    pd.testing.assert_frame_equal(ds.to_pandas(), pd.concat(parts))
    assert ds["x"].tolist() == list(range(30))
    assert ds.column("x", partition=1).tolist() == list(range(10, 20))
    assert ds.head(12)["x"].tolist() == list(range(12))
    with pytest.raises(IndexError, match="partition 3 out of range"):
        ds.partition(3)


def test_frames_with_different_columns_are_refused(client):
    with pytest.raises(TypeError, match="partition 1 does not match"):
        client.publish_dataset(p=[pd.DataFrame({"x": [1]}), pd.DataFrame({"y": [1]})])
    assert client.list_datasets() == []


def test_named_and_labelled_indexes_are_kept(client):
    frame = pd.DataFrame({"v": [1.0, 2.0]}, index=pd.Index(["k1", "k2"], name="key"))
    client.publish_dataset(ix=frame)
    ds = client.get_dataset("ix")
    assert ds.columns == ["v"]
    pd.testing.assert_frame_equal(ds.to_pandas(), frame)
    stamps = pd.DataFrame({"v": [1, 2]}, index=pd.date_range("2024-01-01", periods=2))
    client.publish_dataset(ts=stamps)
    pd.testing.assert_frame_equal(client.get_dataset("ts").to_pandas(), stamps,
                                  check_freq=False)


def test_empty_frame(client):
    frame = pd.DataFrame({"a": np.array([], dtype="int64"), "s": np.array([], dtype=object)})
    client.publish_dataset(e=frame)
    ds = client.get_dataset("e")
    assert len(ds) == 0
    back = ds.to_pandas()
    assert list(back.columns) == ["a", "s"] and len(back) == 0
    assert back["a"].dtype == np.int64


def test_dict_of_numpy_arrays_is_a_table(client):
    client.publish_dataset(d={"a": np.arange(5, dtype="int16"), "s": np.array(["x", "yy", "", "z", "w"])})
    ds = client.get_dataset("d")
    assert ds.columns == ["a", "s"]
    assert ds["a"].dtype == np.int16 and ds["a"].tolist() == [0, 1, 2, 3, 4]
    assert ds["s"].tolist() == ["x", "yy", "", "z", "w"]


def test_bytes_and_memoryview_are_raw_partitions(client):
    client.publish_dataset(b=b"\x00\x01raw", m=memoryview(bytearray(b"view")))
    back = client.get_dataset("b")
    assert isinstance(back, memoryview) and back.readonly
    assert back == b"\x00\x01raw"
    assert bytes(client.get_dataset("m")) == b"view"
    with pytest.raises(BufferError):
        client.publish_dataset(nc=memoryview(np.arange(10)[::2]))


@pytest.mark.parametrize("value", [
    "value", 42, None, [1, "two", 3.0], {"nested": {"a": (1, 2)}},
    datetime.date(2024, 1, 1), pd.Series([1, 2, 3], name="ser"),
    np.arange(12).reshape(3, 4), np.arange(10)[::3],
])
def test_any_picklable_object_round_trips(client, value):
    client.publish_dataset(obj=value)
    back = client.get_dataset("obj")
    if isinstance(value, (np.ndarray, pd.Series)):
        np.testing.assert_array_equal(np.asarray(back), np.asarray(value))
    else:
        assert back == value


def test_positional_values_are_published_under_their_name(client):
    client.publish_dataset(pd.Series([1, 2], name="s1"))
    assert client.list_datasets() == ["s1"]
    assert client.get_dataset("s1").tolist() == [1, 2]


def test_a_dataset_can_be_published_again_under_another_name(client):
    parts = [pd.DataFrame({"i": pd.array([1, None], dtype="Int64"), "s": ["a", None]}),
             pd.DataFrame({"i": pd.array([3, 4], dtype="Int64"), "s": ["c", "d"]},
                          index=[7, 8])]
    client.publish_dataset(orig=parts)
    client.datasets["copy"] = client.get_dataset("orig")
    client.unpublish_dataset("orig")
    copy = client.get_dataset("copy")
    assert copy.npartitions == 2
    pd.testing.assert_frame_equal(copy.to_pandas(), pd.concat(parts))


def test_null_floats_read_as_nan_in_the_raw_view(client):
    client.publish_dataset(f=pd.DataFrame({"nf": pd.array([1.5, None], dtype="Float64")}))
    view = client.get_dataset("f")["nf"]
    assert view[0] == 1.5 and np.isnan(view[1])


def test_column_names_that_look_like_the_stored_index_are_refused(client):
    with pytest.raises(ValueError, match="'__index__' is reserved"):
        client.publish_dataset(t=pd.DataFrame({"__index__": [1]}))
    with pytest.raises(ValueError, match="'__index__:k' is reserved"):
        client.publish_dataset(t=pd.DataFrame({"__index__:k": [1]}))
    client.publish_dataset(t=pd.DataFrame({"__index__x": [1, 2], "a": [3, 4]}))
    ds = client.get_dataset("t")
    assert ds.columns == ["__index__x", "a"]
    assert list(ds) == ["__index__x", "a"] and "a" in ds and "b" not in ds


def test_dicts_that_are_not_tables_are_pickled(client):
    weights = {"W": np.arange(9.0).reshape(3, 3), "b": np.zeros(3)}
    split = {"train": np.arange(8), "test": np.arange(2)}
    # 1-D arrays of several lengths look like columns that cannot be one
    # table: an error naming the lengths (test_misuse.py), unless wrapped.
    with pytest.raises(ValueError, match="columns need one length"):
        client.publish_dataset(split=split)
    client.publish_dataset(weights=weights, split=[split])
    back = client.get_dataset("weights")
    np.testing.assert_array_equal(back["W"], weights["W"])
    assert back["b"].tolist() == [0.0, 0.0, 0.0]
    assert client.get_dataset("split")[0]["test"].tolist() == [0, 1]


def test_many_small_arrays_stay_in_the_pickle_stream(client):
    before = client.status()["used_bytes"]
    small = [np.arange(4) for _ in range(2000)]
    client.publish_dataset(small=small)
    assert client.status()["used_bytes"] - before < 1 << 20  # not a 4 KiB page each
    assert all(a.tolist() == [0, 1, 2, 3] for a in client.get_dataset("small"))


def test_head_with_a_negative_count_is_pandas_head(client):
    client.publish_dataset(t=[pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]})])
    assert client.get_dataset("t").head(-1)["x"].tolist() == [1, 2]
    assert client.datasets.get(5) is None


def test_nulls_in_a_later_partition_only_still_give_nullable_dtypes(client):
    # get_dataset() works out the null counts on first use, not at get: the
    # dtypes, frames and the Dask meta must still see a null that only the
    # last partition holds, and count every one of them.
    parts = [pd.DataFrame({"i": pd.array([1, 2], dtype="Int64"),
                           "b": pd.array([True, False], dtype="boolean"),
                           "f": [0.5, 1.5]}),
             pd.DataFrame({"i": pd.array([None, 4, None], dtype="Int64"),
                           "b": pd.array([None, True, None], dtype="boolean"),
                           "f": [2.5, 3.5, 4.5]})]
    client.publish_dataset(late=parts)
    ds = client.get_dataset("late")
    assert str(ds.dtypes["i"]) == "Int64" and str(ds.dtypes["b"]) == "boolean"
    assert ds.dtypes["f"] == np.float64
    frame = ds.to_pandas()
    assert frame["i"].isna().sum() == 2 and frame["b"].isna().sum() == 2
    assert frame["i"].dtype == "Int64"
    # The first partition alone has no null but reads with the same dtype.
    assert client.get_dataset("late").partition(0)["i"].dtype == "Int64"
    pd.testing.assert_frame_equal(frame, pd.concat(parts), check_index_type=False)
    assert ds.columns == ["i", "b", "f"] and len(ds) == 5
