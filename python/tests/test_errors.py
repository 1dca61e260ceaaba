"""Errors are the exceptions Dask raises, with messages a user can act on, and
a failed publish changes nothing."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

import shelf
from conftest import Daemon, shelf_cli


def test_publishing_an_existing_name_raises_key_error(client):
    client.publish_dataset(x=pd.DataFrame({"a": [1]}))
    with pytest.raises(KeyError, match="'x' already exists"):
        client.publish_dataset(x=pd.DataFrame({"a": [2]}))
    assert client.get_dataset("x")["a"].tolist() == [1]
    client.publish_dataset(x=pd.DataFrame({"a": [2]}), override=True)
    assert client.get_dataset("x")["a"].tolist() == [2]


def test_missing_names(client):
    with pytest.raises(KeyError, match="'gone' not found"):
        client.get_dataset("gone")
    with pytest.raises(KeyError, match="'gone' not found"):
        client.unpublish_dataset("gone")
    assert client.get_dataset("gone", default="d") == "d"
    assert client.get_dataset("gone", default=None) is None


def test_over_the_memory_limit_raises_memory_error_and_publishes_nothing(client):
    before = client.status()["used_bytes"]
    with pytest.raises(MemoryError, match=r"used of 64\.00 MiB.*requested") as error:
        client.publish_dataset(big={"v": np.zeros(10_000_000)})  # 80 MB > 64 MiB
    assert "limit=67108864" in str(error.value)
    assert client.list_datasets() == []
    assert client.status()["used_bytes"] == before


def test_over_a_quota_raises_memory_error_and_status_shows_each_users_use():
    daemon = Daemon(extra_args=("--user-quota", "1MiB"))
    try:
        with daemon.client() as client:
            client.publish_dataset(small={"v": np.arange(1000)})
            with pytest.raises(MemoryError, match=r"uid \d+ is over its quota: .* used of "
                                                  r"1\.00 MiB, .* requested") as error:
                client.publish_dataset(big={"v": np.zeros(200_000)})  # 1.6 MB
            assert "quota=1048576" in str(error.value)
            assert client.list_datasets() == ["small"]
            users = client.status()["users"]
            assert users == [{"uid": os.geteuid(), "quota_bytes": 1 << 20,
                              "used_bytes": client.status()["datasets"][0]["memory_bytes"]}]
            cli = json.loads(shelf_cli(daemon, "status", "--json", check=True).stdout)["users"]
            assert [{k: u[k] for k in ("uid", "used_bytes", "quota_bytes")} for u in cli] == users
    finally:
        daemon.stop()


def test_no_daemon_raises_connection_error_saying_how_to_start_one(tmp_path):
    socket = str(tmp_path / "none.sock")
    with pytest.raises(ConnectionError, match="start it with: shelfd --socket " + socket):
        shelf.Client(socket)


def test_shelf_socket_is_honoured(daemon, monkeypatch):
    monkeypatch.setenv("SHELF_SOCKET", daemon.socket)
    assert shelf.Client().socket == daemon.socket


@pytest.mark.parametrize("column, dtype_text", [
    (pd.Categorical(["a", "b"]), "category"),
    (pd.to_datetime(["2024-01-01", "2024-01-02"]).tz_localize("UTC"), "datetime64[ns, UTC]"),
    (pd.to_timedelta([1, 2], unit="s"), "timedelta64[ns]"),
    (np.array([1 + 2j, 3j]), "complex128"),
])
def test_unsupported_column_types_name_the_column_and_publish_nothing(client, column, dtype_text):
    good = pd.DataFrame({"ok": [1, 2]})
    bad = pd.DataFrame({"ok": [1, 2], "bad": column})
    before = client.status()["used_bytes"]
    with pytest.raises(TypeError, match=re.escape(f"column 'bad' has dtype {dtype_text},")):
        client.publish_dataset(good=good, bad=bad)  # all or nothing
    assert client.list_datasets() == []
    assert client.status()["used_bytes"] == before


def test_a_string_column_with_other_objects_is_refused(client):
    with pytest.raises(TypeError, match="column 's' holds a int at row 1"):
        client.publish_dataset(t=pd.DataFrame({"s": ["a", 1]}))
    assert client.list_datasets() == []


def test_positional_value_without_a_name(client):
    with pytest.raises(TypeError, match="has no .name.*publish_dataset\\(my_name=value\\)"):
        client.publish_dataset(pd.DataFrame({"a": [1]}))
    with pytest.raises(TypeError, match="nothing to publish"):
        client.publish_dataset()


def test_bad_names_and_columns(client):
    with pytest.raises(ValueError, match="name"):
        client.publish_dataset(**{"": pd.DataFrame({"a": [1]})})
    with pytest.raises(TypeError, match="column names must be str"):
        client.publish_dataset(t=pd.DataFrame(np.zeros((2, 2))))
    with pytest.raises(KeyError, match="has no column 'zz'"):
        client.publish_dataset(t=pd.DataFrame({"a": [1]})) or client.get_dataset("t")["zz"]


def test_a_closed_client_says_so(daemon):
    c = daemon.client()
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.list_datasets()


def test_daemon_gone_raises_connection_error_and_data_already_read_stays(daemon):
    c = daemon.client()
    c.publish_dataset(t={"v": np.arange(100)})
    column = c.get_dataset("t")["v"]
    os.kill(daemon.pid, 9)
    daemon._wait_until_gone()
    with pytest.raises(ConnectionError):
        c.list_datasets()
    assert column.sum() == 4950  # the mapping outlives the daemon


def test_a_dataset_larger_than_the_limit_in_a_second_daemon_leaves_the_first_alone():
    small, other = Daemon("16MiB"), Daemon("16MiB")
    try:
        a, b = small.client(), other.client()
        a.publish_dataset(x={"v": np.arange(10)})
        with pytest.raises(MemoryError):
            b.publish_dataset(x={"v": np.zeros(4_000_000)})
        assert a.get_dataset("x")["v"].tolist() == list(range(10))
        assert b.list_datasets() == []
    finally:
        small.stop()
        other.stop()
