"""Load benchmark: `qtl serve` (micro-batching) against a naive one-request-one-forward server.

The servers serve the same checkpoints (default: every shipped one, models/*.pt), each in its own
process, one after the other in the same run, and each gets the same load: --clients concurrent clients, each
posting one real hymenoptera val image per request (in turn through the val set) as soon as its last
answer came back, for --seconds. Reported per server: requests, errors (anything but a 200 with an
answer from every model), throughput (images/s), images per CPU-second the server used (its user +
system time: what the work costs, whatever share of the cores the server got), latency p50 / p95, and
its resident memory (RSS: after a warm-up, a quarter into the run, its range and at the end).

    micro-batched  `qtl serve MODELS`: requests gather into batches of up to --max-batch images, one
                   backbone pass per batch for the frozen models that share it, on one compute thread
    naive          FastAPI + uvicorn, a plain `def` endpoint: each request decodes its images (the same
                   limits) and runs every model's whole forward on them at once, in FastAPI's thread
                   pool: one request, one forward per model (what a first model server does)
    per-request    the same, but through `qtl.analysis.inference.predict`, which shares one backbone pass
                   between the frozen models: isolates what batching across requests adds

    .venv/bin/python bench/serve_load.py [--clients 32] [--seconds 60] [--max-batch N] [--workers N]
                                         [--models A.pt ...] [--servers KIND ...] [--json PATH]

(--servers: which of the three to run, all by default.)

The script exits 1 when a server answered any request with an error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import File, UploadFile  # at the top: FastAPI resolves the endpoint's annotations here

from qtl.deploy.batching import DEFAULT_MAX_BATCH, DEFAULT_WORKERS
from qtl.testing.served_api import post_images, request

REPO = Path(__file__).resolve().parents[1]

WARM_UP_REQUESTS = 4
BASELINES = ("naive", "per-request")


def baseline_app(models: list[str], shared: bool):
    """A baseline server: each request decodes its images (the same limits) and runs the models on
    them at once, in FastAPI's thread pool; `shared`: through `qtl.analysis.inference.predict` (one
    backbone pass for the frozen models), else each model's whole forward."""
    import torch
    from fastapi import FastAPI

    from qtl.analysis.inference import eval_transform
    from qtl.deploy.limits import ServeLimits, decode_upload
    from qtl.deploy.models import ModelStore

    store, limits = ModelStore.load(models), ServeLimits()

    def each_model(images) -> list[dict]:
        rows = [{} for _ in images]
        with torch.no_grad():
            for name, m in store.models.items():
                transform = eval_transform(m)
                probs = torch.softmax(m.model(torch.stack([transform(im) for im in images])), 1)
                for row, p in zip(rows, probs.tolist(), strict=True):
                    row[name] = {
                        "label": m.class_names[p.index(max(p))],
                        "probabilities": dict(zip(m.class_names, p, strict=True)),
                    }
        return rows

    run = store.predict if shared else each_model
    app = FastAPI()

    @app.post("/predict")
    def predict(file: Annotated[list[UploadFile], File()]) -> dict:
        images = [decode_upload(f.file.read(), f.filename, limits) for f in file]
        rows = run(images)
        return {"images": [{"file": f.filename, "models": row} for f, row in zip(file, rows, strict=True)]}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def start(kind: str, models: list[str], port: int, batching: list[str]) -> subprocess.Popen:
    if kind == "micro-batched":
        cmd = [sys.executable, "-m", "qtl", "serve", *models, "--port", str(port), *batching]
    else:
        cmd = [sys.executable, __file__, "--serve-baseline", kind, "--port", str(port), "--models", *models]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            if request(f"http://127.0.0.1:{port}/healthz", timeout=5)[0] == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"{kind} server did not start: {proc.stderr.read() if proc.poll() else 'timeout'}"
            )
        time.sleep(0.5)


def load(
    url: str, images: list[tuple[str, bytes]], n_models: int, clients: int, seconds: float, pid: int
) -> dict:
    """`clients` threads posting one image per request for `seconds`; latencies, errors, memory."""
    for name, data in images[:WARM_UP_REQUESTS]:
        post_images(url, [(name, data)], timeout=600)
    latencies: list[float] = []
    errors: list[str] = []
    memory: list[float] = [rss_mib(pid)]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            name, data = images[i % len(images)]
            i += clients
            t0 = time.perf_counter()
            try:
                status, answer = post_images(url, [(name, data)], timeout=600)
                ok = status == 200 and len(answer["images"][0]["models"]) == n_models
                why = None if ok else f"{status}: {str(answer)[:200]}"
            except Exception as exc:  # a dropped connection, a timeout: an error, counted
                why = f"{type(exc).__name__}: {exc}"
            with lock:
                if why is None:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors.append(why)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        memory.append(rss_mib(pid))
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    ordered = sorted(latencies)
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": elapsed,
        "images_per_s": len(latencies) / elapsed,
        "server_cpu_s": cpu,
        "images_per_cpu_s": len(latencies) / cpu,
        "p50_s": statistics.median(ordered) if ordered else None,
        "p95_s": ordered[int(0.95 * (len(ordered) - 1))] if ordered else None,
        "rss_mib_after_warm_up": memory[0],
        "rss_mib_at_a_quarter": memory[len(memory) // 4],
        "rss_mib_min": min(memory),
        "rss_mib_max": max(memory),
        "rss_mib_end": memory[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=[str(p) for p in sorted((REPO / "models").glob("*.pt"))]
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=8131)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="qtl serve --max-batch")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="qtl serve --workers")
    parser.add_argument(
        "--servers", nargs="+", choices=[*BASELINES, "micro-batched"], default=[*BASELINES, "micro-batched"]
    )
    parser.add_argument("--serve-baseline", choices=BASELINES, help=argparse.SUPPRESS)  # a baseline's process
    args = parser.parse_args()
    if args.serve_baseline:
        import uvicorn

        app = baseline_app(args.models, shared=args.serve_baseline == "per-request")
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return 0

    from machine import machine

    from qtl.data.sources import resolve_dataset

    root = resolve_dataset(download=False)
    images = [(p.name, p.read_bytes()) for p in sorted((root / "val").glob("*/*"))]
    url = f"http://127.0.0.1:{args.port}"
    results = {}
    for kind in dict.fromkeys(args.servers):  # each once, in the order given
        batching = ["--max-batch", str(args.max_batch), "--workers", str(args.workers)]
        proc = start(kind, args.models, args.port, batching)
        try:
            results[kind] = load(url, images, len(args.models), args.clients, args.seconds, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        r = results[kind]
        print(
            f"{kind:<14} {r['requests']:>5} requests, {r['errors']} errors, "
            f"{r['images_per_s']:6.2f} images/s ({r['images_per_cpu_s']:.2f} per CPU-second of the server), "
            f"p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
            f"RSS {r['rss_mib_after_warm_up']:.0f} MiB after warm-up, "
            f"{r['rss_mib_at_a_quarter']:.0f} a quarter in, "
            f"{r['rss_mib_min']:.0f}-{r['rss_mib_max']:.0f} MiB during, {r['rss_mib_end']:.0f} at the end",
            flush=True,
        )
    batched = results.get("micro-batched")
    ratios = {}
    for kind in BASELINES if batched else ():
        if kind not in results:
            continue
        base = results[kind]
        ratios[kind] = {
            "throughput": batched["images_per_s"] / base["images_per_s"],
            "images_per_cpu_s": batched["images_per_cpu_s"] / base["images_per_cpu_s"],
            "p50": base["p50_s"] / batched["p50_s"],
            "p95": base["p95_s"] / batched["p95_s"],
        }
        r = ratios[kind]
        print(
            f"micro-batched against {kind}: throughput {r['throughput']:.2f}x, images per CPU-second "
            f"{r['images_per_cpu_s']:.2f}x, p50 {r['p50']:.2f}x lower, "
            f"p95 {r['p95']:.2f}x lower"
        )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        document = {"machine": machine(), "args": vars(args), "results": results, "ratios": ratios}
        Path(args.json).write_text(json.dumps(document, indent=1))
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
