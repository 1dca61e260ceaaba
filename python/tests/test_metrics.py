"""Prometheus metrics: `shelfd --metrics-listen` serves GET /metrics and
`shelf metrics` prints the same, parsed here with prometheus_client's own
parser and checked against `shelf status --json`; idle, malformed and many
scrapers never keep a client from being served."""

import json
import os
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SHELF, Daemon, eventually, shelf_cli



def metrics_address(daemon):
    # The detached daemon logs its "serving" line just after its start returned.
    def logged():
        with open(daemon.socket + ".log") as f:
            return re.findall(r"metrics http://([0-9.]+):(\d+)/metrics", f.read())
    found = eventually(logged)
    assert found, "shelfd did not log its metrics address"
    return found[-1][0], int(found[-1][1])


def scrape(address):
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of every sample in the exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed, name, **labels):
    return parsed[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics_daemon():
    d = Daemon(extra_args=("--metrics-listen", "127.0.0.1:0", "--metrics-datasets", "2"))
    yield d
    d.stop()


def test_scrape_matches_status_json(metrics_daemon):
    d = metrics_daemon
    address = metrics_address(d)
    awkward = 'quote " backslash \\ end'
    with d.client() as c:
        c.publish_dataset(small={"v": np.arange(10)},
                          large={"v": np.arange(500_000, dtype=np.int64)})
        c.publish_dataset(**{awkward: {"v": np.arange(100_000, dtype=np.int64)}})
        c.publish_dataset(gone={"v": np.arange(10)})
        c.unpublish_dataset("gone")
        held = c.get_dataset("large")  # one lease, and this client's connection
        parsed = samples(scrape(address))
        status = json.loads(shelf_cli(d, "status", "--json", check=True).stdout)
        assert value(parsed, "shelf_up") == 1
        assert value(parsed, "shelf_memory_limit_bytes") == status["memory_limit"]
        assert value(parsed, "shelf_memory_used_bytes") == status["used_bytes"]
        assert value(parsed, "shelf_memory_resident_bytes") == status["resident_bytes"]
        assert value(parsed, "shelf_memory_pending_free_bytes") == status["pending_free_bytes"]
        assert value(parsed, "shelf_memory_unsealed_bytes") == status["unsealed_bytes"]
        assert value(parsed, "shelf_memory_index_bytes") == status["index_bytes"]
        assert value(parsed, "shelf_datasets") == status["num_datasets"] == 3
        assert value(parsed, "shelf_leases") == status["leases"] == 1
        # `shelf status` counts its own connection; the scrape saw this client's only.
        assert value(parsed, "shelf_connections") == status["connections"] - 1 == 1
        assert value(parsed, "shelf_publishes_total") == 4
        assert value(parsed, "shelf_unpublishes_total") == 1
        started = status["started"]
        assert value(parsed, "shelf_start_time_seconds") > 1.7e9
        assert started.startswith("20")
        # --metrics-datasets 2: the two largest, the third summed apart.
        memory = {d["name"]: d["memory_bytes"] for d in status["datasets"]}
        listed = {dict(labels)["dataset"]: v for (name, labels), v in parsed.items()
                  if name == "shelf_dataset_memory_bytes"}
        assert listed == {"large": memory["large"], awkward: memory[awkward]}
        assert value(parsed, "shelf_dataset_memory_other_bytes") == memory["small"]
        del held


def test_shelf_metrics_prints_the_same_and_shelf_up_0_without_a_daemon(metrics_daemon):
    d = metrics_daemon
    with d.client() as c:
        c.publish_dataset(one={"v": np.arange(10)})
    printed = samples(shelf_cli(d, "metrics", check=True).stdout)
    scraped = samples(scrape(metrics_address(d)))
    for key in ("shelf_memory_used_bytes", "shelf_datasets", "shelf_publishes_total",
                "shelf_memory_limit_bytes", "shelf_start_time_seconds"):
        assert printed[(key, frozenset())] == scraped[(key, frozenset())]
    assert value(printed, "shelf_publishes_total") == 1
    d.stop()
    down = subprocess.run([SHELF, "--socket", d.socket, "metrics"], capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 1
    assert "is shelfd running?" in down.stderr
    assert samples(down.stdout) == {("shelf_up", frozenset()): 0}


def test_a_refused_publish_is_counted_by_reason(metrics_daemon):
    d = metrics_daemon
    address = metrics_address(d)
    before = samples(scrape(address))
    assert value(before, "shelf_refused_total", request="allocate",
                 reason="resource_exhausted") == 0
    with d.client() as c:
        with pytest.raises(MemoryError):
            c.publish_dataset(huge={"v": np.zeros(16 << 20, dtype=np.int64)})  # 128 MiB > 64
        # Not a get: a missing name is answered from the segment's name
        # index, without the daemon. Unpublishing one asks the daemon.
        with pytest.raises(KeyError):
            c.unpublish_dataset("missing")
    # Figures may be up to 100 ms old (kMetricsMinRefresh): scrape until they show the unpublish.
    def counted():
        parsed = samples(scrape(address))
        key = ("shelf_refused_total",
               frozenset({"request": "unpublish", "reason": "not_found"}.items()))
        return parsed if key in parsed else None
    after = eventually(counted)
    assert after, "the refused unpublish was never counted"
    assert value(after, "shelf_refused_total", request="allocate",
                 reason="resource_exhausted") == 1
    assert value(after, "shelf_refused_total", request="unpublish", reason="not_found") == 1
    assert value(after, "shelf_publishes_total") == 0


def raw_request(address, data):
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def test_malformed_requests_are_answered_and_change_nothing(metrics_daemon):
    d = metrics_daemon
    address = metrics_address(d)
    assert raw_request(address, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(address, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_request(address, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw_request(address, b"GET /" + b"x" * 20000).startswith(b"HTTP/1.1 431 ")
    assert raw_request(address, b"\x00\xff" * 100 + b"\n\n").startswith(b"HTTP/1.1 400 ")
    head = raw_request(address, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    with d.client() as c:
        c.publish_dataset(after={"v": np.arange(3)})
        assert list(c.get_dataset("after")["v"]) == [0, 1, 2]
    assert eventually(lambda: value(samples(scrape(address)), "shelf_datasets") == 1)


def test_idle_scrapers_neither_stall_clients_nor_lock_out_scrapes(metrics_daemon):
    d = metrics_daemon
    address = metrics_address(d)
    with d.client() as c:
        c.publish_dataset(data={"v": np.arange(1000)})
    # 100 connections that connect and send nothing (more than the 64 the
    # metrics thread keeps), and 20 that send half a request.
    idle = [socket.create_connection(address, timeout=10) for _ in range(100)]
    partial = []
    for _ in range(20):
        s = socket.create_connection(address, timeout=10)
        s.sendall(b"GET /metr")
        partial.append(s)
    try:
        # A client in another process is served while they are all open.
        done = d.run("""
            import shelf
            with shelf.Client() as c:
                print(int(c.get_dataset("data")["v"].sum()))
        """)
        assert done.stdout.strip() == str(sum(range(1000)))
        # And a real scrape gets in: it takes the place of an idle one.
        assert value(samples(scrape(address)), "shelf_datasets") == 1
    finally:
        for s in idle + partial:
            s.close()


def test_many_concurrent_scrapers_all_get_whole_answers(metrics_daemon):
    d = metrics_daemon
    address = metrics_address(d)
    with d.client() as c:
        c.publish_dataset(data={"v": np.arange(10)})
    results, errors = [], []

    def scraper():
        try:
            for _ in range(10):
                results.append(value(samples(scrape(address)), "shelf_datasets"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=scraper) for _ in range(30)]
    for t in threads:
        t.start()
    with d.client() as c:  # the daemon keeps serving clients meanwhile
        for _ in range(200):
            assert c.get_dataset("data")["v"][9] == 9
    for t in threads:
        t.join()
    assert errors == []
    assert results == [1] * 300


def test_metrics_listen_errors_are_clear(tmp_path):
    for bad, expected in (("nonsense", "expected ADDR:PORT"), ("127.0.0.1:99999", "ADDR:PORT"),
                          ("::1:80", "ADDR:PORT")):
        done = subprocess.run([os.environ.get("SHELFD", "shelfd"), "--foreground", "--socket",
                               str(tmp_path / "s.sock"), "--segment", "shelf-test-py-bad-metrics",
                               "--metrics-listen", bad], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0
        assert expected in done.stderr
        assert not os.path.exists("/dev/shm/shelf-test-py-bad-metrics")


def test_metrics_are_off_by_default_on_tcp(daemon):
    def log():
        with open(daemon.socket + ".log") as f:
            text = f.read()
        return text if "serving" in text else None
    assert "metrics http" not in eventually(log)
    assert os.path.exists(daemon.socket + ".metrics")
