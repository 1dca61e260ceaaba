"""`shelf status` as a person sees it: on a terminal (a real pty) memory and
datasets are bars, and --watch redraws in place (cursor home and clear to
the end of each line, never a full clear) and leaves the terminal as it was
on Ctrl-C; piped, plain text without a single escape sequence."""

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import numpy as np

from conftest import SHELF

FULL_BLOCK = "\u2588"
SHADE = "\u2592"


def spawn_on_pty(argv, env, rows=24, columns=100):
    """Runs argv with a new pty as its controlling terminal: (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:
        try:
            # The size is set here, before the exec: set from the parent, it
            # could come after the program read it (it then saw 80 columns).
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, master


def read_until(master, predicate, timeout=30):
    """Reads the pty until predicate(text) holds or it closes; returns the text."""
    out = b""
    deadline = time.monotonic() + timeout
    while not predicate(out.decode(errors="replace")) and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def env_for(daemon):
    return {"PATH": "/usr/bin:/bin", "SHELF_SOCKET": daemon.socket, "LANG": "C.UTF-8",
            "TERM": "xterm"}


def publish_and_hold(client):
    client.publish_dataset(big={"v": np.arange(2_000_000)}, small={"v": np.arange(1000)})
    client.publish_dataset(gone={"v": np.arange(500_000)})
    held = client.get_dataset("gone")["v"]  # keeps the lease: freed, not yet back
    client.unpublish_dataset("gone")
    return held


def test_a_terminal_gets_bars_a_pipe_plain_text(daemon, client):
    held = publish_and_hold(client)
    pid, master = spawn_on_pty([SHELF, "status"], env_for(daemon))
    text = read_until(master, lambda t: "leases" in t and t.count("\n") > 8)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0
    memory = next(line for line in text.splitlines() if line.startswith("memory"))
    assert FULL_BLOCK in memory and SHADE in memory, memory  # used, and freed not yet back
    big = next(line for line in text.splitlines() if line.strip().startswith("big"))
    small = next(line for line in text.splitlines() if line.strip().startswith("small"))
    assert big.count(FULL_BLOCK) > small.count(FULL_BLOCK) >= 1
    assert max(len(line) for line in text.splitlines()) <= 100

    piped = subprocess.run([SHELF, "status"], env=env_for(daemon), capture_output=True,
                           text=True, timeout=60)
    assert piped.returncode == 0
    assert "\x1b" not in piped.stdout
    assert FULL_BLOCK not in piped.stdout and "[" not in piped.stdout.split("\n")[1]
    assert "memory:" in piped.stdout and "big" in piped.stdout
    del held


def test_ascii_bars_without_a_utf8_locale(daemon, client):
    client.publish_dataset(big={"v": np.arange(100_000)})
    env = dict(env_for(daemon), LANG="C")
    pid, master = spawn_on_pty([SHELF, "status"], env)
    text = read_until(master, lambda t: "big" in t)
    os.waitpid(pid, 0)
    os.close(master)
    memory = next(line for line in text.splitlines() if line.startswith("memory"))
    assert "#" in memory and FULL_BLOCK not in text


def test_watch_redraws_in_place_and_ctrl_c_restores_the_terminal(daemon, client):
    held = publish_and_hold(client)
    pid, master = spawn_on_pty([SHELF, "status", "--watch", "0.1"], env_for(daemon), rows=12)
    frames = read_until(master, lambda t: t.count("\x1b[H") >= 3)
    assert frames.startswith("\x1b[?1049h\x1b[?25l"), repr(frames[:40])  # own screen, no cursor
    assert frames.count("\x1b[H") >= 3
    assert "\x1b[2J" not in frames, "a full clear flickers"
    assert "\x1b[K\r\n" in frames and "\x1b[J" in frames
    # Every frame fits the 12 rows of the terminal.
    last = frames.rsplit("\x1b[H", 1)[1]
    assert last.count("\r\n") <= 11
    os.write(master, b"\x03")  # Ctrl-C, through the terminal's line discipline
    rest = read_until(master, lambda t: "\x1b[?1049l" in t)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rest.endswith("\x1b[?25h\x1b[?1049l"), repr(rest[-40:])  # cursor back, screen back
    del held


def test_watch_stops_cleanly_on_sigterm_too(daemon, client):
    pid, master = spawn_on_pty([SHELF, "status", "--watch", "0.1"], env_for(daemon))
    read_until(master, lambda t: t.count("\x1b[H") >= 1)
    os.kill(pid, signal.SIGTERM)
    rest = read_until(master, lambda t: "\x1b[?1049l" in t)
    os.waitpid(pid, 0)
    os.close(master)
    assert rest.endswith("\x1b[?25h\x1b[?1049l")


def test_a_narrow_terminal_gets_lines_that_fit(daemon, client):
    client.publish_dataset(**{"a-dataset-name-far-longer-than-the-column": {"v": np.arange(10)}})
    held = publish_and_hold(client)
    pid, master = spawn_on_pty([SHELF, "status"], env_for(daemon), columns=50)
    text = read_until(master, lambda t: "small" in t)
    os.waitpid(pid, 0)
    os.close(master)
    lines = text.replace("\r", "").splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 50, lines
    assert any("freed, not yet back" in line for line in lines)
    del held
