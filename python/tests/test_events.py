"""client.events(): publishes, overrides and unpublishes as they happen, told
by the daemon (no polling), in this and in other Python processes; the same
dicts as `shelf events --json` prints. Real shelfd, real processes."""

import itertools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import shelf
from conftest import SHELF, eventually



def test_a_subscriber_in_another_process_sees_every_event_in_order(daemon, client):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, shelf
        with shelf.Client() as c, c.events(timeout=60) as events:
            print("ready", flush=True)
            for _, event in zip(range(3), events):
                print(json.dumps(event), flush=True)
    """)], env=dict(os.environ, SHELF_SOCKET=daemon.socket), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    client.publish_dataset(first={"v": np.arange(1000, dtype=np.int64)})
    client.publish_dataset(first={"v": np.arange(10, dtype=np.int64)}, override=True)
    client.unpublish_dataset("first")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["kind"] for e in events] == ["publish", "override", "unpublish"]
    assert all(e["name"] == "first" and e["pid"] == os.getpid() and e["uid"] == os.getuid()
               for e in events)
    assert [e["rows"] for e in events] == [1000, 10, 10]
    assert events[0]["partitions"] == 1 and events[0]["memory_bytes"] >= 8000
    assert events[0]["time"].endswith("Z") and events[0]["time"].startswith(
        time.strftime("%Y-", time.gmtime(events[0]["time_ns"] // 10**9)))
    assert events[0]["time_ns"] <= events[1]["time_ns"] <= events[2]["time_ns"]


def test_the_dicts_have_the_keys_and_values_of_shelf_events_json(daemon, client):
    cli = subprocess.Popen([SHELF, "--socket", daemon.socket, "events", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in cli.stdout], daemon=True).start()
    try:
        # Subscribed once it prints a probe (its connection count cannot
        # tell: it connects a Client first, closed once the stream has its own).
        for i in itertools.count():
            assert i < 100, "shelf events printed no probe"
            client.publish_dataset(**{f"probe{i}": np.arange(1)})
            try:
                lines.get(timeout=0.2)
                break
            except queue.Empty:
                pass
        client.publish_dataset(probe_last=np.arange(1))
        while "probe_last" not in lines.get(timeout=20):
            pass
        with client.events(timeout=20) as events:
            client.publish_dataset(same={"v": np.arange(5)})
            client.unpublish_dataset("same")
            ours = [next(events), next(events)]
        theirs = [json.loads(lines.get(timeout=20)) for _ in ours]  # one JSON object a line
        assert theirs == ours
        assert list(theirs[0]) == list(ours[0])  # the same keys in the same order
    finally:
        cli.send_signal(signal.SIGINT)
        cli.wait(timeout=60)
    assert cli.returncode == 0, cli.stderr.read()


def test_the_iteration_ends_at_its_timeout_and_bad_arguments_raise(client):
    start = time.monotonic()
    assert list(client.events(timeout=0.1)) == []
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError):
        client.events(timeout=-1)
    with pytest.raises(ValueError):
        client.events(timeout=float("nan"))
    with pytest.raises(TypeError):
        client.events(timeout="soon")
    events = client.events(timeout=0.05)
    events.close()
    with pytest.raises(ValueError):
        next(events)


def test_the_daemon_going_raises_connection_error_and_a_new_subscriber_hears_of_the_restart(
        daemon):
    with daemon.client() as c:
        events = c.events(timeout=20)
        generation = events.generation
        daemon.restart()  # kill -9, then a new shelfd on the segment
        with pytest.raises(ConnectionError):
            next(events)
    with daemon.client() as c, c.events(timeout=0.2, last_generation=generation) as told:
        restart = next(told)
        assert restart["kind"] == "restart"
        assert restart["previous_generation"] == generation
        assert restart["generation"] == told.generation > generation
        assert list(told) == []  # nothing was quarantined


def test_ctrl_c_raises_keyboard_interrupt_while_waiting_for_an_event(daemon):
    child = subprocess.Popen(["/usr/bin/python3", "-c", textwrap.dedent("""
        import signal, sys
        import shelf
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with shelf.Client() as c:
            events = c.events()
            try:  # from before "ready": the signal may come before next() starts
                print("ready", flush=True)
                next(events)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """)], env=dict(os.environ, SHELF_SOCKET=daemon.socket), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.2)  # most likely in next() by now, without the GIL
        os.kill(child.pid, signal.SIGINT)
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready, "the subscriber said nothing within 20 s of SIGINT"
        assert child.stdout.readline() == "interrupted\n"
        child.wait(timeout=60)
        assert child.returncode == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_other_threads_run_while_one_waits_for_events(client):
    events = client.events(timeout=20)
    got = []
    waiter = threading.Thread(target=lambda: got.append(next(events)))
    waiter.start()

    def refused():  # a second reader while the waiter is in next(): refused, not raced
        try:
            assert events._stream.next(0) is None  # not in next() yet: nothing to read
            return False
        except RuntimeError as e:
            assert "another thread" in str(e)
            return True

    assert eventually(refused)  # and meanwhile this thread ran: the GIL is released
    client.publish_dataset(threaded={"v": np.arange(3)})  # this thread runs meanwhile
    waiter.join(timeout=60)
    assert [e["name"] for e in got] == ["threaded"]
    events.close()
