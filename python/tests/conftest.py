"""pytest support: a real shelfd per test, and real separate Python processes.

Nothing is mocked. Each daemon gets its own directory, socket and segment
("shelf-test-py-<pid>-<n>") and removes them when the test ends, so the
tests can run in parallel and leave nothing in /dev/shm.

The build sets SHELFD (the daemon to run) and PYTHONPATH (the built
package); run by hand:
    SHELFD=build/plain/server/shelfd PYTHONPATH=build/plain/python \\
        /usr/bin/python3 -m pytest python/tests
"""

import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import shelf

_counter = itertools.count()

# The shelf CLI of the build whose shelfd the tests run.
SHELF = os.path.join(os.path.dirname(os.path.dirname(os.environ.get("SHELFD", "shelfd"))),
                     "tools", "shelf")


def shelf_cli(daemon, *args, check=False):
    """Runs `shelf --socket SOCKET args...`; with `check`, asserts it exited 0."""
    done = subprocess.run([SHELF, "--socket", daemon.socket, *args], capture_output=True,
                          text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


class Daemon:
    """A running shelfd with its own socket and segment."""

    def __init__(self, memory_limit="64MiB", extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="shelf-py-")
        os.chmod(self.dir, 0o700)
        self.socket = os.path.join(self.dir, "shelf.sock")
        self.segment = f"shelf-test-py-{os.getpid()}-{next(_counter)}"
        self.argv = [os.environ.get("SHELFD", "shelfd"), "--socket", self.socket, "--segment",
                     self.segment, "--memory-limit", memory_limit, *extra_args]
        self._start()

    def _start(self):
        subprocess.run(self.argv, check=True, stdout=subprocess.DEVNULL)
        with open(self.socket + ".lock") as f:
            self.pid = int(f.read().strip())

    def restart(self):
        """kill -9, then a new shelfd on the same socket and segment (it keeps the data)."""
        os.kill(self.pid, signal.SIGKILL)
        self._wait_until_gone()
        self._start()

    def client(self):
        return shelf.Client(self.socket)

    def run(self, code, check=True, env=None):
        """Runs `code` in a new Python process connected to this daemon (via
        $SHELF_SOCKET), with `env` added; returns its CompletedProcess,
        stdout as text."""
        env = dict(os.environ, SHELF_SOCKET=self.socket, **(env or {}))
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def stop(self):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self._wait_until_gone()
        # A daemon that keeps its segment across restarts leaves it behind on
        # purpose; a test leaves nothing.
        try:
            os.unlink(os.path.join("/dev/shm", self.segment))
        except FileNotFoundError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.pid = None

    def _wait_until_gone(self):
        # Gone means the kernel has closed the daemon's files: its sockets
        # report POLLRDHUP to clients from then on. kill() returning does not
        # mean that, nor does a zombie leader (shelfd's metrics thread may
        # still be exiting, and the files close with the last thread). A
        # pidfd becomes readable only once the whole thread group has exited.
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(10_000):
                raise AssertionError(f"shelfd (pid {self.pid}) did not exit within 10 s")
        finally:
            os.close(pidfd)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def eventually(predicate, timeout=10.0):
    """Polls `predicate` until true; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
