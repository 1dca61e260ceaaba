"""Dask DataFrames in and out: publish stores a persisted one's partitions
(an un-persisted one is a view: test_views.py); to_dask() loads each
partition from shelf in whatever process computes it."""

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def frame():
    n = 1000
    return pd.DataFrame({"id": np.arange(n), "x": np.linspace(-1, 1, n),
                         "name": [f"n{i % 17}" for i in range(n)]})


def test_a_dask_dataframe_publishes_one_partition_per_partition(client, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    client.publish_dataset(accounts=client.persist(ddf[ddf.x < 0]))
    ds = client.get_dataset("accounts")
    assert ds.npartitions == 4
    expected = frame[frame.x < 0]
    pd.testing.assert_frame_equal(ds.to_pandas(), expected)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_to_dask_reads_back_the_same_frame(client, frame, scheduler):
    client.publish_dataset(f=dd.from_pandas(frame, npartitions=3))
    back = client.get_dataset("f").to_dask()
    assert isinstance(back, dd.DataFrame)
    assert back.npartitions == 3
    with dask.config.set(scheduler=scheduler):
        pd.testing.assert_frame_equal(back.compute(), frame)
        assert back.x.sum().compute() == pytest.approx(frame.x.sum())
        assert back[back.id % 2 == 0].name.nunique().compute() == 17


def test_positional_dask_series_uses_its_name(client, frame):
    ddf = dd.from_pandas(frame, npartitions=2)
    client.publish_dataset(client.persist(ddf.x))
    assert client.list_datasets() == ["x"]
    pd.testing.assert_frame_equal(client.get_dataset("x").to_pandas(), frame[["x"]])


def test_name_keyword_with_one_positional_value(client, frame):
    client.publish_dataset(dd.from_pandas(frame, npartitions=2), name="ds")
    assert client.list_datasets() == ["ds"]
    with pytest.raises(ValueError, match="publish_dataset\\(df, name='ds'\\)"):
        client.publish_dataset(name=frame)  # as in Dask: name= needs one positional value
    client.datasets["name"] = frame  # the way to a dataset called "name"
    assert client.list_datasets() == ["ds", "name"]


def test_to_dask_refuses_a_dataset_republished_since(client, frame):
    client.publish_dataset(f=frame)
    back = client.get_dataset("f").to_dask()
    client.publish_dataset(f=frame.head(10), override=True)
    with pytest.raises(RuntimeError, match="republished"):
        back.compute(scheduler="sync")


def test_forked_workers_after_the_parent_read_connect_on_their_own(client, frame):
    client.publish_dataset(f=dd.from_pandas(frame, npartitions=3))
    back = client.get_dataset("f").to_dask()
    pd.testing.assert_frame_equal(back.compute(scheduler="sync"), frame)  # parent connects
    with dask.config.set({"multiprocessing.context": "fork"}):
        pd.testing.assert_frame_equal(back.compute(scheduler="processes"), frame)
    pd.testing.assert_frame_equal(back.compute(scheduler="sync"), frame)  # and still works


def test_to_dask_connects_again_after_a_daemon_restart(client, daemon, frame):
    client.publish_dataset(f=dd.from_pandas(frame, npartitions=2))
    back = client.get_dataset("f").to_dask()
    pd.testing.assert_frame_equal(back.compute(scheduler="sync"), frame)
    daemon.restart()  # the loader's cached connection is now dead
    pd.testing.assert_frame_equal(back.compute(scheduler="sync"), frame)
