"""shelf.Client itself: connection errors are ConnectionError (never the
KeyError of a missing dataset), status() says everything the daemon says,
and datasets dropped on other threads (also while verify() runs without the
GIL) leave the connection working."""

import gc
import os
import signal
import threading

import numpy as np
import pytest

import shelf
from conftest import Daemon


def test_no_daemon_is_connection_error_with_the_command_to_start_one(tmp_path):
    socket = str(tmp_path / "shelf.sock")
    with pytest.raises(ConnectionError, match="shelfd --socket " + socket):
        shelf.Client(socket)


def test_a_dead_daemons_socket_is_connection_error(daemon):
    os.kill(daemon.pid, signal.SIGKILL)
    daemon._wait_until_gone()
    assert os.path.exists(daemon.socket)
    with pytest.raises(ConnectionError, match="shelfd --socket"):
        shelf.Client(daemon.socket)


def test_a_removed_segment_is_connection_error_not_key_error(daemon):
    os.unlink(os.path.join("/dev/shm", daemon.segment))
    with pytest.raises(ConnectionError, match="restart shelfd") as error:
        shelf.Client(daemon.socket)
    assert not isinstance(error.value, KeyError)
    assert daemon.segment in str(error.value)


def flip_first_byte_of(path, pattern):
    """Flips a bit of the first byte of `pattern` in the file at `path`.
    Only its data is read (SEEK_DATA), with pread: the segment is sparse, and
    a read through a shared mapping of tmpfs would allocate every hole it
    touches (the index's room alone is 256 MiB)."""
    fd = os.open(path, os.O_RDWR)
    try:
        at = 0
        while True:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past `at`
                raise AssertionError(f"{pattern!r} is not in {path}")
            end = os.lseek(fd, start, os.SEEK_HOLE)
            data = os.pread(fd, end - start, start)
            found = data.find(pattern)
            if found >= 0:
                os.pwrite(fd, bytes([data[found] ^ 1]), start + found)
                return
            at = end
    finally:
        os.close(fd)


def test_status_has_generation_start_time_and_quarantined_datasets():
    d = Daemon()
    try:
        marker = 0x0123456789ABCDEF
        with d.client() as c:
            c.publish_dataset(victim={"v": np.full(10_000, marker, dtype=np.int64)},
                              kept={"v": np.arange(10)})
            first = c.status()
        assert first["generation"] >= 1
        assert first["started_ns"] > 0
        assert first["quarantined"] == []

        # kill -9, flip one byte of the victim's values, start again.
        os.kill(d.pid, signal.SIGKILL)
        d._wait_until_gone()
        flip_first_byte_of(os.path.join("/dev/shm", d.segment), marker.to_bytes(8, "little") * 4)
        d._start()

        with d.client() as c:
            # Checked while it serves: a get waits for the check and refuses.
            with pytest.raises(shelf.CorruptionError):
                c.get_dataset("victim")
            after = c.status()
            assert after["generation"] > first["generation"]
            assert after["started_ns"] >= first["started_ns"]
            assert [q["name"] for q in after["quarantined"]] == ["victim"]
            assert "checksum mismatch" in after["quarantined"][0]["reason"]
            assert after["quarantined"][0]["memory_bytes"] > 0
            assert [ds["name"] for ds in after["datasets"]] == ["kept"]
            assert set(after["verifying"]) == {"datasets_left", "bytes_left", "bytes_done"}
    finally:
        d.stop()


def test_datasets_dropped_on_other_threads_while_verify_runs(client):
    client.publish_dataset(big={"v": np.arange(2_000_000)})
    errors = []
    stop = threading.Event()

    def verifier():
        try:
            ds = client.get_dataset("big")
            while not stop.is_set():
                ds.verify()  # runs without the GIL
                ds.prefault()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def dropper(handoff):
        try:
            while handoff:
                ds = handoff.pop()
                assert ds["v"][-1] == 1_999_999
                del ds  # the last reference: its Release goes out from this thread
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    handoffs = [[], []]
    for i in range(200):
        handoffs[i % 2].append(client.get_dataset("big"))
    threads = [threading.Thread(target=verifier) for _ in range(2)]
    threads += [threading.Thread(target=dropper, args=(h,)) for h in handoffs]
    del handoffs
    for t in threads:
        t.start()
    for _ in range(200):
        assert client.list_datasets() == ["big"]
        client.get_dataset("big").verify()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    del t, threads
    gc.collect()
    assert client.status()["num_leases"] == 0
