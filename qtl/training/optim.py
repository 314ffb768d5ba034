"""The optimizers qtl trains with, and Adam's update in one place for the steps that bypass `.step()`.

    optimizer = make_optimizer(model, train_config)     # Adam (fused kernel where torch has it) or SGD
    adam(params, lr)                                    # the Adam every qtl training run uses

The closed-form and compiled training steps update parameters without calling `optimizer.step()`;
they share this module's `adam_state` (the optimizer's own exp_avg, exp_avg_sq and step tensors, in the
layout torch's fused Adam gives them), and update with `fused_adam_update` (torch's fused kernel) or
`adam_update` (the same rule as plain tensor operations, which `torch.compile` can trace). Either leaves
exactly what `optimizer.step()` would: schedulers, checkpoints and later eager steps see no difference.
"""

from __future__ import annotations

import torch
from torch import nn


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


def adam(params, lr: float) -> torch.optim.Adam:
    """torch's Adam over `params` (tensors or param groups), fused where torch has the kernel for them.

    The fused kernel updates every parameter in one call per step (float parameters on CPU or CUDA);
    anything else gets the default implementation. Same arithmetic, so the same trajectory to rounding.
    """
    params = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def is_plain_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` is torch's Adam with no weight decay, amsgrad or maximize in any group: the
    rule `adam_update` and `fused_adam_update` implement."""
    return type(optimizer) is torch.optim.Adam and not any(
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
    fused kernel on the optimizer's own state. The gradients are never written to `.grad`."""
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
