"""The compiled training step (`qtl.training.steps`) against fit()'s eager `train_step`."""

from __future__ import annotations

import copy

import pytest
import torch

from qtl.models.heads import DressedClassical, DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import COMPILE_MIN_STEPS, compilable, compiled_train_step, step_for_run, train_step


def _head(config: CircuitConfig, engine: str = "native") -> tuple[DressedQuantumCircuit, torch.optim.Adam]:
    torch.manual_seed(0)
    head = DressedQuantumCircuit(5, 2, config, engine=engine).double()
    return head, adam(head.parameters(), lr=0.05)


def test_compiled_step_takes_the_eager_steps_trajectory():
    """Four compiled steps leave the parameters, Adam's state, loss and count of four eager steps, also
    across an optimizer state loaded anew (as a resumed run does)."""
    config = CircuitConfig(2, 1, "ring", "rot")
    eager_head, eager_opt = _head(config)
    head, opt = _head(config)
    step = compiled_train_step(head, opt)
    g = torch.Generator().manual_seed(3)
    for i in range(4):
        if i == 2:
            for o in (opt, eager_opt):
                o.load_state_dict(copy.deepcopy(o.state_dict()))
        x, y = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randint(0, 2, (3,), generator=g)
        want = train_step(eager_head, eager_opt, x, y)
        got = step(head, opt, x, y)
        torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=0)
        assert got[1] == want[1]
    assert step.compile_seconds > 0
    # Adam divides by sqrt(v): a gradient that is zero up to rounding moves its weight by rounding * lr / eps
    for p, q in zip(eager_head.parameters(), head.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-9, rtol=0)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[q][key], eager_opt.state[p][key], atol=1e-12, rtol=0)


def test_only_long_runs_on_supported_heads_compile():
    """Short runs, SGD, PennyLane engines and wide native layouts keep the eager step (a real circuit of
    up to 10 qubits takes the fused step at any length: tests/test_closed_form.py)."""
    head, opt = _head(CircuitConfig(4, 2, rotation="rot"))
    assert step_for_run(train_step, head, opt, COMPILE_MIN_STEPS - 1, 4) is train_step
    assert step_for_run(train_step, head, opt, COMPILE_MIN_STEPS, 4) is not train_step
    assert compilable(DressedClassical(5, 2), adam(DressedClassical(5, 2).parameters(), 0.1))
    assert not compilable(head, torch.optim.SGD(head.parameters(), lr=0.1))
    assert not compilable(*_head(CircuitConfig(2, 1), engine="default.qubit"))
    assert not compilable(*_head(CircuitConfig(7, 1)))


def test_unsupported_optimizer_is_a_clear_error():
    head, _ = _head(CircuitConfig(2, 1))
    with pytest.raises(ValueError, match="Adam only"):
        compiled_train_step(head, torch.optim.SGD(head.parameters(), lr=0.1))
