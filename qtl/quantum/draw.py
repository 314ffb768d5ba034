"""Drawings of a config's circuit, from PennyLane's drawers applied to the engine's QNode.

Without values, the drawing shows the gates only: every angle is left out (PennyLane's `decimals=None`),
so `RY` stands for both the embedding RY(x_i) and the trainable RY(theta_k,i). Given weights and/or one
input, the angles are printed (2 decimals) and whichever of the two was not given is drawn as zeros.

The figure is drawn on a matplotlib `Figure` with its own Agg canvas, outside pyplot: nothing is shown,
no global backend is switched, and pyplot holds no reference to it (the caller owns it; nothing needs
closing).
"""

from __future__ import annotations

import pennylane as qml
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qtl.quantum.circuit import CircuitConfig
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


def draw_text(config: CircuitConfig, weights=None, angles=None) -> str:
    """Text drawing of the circuit, one line per wire (long circuits wrap into several blocks).

    weights: config.weight_shape values, or None; angles: one input (n,) or (1, n), or None.
    """
    qnode, args, decimals = _qnode_and_args(config, weights, angles)
    return qml.draw(qnode, decimals=decimals, show_matrices=False)(*args)


def draw_figure(config: CircuitConfig, weights=None, angles=None) -> Figure:
    """Matplotlib figure of the circuit (qml.draw_mpl), on its own Agg canvas.

    weights: config.weight_shape values, or None; angles: one input (n,) or (1, n), or None.
    """
    qnode, args, decimals = _qnode_and_args(config, weights, angles)
    fig = Figure()
    FigureCanvasAgg(fig)
    qml.draw_mpl(qnode, decimals=decimals, fig=fig)(*args)
    return fig
