"""Benchmark: the statevector training step against this machine's limits (a roofline), in one run.

The machine, measured first, on the torch thread count the steps then run on:

    bandwidth    a plain copy of a 256 MiB float32 tensor (bytes read + bytes written per second), and
                 a triad (a = b + s c) for reference
    arithmetic   a 4096 x 4096 float32 matmul (flops per second)

The step: `DressedQuantumCircuit(512, 2, CircuitConfig(n, depth))`, batch B, float32, in a process whose
allocator keeps freed memory as the `qtl` program's does (`qtl.utils.allocator`), trained by the step
fit() picks (`qtl.training.steps.step_for_run`: the closed-form step; above 10 qubits a chain's leading
layers run as its two halves' states, `qtl.quantum.engines._split`, and the layers after them as units,
`qtl.quantum.engines._units`), timed as the median of --repeats steps after one warm-up; with --units,
the same step with the halves off (every layer as units, what fit() took before) in the same run, one
step from 22 qubits on (it takes 10-50 s there); with
--autograd, autograd's `train_step` too. With --ranks, only fit()'s step with each cap on the halves'
products (`_wide.SPLIT_MAX_RANK`, 0: units only) and the halves at every width, to choose the cap
and the width they start at (`SPLIT_MIN_QUBITS`); with --parts, likewise with the halves in parts of at
most P samples (0: as `_split.part_size` makes them), to choose `_split.PART_BYTES`.

The model of the work a step must do, counted from the step's own plans:

    flops   each unit is a d x d matrix (d = 2**size, the wires of one group) applied to the chunk's
            states: 2 d flops per amplitude forward; backward its transpose on the state and on its
            gradient, and its cross matrix g^T psi, 6 d (the first unit's input is not recovered: 4 d);
            so 8 d B 2**n per unit. The halves' k layers with r products: two matrix products per half and
            layer, one per Kronecker factor of its rotations, the CNOTs and the doubling of the branches
            folded into their matrices (`_halves.halves`), 2 flops per matrix row and input value forward
            and twice that backward, counted from their shapes (`_halves.flops_per_sample`); then
            building psi = A^T B is 2 r flops per amplitude and its gradients dA = B g^T,
            dB = A g 4 r; or, where the halves take every layer and it is cheaper, <Z> from their Gram
            matrices and no state at all: with the last layer's CNOT across the cut folded in, its
            branches never doubled (`_split.crossed_expectations`), r**2 (3 2**m1 / 2 + 7 2**m2 / 4) per
            sample forward and r**2 (5 2**m1 / 4 + 9 2**m2 / 4) backward; else (`_split.expectations`)
            4 r**2 (2**m1 + 2**m2) each way. Add about 12 B 2**n for the product state, the probabilities,
            <Z>, d loss / d psi and the embedding's gradient, and 6 B F n for the two linear layers.
            These are the flops of the algorithm (dense blocks): applying each RY on its own would need
            fewer (3 per amplitude and wire), but not as matrix products, the only operation that runs
            near the arithmetic rate in torch.
    bytes   the samples are simulated a chunk at a time (about CHUNK_AMPLITUDES amplitudes, at least one
            sample), each worker thread's chunk in three buffers and a quarter (the
            state, its gradient and the next product's output). When every worker's fit the last-level
            cache, the state never has to go to memory and only the inputs, parameters and outputs do
            (bytes ~ B F 4 + parameters). When they do not (about 20+ qubits with two workers here),
            every product reads its operands from
            memory and writes its result there: 2 states forward and 6 backward per unit, 8 B 2**n 4
            bytes per unit, and 3 B 2**n 4 more for psi = A^T B and its gradient. Without a state, A and
            B are read by the products and their scalings, about 12 (|A| + |B|) 4 bytes, from memory
            where a part's (`_split.part_size` samples) A, B and the intermediates kept for the
            backward do not fit the cache. The halves' own layers are counted as in cache (r 2**(n/2)
            per sample, small next to the state where one is built).
    bound   max(flops / arithmetic rate, bytes / bandwidth): the least time this algorithm can take on
            this machine. Each step is reported as its time over that bound (1.0 = at the machine's limit).

Targets: 16-24 qubits within 2x of the bound; 20 qubits, batch 32, depth 6 <= 1.5 s per step
on 2 cores. Each prints PASS or FAIL. On a busy machine, two OpenMP threads wait on each other whenever
another process holds a core: there, --threads 1 --cpu-time times the limits and the steps alike by this
process's CPU time, which measures their own work; the 1.5 s target is for 2 cores of a quiet machine.

    .venv/bin/python bench/roofline.py [--quick] [--sizes 12 16 20] [--threads N] [--cpu-time] [--units]
        [--autograd] [--depth D] [--ranks R ...] [--parts P ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from pathlib import Path

import torch
from machine import machine
from report import save_json, verdict
from timing import step_seconds

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import _halves
from qtl.quantum.engines import _split as split
from qtl.quantum.engines import _wide as wide
from qtl.training.optim import adam
from qtl.training.steps import step_for_run, train_step
from qtl.utils.allocator import keep_freed_memory

SIZES, QUICK_SIZES = (12, 14, 16, 18, 20, 22, 24), (12, 16, 20)
DEPTH, BATCH, FEATURES, ITEM = 6, 32, 512, 4  # float32
TARGET_RATIO, TARGET_RANGE = 2.0, (16, 24)  # within 2x of the bound from 16 to 24 qubits
TARGET_20_S = 1.5  # 20 qubits, batch 32, depth 6, on 2 cores


#: The clock every time is taken with: wall-clock, or with --cpu-time this process's CPU time.
CLOCK = {"clock": time.perf_counter}


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` runs of fn (after one warm-up), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = CLOCK["clock"]()
        fn()
        times.append(CLOCK["clock"]() - start)
    return min(times)


def machine_limits() -> dict:
    """Copy and triad bandwidth (bytes/s) and matmul rate (flops/s), on the current thread count."""
    a, b, c = (torch.rand(2**26) for _ in range(3))  # 256 MiB each
    copy = best_of(lambda: b.copy_(a), 5)
    triad = best_of(lambda: torch.add(b, c, alpha=0.5, out=a), 5)
    m = torch.rand(4096, 4096)
    matmul = best_of(lambda: m @ m, 3)
    return {
        "copy_bytes_s": 2 * a.numel() * ITEM / copy,
        "triad_bytes_s": 3 * a.numel() * ITEM / triad,
        "matmul_flops_s": 2 * 4096**3 / matmul,
    }


def last_level_cache() -> int:
    """Bytes of the largest CPU cache (sysfs), 0 if unknown."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=0)


def model(n: int, batch: int, cache: int) -> dict:
    """Flops and bytes of one step at n qubits (see the module docstring)."""
    config = CircuitConfig(n, DEPTH)
    plan = DressedQuantumCircuit(FEATURES, 2, config).engine.plan
    uplan, rows = wide.wide_units(plan, batch)
    sp = wide.split_plan(plan)
    gram = sp is not None and not uplan.units and sp.gram  # <Z> from the halves, no state
    amplitudes = 0 if gram else batch * 2**n
    d_sum = sum(2**u.size for u in uplan.units)
    first = uplan.units[0] if uplan.units else None
    # each unit 8 d per amplitude, but the first unit's input is not recovered
    unit_flops = 8 * d_sum - (2 * 2**first.size if first and first.to_back else 0)
    flops = unit_flops * amplitudes + 12 * amplitudes + 6 * batch * FEATURES * n
    halves = 0  # the halves' states after their layers, A and B (before the last crossing, if folded)
    if sp is not None:
        folded = gram and sp.folds  # the last crossing folded into <Z> (`crossed_expectations`)
        # the halves' products, counted from their shapes (the CNOTs and the doubling folded in)
        flops += batch * _halves.flops_per_sample(sp, not folded)
        rank = sp.held if folded else sp.rank
        da, db = 2**sp.cut, 2 ** (n - sp.cut)
        halves = batch * rank * (da + db)
        # <Z> from the Gram matrices (`SplitPlan.gram_flops`: folded or not), or psi = A^T B and back
        flops += batch * sp.gram_flops if gram else 6 * rank * amplitudes
    workers = wide.wide_workers(batch, rows)
    if gram:  # the products read A and B: from memory where a part's A, B and the intermediates kept
        # for the backward (about six times their size) do not fit the cache
        fits = 6 * halves * split.part_size(sp, ITEM, batch) / batch * ITEM <= cache
        traffic = 12 * halves * ITEM
    else:  # each worker: three chunks and a quarter; without the cache every product's operands from
        # memory, and psi = A^T B written and its gradient read twice
        fits = workers * 3.25 * rows * 2**n * ITEM <= cache
        traffic = (8 * len(uplan.units) + (3 if sp else 0)) * amplitudes * ITEM
    params = (FEATURES * n + n + DEPTH * n + 2 * n + 2) * ITEM
    bytes_ = batch * FEATURES * ITEM + 3 * params + (0 if fits else traffic)
    halved = f"{sp.layers} (rank {sp.rank}{', Gram' if gram else ''})" if sp else "-"
    units = len(uplan.units)
    return {"flops": flops, "bytes": bytes_, "chunk_fits_cache": fits, "units": units, "halved": halved}


def fit_step(n: int, batch: int, kind: str = "fit") -> tuple:
    """The step this benchmark times at n qubits (fit()'s step, or autograd's), with its head, optimizer
    and a seeded batch: (step, head, optimizer, x, y)."""
    torch.manual_seed(0)
    head = DressedQuantumCircuit(FEATURES, 2, CircuitConfig(n, DEPTH), memory_budget=64 * 2**30)
    optimizer = adam(head.parameters(), 1e-3)
    step = train_step if kind == "autograd" else step_for_run(train_step, head, optimizer, 1, batch)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, FEATURES, generator=g), torch.randint(0, 2, (batch,), generator=g)
    return step, head, optimizer, x, y


def time_step(n: int, batch: int, repeats: int, kind: str) -> dict:
    """Median wall and CPU seconds of one training step (fit()'s step, or autograd's)."""
    step, head, optimizer, x, y = fit_step(n, batch, kind)
    wall, cpu = step_seconds(step, head, optimizer, x, y, repeats)
    name = getattr(step, "__name__", type(step).__name__)
    return {
        "step": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "s": cpu if CLOCK["clock"] is time.process_time else wall,
    }


@contextlib.contextmanager
def halves_at_most(rank: int, min_qubits: int | None = None):
    """fit()'s step with at most `rank` products on the halves (`_wide.SPLIT_MAX_RANK`; 0: every
    layer as units), and the halves from `min_qubits` wires (`_wide.SPLIT_MIN_QUBITS`)."""
    kept = wide.SPLIT_MAX_RANK, wide.SPLIT_MIN_QUBITS
    wide.SPLIT_MAX_RANK = rank
    wide.SPLIT_MIN_QUBITS = kept[1] if min_qubits is None else min_qubits
    try:
        yield
    finally:
        wide.SPLIT_MAX_RANK, wide.SPLIT_MIN_QUBITS = kept


@contextlib.contextmanager
def parts_of(samples: int):
    """fit()'s step with the halves in parts of at most `samples` samples, whatever their bytes
    (`_split.PART_SAMPLES`, the byte cap lifted; 0: `_split.part_size` as it is)."""
    kept = split.PART_SAMPLES, split.PART_BYTES
    if samples:
        split.PART_SAMPLES, split.PART_BYTES = samples, 2**62
    try:
        yield
    finally:
        split.PART_SAMPLES, split.PART_BYTES = kept


def setting_table(sizes: list[int], batch: int, repeats: int, key: str, values: list[int]) -> list[dict]:
    """fit()'s step at each value of one setting, at every width: `key` "max_rank" (the cap on the
    halves' products, `halves_at_most`, the halves at every width where they pay) or "part" (the
    samples per part of the halves, `parts_of`)."""
    setting, header, note = {
        "max_rank": (
            lambda v: halves_at_most(v, 0),
            lambda v: f"at most {v} products",
            lambda sp, part: f"{sp.layers} layers, {sp.rank}" if sp else "units",
        ),
        "part": (
            parts_of,
            lambda v: f"parts of at most {v}" if v else "parts as part_size makes them",
            lambda sp, part: f"{-(-batch // part)} of {part}" if sp else "no halves",
        ),
    }[key]
    print(f"\n| qubits | {' | '.join(header(v) for v in values)} |")
    print(f"|---|{'---|' * len(values)}")
    rows = []
    for n in sizes:
        cells = []
        for value in values:
            with setting(value):
                sp = wide.split_plan(DressedQuantumCircuit(FEATURES, 2, CircuitConfig(n, DEPTH)).engine.plan)
                part = split.part_size(sp, ITEM, batch) if sp else None
                timed = time_step(n, batch, repeats, "fit")
            rows.append(
                {"n_qubits": n, key: value, "layers": sp.layers if sp else 0, "part_samples": part, **timed}
            )
            cells.append(f"{seconds(timed['s'])} ({note(sp, part)})")
        print(f"| {n} | {' | '.join(cells)} |", flush=True)
    return rows


def seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
    global DEPTH
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_SIZES}, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="qubits to measure (default 12-24)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per size (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time by this process's CPU time (busy machines)"
    )
    parser.add_argument(
        "--units", action="store_true", help="also time fit()'s step with the halves off (units only)"
    )
    parser.add_argument("--depth", type=int, default=DEPTH, help=f"circuit depth (default {DEPTH})")
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        metavar="R",
        help="only time fit()'s step with at most R products on the halves (0: units), at every width",
    )
    parser.add_argument(
        "--parts",
        type=int,
        nargs="+",
        metavar="P",
        help="only time fit()'s step with the halves in parts of at most P samples (0: part_size's)",
    )
    parser.add_argument("--autograd", action="store_true", help="also time autograd's step, up to 20 qubits")
    parser.add_argument("--json", metavar="PATH", help="also write machine, command and results as JSON")
    args = parser.parse_args(argv)
    kept = keep_freed_memory()  # as the `qtl` program runs: bench/allocator.py times the difference
    DEPTH = args.depth
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK["clock"] = time.process_time
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    repeats = args.repeats or (2 if args.quick else 3)
    info = machine()
    limits = machine_limits()
    cache = last_level_cache()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {torch.get_num_threads()} torch threads, load "
        f"{info['load_avg_at_start']}; copy {limits['copy_bytes_s'] / 1e9:.1f} GB/s, triad "
        f"{limits['triad_bytes_s'] / 1e9:.1f} GB/s, matmul {limits['matmul_flops_s'] / 1e9:.0f} GFLOP/s, "
        f"last-level cache {cache / 2**20:.0f} MiB; glibc keeps freed memory: {kept}"
    )
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"step: batch {args.batch}, depth {DEPTH}, float32; median of {repeats} after a warm-up, {clock}\n")
    if args.ranks or args.parts:
        key, values = ("max_rank", args.ranks) if args.ranks else ("part", args.parts)
        rows = setting_table(sizes, args.batch, repeats, key, values)
        if args.json:
            save_json(args.json, {"machine": info, "limits": limits, "results": rows})
        return 0
    print(
        "| qubits | layers on halves | units | GFLOP | state traffic | bound | fit()'s step | x bound "
        "| wall s | units only (x its bound; its / fit()'s) | autograd |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in sizes:
        m = model(n, args.batch, cache)
        bound = max(m["flops"] / limits["matmul_flops_s"], m["bytes"] / limits["copy_bytes_s"])
        row = {"n_qubits": n, "batch": args.batch, **m, "bound_s": bound}
        row.update(time_step(n, args.batch, repeats, "fit"))
        row["x_bound"] = row["s"] / bound
        if args.units:
            with halves_at_most(0):
                alone = model(n, args.batch, cache)
                alone["bound_s"] = max(
                    alone["flops"] / limits["matmul_flops_s"], alone["bytes"] / limits["copy_bytes_s"]
                )
                alone.update(time_step(n, args.batch, repeats if n < 22 else 1, "fit"))
            row["units_only"] = alone
        if args.autograd and n <= 20:
            row["autograd"] = time_step(n, args.batch, repeats, "autograd")
        rows.append(row)
        gc.collect()
        traffic = "in cache" if m["chunk_fits_cache"] else f"{m['bytes'] / 1e9:.1f} GB"
        auto = row.get("autograd")
        auto_cell = f"{seconds(auto['s'])} ({auto['s'] / row['s']:.2f}x)" if auto else "-"
        alone = row.get("units_only")
        alone_cell = (
            f"{seconds(alone['s'])} ({alone['s'] / alone['bound_s']:.2f}; {alone['s'] / row['s']:.2f}x)"
            if alone
            else "-"
        )
        print(
            f"| {n} | {m['halved']} | {m['units']} | {m['flops'] / 1e9:.1f} | {traffic} | {seconds(bound)} | "
            f"{seconds(row['s'])} | {row['x_bound']:.2f} | {row['wall_s']:.2f} | {alone_cell} | "
            f"{auto_cell} |",
            flush=True,
        )
    print()
    failed = False
    in_range = [r for r in rows if TARGET_RANGE[0] <= r["n_qubits"] <= TARGET_RANGE[1]]
    for r in in_range:
        text = f"{r['n_qubits']} qubits: {r['x_bound']:.2f}x the bound (target <= {TARGET_RATIO:g})"
        failed |= not verdict(r["x_bound"] <= TARGET_RATIO, text)
    at20 = next((r for r in rows if r["n_qubits"] == 20 and r["batch"] == 32), None)
    if at20 is not None and DEPTH == 6:  # the target is for the paper's depth
        text = (
            f"20 qubits, batch 32, depth 6: {at20['wall_s']:.2f} s per step (wall) on "
            f"{torch.get_num_threads()} threads (target <= {TARGET_20_S} s on 2 cores)"
        )
        failed |= not verdict(at20["wall_s"] <= TARGET_20_S, text)
    if args.json:
        save_json(args.json, {"machine": info, "limits": limits, "results": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
