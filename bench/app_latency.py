"""App latency benchmark: first page after server start, and classifying an upload with three variants.

Measured in one run, on one machine:

  first page   wall time from launching `streamlit run app.py` (subprocess start) until the Overview's
               title is visible in headless Chromium. The browser is started beforehand and polls the
               port, so browser start-up is not counted. Repeated --starts times (fresh server each time).
  classify     three checkpoints (quantum, linear, finetuned; resnet18 random init, 1 epoch on a small
               generated dataset) are shipped in a models/ folder and loaded into every session (demo
               mode autoload). Two numbers:
               - compute: what the Classify page does per upload, in-process: decode the uploaded bytes
                 (`qtl.data.images.load_image`) + `qtl.analysis.inference.predict` with the three warm models;
               - browser: from handing a PNG to the page's file input until all three predictions are
                 on screen (upload, rerun, compute, render). Each sample is a fresh browser session on the
                 warm server; the first, which loads the models, is reported separately.

    .venv/bin/python bench/app_latency.py [--starts 3] [--repeats 5] [--json out.json]

Targets: first page <= 3 s; classifying an uploaded image with three variants <= 0.5 s.
Needs Debian's /usr/bin/chromium and Playwright's Python API (never downloads a browser).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from qtl.testing.image_folders import make_image_folder  # noqa: E402
from qtl.testing.served_app import Server, chromium_missing, launch_chromium, offline_env  # noqa: E402

TARGET_FIRST_PAGE_S = 3.0
TARGET_CLASSIFY_S = 0.5
PREDICTION = re.compile(r"(quantum|linear|finetuned)-\S+ → \w+ \(\d+\.\d%\)")


def train_checkpoints(data: Path, models: Path) -> list[Path]:
    """quantum, linear and finetuned, 1 epoch each, random-init resnet18, saved into `models`."""
    from qtl.config import MachineConfig, ModelConfig
    from qtl.experiments.runs import plan_runs
    from qtl.training.fit import fit

    base = ModelConfig(pretrained=False, class_names=("cats", "dogs"))
    machine = MachineConfig(data_dir=data)
    runs = plan_runs(["quantum", "linear", "finetuned"], base, [0], models, epochs=1, machine=machine)
    return [
        fit(r.model_config, r.train_config, r.machine, checkpoint_path=r.checkpoint_path).checkpoint_path
        for r in runs
    ]


def compute_latency(checkpoints: list[Path], image: bytes, repeats: int, threads: int) -> list[float]:
    """Seconds per upload for decode + predict with the three loaded models (warm), on `threads` threads."""
    import torch

    from qtl.analysis.inference import predict
    from qtl.data.images import load_image
    from qtl.models.checkpoint import load_checkpoint

    models = {p.stem: load_checkpoint(p) for p in checkpoints}
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    predict(models, load_image(image))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(models, load_image(image))
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(default)
    return times


def first_page_time(browser, env: dict, log: Path, timeout: float = 60) -> float:
    """Seconds from server launch until the Overview's title is visible."""
    page = browser.new_page()
    server = Server(env, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                page.goto(server.url, timeout=5_000)
                break
            except Exception:  # connection refused until the server listens
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no server on {server.url} within {timeout} s") from None
                time.sleep(0.02)
        page.get_by_role("heading", name="Quantum transfer learning explorer").wait_for(timeout=timeout * 1e3)
        return time.perf_counter() - server.t0
    finally:
        page.close()
        server.stop()


def browser_classify_time(browser, url: str, image: Path, timeout_s: float = 60) -> float:
    """Seconds from handing `image` to Classify's uploader until three predictions show, in a new session."""
    page = browser.new_page()
    try:
        page.goto(f"{url}/classify", timeout=timeout_s * 1e3)
        page.get_by_role("heading", name="Classify").wait_for(timeout=timeout_s * 1e3)
        uploader = page.locator("input[type=file]").first
        uploader.wait_for(state="attached", timeout=timeout_s * 1e3)
        t0 = time.perf_counter()
        uploader.set_input_files(str(image))
        page.wait_for_function(
            "(re) => (document.body.innerText.match(new RegExp(re, 'g')) || []).length >= 3",
            arg=PREDICTION.pattern,
            timeout=timeout_s * 1e3,
            polling=10,
        )
        return time.perf_counter() - t0
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="server starts to time (fresh server each)")
    parser.add_argument("--repeats", type=int, default=5, help="timed classifications")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        sys.exit(missing)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="qtl-app-bench-"))
    env = offline_env(tmp)
    os.environ.update({k: env[k] for k in ("QTL_CACHE_DIR", "TORCH_HOME")})
    data = make_image_folder(tmp / "data", per_split=(6, 6), size=(64, 64))
    models = tmp / "models"
    checkpoints = train_checkpoints(data, models)
    image = sorted((data / "val" / "dogs").glob("*.png"))[0]
    log = tmp / "streamlit.log"

    import torch

    cores = torch.get_num_threads()
    compute = {
        n: compute_latency(checkpoints, image.read_bytes(), args.repeats * 4, n) for n in sorted({1, cores})
    }
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            local = {**env, "QTL_DATA_DIR": str(data)}
            starts = [first_page_time(browser, local, log) for _ in range(args.starts)]
            demo_starts = [
                first_page_time(browser, {**local, "QTL_DEMO": "1"}, log) for _ in range(args.starts)
            ]
            demo = {**local, "QTL_MODELS_DIR": str(models), "QTL_DEMO": "1"}  # demo: autoload, 1 torch thread
            with Server(demo, log) as server:
                server.wait_healthy()
                cold = browser_classify_time(browser, server.url, image, timeout_s=120)
                warm = [browser_classify_time(browser, server.url, image) for _ in range(args.repeats)]
        finally:
            browser.close()

    def ratio(seconds: float, target: float) -> str:
        return f"target {target * 1e3:.0f} ms, ratio {seconds / target:.2f}"

    ms = lambda ts: ", ".join(f"{t * 1e3:.0f}" for t in ts)  # noqa: E731
    result = {
        "first_page_s": statistics.median(starts),
        "first_page_demo_s": statistics.median(demo_starts),
        **{f"classify_compute_{n}thread_s": statistics.median(ts) for n, ts in compute.items()},
        "classify_browser_s": statistics.median(warm),
        "classify_browser_cold_s": cold,
    }
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        f"first page after server start, local mode : median {result['first_page_s'] * 1e3:.0f} ms "
        f"({ms(starts)}); {ratio(result['first_page_s'], TARGET_FIRST_PAGE_S)}"
    )
    print(
        f"first page after server start, demo mode  : median {result['first_page_demo_s'] * 1e3:.0f} ms "
        f"({ms(demo_starts)}); {ratio(result['first_page_demo_s'], TARGET_FIRST_PAGE_S)}"
    )
    for n, ts in compute.items():
        med = statistics.median(ts)
        print(
            f"classify 1 upload, 3 variants, compute, {n} torch thread(s): "
            f"median {med * 1e3:.0f} ms of {len(ts)}; {ratio(med, TARGET_CLASSIFY_S)}"
        )
    med = result["classify_browser_s"]
    print(
        f"classify 1 upload, 3 variants, in the browser (demo server): median {med * 1e3:.0f} ms "
        f"({ms(warm)}); {ratio(med, TARGET_CLASSIFY_S)}; first session, loading models: {cold * 1e3:.0f} ms"
    )
    if args.json:
        raw = {"starts": starts, "demo_starts": demo_starts, "browser": warm}
        raw |= {f"compute_{n}thread": ts for n, ts in compute.items()}
        args.json.write_text(json.dumps({**result, **raw}, indent=2))


if __name__ == "__main__":
    main()
