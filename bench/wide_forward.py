"""Benchmark: the native engine's forward on wide circuits, the halves and units paths against the state.

`NativeEngine(CircuitConfig(n, depth, entangler))` on random (B, n) angles and weights, float32, by
three paths, in one run:

    halves    each half's states, a sum of products, and <Z> from their Gram matrices, never the 2**n
              state (`qtl.quantum.engines._split`); "auto" takes it where it can (`native.halves_plan`)
    units     a chunk of samples at a time through the closed-form step's units, a chain's leading
              layers on its halves (`qtl.quantum.engines._wide`; the backward runs each chunk's forward
              again); "auto" takes it where the halves cannot, on CPU, from `native.UNITS_MIN_QUBITS`
              wires
    adjoint   the 2**n state in two reused buffers, differentiated by the adjoint method: what "auto"
              took on these circuits before

each timed two ways: `inference`, a forward under torch.no_grad (evaluation, prediction, `qtl serve`),
and `training`, forward and backward by autograd (fit()'s step where the closed-form step does not
apply, such as another optimizer than Adam). Each time is the median of --repeats after one warm-up,
in a process whose allocator keeps freed memory as the `qtl` program's does; the ratios are adjoint
over halves and over units. A side that took longer than --cap seconds, or needed more than the
engine's memory budget (4 GiB), is not run at larger sizes.

    cd bench && PYTHONPATH=.. ../.venv/bin/python wide_forward.py [--sizes 16 18 20 22 24] [--depth 6]
        [--entangler chain] [--modes inference training] [--batch 32] [--repeats 5] [--cap 30]
        [--threads N] [--json PATH]
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

PATHS = ("halves", "units", "adjoint")
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
    parser.add_argument("--entangler", default="chain", choices=["chain", "ring"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
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
        f"{info['cpu']}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.entangler}, "
        f"depth {args.depth}, batch {args.batch}, float32, median of {args.repeats}"
    )
    heads = [f"{p:>10}" for p in PATHS] + [f"{'/' + p:>7}" for p in ("halves", "units")]
    print(f"{'qubits':>6} {'mode':>9} {' '.join(heads)}")
    stopped: set[tuple[str, str]] = set()
    rows = []
    for n in args.sizes:
        config = CircuitConfig(n, args.depth, args.entangler)
        g = torch.Generator().manual_seed(n)
        angles = torch.rand(args.batch, n, generator=g) * torch.pi - torch.pi / 2
        weights = torch.rand(config.weight_shape, generator=g) * 2 * torch.pi
        for mode in args.modes:
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
                except ValueError:  # the path cannot take this circuit (`native.halves_plan`, `units_plan`)
                    row[path] = "not taken"
                if row[path] == "over budget" or isinstance(row[path], float) and row[path] > args.cap:
                    stopped.add((path, mode))
            for path in ("halves", "units"):
                both = isinstance(row[path], float) and isinstance(row["adjoint"], float)
                row[f"adjoint_over_{path}"] = row["adjoint"] / row[path] if both else None
            rows.append(row)
            shown = [f"{v * 1e3:8.1f}ms" if isinstance(v, float) else f"{v:>10}" for v in map(row.get, PATHS)]
            ratios = [row[f"adjoint_over_{p}"] for p in ("halves", "units")]
            ratios = [f"{r:6.1f}x" if r else f"{'-':>7}" for r in ratios]
            print(f"{n:>6} {mode:>9} {' '.join(shown)} {' '.join(ratios)}", flush=True)
    if args.json:
        save_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
