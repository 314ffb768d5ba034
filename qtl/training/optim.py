"""The optimizers qtl trains with, and Adam's update in one place for the steps that compute it themselves.

    optimizer = make_optimizer(model, train_config)     # Adam (fused kernel where torch has it) or SGD
    adam(params, lr)                                    # the Adam every qtl training run uses

The closed-form and compiled training steps compute their gradients (and, compiled, the update) outside
autograd. They still step through the optimizer: `Adam.step_by(update)` runs `update` as the body of
`optimizer.step()`, so step hooks and whatever counts the optimizer's steps (an LR scheduler) see every
update. The update itself works on the optimizer's own state (`adam_state`: exp_avg, exp_avg_sq and step
tensors, in the layout torch's fused Adam gives them) with `fused_adam_update` (torch's fused kernel) or
`adam_update` (the same rule as plain tensor operations, which `torch.compile` can trace). Either leaves
exactly what torch's `Adam.step()` would: schedulers, checkpoints and later eager steps see no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.autograd import profiler
from torch.optim import optimizer as torch_optimizer

T = TypeVar("T")


def make_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """Adam (`adam`) or SGD over the trainable parameters of a `qtl.models.variants.Classifier`.

    config: a `qtl.config.TrainConfig`. A trainable backbone may get its own learning rate
    (`backbone_lr`); its parameters then form the first of two param groups.
    """
    head = [p for p in model.head.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": config.lr}]
    backbone = [] if model.frozen else [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.insert(0, {"params": backbone, "lr": config.backbone_lr or config.lr})
    if config.optimizer == "adam":
        return adam(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


class Adam(torch.optim.Adam):
    """torch's Adam, which a training step that computes its own update can also step with: `step_by`."""

    _update: Callable[[], object] | None = None

    def step_by(self, update: Callable[[], T]) -> T:
        """Run `update()`, which updates this optimizer's parameters and state itself (`fused_adam_update`,
        or a compiled step's `adam_update`), as the body of `self.step()`: the optimizer's step hooks run
        around it and a scheduler counts it, as for any step. Returns what `update` returns."""
        if _nothing_around_a_step(self):
            # torch's step wrapper would only open a profiler range and loop over no hooks (about 25 us, a
            # tenth of the paper head's closed-form step): run the update bare and mark the step done the
            # way an LR scheduler's step wrapper does, so the scheduler counts it all the same
            result = update()
            self._opt_called = True
            return result
        self._update = update
        return self.step()

    def step(self, closure=None):
        """torch's Adam step from `.grad`; inside `step_by`, its update instead."""
        update, self._update = self._update, None
        if update is not None:
            return update()
        # torch wraps a class's step in its hook runner (and marks it "hooked") once an instance exists;
        # this step is wrapped already, so torch's Adam.step runs bare, or every hook would run twice
        adam_step = torch.optim.Adam.step
        return (adam_step.__wrapped__ if getattr(adam_step, "hooked", False) else adam_step)(self, closure)


def _nothing_around_a_step(optimizer: torch.optim.Optimizer) -> bool:
    """No step hook (the optimizer's own or global) and no profiler running: then torch's step wrapper
    does nothing but cost time."""
    return not (
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
        or profiler._is_profiler_enabled
    )


def adam(params, lr: float) -> Adam:
    """torch's Adam over `params` (tensors or param groups), fused where torch has the kernel for them.

    The fused kernel updates every parameter in one call per step (float parameters on CPU or CUDA);
    anything else gets the default implementation. Same arithmetic, so the same trajectory to rounding.
    """
    params = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return Adam(params, lr=lr, fused=fused or None)


def step_by(optimizer: torch.optim.Optimizer, update: Callable[[], T]) -> T:
    """`update()` as `optimizer`'s step: through `Adam.step_by` for qtl's Adam, else called directly."""
    return optimizer.step_by(update) if isinstance(optimizer, Adam) else update()


def is_plain_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` is torch's Adam with no weight decay, amsgrad or maximize in any group: the
    rule `adam_update` and `fused_adam_update` implement."""
    return isinstance(optimizer, torch.optim.Adam) and not any(
        g["weight_decay"] or g["amsgrad"] or g["maximize"] for g in optimizer.param_groups
    )


def adam_state(optimizer: torch.optim.Optimizer, params: list) -> tuple[list, list, list]:
    """Adam's (exp_avg, exp_avg_sq, step) tensors of `params`, made on the first step in the layout
    torch's fused Adam gives them (`step` a float32 tensor on the parameter's device)."""
    state = [optimizer.state[p] for p in params]
    for p, st in zip(params, state, strict=True):
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return tuple([st[key] for st in state] for key in ("exp_avg", "exp_avg_sq", "step"))


def fused_adam_update(optimizer: torch.optim.Optimizer, params: list, grads: list) -> None:
    """`optimizer.step()` for `params` (one param group of a plain Adam) with `grads`, by torch's
    fused kernel on the optimizer's own state, run through the optimizer's step (`step_by`). The
    gradients are never written to `.grad`."""
    step_by(optimizer, lambda: _fused_adam(optimizer, params, grads))


def _fused_adam(optimizer: torch.optim.Optimizer, params: list, grads: list) -> None:
    group = optimizer.param_groups[0]
    exp_avgs, exp_avg_sqs, steps = adam_state(optimizer, params)
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=group["eps"],
        maximize=False,
    )


def adam_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1: float, beta2: float, eps: float):
    """torch.optim.Adam's update (no weight decay) as plain tensor operations, in place on params and
    state: what `torch.compile` traces inside a compiled step.

    `steps` are the optimizer's float32 step counters; the bias corrections are taken in float64, as
    torch's fused kernel takes them from the step's value.
    """
    for s in steps:
        s.add_(1)
    t = steps[0].to(torch.float64)
    step_size = lr / (1 - beta1**t)
    bias2_sqrt = (1 - beta2**t).sqrt()
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * m / (v.sqrt() / bias2_sqrt + eps))
