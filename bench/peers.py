"""Benchmark: one hybrid training step in qtl's native engine and in peer simulators, in one run.

The step is the dressed quantum circuit of Mari et al. on (B, 512) features: Linear(512, n), tanh * pi/2,
H + RY(x) embedding, `depth` blocks of [CNOT chain, RY(theta)], <Z_i> on every wire, Linear(n, 2),
cross-entropy, backward, Adam (lr 1e-3), all in float32, from the same initial parameters:

    native               qtl: `DressedQuantumCircuit` + `qtl.training.optim.adam`, trained by the step fit()
                         picks (`qtl.training.steps.step_for_run`): the fused closed-form step up to
                         10 qubits (`qtl.training.closed_form`), autograd's `train_step` above; with
                         `--eager`, always `train_step`; with `--compiled`, the step fit() picks for a
                         run long enough to compile
    tensorcircuit-jax    TensorCircuit-NG on JAX: the circuit vmapped over the batch, the whole step
                         (value_and_grad + Adam) under jax.jit
    pennylane-jax        PennyLane default.qubit, JAX interface, backprop, parameter broadcasting,
                         the whole step under jax.jit
    torchquantum         TorchQuantum QuantumDevice(bsz=B), torch autograd, torch Adam
    native@REF           with --baseline REF: the same as native with the closed-form step of another
                         commit (`git show REF:qtl/training/closed_form.py`, imported beside this tree's),
                         to show a change's effect measured in the same run

Before timing, every engine's float32 logits on the same batch, qtl's included, are checked against a
float64 reference (qtl's native engine in float64) to 1e-5 (1e-3 from 14 qubits on, where float32
rounding over 2**n amplitudes reaches 1e-5 in some engines; every error is printed); then the
engines are timed in interleaved rounds (so a burst of load hits all of them) and the median step is
reported with its ratio to native. Compile times (JAX's, and qtl's with `--compiled`) are reported
separately and excluded from the step times.

Peers are not qtl dependencies and may pin other torch/numpy versions, so they live in their own
virtualenv outside the repository, which sees qtl's venv (torch, pennylane) through a .pth file:

    PEERS_VENV=../peers-venv        # any folder outside the checkout
    python3 -m venv $PEERS_VENV
    echo "$PWD/.venv/lib/python3.11/site-packages" > $PEERS_VENV/lib/python3.11/site-packages/qtl.pth
    $PEERS_VENV/bin/pip install jax tensorcircuit-ng
    $PEERS_VENV/bin/pip install --no-deps torchquantum torchpack loguru multimethod toml
    PYTHONPATH=$PWD $PEERS_VENV/bin/python bench/peers.py [--configs 4x4 4x64 ...] [--json PATH]

torchquantum 0.1.8 imports qiskit 0.x names at import time (its qiskit plugin, unused here); they are
given empty placeholders when missing. An engine that is not installed is reported and skipped.
This script is not part of the test suite or CI.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import re
import statistics
import sys
import time
import types

import numpy as np
import torch
from baseline import module_at
from machine import machine
from report import save_json, verdict

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.fit import is_small_step
from qtl.training.optim import adam
from qtl.training.steps import COMPILE_MIN_STEPS, compiled_train_step, step_for_run, train_step

CONFIGS = [(4, 4), (4, 64), (8, 32), (12, 32), (16, 32), (20, 32)]  # (n_qubits, batch)
DEPTH, FEATURES, LR, TOLERANCE = 6, 512, 1e-3, 1e-5
#: From this width on, float32 rounding over 2**n amplitudes reaches 1e-5 in the logits in some engines
#: (measured against float64: TensorCircuit-NG 1.6e-5 at 16 qubits, 2.7e-4 at 20; qtl 1.5e-6 and
#: 2.6e-6), so the check allows 1e-3 there: it still catches a wrong circuit, not float32 rounding.
WIDE_QUBITS, WIDE_TOLERANCE = 14, 1e-3
ENGINES = ("native", "tensorcircuit-jax", "pennylane-jax", "torchquantum")
#: With --baseline: up to this width the step must not be slower than the baseline's beyond the noise
#: of a run (no slowdown at 4-10 qubits).
SAME_MAX_QUBITS, NOISE = 10, 0.05
#: PennyLane's default.qubit and TorchQuantum are skipped above these widths (minutes per step).
MAX_QUBITS = {"pennylane-jax": 12, "torchquantum": 16}


def problem(n: int, batch: int):
    """Initial parameters (qtl's own init, seed 0) and one batch, as float32 numpy arrays."""
    torch.manual_seed(0)
    head = DressedQuantumCircuit(FEATURES, 2, CircuitConfig(n, DEPTH))
    params = {k: v.detach().numpy().copy() for k, v in head.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, FEATURES, generator=g).numpy()
    y = torch.randint(0, 2, (batch,), generator=g).numpy()
    return params, x, y


def tolerance_for(n: int) -> float:
    return WIDE_TOLERANCE if n >= WIDE_QUBITS else TOLERANCE


def reference_logits(n: int, params: dict, x) -> np.ndarray:
    """The logits in float64 (qtl's native engine, tested against PennyLane to 1e-10): every engine's
    float32 logits, qtl's included, are checked against these."""
    head = DressedQuantumCircuit(FEATURES, 2, CircuitConfig(n, DEPTH), memory_budget=24 * 2**30).double()
    head.load_state_dict({k: torch.from_numpy(v).double() for k, v in params.items()})
    with torch.no_grad():
        return head(torch.from_numpy(x).double()).numpy()


# ---- qtl


def baseline_step(module: types.ModuleType, head, optimizer, n_steps: int, batch: int):
    """The step `step_for_run` picked with that commit's closed-form module (the rest is unchanged)."""
    if module.supports_closed_form(head, optimizer):
        compile_now = n_steps >= COMPILE_MIN_STEPS and module.worth_compiling_closed_form(
            batch, head.engine.n_qubits
        )
        return module.closed_form_step(head, optimizer, batch if compile_now else None)
    if n_steps >= COMPILE_MIN_STEPS:
        return compiled_train_step(head, optimizer)
    return train_step


class Native:
    name = "native"

    def __init__(self, n: int, params: dict, x, y, step: str = "fit", baseline=None) -> None:
        self.head = DressedQuantumCircuit(FEATURES, 2, CircuitConfig(n, DEPTH), memory_budget=12 * 2**30)
        self.head.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.optimizer = adam(self.head.parameters(), lr=LR)
        n_steps = COMPILE_MIN_STEPS if step == "compiled" else 1
        self.step_fn = train_step
        if baseline is not None:
            self.step_fn = baseline_step(baseline, self.head, self.optimizer, n_steps, len(x))
        elif step != "eager":
            self.step_fn = step_for_run(train_step, self.head, self.optimizer, n_steps, len(x))
        self.kind = getattr(self.step_fn, "__name__", type(self.step_fn).__name__)

    @property
    def compile_s(self) -> float:
        return getattr(self.step_fn, "compile_seconds", None) or 0.0

    def logits(self) -> np.ndarray:
        with torch.no_grad():
            return self.head(self.x).numpy()

    def step(self) -> None:
        self.step_fn(self.head, self.optimizer, self.x, self.y)


# ---- JAX peers: one jitted step (value_and_grad + Adam) around an expvals function


class JaxStep:
    def __init__(self, expvals, params: dict, x, y) -> None:
        import jax
        import jax.numpy as jnp

        self.jax = jax
        p = {k.replace(".", "_"): jnp.asarray(v) for k, v in params.items()}
        self.params = p
        self.state = (jax.tree.map(jnp.zeros_like, p), jax.tree.map(jnp.zeros_like, p), jnp.zeros(()))
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

        def forward(p, x):
            angles = jnp.tanh(x @ p["pre_net_weight"].T + p["pre_net_bias"]) * (math.pi / 2)
            return expvals(angles, p["q_params"]) @ p["post_net_weight"].T + p["post_net_bias"]

        def loss(p, x, y):
            logp = jax.nn.log_softmax(forward(p, x))
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        def step(p, state, x, y):  # torch.optim.Adam's update, betas (0.9, 0.999), eps 1e-8
            m, v, t = state
            value, g = jax.value_and_grad(loss)(p, x, y)
            t = t + 1
            m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
            v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            p = jax.tree.map(lambda p, m, v: p - LR * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), p, m, v)
            return p, (m, v, t), value

        self.forward = jax.jit(forward)
        self.jitted = jax.jit(step)
        start = time.perf_counter()
        self.jitted.lower(self.params, self.state, self.x, self.y).compile()
        self.forward(self.params, self.x).block_until_ready()
        self.compile_s = time.perf_counter() - start

    def logits(self) -> np.ndarray:
        return np.asarray(self.forward(self.params, self.x))

    def step(self) -> None:
        self.params, self.state, value = self.jitted(self.params, self.state, self.x, self.y)
        value.block_until_ready()


def pairs(n: int) -> list[tuple[int, int]]:
    return CircuitConfig(n, DEPTH).cnot_pairs()


def z_from_state(jnp, state, n: int):
    """<Z_i> of a (2**n,) state: marginal probabilities of each wire."""
    probs = jnp.abs(state.reshape([2] * n)) ** 2
    axes = tuple(range(n))
    return jnp.stack(
        [jnp.sum(probs, axis=axes[:i] + axes[i + 1 :]) @ jnp.array([1.0, -1.0]) for i in range(n)]
    )


class TensorCircuitJax(JaxStep):
    name = "tensorcircuit-jax"

    def __init__(self, n: int, params: dict, x, y) -> None:
        import jax
        import jax.numpy as jnp
        import tensorcircuit as tc

        tc.set_backend("jax")
        tc.set_dtype("complex64")

        def one(angles, q):  # (n,), (depth, n) -> (n,)
            c = tc.Circuit(n)
            for i in range(n):
                c.h(i)
                c.ry(i, theta=angles[i])
            for k in range(DEPTH):
                for a, b in pairs(n):
                    c.cnot(a, b)
                for i in range(n):
                    c.ry(i, theta=q[k, i])
            return z_from_state(jnp, c.state(), n).astype(jnp.float32)

        super().__init__(jax.vmap(one, in_axes=(0, None)), params, x, y)


class PennyLaneJax(JaxStep):
    name = "pennylane-jax"

    def __init__(self, n: int, params: dict, x, y) -> None:
        import jax.numpy as jnp
        import pennylane as qml

        dev = qml.device("default.qubit", wires=n)

        @qml.qnode(dev, interface="jax", diff_method="backprop")
        def circuit(angles, q):  # (B, n) broadcast, (depth, n)
            for i in range(n):
                qml.Hadamard(i)
                qml.RY(angles[:, i], wires=i)
            for k in range(DEPTH):
                for a, b in pairs(n):
                    qml.CNOT([a, b])
                for i in range(n):
                    qml.RY(q[k, i], wires=i)
            return [qml.expval(qml.PauliZ(i)) for i in range(n)]

        super().__init__(lambda a, q: jnp.stack(circuit(a, q), axis=1).astype(jnp.float32), params, x, y)


# ---- TorchQuantum


class _Placeholder(types.ModuleType):
    """An importable module whose every attribute is an empty class (for unused qiskit imports)."""

    __path__: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


def import_torchquantum():
    """`import torchquantum`, giving placeholders to the qiskit 0.x names its plugins import."""
    for _ in range(100):
        try:
            return importlib.import_module("torchquantum")
        except ImportError as exc:
            missing = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", str(exc))
            if missing and missing.group(2).startswith("qiskit"):
                setattr(sys.modules[missing.group(2)], missing.group(1), _Placeholder("_").__getattr__("x"))
            elif exc.name and exc.name.startswith(("qiskit.", "pathos", "torchdiffeq")):
                sys.modules[exc.name] = _Placeholder(exc.name)
            else:
                raise
            for name in [m for m in sys.modules if m.startswith("torchquantum")]:
                del sys.modules[name]
    raise ImportError("torchquantum did not import")


class TorchQuantum:
    name = "torchquantum"

    def __init__(self, n: int, params: dict, x, y) -> None:
        tq = import_torchquantum()
        import torchquantum.functional as tqf

        self.tq, self.tqf, self.n = tq, tqf, n
        self.p = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.optimizer = torch.optim.Adam(self.p.values(), lr=LR)
        self.compile_s = 0.0

    def forward(self) -> torch.Tensor:
        tq, tqf, n, p = self.tq, self.tqf, self.n, self.p
        angles = torch.tanh(self.x @ p["pre_net.weight"].T + p["pre_net.bias"]) * (math.pi / 2)
        qdev = tq.QuantumDevice(n_wires=n, bsz=self.x.shape[0])
        for i in range(n):
            tqf.hadamard(qdev, wires=i)
            tqf.ry(qdev, wires=i, params=angles[:, i : i + 1])
        for k in range(DEPTH):
            for a, b in pairs(n):
                tqf.cnot(qdev, wires=[a, b])
            for i in range(n):
                tqf.ry(qdev, wires=i, params=p["q_params"][k, i].reshape(1, 1))
        ev = tq.measurement.expval(qdev, list(range(n)), [tq.PauliZ()] * n)
        return ev @ p["post_net.weight"].T + p["post_net.bias"]

    def logits(self) -> np.ndarray:
        with torch.no_grad():
            return self.forward().numpy()

    def step(self) -> None:
        loss = torch.nn.functional.cross_entropy(self.forward(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


BUILDERS = {
    "native": Native,
    "tensorcircuit-jax": TensorCircuitJax,
    "pennylane-jax": PennyLaneJax,
    "torchquantum": TorchQuantum,
}


def seconds_per_step(engine, min_time: float) -> float:
    """Median over steps of one timed round (at least 3 steps and `min_time` seconds)."""
    times = []
    while len(times) < 3 or sum(times) < min_time:
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_config(
    n: int, batch: int, names: list[str], rounds: int, min_time: float, step: str, baseline=None
) -> dict:
    params, x, y = problem(n, batch)
    engines, row = {}, {}
    for name in names:
        if n > MAX_QUBITS.get(name, 99):
            row[name] = {"status": f"skipped above {MAX_QUBITS[name]} qubits"}
            continue
        try:
            start = time.perf_counter()
            if name == "native":
                engine = Native(n, params, x, y, step=step)
            elif name.startswith("native@"):
                engine = Native(n, params, x, y, step=step, baseline=baseline)
            else:
                engine = BUILDERS[name](n, params, x, y)
            built = time.perf_counter() - start
        except ImportError as exc:
            row[name] = {"status": f"not installed ({exc.name or exc})"}
            continue
        except (MemoryError, RuntimeError) as exc:
            row[name] = {"status": f"failed to build: {str(exc).splitlines()[0][:80]}"}
            continue
        engines[name] = engine
        row[name] = {"status": "ok", "build_s": built, "compile_s": engine.compile_s}
        if name.startswith("native"):
            row[name]["step"] = engine.kind
    reference = reference_logits(n, params, x)
    tolerance = tolerance_for(n)
    for name, engine in list(engines.items()):
        err = float(np.abs(engine.logits() - reference).max())
        row[name]["max_abs_diff"] = err
        if err > tolerance:
            row[name]["status"] = f"outputs differ by {err:.1e}"
            del engines[name]
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for name, engine in engines.items():  # warm-up: the first steps compile, build caches and state
        engine.step()
        engine.step()
        row[name]["compile_s"] = engine.compile_s
    for _ in range(rounds):  # interleaved, so a burst of load from other processes hits every engine
        for name, engine in engines.items():
            try:
                samples[name].append(seconds_per_step(engine, min_time))
            except (MemoryError, RuntimeError) as exc:
                row[name]["status"] = f"failed: {str(exc).splitlines()[0][:80]}"
        gc.collect()
    for name, times in samples.items():
        if times and row[name]["status"] == "ok":
            row[name].update(median_ms=statistics.median(times) * 1e3, rounds_ms=[t * 1e3 for t in times])
    native = row.get("native", {}).get("median_ms")
    for entry in row.values():
        if native and entry.get("median_ms"):
            entry["ratio_to_native"] = entry["median_ms"] / native
    engines.clear()
    gc.collect()
    return row


def cell(entry: dict, name: str) -> str:
    if "median_ms" not in entry:
        return entry["status"]
    ms = entry["median_ms"]
    t = f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"
    return t if name == "native" else f"{t} ({entry['ratio_to_native']:.2f}x)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=[f"{n}x{b}" for n, b in CONFIGS], help="QUBITSxBATCH")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per configuration")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of steps per round and engine")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: fit()'s rule, 1 for small steps)"
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--compiled", action="store_true", help="native: the step fit() picks for a long run")
    kind.add_argument("--eager", action="store_true", help="native: autograd's train_step at every size")
    parser.add_argument(
        "--baseline", metavar="REF", help="also time native with the closed-form step of git commit REF"
    )
    parser.add_argument("--json", metavar="PATH", help="also write machine, command and results as JSON")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline:
        baseline = module_at(args.baseline, "qtl/training/closed_form.py")
        at = args.engines.index("native") + 1 if "native" in args.engines else len(args.engines)
        args.engines.insert(at, f"native@{args.baseline}")
    default_threads = torch.get_num_threads()
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start']}, torch "
        f"{info['torch']} ({info['torch_threads']} threads); step = forward + backward + Adam, "
        f"depth {DEPTH}, float32; median of {args.rounds} interleaved rounds; (Nx) = time / native time"
    )
    results = []
    for spec in args.configs:
        n, batch = (int(v) for v in spec.lower().split("x"))
        # fit()'s rule: one torch thread for a step too small to share
        threads = args.threads or (1 if is_small_step(batch, n) else default_threads)
        torch.set_num_threads(threads)
        step = "compiled" if args.compiled else "eager" if args.eager else "fit"
        row = run_config(n, batch, args.engines, args.rounds, args.min_time, step, baseline)
        results.append({"n_qubits": n, "batch": batch, "torch_threads": threads, "engines": row})
        cells = " | ".join(f"{name}: {cell(row[name], name)}" for name in args.engines)
        print(f"{n:>2} qubits, batch {batch:>2}, {threads} torch threads | {cells}", flush=True)
        steps = {k: v["step"] for k, v in row.items() if "step" in v}
        if steps:
            print(f"   native steps: {steps}", flush=True)
        compile_times = {k: round(v["compile_s"], 2) for k, v in row.items() if v.get("compile_s")}
        if compile_times:
            print(f"   compile seconds (excluded above): {compile_times}", flush=True)
        diffs = {k: f"{v['max_abs_diff']:.1e}" for k, v in row.items() if "max_abs_diff" in v}
        print(f"   max |logits - float64 reference| (tolerance {tolerance_for(n):g}): {diffs}", flush=True)
    print()
    print("| qubits, batch | " + " | ".join(args.engines) + " |")
    print("|---" * (1 + len(args.engines)) + "|")
    for r in results:
        cells = " | ".join(cell(r["engines"][name], name) for name in args.engines)
        print(f"| {r['n_qubits']}, {r['batch']} | {cells} |")
    if args.baseline:
        other = f"native@{args.baseline}"
        for r in results:
            entry = r["engines"].get(other, {})
            if r["n_qubits"] <= SAME_MAX_QUBITS and "ratio_to_native" in entry:
                ratio = entry["ratio_to_native"]
                text = f"{r['n_qubits']} x {r['batch']}: {other} / native = {ratio:.2f}"
                text += f" (no slowdown: >= {1 - NOISE:g})"
                verdict(ratio >= 1 - NOISE, text)
    if args.json:
        save_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
