"""End to end in a real browser: `streamlit run app.py`, train through the UI, classify an uploaded image.

Drives Debian's Chromium (/usr/bin/chromium, installed by scripts/test.sh) with Playwright's Python API;
never downloads a browser. The server runs offline on a tiny generated dataset with random init, and is
killed at the end. A screenshot is saved under test-artifacts/.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, make_image_folder

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
ARTIFACTS = REPO / "test-artifacts"
PREDICTION = re.compile(r"(quantum|linear|finetuned)-resnet18\S+ → (\w+) \((\d+\.\d)%\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict, log: Path) -> subprocess.Popen:
    """`streamlit run app.py` on localhost:port in its own process group."""
    cmd = [
        str(Path(sys.executable).parent / "streamlit"),
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"streamlit was not healthy within {timeout} s:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.e2e
def test_train_then_classify_in_chromium(tmp_path):
    """Quick start trains quantum, linear and finetuned in the UI; an uploaded val image gets 3 answers."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), "
            "which scripts/test.sh does when run as root"
        )
    from playwright.sync_api import expect, sync_playwright

    data = make_image_folder(tmp_path / "tiny")
    env = {
        **os.environ,
        "QTL_DATA_DIR": str(data),
        "QTL_MODELS_DIR": str(tmp_path / "models"),
        "QTL_CACHE_DIR": str(tmp_path / "cache"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "QTL_PRETRAINED": "0",
        "QTL_OFFLINE": "1",
        "QTL_DEMO": "1",  # the hosted-demo setting: a private session area, and 1 epoch per quick-start run
        "QTL_DEMO_MAX_EPOCHS": "1",
    }
    port, log = free_port(), tmp_path / "streamlit.log"
    ARTIFACTS.mkdir(exist_ok=True)
    proc = start_server(port, env, log)
    try:
        wait_healthy(port, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/", timeout=30_000)
                expect(page.get_by_role("heading", name="Quantum transfer learning explorer")).to_be_visible()

                # ---- train: the one-click quick start (quantum, linear, finetuned)
                page.get_by_role("button", name="Train quantum, linear and finetuned").click()
                expect(page.get_by_text(re.compile(r"Finished: 3 checkpoint\(s\) saved"))).to_be_visible(
                    timeout=180_000
                )
                expect(page.get_by_test_id("stSidebar").get_by_text("finetuned-resnet18")).to_be_visible()

                # ---- classify: upload a val image
                page.get_by_role("link", name="Classify").click()
                expect(page.get_by_role("heading", name="Classify")).to_be_visible()
                image = sorted((data / "val" / "dogs").glob("*.png"))[0]
                page.locator("input[type=file]").first.set_input_files(str(image))
                answers = page.get_by_text(PREDICTION)
                expect(answers.first).to_be_visible(timeout=60_000)
                expect(page.locator("[data-testid=stImage] img").first).to_be_visible()
                expect(page.locator(".vega-embed").first).to_be_visible()
                text = page.get_by_test_id("stMain").inner_text()
                page.screenshot(path=str(ARTIFACTS / "e2e-classify.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop_server(proc)
    found = {variant: (label, float(p)) for variant, label, p in PREDICTION.findall(text)}
    assert set(found) == {"quantum", "linear", "finetuned"}, text[-2000:]
    for label, p in found.values():
        assert label in ("cats", "dogs") and 50.0 <= p <= 100.0
    assert proc.returncode is not None
