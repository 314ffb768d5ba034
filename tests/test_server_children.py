"""Servers that tests start die with the process that started them, even when it is killed with SIGKILL.

A python child stands in for pytest: it starts a server with `qtl.testing.processes.tied_to_this_process()`
(a sleeping python, or the real `streamlit run app.py` through `qtl.testing.served_app.Server`, which
uses it), prints its pid and waits. The
test kills that child with SIGKILL, so no teardown runs, and the server must be gone within seconds.
The same child starting its server in its own session only (no parent-death signal) leaves it running:
the check can tell the two apart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

TESTS = Path(__file__).resolve().parent
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# the stand-in for pytest: starts the server, says its pid, then waits to be killed
PARENT = """
import subprocess, sys, time
from qtl.testing.processes import tied_to_this_process
tied = sys.argv[1] == "tied"
server = subprocess.Popen({sleeper!r}, **(tied_to_this_process() if tied else {{"start_new_session": True}}))
print(server.pid, flush=True)
time.sleep(600)
"""
STREAMLIT_PARENT = """
import sys, time
from pathlib import Path
from qtl.testing.served_app import Server, offline_env
tmp = Path(sys.argv[1])
server = Server(offline_env(tmp), tmp / "streamlit.log")
server.wait_healthy(120)
print(server.proc.pid, server.port, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet reaped by whoever adopted it) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def listening_within(port: int, seconds: float) -> bool:
    """Whether something still accepts connections on `port` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def start_parent(script: str, *argv: str) -> tuple[subprocess.Popen, list[str]]:
    """The stand-in for pytest, and the first line it printed (the server's pid, ...)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "QTL_OFFLINE": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-c", script, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    line = parent.stdout.readline()
    if not line:
        parent.kill()
        pytest.fail(f"the parent exited with {parent.wait()} before starting its server")
    return parent, line.split()


def kill9(parent: subprocess.Popen) -> None:
    parent.send_signal(signal.SIGKILL)
    assert parent.wait(30) == -signal.SIGKILL
    parent.stdout.close()


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "session-only"])
def test_a_server_dies_with_the_process_that_started_it(tied):
    parent, said = start_parent(PARENT.format(sleeper=SLEEPER), "tied" if tied else "free")
    server = int(said[0])
    try:
        assert alive(server)
        kill9(parent)
        if tied:
            assert gone_within(server, 5), f"the server {server} outlived its killed parent"
        else:  # the control: without the parent-death signal nothing stops it
            assert not gone_within(server, 2), "the untied server died too: the check tells nothing"
    finally:
        if parent.poll() is None:
            parent.kill()
        if alive(server):
            os.kill(server, signal.SIGKILL)


def test_streamlit_dies_with_the_process_that_served_it(tmp_path):
    """The real app (`served_app.Server`, as the browser tests and benchmarks start it) goes with its
    killed parent, and its port with it (the port itself may stay in TIME_WAIT a minute: it is the
    listener that must be gone)."""
    parent, said = start_parent(STREAMLIT_PARENT, str(tmp_path))
    server, port = int(said[0]), int(said[1])
    try:
        assert alive(server)
        kill9(parent)
        assert gone_within(server, 5), f"streamlit ({server}) outlived its killed parent"
        # nothing listens on its port any more, once its last thread has ended (its main thread reads
        # as a zombie while the others still close the process's files)
        assert not listening_within(port, 5), f"port {port} still listens after streamlit ended"
    finally:
        if parent.poll() is None:
            parent.kill()
        if alive(server):
            os.killpg(server, signal.SIGKILL)
