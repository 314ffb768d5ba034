"""Benchmark: fit()'s statevector training step with glibc's allocator defaults and with
`qtl.utils.allocator.keep_freed_memory` (what the `qtl` program sets), in one run.

An allocator's settings hold for a whole process, so each side runs in a process of its own, the two
alternating --rounds times per size (a busy host slows both alike). The step: roofline.py's
(`roofline.fit_step`: `DressedQuantumCircuit(512, 2, CircuitConfig(n, 6))`, batch 32, float32, the step
`step_for_run` picks), median of --repeats steps after three warm-ups. Reported per size: the median
over rounds of each side's wall and CPU seconds per step, its page faults per step (minor faults: pages
the kernel hands out on first touch), its peak resident memory, and the ratio defaults / kept.

    cd bench && PYTHONPATH=.. ../.venv/bin/python allocator.py [--sizes 14 16 18 20 22] [--rounds 3]
        [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from report import save_json

from qtl.utils.allocator import ENVIRONMENT


def child(n: int, repeats: int, keep: bool) -> dict:
    """One side at n qubits, in this process: its step's times, faults and peak memory."""
    if keep:
        from qtl.utils.allocator import keep_freed_memory

        keep_freed_memory()
    import resource

    from roofline import BATCH, fit_step
    from timing import step_seconds

    step, head, optimizer, x, y = fit_step(n, BATCH)
    for _ in range(2):  # with step_seconds' own warm-up, three
        step(head, optimizer, x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wall, cpu = step_seconds(step, head, optimizer, x, y, repeats)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = (usage.ru_minflt - before) / (repeats + 1)
    return {"wall_s": wall, "cpu_s": cpu, "faults": faults, "peak_mb": usage.ru_maxrss / 1024}


def side(n: int, repeats: int, keep: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    args = [sys.executable, __file__, "--child", str(n), "--repeats", str(repeats)] + (["--keep"] * keep)
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[14, 16, 18, 20, 22])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats, args.keep)))
        return 0

    from machine import machine

    print(json.dumps(machine()))
    print("| qubits | defaults: step | kept: step | defaults / kept | CPU s | faults per step | peak MB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in args.sizes:
        runs = {"defaults": [], "kept": []}
        for _ in range(args.rounds):
            for name, keep in (("defaults", False), ("kept", True)):
                runs[name].append(side(n, args.repeats, keep))
        med = {
            name: {k: statistics.median(r[k] for r in results) for k in results[0]}
            for name, results in runs.items()
        }
        d, k = med["defaults"], med["kept"]
        rows.append({"qubits": n, **{f"{name}_{key}": v for name, m in med.items() for key, v in m.items()}})
        print(
            f"| {n} | {d['wall_s'] * 1e3:.1f} ms | {k['wall_s'] * 1e3:.1f} ms "
            f"| {d['wall_s'] / k['wall_s']:.2f}x "
            f"| {d['cpu_s']:.3f} / {k['cpu_s']:.3f} | {d['faults']:.0f} / {k['faults']:.0f} "
            f"| {d['peak_mb']:.0f} / {k['peak_mb']:.0f} |",
            flush=True,
        )
    if args.json:
        save_json(
            args.json, {"machine": machine(), "rows": rows, "rounds": args.rounds, "repeats": args.repeats}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
