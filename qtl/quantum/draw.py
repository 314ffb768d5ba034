"""Drawings of a config's circuit, from PennyLane's drawers applied to the engine's QNode.

Without values, the drawing shows the gates only: every angle is left out (PennyLane's `decimals=None`),
so `RY` stands for both the embedding RY(x_i) and the trainable RY(theta_k,i). Given one input, the angles
are printed (2 decimals), the weights as zeros where none are given; given weights alone, they are
printed and the embedding is drawn as its inputs, RY(x0) ... RY(x{n-1}), not as zero angles.

The figure is drawn on a matplotlib `Figure` with its own Agg canvas, outside pyplot: nothing is shown,
no global backend is switched, and pyplot holds no reference to it (the caller owns it; nothing needs
closing).
"""

from __future__ import annotations

import pennylane as qml
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.engines.pennylane import build_qnode

DECIMALS = 2
"""Decimals printed for the angles when weights or an input are given."""


def _qnode_and_args(config: CircuitConfig, weights, angles) -> tuple[qml.QNode, tuple, int | None]:
    """The default.qubit QNode of `config`, its (inputs (n,), weights) arguments and the decimals to show."""
    n = config.n_qubits
    decimals = None if weights is None and angles is None else DECIMALS
    x = torch.zeros(n, dtype=torch.float64)
    w = torch.zeros(config.weight_shape, dtype=torch.float64)
    if angles is not None:
        x = torch.as_tensor(angles, dtype=torch.float64).detach().cpu()
        if x.shape not in ((n,), (1, n)):
            raise ValueError(f"angles must be one input of shape ({n},) or (1, {n}), got {tuple(x.shape)}")
        x = x.reshape(n)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
        if tuple(w.shape) != config.weight_shape:
            raise ValueError(f"weights must have shape {config.weight_shape}, got {tuple(w.shape)}")
    qnode, _ = build_qnode(config, qml.device("default.qubit", wires=n), diff_method="backprop")
    return qnode, (x, w), decimals


class _Input(qml.operation.Operation):
    """An embedding gate drawn by its input's name ("RY(x0)"): it has no value to print."""

    num_wires = 1
    num_params = 0

    def __init__(self, text: str, wires):
        self._text = text
        super().__init__(wires=wires)

    def label(self, decimals=None, base_label=None, cache=None) -> str:
        return self._text


def _tape(config: CircuitConfig, weights, angles):
    """The circuit's tape to draw and its decimals: with weights but no input, each embedding gate is an
    `_Input` named by its input (it was drawn as RY(0.00), as if a trained angle were zero)."""
    qnode, args, decimals = _qnode_and_args(config, weights, angles)
    tape = qml.workflow.construct_tape(qnode)(*args)
    if weights is not None and angles is None:
        ops = [
            _Input(f"{g.name}(x{g.param[1]})", op.wires) if g.param and g.param[0] == "input" else op
            for g, op in zip(gates(config), tape.operations, strict=True)
        ]
        tape = tape.copy(operations=ops)
    return tape, decimals


def draw_text(config: CircuitConfig, weights=None, angles=None) -> str:
    """Text drawing of the circuit, one line per wire (long circuits wrap into several blocks).

    weights: config.weight_shape values, or None; angles: one input (n,) or (1, n), or None.
    """
    tape, decimals = _tape(config, weights, angles)
    return qml.drawer.tape_text(tape, decimals=decimals, show_matrices=False)


def draw_figure(config: CircuitConfig, weights=None, angles=None) -> Figure:
    """Matplotlib figure of the circuit (qml.draw_mpl), on its own Agg canvas.

    weights: config.weight_shape values, or None; angles: one input (n,) or (1, n), or None.
    """
    tape, decimals = _tape(config, weights, angles)
    fig = Figure()
    FigureCanvasAgg(fig)
    qml.drawer.tape_mpl(tape, decimals=decimals, fig=fig)
    return fig
