"""The Streamlit app served for a real browser: `streamlit run app.py` on a free port, and Chromium.

Used by tests/test_e2e_browser.py and bench/app_latency.py. Drives Debian's Chromium (/usr/bin/chromium)
through Playwright's Python API; never downloads a browser. Failures raise `ServerError` (the test turns
it into a pytest failure).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from qtl.testing.processes import tied_to_this_process

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class ServerError(RuntimeError):
    """The server exited or did not become healthy; the message ends with its log's tail."""


def chromium_missing() -> str | None:
    """Why the browser cannot run (a message naming the fix), or None when /usr/bin/chromium exists."""
    if CHROMIUM.is_file():
        return None
    return (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), "
        "which scripts/test.sh does when run as root"
    )


def launch_chromium(playwright):
    """Headless Chromium from `sync_playwright()`, at CHROMIUM with CHROMIUM_ARGS."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def offline_env(tmp: Path, **settings: str) -> dict:
    """os.environ for a served app that never touches the network: caches under `tmp`, random init,
    offline, two malloc arenas as scripts/app.sh sets, plus `settings` (e.g. QTL_DEMO="1")."""
    return {
        "MALLOC_ARENA_MAX": "2",  # as scripts/app.sh launches the app
        **os.environ,
        "QTL_CACHE_DIR": str(tmp / "cache"),
        "TORCH_HOME": str(tmp / "torch"),
        "QTL_PRETRAINED": "0",
        "QTL_OFFLINE": "1",
        **settings,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on 127.0.0.1 and a free port, in its own process group, logging to `log`;
    it dies with this process (`tied_to_this_process`), even one killed before it could stop it.

    `t0` is the perf_counter time of the launch; `url` the server's address. As a context manager it
    stops the server on exit.
    """

    def __init__(self, env: dict, log: Path) -> None:
        self.port, self.log = free_port(), Path(log)
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(Path(sys.executable).parent / "streamlit"), "run", "app.py"]
        cmd += ["--server.port", str(self.port), "--server.address", "127.0.0.1"]
        cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
        self.t0 = time.perf_counter()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, **tied_to_this_process()
            )

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = 60) -> None:
        """Return once /_stcore/health answers 200; ServerError if the server exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise ServerError(f"streamlit was not healthy on {self.url} within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 10 s; waits for the server to exit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
