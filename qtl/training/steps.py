"""A compiled training step: forward, loss, backward and Adam of a head on features, as one graph.

A small circuit's eager step is bound by per-operation overhead (about a hundred tiny torch calls
between the two Linear layers, the circuit, the loss, autograd and Adam). `compiled_train_step`
writes the same step functionally (torch.func.grad_and_value, then torch.optim.Adam's update rule)
and hands it to torch.compile as one graph, so a step is a few fused kernels.

It updates the module's parameters and the optimizer's own state (exp_avg, exp_avg_sq, step) in
place, so schedulers, checkpoints and later eager steps see exactly what eager steps would leave.

Compiling costs seconds to minutes, so a compiled step pays for itself only over many steps:
`worth_compiling` says whether a run is long enough (the measurements behind COMPILE_MIN_STEPS are in
docs/benchmarks.md, "Peers").

`step_for_run` is what `fit()` asks for a head on features: the closed-form step
(`qtl.training.closed_form`) where it applies (a real circuit with a chain, ring or no entangler: faster
than this compiled graph and free of compile time), else this compiled step for a long run, else
autograd's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from qtl.quantum.engines._statevector import FULL_BLOCK_MAX_QUBITS
from qtl.quantum.engines.native import NativeEngine
from qtl.training.closed_form import closed_form_step, supports_closed_form, worth_compiling_closed_form
from qtl.training.optim import adam_state, adam_update, is_plain_adam, step_by


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch: x (B, ...) -> logits (B, C), cross-entropy against y (B,).

    Returns the batch's mean loss and its number of correct predictions, as 0-dim tensors (no sync).
    """
    logits = forward(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


#: Steps a run needs before compiling pays: a compile's cost over the time a compiled step saves.
COMPILE_MIN_STEPS = 30_000


def worth_compiling(n_steps: int) -> bool:
    """Whether a run of `n_steps` training steps is long enough for compiling its step to pay off."""
    return n_steps >= COMPILE_MIN_STEPS


def compilable(module: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether `compiled_train_step` takes this pair: plain Adam over one param group, and any circuit
    on the native engine's single-block layout (wider layouts use custom autograd functions)."""
    try:
        _supported(optimizer)
    except ValueError:
        return False
    engines = [m for m in module.modules() if type(m).__module__.startswith("qtl.quantum.engines")]
    return len(optimizer.param_groups) == 1 and all(
        isinstance(e, NativeEngine) and e.n_qubits <= FULL_BLOCK_MAX_QUBITS for e in engines
    )


def step_for_run(
    eager: Callable, module: nn.Module, optimizer: torch.optim.Optimizer, n_steps: int, batch_size: int
) -> Callable:
    """The fastest step that takes this pair, with the trajectory of `eager` (`train_step`):

    1. the closed-form step (`qtl.training.closed_form`) for a `supports_closed_form` pair, any run length
       (compiled for a long run of the tiniest steps: `worth_compiling_closed_form`);
    2. for a run long enough to pay (`worth_compiling`) and a `compilable` pair, the compiled step for
       batches of `batch_size` (other sizes, such as an epoch's last, short batch, take the eager step
       on the same optimizer state);
    3. else `eager`.
    """
    if supports_closed_form(module, optimizer):
        n_qubits = module.engine.n_qubits
        compile_now = worth_compiling(n_steps) and worth_compiling_closed_form(batch_size, n_qubits)
        return closed_form_step(module, optimizer, batch_size if compile_now else None)
    if not (worth_compiling(n_steps) and compilable(module, optimizer)):
        return eager
    compiled = compiled_train_step(module, optimizer)

    def run(module_, optimizer_, x, y):
        step = compiled if len(x) == batch_size else eager
        return step(module_, optimizer_, x, y)

    return run


def _supported(optimizer: torch.optim.Optimizer) -> None:
    if not is_plain_adam(optimizer):
        raise ValueError(
            f"the compiled step implements plain Adam only (no weight decay, amsgrad or maximize), "
            f"got {type(optimizer).__name__}"
        )


def compiled_train_step(module: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    """A drop-in for `train_step(module, optimizer, x, y)` whose step is one compiled graph.

    module: maps (B, F) features to (B, C) logits; all its trainable parameters must be in
    `optimizer`, a torch.optim.Adam with one param group and no weight decay (qtl's `adam`).
    The returned callable(module, optimizer, x, y) -> (loss, correct) compiles on its first call
    (its `compile_seconds` attribute says how long that took) and again for a new batch shape.
    """
    _supported(optimizer)
    if len(optimizer.param_groups) != 1:
        raise ValueError("the compiled step takes one param group")
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    eps = group["eps"]

    def step(params: dict, frozen: dict, exp_avgs, exp_avg_sqs, steps, lr, x, y):
        def loss_fn(p):
            logits = functional_call(module, {**frozen, **p}, (x,))
            return F.cross_entropy(logits, y), logits

        grads, (loss, logits) = grad_and_value(loss_fn, has_aux=True)(params)
        with torch.no_grad():
            values = list(params.values())
            grad_list = [grads[k] for k in params]
            adam_update(values, grad_list, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps)
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    named = dict(module.named_parameters())
    params = {k: named[k] for k in names}
    frozen = {k: v for k, v in named.items() if k not in params}
    first = next(iter(params.values()))
    inputs: dict = {}  # the optimizer-state lists and lr tensor of the last call, rebuilt when replaced

    def state_inputs() -> tuple[list, list, list]:
        return adam_state(optimizer, list(params.values()))

    def run(module_: nn.Module, optimizer_: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        if module_ is not module or optimizer_ is not optimizer:
            raise ValueError("this compiled step belongs to another module or optimizer")
        current = optimizer.state.get(first, {}).get("exp_avg")
        if current is None or inputs.get("exp_avg") is not current:  # first call, or state loaded anew
            inputs["lists"] = state_inputs()
            inputs["exp_avg"] = inputs["lists"][0][0]
        lr = optimizer.param_groups[0]["lr"]
        if inputs.get("lr_value") != lr:
            inputs["lr_value"], inputs["lr"] = lr, torch.tensor(lr, dtype=torch.float64)
        exp_avgs, exp_avg_sqs, steps = inputs["lists"]
        start = time.perf_counter()
        with torch.no_grad():  # through the optimizer's step: its hooks and step counting see it
            loss, correct = step_by(
                optimizer, lambda: compiled(params, frozen, exp_avgs, exp_avg_sqs, steps, inputs["lr"], x, y)
            )
        if run.compile_seconds is None:
            run.compile_seconds = time.perf_counter() - start
        return loss, correct

    run.compile_seconds = None
    return run
