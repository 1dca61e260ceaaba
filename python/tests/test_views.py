"""Views from Python (Client.publish_view, persist_view, unpublish_dataset's
cascade; docs/views.md): a view published here and read in another process
equals pandas' own filtering of the same rows; it costs no data memory; its
base cannot go without cascade=True; persist_view materialises it."""

import numpy as np
import pandas as pd
import pytest


def _accounts(rows, seed):
    rng = np.random.default_rng(seed)
    balance = pd.array(rng.integers(-1000, 1000, rows), dtype="Int64")
    balance[rng.random(rows) < 0.2] = pd.NA
    names = pd.array([f"n{i % 7}" for i in range(rows)], dtype="string")
    return pd.DataFrame({"name": names, "balance": balance})


def test_a_view_read_in_another_process_equals_pandas(daemon, client):
    df = _accounts(5000, 1)
    # Three partitions: a view is evaluated partition by partition.
    client.publish_dataset(accounts=[df[:1000], df[1000:4100], df[4100:]])
    client.publish_view("negative", "accounts", "balance < 0", ["balance", "name"])
    keep = (df.balance < 0).fillna(False).astype(bool)
    expected = df[keep][["balance", "name"]].reset_index(drop=True)
    done = daemon.run("""
        import shelf
        client = shelf.Client()
        ds = client.get_dataset("negative")
        print(ds.view["base"], ds.view["where"], ds.npartitions)
        print(ds.to_pandas().reset_index(drop=True).to_json(orient="values"))
        print(len(ds.to_dask().compute()))
    """)
    definition, values, dask_rows = done.stdout.splitlines()
    assert definition == "accounts balance < 0 3"
    assert values == expected.to_json(orient="values")
    assert int(dask_rows) == len(expected) > 0
    listed = {d["name"]: d for d in client.status()["datasets"]}
    assert listed["negative"]["view"] is True
    assert listed["negative"]["view_base"] == "accounts"
    assert listed["negative"]["data_bytes"] == 0
    assert listed["accounts"]["view"] is False and listed["accounts"]["view_base"] is None
    assert client.get_dataset("accounts").view is None


def test_a_view_of_a_view_head_and_persist(client):
    df = _accounts(3000, 2)
    client.publish_dataset(accounts=df)
    client.publish_view("negative", "accounts", "balance < 0")
    client.publish_view("few", "negative", columns=["name"], limit=4)
    expected = df[(df.balance < 0).fillna(False).astype(bool)][["name"]][:4]
    assert client.get_dataset("few").to_pandas().name.tolist() == expected.name.tolist()
    assert client.get_dataset("negative").head(3).balance.tolist() == \
        df[(df.balance < 0).fillna(False).astype(bool)].balance[:3].tolist()
    client.persist_view("few", "few_copy")
    copy = client.get_dataset("few_copy")
    assert copy.view is None
    assert copy.to_pandas().name.tolist() == expected.name.tolist()
    with pytest.raises(ValueError, match="'accounts' is a dataset, not a view"):
        client.persist_view("accounts", "x")


def test_cascade_and_errors(client):
    client.publish_dataset(accounts=_accounts(100, 3))
    client.publish_view("negative", "accounts", "balance < 0")
    with pytest.raises(ValueError, match="is read by views: 'negative'"):
        client.unpublish_dataset("accounts")
    with pytest.raises(ValueError, match="expected a value after '<' at column 10"):
        client.publish_view("bad", "accounts", "balance < ")
    with pytest.raises(KeyError, match="nosuch"):
        client.publish_view("bad", "nosuch")
    with pytest.raises(ValueError, match="would read itself"):
        client.publish_view("negative", "negative", override=True)
    with pytest.raises(TypeError, match="cascade"):
        client.unpublish_dataset("accounts", cascade="yes")
    client.unpublish_dataset("accounts", cascade=True)
    assert client.list_datasets() == []


def test_an_unpersisted_dask_collection_is_a_view_computed_in_another_process(daemon, client):
    """Dask's rule: publishing an un-persisted collection publishes a view
    (its graph, pickled), which whoever gets it computes from scratch; it
    takes no shared memory beyond the pickle. client.persist() first stores
    the data, as in Dask's example."""
    from conftest import shelf_cli

    rng = np.random.default_rng(4)
    df = pd.DataFrame({"name": [f"n{i % 7}" for i in range(4000)],
                       "balance": rng.integers(-1000, 1000, 4000)})
    client.publish_dataset(accounts=[df[:2000], df[2000:]])
    lazy = client.get_dataset("accounts").to_dask()
    client.publish_dataset(negative=lazy[lazy.balance < 0])
    expected = df[df.balance < 0]
    listed = {d["name"]: d for d in client.status()["datasets"]}
    assert listed["negative"]["view"] is True and listed["negative"]["view_of_graph"] is True
    assert listed["negative"]["data_bytes"] == 0
    assert listed["negative"]["memory_bytes"] < 64 * 1024  # the pickle's pages
    done = daemon.run("""
        import shelf
        collection = shelf.Client().get_dataset("negative")
        print(type(collection).__module__.split(".")[0])
        frame = collection.compute()
        print(len(frame), frame.balance.sum())
    """)
    module, computed = done.stdout.splitlines()
    assert module == "dask"
    assert computed == f"{len(expected)} {expected.balance.sum()}"
    # The graph reads 'accounts': the cascade rule holds for it.
    with pytest.raises(ValueError, match="is read by views: 'negative'"):
        client.unpublish_dataset("accounts")
    info = shelf_cli(daemon, "info", "negative", check=True).stdout
    assert "view of:     a Dask graph" in info and "reads:       'accounts'" in info
    assert "view of a Dask graph" in shelf_cli(daemon, "head", "negative", check=True).stdout
    # Persisted first, as in Dask's example: data, not a view.
    client.publish_dataset(negative_data=client.persist(lazy[lazy.balance < 0]))
    stored = client.get_dataset("negative_data")
    assert stored.view is None and len(stored) == len(expected)
    client.persist_view("negative", "negative_now")  # computed here, stored
    assert client.get_dataset("negative_now").to_pandas().balance.sum() == expected.balance.sum()
    client.unpublish_dataset("accounts", cascade=True)
    assert client.list_datasets() == ["negative_data", "negative_now"]
