"""Load benchmark: concurrent visitors of the served demo app, each uploading and classifying images.

One demo-mode server (`streamlit run app.py`, QTL_DEMO=1) ships three tiny checkpoints (quantum, linear,
finetuned; resnet18 random init, 1 epoch on a small generated dataset) that every session autoloads.
Each visitor is its own headless Chromium context, so its own Streamlit session: it uploads a checkpoint
of its own on the Checkpoints page, then classifies one uploaded image after another on Classify (4
models each) until time is up, then reads its session's checkpoint list (see tests/visitors.py).

Measured in one run:
  baseline  one visitor alone for --baseline-seconds;
  load      --visitors at once for --seconds.
Reported: classifications, latency (upload handed to the page -> every prediction on screen) median
and p95 with the load/baseline ratio, errors (exceptions or error boxes on a page, JavaScript errors,
timeouts, tracebacks in the server log), isolation (a visitor seeing another's upload among its models or
checkpoints), and the server's resident memory (RSS) sampled every second.

    .venv/bin/python bench/load_app.py [--visitors 8] [--seconds 60] [--baseline-seconds 15] [--json PATH]

Exits 1 if any visitor had an error or saw another's upload. Needs Debian's /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from app_latency import train_checkpoints  # noqa: E402
from machine import machine  # noqa: E402

from qtl.testing.image_folders import make_image_folder  # noqa: E402
from qtl.testing.served_app import Server, chromium_missing, offline_env  # noqa: E402
from qtl.testing.visitors import visit_all  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler(threading.Thread):
    """(seconds since start, RSS MiB) of a process every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self._stop_event = pid, every, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic() - self.t0, rss_mib(self.pid)))
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def phase(url: str, pid: int, visitors: int, seconds: float, checkpoint: bytes, images, shipped) -> dict:
    """Run `visitors` for `seconds`; their latencies, errors, isolation and the server's RSS samples."""
    sampler = Sampler(pid)
    sampler.start()
    visits = asyncio.run(visit_all(url, visitors, checkpoint, images, seconds, shipped))
    samples = sampler.stop()
    latencies = [t for v in visits for t in v.latencies]
    starts = [v.classifying_from for v in visits if v.classifying_from is not None]
    return {
        "visitors": visitors,
        "seconds": seconds,
        "classifications": len(latencies),
        "per_visitor": [len(v.latencies) for v in visits],
        "median_s": statistics.median(latencies) if latencies else float("nan"),
        "p95_s": p95(latencies),
        "max_s": max(latencies, default=float("nan")),
        "errors": {v.visitor: v.errors for v in visits if v.errors},
        "foreign": {v.visitor: sorted(v.foreign) for v in visits if v.foreign},
        "rss_mib": [(round(t, 1), round(m, 1)) for t, m in samples],
        # seconds after the phase began when every visitor had its checkpoint loaded and was classifying
        "all_classifying_s": round(max(starts) - sampler.t0, 1) if starts else None,
    }


def rss_summary(r: dict) -> str:
    """RSS at the start, once every visitor's own checkpoint is loaded, and its range from then on."""
    samples, ready = r["rss_mib"], r["all_classifying_s"]
    after = [m for t, m in samples if ready is not None and t >= ready] or [samples[-1][1]]
    return (
        f"start {samples[0][1]:.0f} MiB; all {r['visitors']} visitor(s) classifying after {ready} s: "
        f"{after[0]:.0f} MiB, from then on {min(after):.0f}-{max(after):.0f} MiB, "
        f"end {samples[-1][1]:.0f} MiB ({len(samples)} samples, 1 s apart)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=8, help="concurrent browser sessions")
    parser.add_argument("--seconds", type=float, default=60, help="how long each visitor classifies")
    parser.add_argument("--baseline-seconds", type=float, default=15, help="one visitor alone, first")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        sys.exit(missing)

    tmp = Path(tempfile.mkdtemp(prefix="qtl-load-bench-"))
    env = offline_env(tmp, QTL_DEMO="1", QTL_MODELS_DIR=str(tmp / "models"), QTL_DATA_DIR=str(tmp / "data"))
    os.environ.update({k: env[k] for k in ("QTL_CACHE_DIR", "TORCH_HOME")})
    data = make_image_folder(tmp / "data", per_split=(6, 6), size=(64, 64))
    checkpoints = train_checkpoints(data, tmp / "models")
    shipped = {p.stem for p in checkpoints}
    mine = next(p for p in checkpoints if p.name.startswith("quantum-")).read_bytes()
    images = [p.read_bytes() for p in sorted((data / "val").rglob("*.png"))]

    with Server(env, tmp / "streamlit.log") as server:
        server.wait_healthy()
        pid = server.proc.pid
        idle = rss_mib(pid)
        print(f"server up, RSS {idle:.0f} MiB; warm-up: the first session loads the models", file=sys.stderr)
        warm = phase(server.url, pid, 1, 0.1, mine, images, shipped)
        print(f"baseline: 1 visitor, {args.baseline_seconds:.0f} s", file=sys.stderr)
        base = phase(server.url, pid, 1, args.baseline_seconds, mine, images, shipped)
        print(f"load: {args.visitors} visitors, {args.seconds:.0f} s", file=sys.stderr)
        load = phase(server.url, pid, args.visitors, args.seconds, mine, images, shipped)
        log = server.log.read_text(errors="replace")
    tracebacks = log.count("Traceback")

    print(f"machine: {machine()}")
    print(f"server RSS idle (before any visitor): {idle:.0f} MiB")
    print(f"warm-up: first classification (loads the shipped models) {warm['max_s']:.3f} s")
    for name, r in (("baseline", base), ("load", load)):
        n_errors, n_foreign = sum(map(len, r["errors"].values())), sum(map(len, r["foreign"].values()))
        print(
            f"{name}: {r['visitors']} visitor(s) x {r['seconds']:.0f} s: {r['classifications']} "
            f"classifications (per visitor {r['per_visitor']}); latency median {r['median_s']:.3f} s, "
            f"p95 {r['p95_s']:.3f} s, max {r['max_s']:.3f} s; errors {n_errors}; "
            f"foreign uploads seen {n_foreign}"
        )
        print(f"  server RSS: {rss_summary(r)}")
        for visitor, errors in r["errors"].items():
            print(f"  visitor {visitor}: {errors[:3]}")
    print(f"p95 ratio load/baseline: {load['p95_s'] / base['p95_s']:.2f}")
    print(f"tracebacks in the server log: {tracebacks}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "idle_rss_mib": idle,
                    "warm_up": warm,
                    "baseline": base,
                    "load": load,
                    "server_tracebacks": tracebacks,
                },
                indent=1,
            )
        )
    bad = tracebacks or any(r["errors"] or r["foreign"] for r in (warm, base, load))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
