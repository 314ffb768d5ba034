"""Gradient norms per parameter group, for troubleshooting end-to-end differentiation.

    norms = GradientNorms(model, batches=len(feed.train))
    ... after each training step: norms.after_step(step)
    row.update(norms.epoch())            # grad_backbone, grad_pre_net, grad_circuit, grad_hidden, ...
    norms.warning(row)                   # a sentence when the circuit's gradients vanish, else None

Groups: `backbone` (a trainable backbone), `pre_net` (Linear(F, n) of a dressed head), `circuit` (its
angles), `hidden` (the classical layer standing in for the circuit in `dressed-classical`), `post_net`
(the layer producing the logits; a linear head is one). A group a model does not have is None.

Each value is the mean, over the epoch's sampled steps, of the L2 norm of that step's gradient of the
group's parameters. Steps are sampled evenly, at most SAMPLES_PER_EPOCH per epoch, so reading them costs
nothing noticeable even for the closed-form step (whose gradients come from its `last_grads`, never from
`.grad`). A step that exposes neither (the compiled step) leaves the epoch's norms None.
"""

from __future__ import annotations

import math

import torch
from torch import nn

GROUPS = ("backbone", "pre_net", "circuit", "hidden", "post_net")
COLUMNS = tuple(f"grad_{g}" for g in GROUPS)
SAMPLES_PER_EPOCH = 8  # reading one step costs about a closed-form step's own time (bench/grad_norms.py)
#: Circuit gradients count as vanished below this share of the classical layers' (root mean square per
#: parameter), or below VANISHED_RMS outright.
VANISHING_RATIO = 1e-3
VANISHED_RMS = 1e-8


def group_of(name: str, frozen_backbone: bool) -> str | None:
    """The group of a `Classifier` parameter by its name (None: not trained)."""
    if name.startswith("backbone."):
        return None if frozen_backbone else "backbone"
    leaf = name.split(".")
    if leaf[-1] == "q_params":
        return "circuit"
    for group in ("pre_net", "hidden", "post_net"):
        if group in leaf:
            return group
    return "post_net"  # a plain Linear head: the layer that produces the logits


class GradientNorms:
    """Accumulates per-group gradient norms of a `qtl.models.variants.Classifier` over an epoch."""

    def __init__(self, model: nn.Module, batches: int) -> None:
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [group_of(n, model.frozen) for n, _ in params]
        kept = [(p, g) for (_, p), g in zip(params, groups, strict=True) if g is not None]
        self.params = [p for p, _ in kept]
        self.present = [g for g in GROUPS if any(k == g for _, k in kept)]
        self.index = torch.tensor([self.present.index(g) for _, g in kept], dtype=torch.long)
        self.sizes = {g: sum(p.numel() for p, k in kept if k == g) for g in self.present}
        self.every = max(1, batches // SAMPLES_PER_EPOCH)
        self._order: tuple[int, list[int]] | None = None  # (id of a step, where each param is in its list)
        self._reset()

    def _reset(self) -> None:
        self.total, self.samples, self.steps, self.missing = None, 0, 0, False

    def after_step(self, step) -> None:
        """Read this step's gradients (from `step.last_grads` where it has them, else `.grad`) when the
        step is sampled."""
        self.steps += 1
        if (self.steps - 1) % self.every or not self.params:
            return
        given = getattr(step, "last_grads", None)
        if given is not None:
            if self._order is None or self._order[0] != id(step):
                where = {id(p): i for i, p in enumerate(step.params)}
                self._order = (id(step), [where.get(id(p), -1) for p in self.params])
            grads = [given[i] if i >= 0 else None for i in self._order[1]]
        else:
            grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            self.missing = True
            return
        squares = torch.stack(torch._foreach_norm(grads)).square_()
        if self.index.device != squares.device:
            self.index = self.index.to(squares.device)
        per_group = squares.new_zeros(len(self.present)).index_add_(0, self.index, squares).sqrt_()
        self.total = per_group if self.total is None else self.total.add_(per_group)
        self.samples += 1

    def epoch(self) -> dict[str, float | None]:
        """grad_<group> for every group in GROUPS (None where absent or unread), then start a new epoch."""
        out = dict.fromkeys(COLUMNS)
        if self.total is not None and not self.missing:
            means = (self.total / self.samples).tolist()
            out.update({f"grad_{g}": v for g, v in zip(self.present, means, strict=True)})
        self._reset()
        return out

    def warning(self, row: dict) -> str | None:
        """A sentence when the circuit's gradients vanished in this epoch's row, else None (also for a
        circuit of no angles, depth 0: nothing of it trains)."""
        circuit = row.get("grad_circuit")
        if circuit is None or not self.sizes.get("circuit"):
            return None
        rms = {g: row[f"grad_{g}"] / math.sqrt(self.sizes[g]) for g in self.present if row.get(f"grad_{g}")}
        classical = max((v for g, v in rms.items() if g in ("pre_net", "post_net")), default=0.0)
        mine = rms.get("circuit", 0.0)
        if mine < VANISHED_RMS or (classical and mine < VANISHING_RATIO * classical):
            return (
                f"epoch {row['epoch']}: the circuit's gradients vanish (rms {mine:.1e} per angle against "
                f"{classical:.1e} for the classical layers): its angles barely train; try fewer qubits, "
                "a shallower circuit or a smaller initial angle spread (q_delta); see `qtl diagnose`"
            )
        return None
