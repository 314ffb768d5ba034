"""Differentiation lab: time a training step of the dressed circuit per engine and diff method, and check
its gradients against a float64 reference.

    cases = [LabCase("native", None, n_qubits=q, depth=6, batch=32) for q in (4, 8)]
    results = run_lab(cases)            # one LabResult per case, errors captured, never raised

A "training step" is forward + backward + Adam step of a `DressedQuantumCircuit` on random features
(B, in_features) with a cross-entropy loss, the same work one batch costs when training `quantum` on
cached backbone features. The reference gradient comes from the native engine in float64, which is exact
up to rounding (beyond the statevector engines' STATEVECTOR_MAX_QUBITS, the exact MPS engine in float64);
shot-based, finite-difference or truncated (max_bond) methods show their error against it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from qtl.config import MPS, NATIVE
from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS, CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import train_step

REFERENCE = "native float64"
WIDE_REFERENCE = "exact mps float64"  # above STATEVECTOR_MAX_QUBITS


@dataclass(frozen=True)
class LabCase:
    """One point of the lab: which engine, how it differentiates, and the problem size."""

    engine: str  # "native", "mps" or a PennyLane device name
    diff_method: str | None  # PennyLane diff method; None for qtl's engines (torch autograd)
    n_qubits: int = 4
    depth: int = 6
    batch: int = 32
    shots: int | None = None  # None: exact expectation values
    in_features: int = 512  # resnet18's feature size
    n_classes: int = 2
    max_bond: int | None = None  # MPS engine: None simulates exactly

    @property
    def label(self) -> str:
        """Short name of the engine + method, e.g. "native" or "lightning.qubit/adjoint"."""
        name = self.engine if self.diff_method is None else f"{self.engine}/{self.diff_method}"
        if self.max_bond is not None:
            name = f"{name} (bond {self.max_bond})"
        return name if self.shots is None else f"{name} ({self.shots} shots)"


@dataclass
class LabResult:
    """Timing and gradient agreement for one case; `error` holds a one-line reason if it could not run."""

    case: LabCase
    step_ms: float | None = None  # median wall time of one training step, milliseconds
    max_grad_error: float | None = None  # max |grad - reference grad| over every head parameter
    over_cap: bool = False  # the first step alone took longer than the time cap; not repeated
    error: str | None = None


def build_head(case: LabCase, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The dressed circuit of `case`, with weights drawn from `seed`, in `dtype`."""
    options = {}
    if case.engine == MPS:
        options = {"max_bond": case.max_bond}
    elif case.engine != NATIVE:
        options = {"diff_method": case.diff_method or "best", "shots": case.shots}
    config = CircuitConfig(n_qubits=case.n_qubits, depth=case.depth)
    torch.manual_seed(seed)
    head = DressedQuantumCircuit(case.in_features, case.n_classes, config, engine=case.engine, **options)
    return head.to(dtype)


def _batch(case: LabCase, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (B, in_features) and labels (B,), the same for every engine."""
    if case.batch < 1:  # an empty batch has a NaN loss and no gradient to time or compare
        raise ValueError(f"a training step needs a batch of at least 1 sample, got {case.batch}")
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(case.batch, case.in_features, generator=g).to(dtype)
    y = torch.randint(0, case.n_classes, (case.batch,), generator=g)
    return x, y


def gradients(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy loss w.r.t. every parameter of `head`, by name. A parameter the
    loss does not reach (the circuit's angles at depth 0, an empty (0, n) tensor) gets zeros of its shape."""
    head.zero_grad()
    nn.functional.cross_entropy(head(x), y).backward()
    return {
        n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for n, p in head.named_parameters()
    }


def gradient_error(case: LabCase, seed: int = 0) -> float:
    """Max |grad - reference| over all head parameters that have elements (at depth 0 the circuit has no
    angles; the embedding's gradient still runs through it), the reference being native float64 (exact
    MPS in float64 above STATEVECTOR_MAX_QUBITS)."""
    head = build_head(case, seed)
    exact = NATIVE if case.n_qubits <= STATEVECTOR_MAX_QUBITS else MPS
    reference = build_head(LabCase(exact, None, case.n_qubits, case.depth, case.batch), seed, torch.float64)
    with torch.no_grad():
        ref_params = dict(reference.named_parameters())
        for name, p in head.named_parameters():
            ref_params[name].copy_(p.to(torch.float64))
    x, y = _batch(case, seed, torch.float32)
    got = gradients(head, x, y)
    want = gradients(reference, x.to(torch.float64), y)
    return max(float((got[n].to(torch.float64) - want[n]).abs().max()) for n in want if want[n].numel())


def time_step(case: LabCase, repeats: int = 5, cap_s: float = 5.0, seed: int = 0) -> tuple[float, bool]:
    """Median seconds of one forward + backward + Adam step, and whether the first step exceeded `cap_s`.

    One untimed warm-up step runs first. When a step takes longer than `cap_s`, it is not repeated.
    """
    head = build_head(case, seed)
    opt = adam(head.parameters(), lr=4e-4)  # as fit() trains: fused where supported
    x, y = _batch(case, seed, torch.float32)

    def step() -> float:
        t0 = time.perf_counter()
        train_step(head, opt, x, y)
        return time.perf_counter() - t0

    first = step()
    if first > cap_s:
        return first, True
    times = [step() for _ in range(repeats)]
    return statistics.median(times), False


def run_case(case: LabCase, repeats: int = 5, cap_s: float = 5.0, check_gradients: bool = True) -> LabResult:
    """Time `case` and compare its gradients with the reference; any failure becomes `error` (one case
    never ends the lab)."""
    result = LabResult(case)
    try:
        seconds, result.over_cap = time_step(case, repeats, cap_s)
        result.step_ms = seconds * 1e3
        if check_gradients and not result.over_cap:
            result.max_grad_error = gradient_error(case)
    except Exception as exc:  # an engine's or PennyLane's own error types too, not only the usual ones
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return result


def run_lab(
    cases: list[LabCase], repeats: int = 5, cap_s: float = 5.0, check_gradients: bool = True
) -> list[LabResult]:
    """`run_case` for every case, in order. Once a (label, depth, batch) series exceeds the cap or fails,
    its larger qubit counts are skipped, marked over the cap, their error naming why."""
    out = []
    stopped: dict[tuple, str] = {}  # series -> why its larger sizes are skipped
    for case in sorted(cases, key=lambda c: (c.label, c.depth, c.batch, c.n_qubits)):
        series = (case.label, case.depth, case.batch)
        if series in stopped:
            out.append(LabResult(case, over_cap=True, error=f"skipped: a smaller size {stopped[series]}"))
            continue
        result = run_case(case, repeats, cap_s, check_gradients)
        if result.over_cap or result.error:
            stopped[series] = "already hit the cap" if result.over_cap else "failed"
        out.append(result)
    return out
