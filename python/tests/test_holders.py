"""Who holds what: client.status()["clients"], `shelf status --clients`, the
last line of `shelf status`, and the holders in `shelf info`, with real
holder processes (a separate Python per holder) and a real shelfd."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import eventually, shelf_cli



class Holder:
    """A Python process that gets `names` (repeats for more leases), says
    "holding" and keeps them until killed."""

    def __init__(self, daemon, names, tag="holder"):
        code = textwrap.dedent(f"""
            import sys, time, shelf
            c = shelf.Client()
            kept = [c.get_dataset(n) for n in {names!r}]
            print("holding", flush=True)
            time.sleep(600)
            """)
        # The tag is an argument: it shows in the command line status reports.
        self.proc = subprocess.Popen([sys.executable, "-c", code, tag], stdout=subprocess.PIPE,
                                     text=True, env=dict(os.environ, SHELF_SOCKET=daemon.socket))
        assert self.proc.stdout.readline().strip() == "holding"
        self.pid = self.proc.pid

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def holders():
    started = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def row(status, pid):
    rows = [c for c in status["clients"] if c["pid"] == pid]
    return rows[0] if rows else None


def test_status_says_which_process_holds_what(daemon, client, holders):
    client.publish_dataset(small={"v": np.arange(1000, dtype=np.int64)},
                           big={"v": np.arange(100_000, dtype=np.int64)})
    holders.append(Holder(daemon, ["small", "small", "big"], "job-one"))
    status = client.status()
    sizes = {d["name"]: d["memory_bytes"] for d in status["datasets"]}
    mine = row(status, holders[0].pid)
    assert mine is not None
    assert mine["uid"] == os.getuid()
    assert mine["client_name"] == "python"
    assert mine["command"].endswith("job-one")
    assert mine["connections"] == 1
    assert mine["leases"] == 3
    assert mine["held_bytes"] == sizes["small"] + sizes["big"]
    assert mine["unpublished_bytes"] == 0
    assert [h["name"] for h in mine["held"]] == ["big", "small"]  # largest first
    assert mine["held"][1]["leases"] == 2
    assert all(h["published"] and h["held_alone"] for h in mine["held"])
    assert status["unpublished"] == []


def test_python_and_the_cli_say_the_same(daemon, client, holders):
    client.publish_dataset(a={"v": np.arange(10_000, dtype=np.int64)})
    holders.append(Holder(daemon, ["a"]))
    client.unpublish_dataset("a")
    done = shelf_cli(daemon, "status", "--json")
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    py = client.status()
    assert cli["unpublished"] == py["unpublished"]
    cli_row, py_row = row(cli, holders[0].pid), row(py, holders[0].pid)
    for key in ("pid", "uid", "command", "client_name", "connections", "leases", "datasets_held",
                "held_bytes", "unpublished_bytes", "writing_bytes", "held"):
        assert cli_row[key] == py_row[key], key
    assert py_row["unpublished_bytes"] == py["pending_free_bytes"] > 0
    assert cli_row["user"] and cli_row["connected"].endswith("Z")


def test_status_clients_is_a_table_sorted_as_asked(daemon, client, holders):
    client.publish_dataset(small={"v": np.arange(1000, dtype=np.int64)},
                           big={"v": np.arange(200_000, dtype=np.int64)})
    holders.append(Holder(daemon, ["big"], "holds-big"))
    holders.append(Holder(daemon, ["small"], "holds-small"))
    done = shelf_cli(daemon, "status", "--clients", "--sort", "bytes")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["PID", "USER", "CONNECTED"]
    assert lines[1].split()[0] == str(holders[0].pid) and lines[1].endswith("holds-big")
    assert lines[2].split()[0] == str(holders[1].pid) and lines[2].endswith("holds-small")
    by_pid = shelf_cli(daemon, "status", "--clients").stdout.splitlines()[1:]
    pids = [int(line.split()[0]) for line in by_pid]
    assert pids == sorted(pids)


def test_a_bad_sort_is_a_usage_error_naming_the_orders(daemon):
    done = shelf_cli(daemon, "status", "--clients", "--sort", "size")
    assert done.returncode == 2
    assert "--sort 'size' is not an order" in done.stderr
    assert "bytes" in done.stderr
    done = shelf_cli(daemon, "status", "--sort", "bytes")
    assert done.returncode == 2
    assert "--sort needs --clients" in done.stderr


def test_status_ends_naming_the_biggest_holder_of_unpublished_memory(daemon, client, holders):
    client.publish_dataset(a={"v": np.arange(1000, dtype=np.int64)},
                           b={"v": np.arange(100_000, dtype=np.int64)})
    assert "unpublished datasets" not in shelf_cli(daemon, "status").stdout
    holders.append(Holder(daemon, ["a"], "small-holder"))
    holders.append(Holder(daemon, ["b"], "big-holder"))
    client.unpublish_dataset("a")
    client.unpublish_dataset("b")
    last = shelf_cli(daemon, "status").stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"pid {holders[1].pid} (")
    assert "big-holder) alone holds" in last
    assert "of unpublished datasets" in last
    holders[1].kill()
    holders[0].kill()
    assert eventually(lambda: client.status()["pending_free_bytes"] == 0)
    assert "unpublished datasets" not in shelf_cli(daemon, "status").stdout


def test_info_lists_the_processes_holding_the_dataset(daemon, client, holders):
    client.publish_dataset(a={"v": np.arange(1000, dtype=np.int64)})
    holders.append(Holder(daemon, ["a", "a"], "reader-of-a"))
    text = shelf_cli(daemon, "info", "a")
    assert text.returncode == 0, text.stderr
    held_by = [line for line in text.stdout.splitlines() if line.startswith("held by:")]
    assert len(held_by) == 1
    assert f"pid {holders[0].pid} (" in held_by[0] and held_by[0].endswith("2 leases")
    info = json.loads(shelf_cli(daemon, "info", "a", "--json").stdout)
    assert [h["pid"] for h in info["holders"]] == [holders[0].pid]  # not `shelf info` itself
    assert info["holders"][0]["leases"] == 2
    assert info["earlier_version_holders"] == []
    # Replaced: the reader now holds an earlier version.
    client.publish_dataset(a={"v": np.arange(5, dtype=np.int64)}, override=True)
    info = json.loads(shelf_cli(daemon, "info", "a", "--json").stdout)
    assert info["holders"] == []
    assert [h["pid"] for h in info["earlier_version_holders"]] == [holders[0].pid]
    text = shelf_cli(daemon, "info", "a").stdout
    assert f"earlier versions held by: pid {holders[0].pid} (" in text


def test_a_shared_unpublished_dataset_names_one_holder_and_counts_the_others(daemon, client,
                                                                            holders):
    client.publish_dataset(a={"v": np.arange(10_000, dtype=np.int64)})
    holders.append(Holder(daemon, ["a"]))
    holders.append(Holder(daemon, ["a"]))
    client.unpublish_dataset("a")
    last = shelf_cli(daemon, "status").stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith("pid "), last
    assert ") and 1 other process hold " in last
    assert "of unpublished datasets: it comes back when they let go or exit" in last
