"""The Python API given wrong, missing and odd arguments (issue 16): a
TypeError or ValueError that names the argument (no pybind11 signature
dumps), nothing published, and a failed publish gives its memory back at
once."""

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

import shelf


def no_signature_dump(error):
    text = str(error.value)
    assert "incompatible function arguments" not in text, text
    assert "_shelf." not in text, text


@pytest.mark.parametrize("name", [5, None, 1.5, b"bytes", ("a",)])
def test_a_name_that_is_not_a_str_is_a_type_error_naming_the_call(client, name):
    df = pd.DataFrame({"a": [1]})
    calls = [
        ("get_dataset", lambda: client.get_dataset(name)),
        ("unpublish_dataset", lambda: client.unpublish_dataset(name)),
        (r"datasets\[name\] = value", lambda: client.datasets.__setitem__(name, df)),
    ]
    before = client.status()["used_bytes"]
    for function, call in calls:
        with pytest.raises(TypeError, match=function + ": a dataset name must be a str, not " +
                           type(name).__name__) as error:
            call()
        no_signature_dump(error)
    assert client.list_datasets() == []
    assert client.status()["used_bytes"] == before


def test_override_is_a_flag(client):
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(TypeError, match="override is a flag .* not a DataFrame") as error:
        client.publish_dataset(x=df, override=df)
    no_signature_dump(error)
    assert client.list_datasets() == []
    client.datasets["override"] = df  # the way to publish a dataset of that name
    assert client.list_datasets() == ["override"]


def test_pin_is_a_flag(client):
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(TypeError, match="pin is a flag .* not a DataFrame") as error:
        client.publish_dataset(x=df, pin=df)
    no_signature_dump(error)
    assert client.list_datasets() == []
    client.datasets["pin"] = df
    assert client.list_datasets() == ["pin"]


def test_a_dict_of_unequal_columns_is_an_error_naming_the_lengths(client):
    with pytest.raises(ValueError, match=r"columns need one length; got \{'a': 3, 'b': 5\}"):
        client.publish_dataset(u={"a": np.arange(3), "b": np.arange(5)})
    assert client.list_datasets() == []
    # Arrays of several dimensions are not columns: still an object.
    client.publish_dataset(w={"W": np.zeros((2, 2)), "b": np.zeros(3)})
    assert client.get_dataset("w")["b"].shape == (3,)


def test_a_surrogate_names_its_column_and_row(client):
    before = client.status()["used_bytes"]
    frame = pd.DataFrame({"ok": ["a", "b"], "text": ["fine", "bad \ud800 here"]})
    with pytest.raises(ValueError, match=r"column 'text', partition 0, row 1: .* not valid "
                       "Unicode"):
        client.publish_dataset(s=frame)
    assert client.list_datasets() == []
    assert client.status()["used_bytes"] == before


def test_status_has_the_keys_of_the_cli(client, daemon):
    client.publish_dataset(x=pd.DataFrame({"a": [1, 2]}))
    cli = os.path.join(os.path.dirname(os.environ["SHELFD"]), "..", "tools", "shelf")
    out = subprocess.run([cli, "--socket", daemon.socket, "status", "--json"], check=True,
                         capture_output=True, text=True).stdout
    from_cli = json.loads(out)
    status = client.status()
    missing = set(from_cli) - set(status) - {"started"}
    assert not missing, missing
    for key in ("socket", "segment", "daemon_pid", "memory_limit", "num_datasets",
                "generation"):
        assert status[key] == from_cli[key], key


def test_a_failed_dask_publish_gives_its_memory_back_at_once(client):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    # 10.4 MB a partition (values and the index Dask keeps): four fit in
    # 64 MiB, but not beside the three of a failed publish still held.
    rows = 650_000

    def part(i):
        # Partition 3 holds what shelf cannot store: found only once the
        # first three are written.
        values = np.full(rows, 1j) if i == 3 else np.full(rows, i, dtype=np.int64)
        return pd.DataFrame({"v": values})

    def good(i):
        return pd.DataFrame({"v": np.full(rows, i, dtype=np.int64)})

    meta = pd.DataFrame({"v": np.array([], dtype=np.int64)})
    # Persisted: an un-persisted collection would be published as a view.
    failing = client.persist(dd.from_delayed([dask.delayed(part)(i) for i in range(4)], meta=meta,
                                             verify_meta=False))
    before = client.status()["used_bytes"]
    # pytest.raises keeps the traceback, and so every frame of the failed
    # publish, alive: the memory must not depend on them being collected.
    with pytest.raises(TypeError, match="complex128") as kept:
        client.publish_dataset(accounts=failing)
    assert kept.traceback
    # Given up at once: nothing of it is held any more (what is still on its
    # way back to the OS, shelfd's segment worker gives back on its own).
    after = client.status()
    assert after["unsealed_bytes"] == 0
    assert after["used_bytes"] - after["pending_free_bytes"] == before
    working = client.persist(dd.from_delayed([dask.delayed(good)(i) for i in range(4)], meta=meta))
    client.publish_dataset(accounts=working)  # the same size at once
    assert len(client.get_dataset("accounts")) == 4 * rows


def test_the_connection_limit_is_a_connection_error_not_a_memory_error():
    from conftest import Daemon

    d = Daemon(extra_args=["--max-connections", "1"])
    try:
        with d.client():
            with pytest.raises(ConnectionError, match="--max-connections") as error:
                shelf.Client(d.socket)
            assert not isinstance(error.value, MemoryError)
    finally:
        d.stop()
