"""Load benchmark: concurrent visitors of the served demo app, uploading, classifying and browsing.

One demo-mode server (`streamlit run app.py`, QTL_DEMO=1, offline, no ImageNet weights) whose new sessions
load the shipped checkpoints (models/SHIPPED, on the bundled efficientnet_lite0), with a small generated
ants/bees dataset for the training runs. Each visitor is its own headless Chromium context, so its own
Streamlit session (qtl/testing/visitors.py): it opens the Checkpoints page by its address, uploads a
checkpoint of its own, then until time is up classifies one uploaded image after another on Classify
(every model's answer and heatmap), browsing Compare, Circuit and the Overview every few images; every
fourth visitor submits one training run on the Train page, all of them at the same moment (the demo
trains one job at a time: it takes one and refuses the others, naming the running job; a refusal that
does not is an error); at the end it reads its session's checkpoint list.

Measured in one run:
  baseline  one visitor alone for --baseline-seconds;
  load      --visitors at once for --seconds.
Reported: per action (open, upload checkpoint, classify, compare, circuit, overview, train) the count,
p50 and p95 seconds; errors (exceptions or error boxes on a page, JavaScript errors, timeouts,
tracebacks in the server log); leaks (a visitor shown another's upload, image, heatmap, trained model or
checkpoint); the training requests taken and refused; and the server's memory (RSS, private part)
every second.

    .venv/bin/python bench/load_app.py [--visitors 16] [--seconds 300] [--baseline-seconds 30] [--json PATH]

Exits 1 on any error or leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_latency import memory_mb, shipped
from machine import machine

from qtl.testing.image_folders import make_image_folder
from qtl.testing.served_app import Server, chromium_missing, offline_env
from qtl.testing.visitors import visit_all

ACTIONS = ("open", "upload checkpoint", "classify", "compare", "circuit", "overview", "train")
BROWSE_EVERY = 4  # images between two tours of Compare, Circuit and the Overview
TRAINER_EVERY = 4  # every fourth visitor submits one training run, after its first image


class Sampler(threading.Thread):
    """(seconds since start, RSS MB, private MB) of a process every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self._stop_event = pid, every, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            m = memory_mb(self.pid)
            self.samples.append((round(time.monotonic() - self.t0, 1), m["VmRSS"], m["RssAnon"]))
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def phase(url: str, pid: int, visitors: int, seconds: float, checkpoint: bytes, images, names) -> dict:
    """Run `visitors` for `seconds`; their per-action latencies, errors, leaks, trainings and memory."""
    sampler = Sampler(pid)
    sampler.start()
    trainers = {k: 1 for k in range(1, visitors + 1) if k % TRAINER_EVERY == 1}
    visits = asyncio.run(
        visit_all(
            url, visitors, checkpoint, images, seconds, names, browse_every=BROWSE_EVERY, train_after=trainers
        )
    )
    samples = sampler.stop()
    actions = {a: [t for v in visits for t in v.actions.get(a, [])] for a in ACTIONS}
    trainings = [state for v in visits for state, _, _ in v.training]
    return {
        "visitors": visitors,
        "seconds": seconds,
        "actions": {
            a: {
                "n": len(ts),
                "p50_s": statistics.median(ts) if ts else None,
                "p95_s": p95(ts) if ts else None,
            }
            for a, ts in actions.items()
        },
        "classifications_per_visitor": [len(v.latencies) for v in visits],
        "errors": {v.visitor: v.errors for v in visits if v.errors},
        "leaks": {v.visitor: sorted(v.foreign) for v in visits if v.foreign},
        "trainings": {"taken": trainings.count("taken"), "refused": trainings.count("refused")},
        "memory": samples,
        "raw": {a: ts for a, ts in actions.items()},
    }


def report(name: str, r: dict) -> None:
    n_errors, n_leaks = sum(map(len, r["errors"].values())), sum(map(len, r["leaks"].values()))
    print(f"{name}: {r['visitors']} visitor(s) x {r['seconds']:.0f} s")
    for a, s in r["actions"].items():
        if s["n"]:
            print(f"  {a:18s} n={s['n']:4d}  p50 {s['p50_s']:6.2f} s  p95 {s['p95_s']:6.2f} s")
    print(f"  classifications per visitor: {r['classifications_per_visitor']}")
    t = r["trainings"]
    print(f"  training requests, sent at the same moment: {t['taken']} taken, {t['refused']} refused")
    mem = r["memory"]
    rss, anon = [m for _, m, _ in mem], [a for _, _, a in mem]
    print(
        f"  server memory: RSS {rss[0]:.0f} MB at the start, {max(rss):.0f} MB at most, {rss[-1]:.0f} MB at "
        f"the end (private {anon[0]:.0f} / {max(anon):.0f} / {anon[-1]:.0f} MB; {len(mem)} samples 1 s apart)"
    )
    print(f"  errors: {n_errors}; leaks: {n_leaks}")
    for visitor, errors in r["errors"].items():
        print(f"    visitor {visitor}: {errors[:3]}")
    for visitor, leaks in r["leaks"].items():
        print(f"    visitor {visitor} saw: {leaks[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=16, help="concurrent browser sessions")
    parser.add_argument("--seconds", type=float, default=300, help="how long each visitor classifies")
    parser.add_argument("--baseline-seconds", type=float, default=30, help="one visitor alone, first")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        sys.exit(missing)

    tmp = Path(tempfile.mkdtemp(prefix="qtl-load-bench-"))
    data = make_image_folder(tmp / "data", ("ants", "bees"), (6, 4), (320, 240))
    env = offline_env(tmp, QTL_DEMO="1", QTL_PRETRAINED="1", QTL_DATA_DIR=str(data))
    env.pop("QTL_MODELS_DIR", None)  # the repository's models/, read-only in demo mode
    names = {p.stem for p in shipped()}
    quantum = next(p for p in shipped() if p.name.startswith("quantum-"))
    images = [p.read_bytes() for p in sorted((data / "val").rglob("*.png"))]

    with Server(env, tmp / "streamlit.log") as server:
        server.wait_healthy(120)
        pid = server.proc.pid
        idle = memory_mb(pid)
        print(
            f"server up, RSS {idle['VmRSS']:.0f} MB; warm-up: the first session loads the models",
            file=sys.stderr,
        )
        warm = phase(server.url, pid, 1, 0.1, quantum.read_bytes(), images, names)
        print(f"baseline: 1 visitor, {args.baseline_seconds:.0f} s", file=sys.stderr)
        base = phase(server.url, pid, 1, args.baseline_seconds, quantum.read_bytes(), images, names)
        print(f"load: {args.visitors} visitors, {args.seconds:.0f} s", file=sys.stderr)
        load = phase(server.url, pid, args.visitors, args.seconds, quantum.read_bytes(), images, names)
        log = server.log.read_text(errors="replace")
    tracebacks = log.count("Traceback")

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average at start {info['load_avg_at_start']}")
    print(f"server memory idle (before any visitor): RSS {idle['VmRSS']:.0f} MB")
    report("warm-up", warm)
    report("baseline", base)
    report("load", load)
    b, lo = base["actions"]["classify"], load["actions"]["classify"]
    if b["n"] and lo["n"]:
        print(f"classify p95 ratio load/baseline: {lo['p95_s'] / b['p95_s']:.2f}")
    print(f"tracebacks in the server log: {tracebacks}")
    if args.json:
        doc = {
            "machine": info,
            "idle": idle,
            "warm_up": warm,
            "baseline": base,
            "load": load,
            "tracebacks": tracebacks,
        }
        args.json.write_text(json.dumps(doc, indent=1))
    bad = tracebacks or any(r["errors"] or r["leaks"] for r in (warm, base, load))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
