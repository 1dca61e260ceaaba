"""client.datasets: a MutableMapping shared by every client of the daemon."""

import collections.abc

import pandas as pd
import pytest


def test_is_a_mutable_mapping(client):
    assert isinstance(client.datasets, collections.abc.MutableMapping)


def test_set_get_contains_len_iter_del(client, daemon):
    datasets = client.datasets
    assert len(datasets) == 0 and list(datasets) == []
    datasets["b"] = pd.DataFrame({"x": [1, 2]})
    datasets["a"] = {"k": "v"}
    assert "a" in datasets and "b" in datasets and "c" not in datasets
    assert len(datasets) == 2
    assert list(datasets) == ["a", "b"]  # sorted, as list_datasets()
    assert datasets["a"] == {"k": "v"}
    assert datasets["b"]["x"].tolist() == [1, 2]
    # Shared: another client (another connection) sees the same mapping.
    with daemon.client() as other:
        assert sorted(other.datasets.keys()) == ["a", "b"]
        del other.datasets["a"]
    assert list(datasets) == ["b"]
    assert datasets.get("a") is None
    assert datasets.get("a", 7) == 7


def test_setting_an_existing_name_raises_key_error_and_keeps_the_old_value(client):
    client.datasets["x"] = "old"
    with pytest.raises(KeyError, match="'x' already exists"):
        client.datasets["x"] = "new"
    assert client.datasets["x"] == "old"
    client.publish_dataset(x="new", override=True)
    assert client.datasets["x"] == "new"


def test_missing_names_raise_key_error(client):
    with pytest.raises(KeyError, match="'nope' not found"):
        client.datasets["nope"]
    with pytest.raises(KeyError, match="'nope' not found"):
        del client.datasets["nope"]


def test_pop_and_update_come_from_the_mapping_mixins(client):
    client.datasets.update({"p": 1, "q": 2})
    assert client.datasets.pop("p") == 1
    assert list(client.datasets) == ["q"]


def test_in_and_len_read_the_index_and_list_is_sorted_by_bytes(client):
    names = ["abcdefgh", "abcdefg", "abcdefghi", "abcdefgh-2", "b", "\u00e9t\u00e9", "Z", "a"]
    for name in names:
        client.datasets[name] = pd.DataFrame({"x": [1]})
    assert client.list_datasets() == sorted(names)
    assert list(client.datasets) == sorted(names)
    assert len(client.datasets) == len(names)
    assert all(name in client.datasets for name in names)
    assert "abcdefgh-" not in client.datasets and "" not in client.datasets
    assert 1 not in client.datasets and None not in client.datasets  # not a str: not there
    del client.datasets["abcdefg"]
    assert "abcdefg" not in client.datasets and len(client.datasets) == len(names) - 1
