"""The filtered publish from Python (shelf.Client.publish_filtered, the
binding of shelf/filter.h's write_filtered): the result, read from another
process, equals pandas' own filtering of the same rows (nulls as SQL treats
them); errors are ValueError / KeyError and publish nothing."""

import numpy as np
import pandas as pd
import pytest


def _accounts(rows, seed):
    rng = np.random.default_rng(seed)
    balance = pd.array(rng.integers(-1000, 1000, rows), dtype="Int64")
    balance[rng.random(rows) < 0.2] = pd.NA
    names = pd.array([f"n{i % 7}" for i in range(rows)], dtype="string")
    names[rng.random(rows) < 0.2] = pd.NA
    return pd.DataFrame({"name": names, "balance": balance})


def test_publish_filtered_matches_pandas_in_another_process(daemon, client):
    df = _accounts(5000, 1)
    client.publish_dataset(accounts=df)
    client.publish_filtered("negative", "accounts", "balance < 0 or name == 'n3'",
                            ["balance", "name"])
    # pandas' nullable comparisons are SQL's: NA is not true, and `|` keeps True.
    keep = ((df.balance < 0) | (df.name == "n3")).fillna(False).astype(bool)
    expected = df[keep][["balance", "name"]].reset_index(drop=True)
    done = daemon.run("""
        import shelf
        df = shelf.Client().get_dataset("negative").to_pandas()
        print(len(df))
        print(df.to_json(orient="values"))
    """)
    rows, values = done.stdout.splitlines()
    assert int(rows) == len(expected) > 0
    assert values == expected.to_json(orient="values")


def test_publish_filtered_limit_empty_and_override(client):
    df = _accounts(300, 2)
    client.publish_dataset(accounts=df)
    client.publish_filtered("first", "accounts", limit=10)
    assert len(client.get_dataset("first")) == 10
    client.publish_filtered("none", "accounts", "balance > 5000")
    assert len(client.get_dataset("none")) == 0
    with pytest.raises(KeyError, match="first"):
        client.publish_filtered("first", "accounts")
    client.publish_filtered("first", "accounts", "balance is null", override=True)
    nulls = int(df.balance.isna().sum())
    assert nulls > 0
    assert len(client.get_dataset("first")) == nulls
    assert client.get_dataset("first").to_pandas().balance.isna().all()


def test_publish_filtered_errors_publish_nothing(client):
    client.publish_dataset(accounts=_accounts(50, 3))
    used = client.status()["used_bytes"]
    with pytest.raises(ValueError, match="expected a value after '<' at column 10"):
        client.publish_filtered("out", "accounts", "balance < ")
    with pytest.raises(ValueError, match="column 'balance' is int64"):
        client.publish_filtered("out", "accounts", "balance == 'x'")
    with pytest.raises(ValueError, match="unknown column 'nope' in the column list"):
        client.publish_filtered("out", "accounts", "", ["nope"])
    with pytest.raises(KeyError, match="missing"):
        client.publish_filtered("out", "missing", "balance < 0")
    assert [d["name"] for d in client._client.list()] == ["accounts"]
    assert client.status()["used_bytes"] == used
