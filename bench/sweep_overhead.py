"""Benchmark: what a sweep's machinery costs per run, against calling fit() directly for the same runs.

Frozen-head runs on cached features (the case where overhead would show): `quantum`, 2 qubits, depth 1,
on hymenoptera features, one run per seed. Each side trains the very same runs:

  fit()         a plain loop calling fit(model, recipe, machine) for every run (the baseline)
  local         run_sweep(backend="local"): planning, the results database (one transaction per run),
                progress, the environment record
  processes     run_sweep(backend="processes", workers=2): spawned worker processes (their start
                included)
  ray           run_sweep(backend="ray", workers=2) on a local Ray instance started for it (start
                included, and timed alone)

    PYTHONPATH=. .venv/bin/python bench/sweep_overhead.py [--runs 12] [--epochs 5] [--backbone resnet18]

Prints wall seconds per side, the overhead per run against fit(), the ratio side / fit(), and the
per-task machinery the database timed (dispatch to worker start, result back to the database: the
part of the overhead that does not shrink with more runs). The feature cache is filled before anything
is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import machine


def spec_text(args, data: Path) -> str:
    return (
        f'name = "overhead"\ndataset = "{data}"\nbackbone = "{args.backbone}"\n'
        f"pretrained = {args.pretrained}\n"
        f'epochs = {args.epochs}\nvariant = "quantum"\nqubits = 2\ndepth = 1\nseeds = {args.runs}\n'
    )


def _per_task(db: Path) -> float:
    """Median over a sweep's runs of the machinery the database timed: dispatch to the worker starting
    the run, and its result back to the database."""
    from qtl.experiments.database import ResultsDB

    with ResultsDB(db) as store:
        timed = [store.timings(r["id"]) for r in store.rows("overhead")]
    return statistics.median(t["queue"] + t["dispatch"] for t in timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--pretrained", default="false", choices=("true", "false"))
    p.add_argument("--data", default=None, help="dataset folder (default: hymenoptera)")
    p.add_argument("--backends", nargs="+", default=["local", "processes", "ray"])
    p.add_argument("--repeats", type=int, default=3, help="fit() and local sweep timings (median)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import tomllib

    from qtl.data.sources import resolve_dataset
    from qtl.experiments.spec import parse_spec, plan
    from qtl.experiments.sweeps import run_sweep, warm_features
    from qtl.training.fit import fit

    data = resolve_dataset(args.data)
    text = spec_text(args, data)
    spec = parse_spec(tomllib.loads(text), source=text)
    runs = plan(spec)
    warm_features(runs)  # the cache is warm for every side
    fit(runs[0].model_config, runs[0].train_config, runs[0].machine)  # and imports are done

    results, per_task = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        # fit() and the local sweep alternate, `repeats` times each: a busy machine slows both alike
        times: dict[str, list[float]] = {"fit()": [], "local": []}
        for i in range(args.repeats):
            t0 = time.perf_counter()
            for run in runs:
                fit(run.model_config, run.train_config, run.machine)
            times["fit()"].append(time.perf_counter() - t0)
            if "local" in args.backends:
                t0 = time.perf_counter()
                report = run_sweep(spec, Path(tmp) / f"local-{i}.db")
                times["local"].append(time.perf_counter() - t0)
                assert report.done == len(runs), report.errors
        results = {side: statistics.median(ts) for side, ts in times.items() if ts}
        if "local" in args.backends:
            per_task["local"] = _per_task(Path(tmp) / "local-0.db")

        for backend in [b for b in args.backends if b != "local"]:
            db = Path(tmp) / f"{backend}.db"
            if backend == "ray":
                import ray

                t = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                results["ray start"] = time.perf_counter() - t
            t = time.perf_counter()
            report = run_sweep(spec, db, backend=backend, workers=1 if backend == "local" else 2)
            results[backend] = time.perf_counter() - t
            if backend == "ray":
                results[backend] += results["ray start"]
                ray.shutdown()
            assert report.done == len(runs), report.errors
            per_task[backend] = _per_task(db)

    base = results["fit()"]
    print(f"{len(runs)} runs of quantum 2q d1, {args.epochs} epochs on cached {args.backbone} features")
    print(f"(fit() and local: median of {args.repeats} alternating repeats; processes and ray: once)")
    print(f"{'side':<12}{'wall (s)':>10}{'per run (s)':>13}{'overhead/run (s)':>18}{'ratio':>8}")
    for side, seconds in results.items():
        if side == "ray start":
            continue
        over = (seconds - base) / len(runs)
        print(f"{side:<12}{seconds:>10.2f}{seconds / len(runs):>13.3f}{over:>18.3f}{seconds / base:>8.2f}")
    if "ray start" in results:
        print(f"(ray start, included above: {results['ray start']:.1f} s)")
    print("per-task machinery, median over runs (dispatch -> worker start + result back -> database):")
    for backend, seconds in per_task.items():
        print(f"  {backend:<10} {seconds * 1e3:8.1f} ms")
    doc = {"machine": machine(), "runs": len(runs), "epochs": args.epochs, "seconds": results}
    doc["per_task_s"] = per_task
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
