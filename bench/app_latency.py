"""The explorer's latency and memory targets, measured in one run on the shipped checkpoints.

The server is `streamlit run app.py` as scripts/app.sh starts it (local mode: every checkpoint in
models/SHIPPED loads into each session), offline (QTL_OFFLINE=1 and no ImageNet weights: the bundled
efficientnet_lite0), with hymenoptera as its dataset when qtl finds it. The uploads are hymenoptera val
images (generated ones when the dataset is absent). The browser is Debian's headless Chromium through
Playwright (never downloaded).

Targets, each printed with PASS or FAIL:

  first page   <= 5 s     from the server being up (its health endpoint answers) until a fresh browser
                          session shows the whole Overview (down to its last element, the quick start's
                          button); median of --starts fresh servers
  classify     <= 1.0 s   from handing one uploaded image to the Classify page until every shipped
                          model's answer and heatmap are on screen; median of the warm classifications
                          (the first, which loads the models, is printed beside it)
  memory       <= 800 MB  server RSS once every shipped checkpoint is loaded and one Classify is done
  no growth    RSS after --requests classifications at most GROWTH_MB above RSS after the first
                          WARMUP ones

Also printed, as the same run's baseline: the Classify page's compute for one image, in this process,
the way the app did it before (predict, then each head-only checkpoint on its own copy of the backbone
explained one by one) and now (one shared backbone, `explain_all`, whose probabilities are the answer),
with the weights each way holds.

    .venv/bin/python bench/app_latency.py [--starts 3] [--requests 200] [--json PATH]

Exits 1 when a target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

from qtl.testing.served_app import REPO, Server, chromium_missing, offline_env

TARGET_FIRST_PAGE_S = 5.0
TARGET_CLASSIFY_S = 1.0
TARGET_MEMORY_MB = 800
GROWTH_MB = 25  # RSS drifts by a few pages between samples; a leak of one image a request is ~0.5 MB
WARMUP = 20


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and its anonymous (private) and file-backed parts, in MB, from /proc (Linux)."""
    fields = ("VmRSS", "RssAnon", "RssFile")
    with open(f"/proc/{pid}/status") as f:
        values = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(fields)}
    return {k: round(v, 1) for k, v in values.items()}


def shipped() -> list[Path]:
    """The shipped checkpoints, as models/SHIPPED lists them."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "models" / "SHIPPED").read_text().splitlines())
    return [REPO / "models" / name for name in lines if name]


def uploads(tmp: Path) -> tuple[str | None, list[bytes]]:
    """(dataset root or None, image bytes to upload): hymenoptera val images where qtl finds the dataset."""
    from qtl.data.folders import DatasetError
    from qtl.data.sources import resolve_dataset

    try:
        root = resolve_dataset(download=False)
    except DatasetError:
        from qtl.testing.image_folders import make_image_folder

        root, found = make_image_folder(tmp / "data", ("ants", "bees"), (4, 8), (500, 375)), None
    else:
        found = str(root)
    return found, [p.read_bytes() for p in sorted((Path(root) / "val").rglob("*.*"))[:40]]


def compute_baseline(images: list[bytes], repeats: int) -> dict:
    """Seconds for the Classify page's compute on one image (predict + a heatmap per shipped model) and
    the weights held: before (private backbones, one explain per model) and now (shared, explain_all)."""
    import dataclasses

    from qtl.analysis.explain import explain, explain_all
    from qtl.analysis.inference import predict
    from qtl.data.images import load_image
    from qtl.models.backbones import load_backbone
    from qtl.models.checkpoint import load_checkpoint
    from qtl.models.variants import build_model

    now = {p.stem: load_checkpoint(p) for p in shipped()}
    before = {}
    for name, m in now.items():  # the same heads, each frozen one on a private copy of its backbone
        if m.model_config.frozen:
            model = build_model(m.model_config, backbone=load_backbone(m.model_config.backbone, True))
            model.head.load_state_dict(m.model.head.state_dict())
            m = dataclasses.replace(m, model=model.eval())
        before[name] = m

    def held(models: dict) -> float:
        tensors = {t.data_ptr(): t.nbytes for m in models.values() for t in m.model.state_dict().values()}
        return sum(tensors.values()) / 2**20

    def old(image):
        predict(before, image)
        return {name: explain(m, image) for name, m in before.items()}

    def new(image):  # an explained image's answer is its explanation's probabilities: one pass
        return explain_all(now, image)

    times = {"before": [], "now": []}
    for i in range(repeats + 1):
        image = load_image(images[i % len(images)])
        for label, run in (("before", old), ("now", new)):
            t0 = time.perf_counter()
            run(image)
            if i:  # the first of each is a warm-up
                times[label].append(time.perf_counter() - t0)
    return {
        "before_s": statistics.median(times["before"]),
        "now_s": statistics.median(times["now"]),
        "before_weights_mb": held(before),
        "now_weights_mb": held(now),
    }


async def first_page(env: dict, log: Path, browser) -> tuple[float, float]:
    """(seconds from the server being up, seconds from its launch) until the Overview's title shows."""
    with Server(env, log) as server:
        await asyncio.to_thread(server.wait_healthy, 120)
        up = time.perf_counter()
        page = await browser.new_page()
        await page.goto(server.url, timeout=120_000)
        # ready: its last element, the quick start's button, is on screen
        await page.get_by_role("button", name="Train quantum, linear and finetuned").wait_for(timeout=120_000)
        ready = time.perf_counter()
        await page.close()
    return ready - up, ready - server.t0


async def classify_run(env: dict, log: Path, browser, images: list[bytes], requests: int) -> dict:
    """One session on /classify: `requests` uploads, one after another; latencies and server memory."""
    from qtl.testing.visitors import Visit, classify

    n = len(shipped())
    with Server(env, log) as server:
        await asyncio.to_thread(server.wait_healthy, 120)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        await page.goto(f"{server.url}/classify")  # a deep link, as a shared address would be
        await page.get_by_role("heading", name="Classify", exact=True).wait_for()
        visit, rss = Visit(0), []
        for i in range(requests):
            await classify(page, visit, f"v0-{i}.png", images[i % len(images)], n, heatmaps=True)
            rss.append(memory_mb(server.proc.pid))
        await page.close()
        log_text = server.log.read_text(errors="replace")
    times = visit.latencies
    return {
        "cold_s": times[0],
        "warm_s": statistics.median(times[1:]),
        "warm_p95_s": statistics.quantiles(times[1:], n=20)[-1] if len(times) > 2 else times[-1],
        "after_one": rss[0],
        "after_warmup": rss[min(WARMUP, len(rss)) - 1],
        "after_all": rss[-1],
        "rss_mb": [r["VmRSS"] for r in rss],
        "errors": visit.errors + (["a traceback in the server log"] if "Traceback" in log_text else []),
        "models": sorted(visit.models),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


async def run(args) -> dict:
    from playwright.async_api import async_playwright

    from qtl.testing.served_app import CHROMIUM, CHROMIUM_ARGS

    tmp = Path(tempfile.mkdtemp(prefix="qtl-app-bench-"))
    root, images = uploads(tmp)
    env = offline_env(tmp, QTL_PRETRAINED="1", **({"QTL_DATA_DIR": root} if root else {}))
    env.pop("QTL_MODELS_DIR", None)  # the repository's models/
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            starts = [await first_page(env, tmp / "first.log", browser) for _ in range(args.starts)]
            result = await classify_run(env, tmp / "classify.log", browser, images, args.requests)
        finally:
            await browser.close()
    return {"starts": starts, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="fresh servers timed to their first page")
    parser.add_argument("--requests", type=int, default=200, help="classifications in one session")
    parser.add_argument("--repeats", type=int, default=5, help="in-process compute repeats (baseline)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        sys.exit(missing)
    os.environ.setdefault("QTL_OFFLINE", "1")
    info = machine()
    r = asyncio.run(run(args))
    _, images = uploads(Path(tempfile.mkdtemp(prefix="qtl-app-bench-")))
    import torch

    torch.set_num_threads(1)  # as the server computes a request (ui/settings.py, QTL_TORCH_THREADS)
    base = compute_baseline(images, args.repeats)

    first = statistics.median(up for up, _ in r["starts"])
    one, warm, end = r["after_one"]["VmRSS"], r["after_warmup"]["VmRSS"], r["after_all"]["VmRSS"]
    checks = {
        "first page": first <= TARGET_FIRST_PAGE_S,
        "classify": r["warm_s"] <= TARGET_CLASSIFY_S,
        "memory": one <= TARGET_MEMORY_MB,
        "no growth": end - warm <= GROWTH_MB,
        "no errors": not r["errors"],
    }
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average at start {info['load_avg_at_start']}")
    print(
        f"[{verdict(checks['first page'])}] first page: median {first:.2f} s after the server is up "
        f"(target {TARGET_FIRST_PAGE_S:.0f} s); "
        + ", ".join(f"{up:.2f} s up / {launch:.2f} s from launch" for up, launch in r["starts"])
    )
    print(
        f"[{verdict(checks['classify'])}] classify 1 upload, {len(shipped())} shipped models with heatmaps, "
        f"in the browser: median {r['warm_s']:.2f} s, p95 {r['warm_p95_s']:.2f} s of {args.requests - 1} "
        f"(target {TARGET_CLASSIFY_S:.1f} s); the first, loading the models: {r['cold_s']:.2f} s"
    )
    print(
        f"[{verdict(checks['memory'])}] memory with every shipped checkpoint loaded and one Classify done: "
        f"RSS {one:.0f} MB (target {TARGET_MEMORY_MB} MB): {r['after_one']['RssAnon']:.0f} MB private "
        f"(anonymous), {r['after_one']['RssFile']:.0f} MB mapped files (shared libraries)"
    )
    print(
        f"[{verdict(checks['no growth'])}] no growth over {args.requests} classifications: RSS "
        f"{warm:.0f} MB after {WARMUP}, {end:.0f} MB after {args.requests} ({end - warm:+.0f} MB; at most "
        f"+{GROWTH_MB} MB); private {r['after_warmup']['RssAnon']:.0f} -> {r['after_all']['RssAnon']:.0f} MB"
    )
    print(f"[{verdict(checks['no errors'])}] errors: {r['errors'] or 'none'}")
    print(
        f"baseline, this process, {torch.get_num_threads()} torch thread(s): the Classify page's compute "
        f"for one image (predict + heatmaps, {len(shipped())} models): before "
        f"{base['before_s'] * 1e3:.0f} ms on {base['before_weights_mb']:.0f} MB of weights, now "
        f"{base['now_s'] * 1e3:.0f} ms on "
        f"{base['now_weights_mb']:.0f} MB (ratio {base['before_s'] / base['now_s']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **r, "baseline": base, "checks": checks}, indent=1))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
