"""The barren-plateau scan (qtl.analysis.plateau, `qtl diagnose`): the MPS engine's parity and its
gradient against the native statevector, and the decay laws theory predicts."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from qtl import cli
from qtl.analysis.plateau import decay, gradient_variance, scan
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines.mps import MPSEngine
from qtl.quantum.engines.native import NativeEngine


@pytest.mark.parametrize("config", [CircuitConfig(5, 2), CircuitConfig(6, 3, "ring", "rot")])
def test_mps_parity_and_its_gradient_match_the_statevector(config):
    """<Z...Z> = sum_k p_k (-1)^popcount(k) from the native engine's state, value and angle gradient."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(3, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * math.pi
    w = (torch.rand(config.weight_shape, generator=g, dtype=torch.float64) * 6.28).requires_grad_()
    _, parity = MPSEngine(config).expvals_and_parity(x, w)
    probs = sv.probabilities(NativeEngine(config).state(x, w))
    reference = probs @ sv.sign_table(config.n_qubits).prod(1)
    torch.testing.assert_close(parity, reference, atol=1e-12, rtol=0)
    (a,) = torch.autograd.grad(parity.sum(), w)
    (b,) = torch.autograd.grad(reference.sum(), w)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_global_cost_vanishes_exponentially_and_the_local_one_polynomially():
    """Depth 1, widths 4-10: the global cost's gradient variance falls by about 2 per qubit (fitted rate
    0.7-1.3, theory 1); the local one by about n^-2 (fitted 1.3-2.7), far slower."""
    rows = scan([4, 6, 8, 10], [1], samples=64, seed=0)
    assert 0.7 < decay(rows, "global", 1) < 1.3
    assert 1.3 < decay(rows, "local", 1) < 2.7
    v = {(r["n_qubits"], r["cost"]): r["variance"] for r in rows}
    assert v[(10, "global")] < v[(4, "global")] / 16 and v[(10, "local")] > v[(4, "local")] / 16
    with pytest.raises(ValueError, match="at least 2 samples"):
        gradient_variance(4, 1, samples=1)


def test_diagnose_scans_to_64_qubits_and_draws_it(tmp_path, capsys):
    out, data = tmp_path / "plateau.png", tmp_path / "plateau.json"
    args = ["-q", "diagnose", "--qubits", "2", "8", "64", "--depths", "1", "--samples", "3"]
    assert cli.main([*args, "-o", str(out), "--json", str(data)]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    rows = json.loads(data.read_text())
    assert {(r["n_qubits"], r["cost"]) for r in rows} == {
        (n, c) for n in (2, 8, 64) for c in ("local", "global")
    }
    assert all(r["variance"] > 0 for r in rows)
    assert "global cost decays as 2^(-" in capsys.readouterr().out


@pytest.mark.parametrize("widths, dashed", [((2, 8), False), ((2, 4, 8), True)])
def test_the_figure_names_a_theory_line_only_where_it_draws_one(widths, dashed):
    """The law is drawn through two or more widths at or above FIT_FROM; with one such width there is no
    line, so no title may speak of one."""
    from qtl.analysis import plateau

    rows = [
        {"n_qubits": n, "cost": c, "depth": 1, "variance": 2.0**-n} for n in widths for c in plateau.COSTS
    ]
    fig = plateau.figure(rows)
    titles = [ax.get_title() for ax in fig.axes]
    dashes = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert all(("dashed" in t) is dashed for t in titles) and bool(dashes) is dashed


@pytest.mark.parametrize(
    "output, said", [("fig.xyz", "a figure is written as one of"), ("missing/fig.png", "no folder")]
)
def test_diagnose_checks_its_figure_before_the_scan(tmp_path, capsys, monkeypatch, output, said):
    """A figure it could not write is refused in one line before any scanning (it came after the scan,
    which may take minutes); explain checks its figure before loading models the same way."""
    from qtl.analysis import plateau

    monkeypatch.setattr(plateau, "scan", lambda *a, **k: pytest.fail("scanned before checking the figure"))
    assert cli.main(["diagnose", "--qubits", "2", "3", "-o", str(tmp_path / output)]) == 1
    assert said in capsys.readouterr().err
    image = tmp_path / "a.png"
    image.write_bytes(b"not read")
    assert cli.main(["explain", str(image), "-c", str(tmp_path / "m.pt"), "-o", str(tmp_path / output)]) == 1
    assert said in capsys.readouterr().err


def test_a_decay_is_fitted_only_from_distinct_widths(tmp_path, capsys):
    """Widths and depths given twice: scanned once, and one width is too little to fit (a rate fitted on
    4 qubits alone, 2^(-0.40 n), was printed twice after numpy's RankWarning)."""
    from qtl.analysis.plateau import summary

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RankWarning included
        rows = scan([4, 4], [1, 1], samples=3)
        assert sorted((r["n_qubits"], r["depth"], r["cost"]) for r in rows) == [
            (4, 1, "global"),
            (4, 1, "local"),
        ]
        twice = rows + [dict(r) for r in rows]  # rows that repeat a width, as an older scan's JSON holds
        assert decay(twice, "global", 1) is None and decay(twice, "local", 1) is None
        assert summary(twice) == [
            "depth 1: too few widths to fit a decay (it needs 2 or more distinct widths of at least 4 qubits)"
        ]
        wide = scan([4, 8], [1], samples=3)
        (line,) = summary(wide + [dict(r) for r in wide])
        assert line.startswith("depth 1: global cost decays as 2^(-") and "local cost as n^-" in line
        assert decay(wide + wide, "global", 1) == pytest.approx(decay(wide, "global", 1))
        args = ["-q", "diagnose", "--qubits", "4", "4", "--depths", "1", "1", "--samples", "3"]
        assert cli.main([*args, "-o", str(tmp_path / "plateau.png")]) == 0
    out = capsys.readouterr().out
    assert "decays" not in out  # nothing fitted on one width
