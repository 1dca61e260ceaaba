"""client.wait_for_dataset: waiters in other Python processes, woken by the
daemon when a publish commits. Real shelfd, real processes; no test asserts
how fast (bench/shelf_bench.cc measures that), each that the waiter wakes and
reads the right data."""

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import eventually


def _connections(daemon):
    with daemon.client() as c:
        return c.status()["num_connections"] - 1  # not this one


def _spawn(daemon, code):
    env = dict(os.environ, SHELF_SOCKET=daemon.socket)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(child):
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return out


def test_a_waiter_in_another_process_is_woken_by_a_publish(daemon, client):
    waiter = _spawn(daemon, """
        import shelf
        with shelf.Client() as c:
            ds = c.wait_for_dataset("later", timeout=60)
            print(int(ds.to_pandas()["v"].sum()), len(ds.to_pandas()))
    """)
    # Parked (its client and its wait's connection) before anything is published.
    assert eventually(lambda: _connections(daemon) == 3)  # `client` too
    client.publish_dataset(later={"v": np.arange(1000, dtype=np.int64)})
    assert _finish(waiter).split() == [str(sum(range(1000))), "1000"]


def test_waiting_for_a_published_name_returns_what_get_dataset_returns(client):
    client.publish_dataset(here={"v": np.arange(5, dtype=np.int64)})
    ds = client.wait_for_dataset("here", timeout=0)
    assert list(ds.to_pandas()["v"]) == [0, 1, 2, 3, 4]
    client.publish_dataset(raw=b"some bytes")
    assert bytes(client.wait_for_dataset("raw")) == bytes(client.get_dataset("raw"))
    client.wait_for_datasets(["here", "raw"], timeout=0)


def test_a_timeout_raises_timeout_error_naming_the_dataset(client):
    client.publish_dataset(present={"v": np.arange(3)})
    with pytest.raises(TimeoutError, match="'absent'"):
        client.wait_for_dataset("absent", timeout=0.05)
    with pytest.raises(TimeoutError) as raised:
        client.wait_for_datasets(["present", "absent2"], timeout=0.05)
    assert "'absent2'" in str(raised.value) and "'present'" not in str(raised.value)
    # The client still works after a timed-out wait.
    assert list(client.get_dataset("present").to_pandas()["v"]) == [0, 1, 2]


def test_ctrl_c_ends_a_wait_without_a_timeout_with_keyboard_interrupt(daemon):
    # Debian's python, which the module is built for, in a process of its own.
    child = subprocess.Popen(["/usr/bin/python3", "-c", textwrap.dedent("""
        import signal, sys
        import shelf
        # Python's own SIGINT handler, even if this process was started with
        # SIGINT ignored (a background job of a script).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with shelf.Client() as c:
            try:
                c.wait_for_dataset("never", timeout=None)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            sys.stdin.readline()  # keeps its Client while the test counts connections
    """)], env=dict(os.environ, SHELF_SOCKET=daemon.socket), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert eventually(lambda: _connections(daemon) == 2)  # its Client and its parked wait
        os.kill(child.pid, signal.SIGINT)
        sent = time.monotonic()
        ready, _, _ = select.select([child.stdout], [], [], 20)
        took = time.monotonic() - sent
        assert ready, "the waiter said nothing within 20 s of SIGINT"
        assert child.stdout.readline() == "interrupted\n"
        assert took < 10  # a prompt answer: the check runs every 0.1 s and on EINTR
        assert eventually(lambda: _connections(daemon) == 1)  # the wait's connection closed
        child.stdin.close()
        child.wait(timeout=60)
        assert child.returncode == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_bad_arguments_raise_and_change_nothing(client):
    with pytest.raises(ValueError):
        client.wait_for_dataset("x", timeout=-1)
    with pytest.raises(ValueError):
        client.wait_for_dataset("x", timeout=float("nan"))
    with pytest.raises(ValueError):
        client.wait_for_datasets([])
    with pytest.raises((TypeError, ValueError)):
        client.wait_for_dataset(42)
    client.publish_dataset(fine={"v": np.arange(2)})
    assert "fine" in client.datasets


def test_twenty_waiting_processes_are_all_woken(daemon, client):
    code = """
        import shelf
        with shelf.Client() as c:
            print(int(c.wait_for_dataset("many", timeout=60).to_pandas()["v"].sum()))
    """
    waiters = [_spawn(daemon, code) for _ in range(20)]
    assert eventually(lambda: _connections(daemon) == 41, timeout=60)
    client.publish_dataset(many={"v": np.arange(100, dtype=np.int64)})
    for w in waiters:
        assert _finish(w).strip() == str(sum(range(100)))


def test_a_waiter_killed_with_kill_9_leaves_the_daemon_serving(daemon, client):
    waiter = _spawn(daemon, """
        import shelf
        shelf.Client().wait_for_dataset("never", timeout=60)
    """)
    assert eventually(lambda: _connections(daemon) == 3)
    os.kill(waiter.pid, signal.SIGKILL)
    waiter.wait(timeout=60)
    assert eventually(lambda: _connections(daemon) == 1)  # its waits went with it
    client.publish_dataset(never={"v": np.arange(4)})
    assert list(client.get_dataset("never").to_pandas()["v"]) == [0, 1, 2, 3]


def test_a_waiter_is_told_when_the_daemon_dies(daemon):
    waiter = _spawn(daemon, """
        import shelf
        try:
            shelf.Client().wait_for_dataset("gone", timeout=60)
        except ConnectionError as e:
            print("told:", e)
    """)
    assert eventually(lambda: _connections(daemon) == 2)
    daemon.restart()
    assert _finish(waiter).startswith("told:")
