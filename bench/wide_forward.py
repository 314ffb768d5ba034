"""Benchmark: the native engine's forward on wide chains, the halves path against the state, in one run.

`NativeEngine(CircuitConfig(n, depth))` on random (B, n) angles and weights, float32, by two paths:

    halves    each half's states, a sum of products, and <Z> from their Gram matrices, never the 2**n
              state (`qtl.quantum.engines._split`); "auto" takes it where it can (`native.halves_plan`)
    adjoint   the 2**n state in two reused buffers, differentiated by the adjoint method: what "auto"
              took on these circuits before

each timed two ways: `inference`, a forward under torch.no_grad (evaluation, prediction, `qtl serve`),
and `training`, forward and backward by autograd (fit()'s step where the closed-form step does not
apply, such as another optimizer than Adam). Each time is the median of --repeats after one warm-up,
in a process whose allocator keeps freed memory as the `qtl` program's does; the ratio is adjoint over
halves. A side that took longer than --cap seconds, or needed more than the engine's memory budget
(4 GiB), is not run at larger sizes.

    cd bench && PYTHONPATH=.. ../.venv/bin/python wide_forward.py [--sizes 16 18 20 22 24] [--depth 6]
        [--batch 32] [--repeats 5] [--cap 30] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine
from report import save_json

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.native import NativeEngine, SimulationTooLargeError
from qtl.utils.allocator import keep_freed_memory

PATHS = ("halves", "adjoint")
MODES = ("inference", "training")


def median_seconds(fn, repeats: int) -> float:
    """Median wall seconds of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward(engine: NativeEngine, angles: torch.Tensor, weights: torch.Tensor, mode: str):
    """One call in `mode`: a no-grad forward, or forward and backward."""
    if mode == "inference":
        return torch.no_grad()(lambda: engine(angles, weights))
    leaf = weights.clone().requires_grad_()
    return lambda: engine(angles, leaf).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 18, 20, 22, 24])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cap", type=float, default=30.0, help="seconds after which a side stops growing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(
        f"{info['cpu']}, torch {torch.__version__}, {torch.get_num_threads()} threads; depth {args.depth}, "
        f"batch {args.batch}, float32, median of {args.repeats}"
    )
    print(f"{'qubits':>6} {'mode':>9} {'halves':>10} {'adjoint':>10} {'ratio':>7}")
    stopped: set[tuple[str, str]] = set()
    rows = []
    for n in args.sizes:
        config = CircuitConfig(n, args.depth)
        g = torch.Generator().manual_seed(n)
        angles = torch.rand(args.batch, n, generator=g) * torch.pi - torch.pi / 2
        weights = torch.rand(config.weight_shape, generator=g) * 2 * torch.pi
        for mode in MODES:
            row = {"qubits": n, "mode": mode}
            for path in PATHS:
                if (path, mode) in stopped:
                    row[path] = "skipped"
                    continue
                try:
                    engine = NativeEngine(config, path=path)
                    row[path] = median_seconds(forward(engine, angles, weights, mode), args.repeats)
                except SimulationTooLargeError:
                    row[path] = "over budget"
                except ValueError:  # the halves cannot take this circuit (`native.halves_plan`)
                    row[path] = "not taken"
                if row[path] == "over budget" or isinstance(row[path], float) and row[path] > args.cap:
                    stopped.add((path, mode))
            both = all(isinstance(row[p], float) for p in PATHS)
            row["ratio"] = row["adjoint"] / row["halves"] if both else None
            rows.append(row)
            shown = [f"{v * 1e3:8.1f}ms" if isinstance(v, float) else f"{v:>10}" for v in map(row.get, PATHS)]
            ratio = f"{row['ratio']:6.1f}x" if row["ratio"] else f"{'-':>7}"
            print(f"{n:>6} {mode:>9} {shown[0]} {shown[1]} {ratio}", flush=True)
    if args.json:
        save_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
