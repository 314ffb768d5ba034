"""Barren plateaus: how the gradient of the circuit's cost shrinks with its width and depth.

    rows = scan([2, 4, 8, 16, 32, 64], [1, 2, 4], samples=24)   # matrix product state engine
    decay(rows, "global", depth=2)       # fitted base-2 rate b of Var ~ 2**(-b n) (theory: about 1)
    summary(rows)                        # a line per depth: the fitted rates, or too few widths to fit
    figure(rows).savefig("plateau.png")  # `qtl diagnose`

For each width n and depth L the circuit of the dressed head (H, RY(x), L blocks of [CNOTs, RY(theta)])
is initialised `samples` times at random, the trainable angles uniform in [0, 2 pi) and the embedded
inputs uniform in (-pi/2, pi/2) (the range of the head's tanh * pi/2), and the gradient of two costs
with respect to every angle is taken by autograd through the MPS engine (exact: bond 2**L):

    local   the mean of <Z_i> over the wires, what the dressed head feeds its post-net
    global  the parity <Z (x) Z (x) ... (x) Z>, a cost that reads every qubit at once

The variance over the initialisations, averaged over the angles, is the quantity barren-plateau
theory bounds (McClean et al. 2018; Cerezo et al. 2021): for a global cost it decays exponentially in
the width, as 2**(-n) here (each wire's factor of the parity has mean square 1/2 over a random angle);
for a local cost of a shallow circuit only polynomially (each angle reaches the wires of its light
cone, and the mean over n wires divides by n: about n**-2). `figure` draws both beside those laws.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.mps import MPSEngine

COSTS = ("local", "global")
#: Widths below this are left out of the fitted decay rates (the asymptotic law needs a few qubits).
FIT_FROM = 4


def gradient_variance(n_qubits: int, depth: int, *, samples: int = 24, seed: int = 0) -> dict[str, float]:
    """{"local": variance, "global": variance} of d cost / d theta over `samples` random initialisations
    of an n_qubits-wide, depth-L circuit (see the module docstring), averaged over the angles."""
    if samples < 2:
        raise ValueError(f"a variance needs at least 2 samples, got {samples}")
    if depth < 1:
        raise ValueError(f"a circuit without trainable angles has no gradient (depth {depth})")
    engine = MPSEngine(CircuitConfig(n_qubits, depth))
    g = torch.Generator().manual_seed(seed * 1_000_003 + n_qubits * 101 + depth)
    grads: dict[str, list[torch.Tensor]] = {c: [] for c in COSTS}
    for _ in range(samples):
        x = (torch.rand(1, n_qubits, generator=g, dtype=torch.float64) - 0.5) * math.pi
        theta = torch.rand(depth, n_qubits, generator=g, dtype=torch.float64) * (2 * math.pi)
        theta.requires_grad_(True)
        z, parity = engine.expvals_and_parity(x, theta)
        (local,) = torch.autograd.grad(z.mean(), theta, retain_graph=True)
        (glob,) = torch.autograd.grad(parity.sum(), theta)
        grads["local"].append(local.flatten())
        grads["global"].append(glob.flatten())
    return {c: float(torch.stack(v).var(0).mean()) for c, v in grads.items()}


def scan(
    qubits: list[int],
    depths: list[int],
    *,
    samples: int = 24,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One row per (width, depth, cost): n_qubits, depth, cost, variance, samples. A width or depth given
    twice is scanned once (its variance would be the same: the seed is drawn from it)."""
    points = list(dict.fromkeys((n, d) for d in depths for n in qubits))
    rows = []
    for i, (n, d) in enumerate(points, start=1):
        for cost, variance in gradient_variance(n, d, samples=samples, seed=seed).items():
            rows.append({"n_qubits": n, "depth": d, "cost": cost, "variance": variance, "samples": samples})
        if progress is not None:
            progress(i, len(points))
    return rows


def _series(rows: list[dict], cost: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct widths, ascending, and the variance at each (the mean where rows repeat a width)."""
    mine: dict[int, list[float]] = {}
    for r in rows:
        if r["cost"] == cost and r["depth"] == depth:
            mine.setdefault(r["n_qubits"], []).append(r["variance"])
    n = np.array(sorted(mine), dtype=float)
    return n, np.array([np.mean(mine[m]) for m in sorted(mine)], dtype=float)


def decay(rows: list[dict], cost: str, depth: int) -> float | None:
    """The fitted rate of the variance's decay at this depth, widths >= FIT_FROM: for the global cost b
    in Var ~ 2**(-b n) (theory: 1), for the local cost k in Var ~ n**(-k) (theory: about 2). None with
    fewer than two distinct widths there (a fit through one width is no rate)."""
    n, v = _series(rows, cost, depth)
    keep = (n >= FIT_FROM) & (v > 0)
    if keep.sum() < 2:
        return None
    x = n[keep] if cost == "global" else np.log2(n[keep])
    return float(-np.polyfit(x, np.log2(v[keep]), 1)[0])


def summary(rows: list[dict]) -> list[str]:
    """One line per depth of `rows`, in their order: the fitted decay rates beside theory's, or that too
    few widths were scanned to fit one."""
    lines = []
    for depth in dict.fromkeys(r["depth"] for r in rows):
        rates = {c: decay(rows, c, depth) for c in COSTS}
        if rates["global"] is None or rates["local"] is None:
            lines.append(
                f"depth {depth}: too few widths to fit a decay (it needs 2 or more distinct widths of at "
                f"least {FIT_FROM} qubits)"
            )
        else:
            lines.append(
                f"depth {depth}: global cost decays as 2^(-{rates['global']:.2f} n) (theory: 2^-n); "
                f"local cost as n^-{rates['local']:.2f} (theory: about n^-2)"
            )
    return lines


def theory(n: np.ndarray, cost: str, anchor: tuple[float, float]) -> np.ndarray:
    """The law theory predicts for `cost` (2**-n global, n**-2 local) through the point `anchor` (n, var)."""
    n0, v0 = anchor
    return v0 * (2.0 ** -(n - n0) if cost == "global" else (n / n0) ** -2.0)


def figure(rows: list[dict]):
    """Variance (log scale) against width, one line per depth, a panel per cost, with the law theory
    predicts (dashed, through the first width at or above FIT_FROM, where two widths are) and the
    fitted rates in the legend: the global panel on a linear width axis (2**-n is straight there), the
    local one on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, cost in zip(axes, COSTS, strict=True):
        drawn = False  # a theory line needs two widths at or above FIT_FROM
        for i, depth in enumerate(depths):
            n, v = _series(rows, cost, depth)
            rate = decay(rows, cost, depth)
            unit = "per qubit, base 2" if cost == "global" else "power of n"
            label = f"depth {depth}" + ("" if rate is None else f" (decay {rate:.2f} {unit})")
            ax.plot(n, v, "o-", color=f"C{i}", label=label)
            start = next((j for j, m in enumerate(n) if m >= FIT_FROM), None)
            if start is not None and start < len(n) - 1:
                drawn = True
                grid = np.linspace(n[start], n[-1], 100)
                ax.plot(grid, theory(grid, cost, (n[start], v[start])), "--", color=f"C{i}", alpha=0.6)
        law = "2^-n (exponential)" if cost == "global" else "n^-2 (polynomial)"
        ax.set_yscale(
            "log"
        )  # the global law is a straight line on linear qubits, the local one on log qubits
        if cost == "local":
            ax.set_xscale("log", base=2)
        ax.set_xlabel("qubits")
        ax.set_ylabel("Var[d cost / d theta]")
        what = "parity Z...Z" if cost == "global" else "mean <Z_i>"
        ax.set_title(f"{cost} cost ({what})" + (f"; dashed: theory {law}" if drawn else ""))
        ax.legend(fontsize=8)
    fig.suptitle("Barren-plateau scan: gradient variance over random initialisations (MPS engine)")
    fig.tight_layout()
    return fig
