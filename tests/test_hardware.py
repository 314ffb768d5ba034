"""The circuit on a fake IBM backend (Qiskit, transpiled, with its calibrated noise): lean, a tiny circuit."""

from __future__ import annotations

import sys

import pytest
import torch

from qtl import cli
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.native import NativeEngine
from qtl.quantum.hardware.backends import HardwareUnavailableError, backend_expvals, get_backend


def test_fake_backend_agrees_with_ideal_within_its_noise():
    """FakeManilaV2 (5 qubits, its coupling map, basis gates and noise model), 2000 shots: every <Z_i>
    within 0.15 of the ideal value (its gate and readout errors move a 2-qubit circuit by a few 0.01),
    and a repeat with the same seed gives the same counts."""
    config = CircuitConfig(n_qubits=2, depth=1)
    g = torch.Generator().manual_seed(0)
    angles = torch.rand(4, 2, generator=g, dtype=torch.float64) * 3 - 1.5
    weights = torch.rand(config.weight_shape, generator=g, dtype=torch.float64) * 3 - 1.5
    ideal = NativeEngine(config)(angles, weights)
    measured = backend_expvals(config, angles, weights, "FakeManilaV2", shots=2000, seed=3)
    assert measured.shape == (4, 2)
    assert (measured - ideal).abs().max() < 0.15
    assert torch.equal(measured, backend_expvals(config, angles, weights, "FakeManilaV2", shots=2000, seed=3))


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="unknown fake IBM backend 'FakeNowhere'.*FakeManilaV2"):
        get_backend("FakeNowhere")


def test_missing_extras_give_one_line(monkeypatch, capsys, tmp_path):
    """Without qiskit-ibm-runtime: one error line naming the extra, from the library and from the CLI."""
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)
    with pytest.raises(HardwareUnavailableError, match=r"pip install 'qtl\[hardware\]'"):
        get_backend("FakeManilaV2")
    ckpt = tmp_path / "missing.pt"
    code = cli.main(["noise", str(ckpt), "--backends", "FakeManilaV2"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "qtl: error:" in err and "qtl[hardware]" in err
