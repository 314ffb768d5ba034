"""The native engine against PennyLane default.qubit (backprop) over many seeded random configs.

Values and gradients with respect to both angles and weights must agree to 1e-10 in float64 and 1e-5
in float32, on the native engine's automatic path choice and on its adjoint path. The list covers
n_qubits 1..8, depth 0..6, batch 1..17 and every entangler, rotation and Hadamard option; batches
above 2**n exercise the native engine's matrix path, 7 and 8 qubits its grouped layers.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass

import pytest
import torch

from qtl.quantum.circuit import ENTANGLERS, ROTATIONS, CircuitConfig
from qtl.quantum.engines import make_engine

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass(frozen=True)
class Case:
    config: CircuitConfig
    batch: int
    seed: int

    def __str__(self) -> str:
        c = self.config
        h = "H" if c.hadamard else "noH"
        return f"n{c.n_qubits}-d{c.depth}-{c.entangler}-{c.rotation}-{h}-b{self.batch}"


def _cases(per_option: int = 5, seed: int = 2019) -> list[Case]:
    """Fixed edge cases, then `per_option` random (n, depth, batch) for every layer-option combination."""
    rng = random.Random(seed)
    cases = [
        Case(CircuitConfig(n_qubits=1, depth=0), 1, 0),
        Case(CircuitConfig(n_qubits=1, depth=0, hadamard=False), 17, 1),
        Case(CircuitConfig(n_qubits=1, depth=6, entangler="ring", rotation="rot"), 5, 2),
        Case(CircuitConfig(n_qubits=2, depth=0, rotation="rot"), 17, 3),
        Case(CircuitConfig(n_qubits=2, depth=6, entangler="ring"), 3, 4),
        Case(CircuitConfig(n_qubits=8, depth=6, entangler="ring", rotation="rot"), 17, 5),
        Case(CircuitConfig(n_qubits=8, depth=6), 1, 6),
        Case(CircuitConfig(n_qubits=4, depth=6), 17, 7),
    ]
    for entangler, rotation, hadamard in itertools.product(ENTANGLERS, ROTATIONS, (True, False)):
        for _ in range(per_option):
            config = CircuitConfig(
                n_qubits=rng.randint(1, 8),
                depth=rng.randint(0, 6),
                entangler=entangler,
                rotation=rotation,
                hadamard=hadamard,
            )
            cases.append(Case(config, rng.randint(1, 17), rng.randrange(2**31)))
    return cases


CASES = _cases()


@functools.cache
def _run(engine_name: str, case: Case, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Outputs (B, n) and the gradients w.r.t. angles (B, n) and weights of a random cotangent."""
    g = torch.Generator().manual_seed(case.seed)
    n = case.config.n_qubits
    angles = ((torch.rand(case.batch, n, generator=g, dtype=torch.float64) - 0.5) * torch.pi).to(dtype)
    weights = (torch.randn(case.config.weight_shape, generator=g, dtype=torch.float64) * 2.0).to(dtype)
    cotangent = (torch.rand(case.batch, n, generator=g, dtype=torch.float64) * 2.0 - 1.0).to(dtype)
    if engine_name.startswith("native"):  # "native" (path "auto") or "native-<path>"
        engine = make_engine(case.config, "native", path=engine_name.partition("-")[2] or "auto")
    elif engine_name == "mps":
        engine = make_engine(case.config, "mps")
    else:
        engine = make_engine(case.config, "default.qubit", diff_method="backprop")
    angles.requires_grad_(True)
    weights.requires_grad_(True)
    out = engine(angles, weights)
    (out * cotangent).sum().backward()
    if weights.grad is None and weights.numel() == 0:  # depth 0: autograd leaves an unused empty leaf alone
        weights.grad = torch.zeros_like(weights)
    return out.detach(), angles.grad, weights.grad


def _assert_agree(case: Case, dtype: torch.dtype, which: slice, native_name: str) -> None:
    native, reference = _run(native_name, case, dtype), _run("pennylane", case, dtype)
    for got, want in zip(native[which], reference[which], strict=True):
        assert got is not None and got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("native_name", ["native", "native-adjoint"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=str)
class TestAgreement:
    """Native (automatic path, and the adjoint path forced) and PennyLane agree to 1e-10 in float64 and
    1e-5 in float32 (PennyLane computes in float64)."""

    def test_outputs(self, case, dtype, native_name):
        """<Z_i> agree."""
        _assert_agree(case, dtype, slice(0, 1), native_name)

    def test_gradients(self, case, dtype, native_name):
        """Gradients with respect to angles and weights agree."""
        _assert_agree(case, dtype, slice(1, 3), native_name)


REUPLOAD_CASES = [
    Case(CircuitConfig(n_qubits=3, depth=2, reupload=True), 5, 11),
    Case(CircuitConfig(n_qubits=4, depth=3, entangler="ring", rotation="rot", reupload=True), 17, 12),
    Case(CircuitConfig(n_qubits=7, depth=2, hadamard=False, reupload=True), 3, 13),
]


@pytest.mark.parametrize("engine", ["native", "mps"])
@pytest.mark.parametrize("case", REUPLOAD_CASES, ids=str)
def test_reuploading_circuits_agree(case, engine):
    """A circuit that embeds the inputs in every block: native (per-sample blocks, or per wire above 6
    qubits) and MPS give default.qubit's outputs and gradients to 1e-10 in float64."""
    for got, want in zip(
        _run(engine, case, torch.float64), _run("pennylane", case, torch.float64), strict=True
    ):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES[::6], ids=str)
class TestCuda:
    """The native engine on CUDA gives PennyLane's CPU results."""

    def test_outputs_and_gradients(self, case, dtype):
        """Outputs and both gradients on the GPU agree with default.qubit on the CPU."""
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        g = torch.Generator().manual_seed(case.seed)
        n = case.config.n_qubits
        angles = ((torch.rand(case.batch, n, generator=g, dtype=torch.float64) - 0.5) * torch.pi).to(dtype)
        weights = (torch.randn(case.config.weight_shape, generator=g, dtype=torch.float64) * 2.0).to(dtype)
        cotangent = (torch.rand(case.batch, n, generator=g, dtype=torch.float64) * 2.0 - 1.0).to(dtype)
        reference = _run("pennylane", case, dtype)
        a, w = angles.cuda().requires_grad_(True), weights.cuda().requires_grad_(True)
        out = make_engine(case.config, "native")(a, w)
        assert out.device.type == "cuda"
        (out * cotangent.cuda()).sum().backward()
        w_grad = torch.zeros_like(w) if w.grad is None and w.numel() == 0 else w.grad
        for got, want in zip((out.detach(), a.grad, w_grad), reference, strict=True):
            torch.testing.assert_close(got.cpu(), want, atol=TOLERANCE[dtype], rtol=0)
