"""Text and matplotlib drawings of a config's circuit."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.draw import draw_figure, draw_text


def _wire_lines(text: str, wire: int) -> str:
    """All segments of one wire's line, joined (long drawings wrap into blocks)."""
    return "".join(line for line in text.splitlines() if line.startswith(f"{wire}: "))


class TestText:
    """draw_text."""

    @pytest.mark.parametrize("n", [1, 3, 5])
    def test_one_line_per_wire_with_measurement(self, n):
        """Each wire has a line that ends in <Z>."""
        text = draw_text(CircuitConfig(n_qubits=n, depth=1))
        for i in range(n):
            assert _wire_lines(text, i).rstrip().endswith("<Z>")
        assert not _wire_lines(text, n)

    def test_symbolic_without_values(self):
        """Without weights or input no angle is printed, only gate names."""
        text = draw_text(CircuitConfig(n_qubits=2, depth=2))
        assert "RY" in text and "H" in text and "(" not in text

    def test_gate_counts_follow_config(self):
        """Wire 0 of the paper's circuit: one H, 1 + depth RYs, and a CNOT control or target per block."""
        config = CircuitConfig(n_qubits=4, depth=6)
        line = _wire_lines(draw_text(config), 0)
        assert line.count("H") == 1
        assert line.count("RY") == 1 + config.depth
        assert line.count("●") == config.depth

    def test_ring_closes_the_loop(self):
        """The ring's CNOT(n-1, 0) targets wire 0; the chain never does."""
        assert "X" in _wire_lines(draw_text(CircuitConfig(n_qubits=3, depth=1, entangler="ring")), 0)
        assert "X" not in _wire_lines(draw_text(CircuitConfig(n_qubits=3, depth=1, entangler="chain")), 0)

    def test_rot_layer(self):
        """The general rotation shows as RZ RY RZ on each wire."""
        line = _wire_lines(draw_text(CircuitConfig(n_qubits=2, depth=1, rotation="rot")), 1)
        assert line.count("RZ") == 2 and line.count("RY") == 2

    def test_given_values_are_printed(self):
        """Given weights and one input, their values appear; missing weights are drawn as zeros."""
        config = CircuitConfig(n_qubits=2, depth=1)
        weights = torch.tensor([[0.25, -1.5]])
        text = draw_text(config, weights=weights, angles=[0.75, 1.25])
        assert "RY(0.75)" in _wire_lines(text, 0) and "RY(0.25)" in _wire_lines(text, 0)
        assert "RY(1.25)" in _wire_lines(text, 1) and "RY(-1.50)" in _wire_lines(text, 1)
        assert "RY(0.00)" in _wire_lines(draw_text(config, angles=[0.75, 1.25]), 0)

    @pytest.mark.parametrize("reupload", [False, True])
    def test_weights_alone_draw_the_inputs_by_name(self, reupload):
        """A checkpoint's drawing (weights, no input): the embedding is RY(x_i), in every block where the
        data is re-uploaded; it was RY(0.00), like a trained angle of zero."""
        config = CircuitConfig(n_qubits=2, depth=2, rotation="rot", reupload=reupload)
        weights = torch.full(config.weight_shape, 0.5)
        text = draw_text(config, weights=weights)
        for wire in (0, 1):
            line = _wire_lines(text, wire)
            assert line.count(f"RY(x{wire})") == (1 + config.depth if reupload else 1), line
            assert "0.00" not in line and line.count("(0.50)") == 3 * config.depth
        labels = [t.get_text() for t in draw_figure(config, weights=weights).axes[0].texts]
        assert labels.count("RY(x1)") == (3 if reupload else 1) and "RY\n(0.00)" not in labels

    def test_bad_shapes(self):
        """Weights or an input of the wrong shape are ValueErrors."""
        config = CircuitConfig(n_qubits=2, depth=1)
        with pytest.raises(ValueError, match="weights"):
            draw_text(config, weights=torch.zeros(2, 2))
        with pytest.raises(ValueError, match="angles"):
            draw_text(config, angles=torch.zeros(3, 2))


class TestFigure:
    """draw_figure."""

    def test_returns_a_figure_outside_pyplot(self):
        """A Figure that pyplot does not track (nothing to close), which renders to PNG."""
        before = plt.get_fignums()
        fig = draw_figure(CircuitConfig(n_qubits=3, depth=2, entangler="ring"))
        assert isinstance(fig, Figure)
        assert plt.get_fignums() == before
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue().startswith(b"\x89PNG")

    def test_values_and_size(self):
        """With values the angles are drawn as text; a deeper circuit gives a wider figure."""
        config = CircuitConfig(n_qubits=2, depth=1)
        fig = draw_figure(config, weights=torch.tensor([[0.25, -1.5]]), angles=torch.tensor([[0.75, 1.25]]))
        labels = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert "0.75" in labels and "-1.50" in labels
        deeper = draw_figure(CircuitConfig(n_qubits=2, depth=6))
        assert deeper.get_figwidth() > fig.get_figwidth()

    def test_leaves_callers_figures_alone(self):
        """A figure the caller has open stays open and current."""
        mine = plt.figure()
        try:
            draw_figure(CircuitConfig(n_qubits=1, depth=0))
            assert plt.fignum_exists(mine.number) and plt.gcf() is mine
        finally:
            plt.close(mine)
