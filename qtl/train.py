"""Training: `fit()`, callbacks and cancellation (the configs it takes live in `qtl.config`).

    result = fit(ModelConfig("quantum"), recipe("quantum"), checkpoint_path="models/q.pt")
    result.history[-1]["val_acc"], result.best_epoch

Frozen variants (`quantum`, `linear`, `dressed-classical`) train their head on features extracted once
and cached on disk: epochs index an in-memory (N, F) tensor with a seeded permutation and never touch
the backbone. Trainable-backbone variants (`finetuned`, `hybrid`) and frozen runs with augmentation but
no cached views (`augment=True, views=0`) run images through the backbone every epoch.

Progress goes to `Callback`s (the CLI's progress bar and the app use the same ones). A run stops early
when a callback raises `Cancelled` or the `stop` event is set; `fit` then returns with `cancelled=True`.
The checkpoint is rewritten atomically after every epoch that improves val accuracy, so a cancelled or
crashed run leaves the last good checkpoint intact.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from qtl.backbones import load_backbone
from qtl.batches import evaluate_loader, evaluate_tensors, feature_batches, image_loaders, split_features
from qtl.checkpoint import backbone_fingerprint, save_checkpoint
from qtl.config import MachineConfig, ModelConfig, TrainConfig
from qtl.datasets import open_dataset
from qtl.engines.step import step_for_run
from qtl.variants import Classifier, build_model


class Cancelled(Exception):
    """Raised (by a callback, or by `fit` when `stop` is set) to end a run early."""


@dataclass
class Progress:
    """What a callback sees. Epochs and batches count from 1."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float  # on_batch_end: this batch's loss; on_epoch_end: the epoch's mean training loss
    lr: float  # the head's current learning rate
    metrics: dict = field(default_factory=dict)  # on_epoch_end: this epoch's history row
    history: list[dict] = field(default_factory=list)  # completed epochs, oldest first
    best_epoch: int | None = None  # epoch with the best val accuracy so far

    @property
    def fraction(self) -> float:
        """Share of the whole run done, 0.0 .. 1.0."""
        return ((self.epoch - 1) * self.batches + self.batch) / (self.epochs * self.batches)


class Callback:
    """Override the hooks you need. Raise `Cancelled` from either hook to stop the run."""

    def on_batch_end(self, progress: Progress) -> None:
        pass

    def on_epoch_end(self, progress: Progress) -> None:
        pass


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class FitResult:
    model: Classifier  # holds the best epoch's weights, in eval mode
    model_config: ModelConfig  # with class_names filled in from the dataset
    train_config: TrainConfig
    history: list[dict]  # one row per completed epoch: epoch, train/val loss and acc, lr, time_s
    best_epoch: int | None  # 1-based; None when cancelled before the first epoch finished
    checkpoint_path: Path | None  # where the best epoch was saved, if a path was given
    cancelled: bool = False

    @property
    def best(self) -> dict | None:
        """The history row of the best epoch."""
        return None if self.best_epoch is None else self.history[self.best_epoch - 1]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimizer(model: Classifier, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (`adam`: fused where supported) or SGD over the trainable parameters.

    A trainable backbone may get its own learning rate (`backbone_lr`).
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


def _check_stop(stop: StopFlag | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled("stop requested")


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    machine: MachineConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: str | Path | None = None,
    data: tuple | None = None,
    model: Classifier | None = None,
    stop: StopFlag | None = None,
    progress: Callable | None = None,
) -> FitResult:
    """Train a variant and keep its best epoch by val accuracy (ties: lower val loss).

    model_config: the architecture; empty class_names are filled from the dataset.
    train_config: the recipe (see `qtl.config.recipe`).
    machine: where the data and feature cache are, the device, workers and threads (default: auto).
    callbacks: receive `Progress` after every batch and epoch; may raise `Cancelled`.
    checkpoint_path: if given, the best epoch so far is saved there atomically after each improvement.
    data: frozen variants only: a (train, val) pair of FeatureSets (features (N, F) or (V, N, F), labels
        (N,), classes) used instead of extracting features from `machine.data_dir`.
    model: start from this model (e.g. fixed initial weights) instead of building a fresh one.
    stop: anything with `is_set()` (a threading.Event); checked after every batch.
    progress: passed to feature extraction and dataset download (progress reporting while preparing).
    """
    tc, machine = train_config, machine or MachineConfig()
    device = resolve_device(machine.device)
    use_features = model_config.frozen and (not tc.augment or tc.views > 0)
    if data is not None and not model_config.frozen:
        raise ValueError(f"data= (cached features) only serves frozen variants, not {model_config.variant!r}")

    # ---- data: class names, then cached features or image loaders
    root, dataset = None, None
    if data is None:
        prepared = open_dataset(machine.data_dir, progress=progress)
        root, classes, dataset = prepared.root, tuple(prepared.classes), prepared.record()
    else:
        classes = tuple(data[0].classes)
    if model_config.class_names and tuple(model_config.class_names) != classes:
        raise ValueError(
            f"model_config.class_names {list(model_config.class_names)} != dataset classes {list(classes)}"
        )
    mc = dataclasses.replace(model_config, class_names=classes)

    # ---- model: seeded head init, so the same seed gives the same run
    torch.manual_seed(tc.seed)
    built = model is None
    if built:
        model = build_model(mc)
    model.to(device)
    shuffle_gen = torch.Generator().manual_seed(tc.seed)
    # a cache miss runs the model's own frozen backbone when fit() built it (a given model's may differ
    # from the weights the cache key names), else one backbone loaded on the first miss and then reused
    backbone = (
        model.backbone if built else functools.cache(lambda: load_backbone(mc.backbone, mc.pretrained)[0])
    )

    val_loader = None
    if use_features:
        train_set, val_set = (
            split_features(mc, tc, machine, root, device, progress, backbone) if data is None else data
        )
        train_x = torch.as_tensor(train_set.features, dtype=torch.float32).to(device)  # (N, F) or (V, N, F)
        train_y = torch.as_tensor(train_set.labels, dtype=torch.long).to(device)  # (N,)
        batches = math.ceil(len(train_y) / tc.batch_size)
    else:
        train_loader, val_loader = image_loaders(mc, tc, machine, root, shuffle_gen, device)
        batches = len(train_loader)
        if mc.frozen:  # fresh augmented crops every epoch, but the val features can still be cached
            _, val_set = split_features(
                mc, dataclasses.replace(tc, augment=False), machine, root, device, progress, backbone
            )
    if val_loader is None:
        val_x = torch.as_tensor(val_set.features, dtype=torch.float32).to(device)  # (N_val, F)
        val_y = torch.as_tensor(val_set.labels, dtype=torch.long).to(device)
        if val_x.dim() == 3:
            val_x = val_x[0]
    forward = model.head if use_features else model  # features -> logits, or images -> logits

    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.step_size, gamma=tc.gamma)
    # a long run on features compiles its step once (qtl.engines.step); short runs stay eager
    step = train_step
    if use_features:
        step = step_for_run(train_step, forward, optimizer, tc.epochs * batches, tc.batch_size)

    history: list[dict] = []
    best_epoch, best_key, best_state, saved_path = None, None, None, None
    fingerprint = None  # of the frozen backbone, for every checkpoint: hashed once, on the first save
    kept = model.head if model.frozen else model  # a frozen backbone never changes: snapshot the head only
    cancelled = False

    def save() -> Path:
        """Checkpoint the model as it is now: the best epoch's weights, its metrics, the history so far."""
        nonlocal fingerprint
        if mc.frozen and fingerprint is None:
            fingerprint = backbone_fingerprint(model.backbone)
        return save_checkpoint(
            checkpoint_path,
            model,
            mc,
            history=history,
            metrics=history[best_epoch - 1],
            train_config=tc,
            fingerprint=fingerprint,
            dataset=dataset,
        )

    threads = torch.get_num_threads()
    try:
        run_threads = machine.cpu_threads or _auto_threads(mc, tc, use_features, device)
        if run_threads is not None:
            torch.set_num_threads(run_threads)
        for epoch in range(1, tc.epochs + 1):
            t0 = time.perf_counter()
            lr = optimizer.param_groups[-1]["lr"]
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            seen = 0

            # ---- train: one pass in seeded order
            if use_features:
                epoch_batches = feature_batches(train_x, train_y, tc.batch_size, tc.shuffle, shuffle_gen)
            else:
                epoch_batches = ((x.to(device, non_blocking=True), y.to(device)) for x, y in train_loader)
            for b, (x, y) in enumerate(epoch_batches, start=1):
                loss, ok = step(forward, optimizer, x, y)
                loss_sum += loss * len(y)
                correct += ok
                seen += len(y)
                _batch_end(callbacks, stop, epoch, tc.epochs, b, batches, loss, lr, history, best_epoch)

            # ---- evaluate on the val split
            model.eval()
            if val_loader is None:
                val_loss, val_acc = evaluate_tensors(model.head, val_x, val_y)
            else:
                val_loss, val_acc = evaluate_loader(model, val_loader, device)

            # ---- schedule
            scheduler.step()

            # ---- log
            row = {
                "epoch": epoch,
                "train_loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "time_s": time.perf_counter() - t0,
            }
            history.append(row)

            # ---- keep the best epoch, and checkpoint it atomically
            key = (val_acc, -val_loss)
            if best_key is None or key > best_key:
                best_epoch, best_key = epoch, key
                best_state = copy.deepcopy(kept.state_dict())
                if checkpoint_path is not None:
                    saved_path = save()

            progress_row = Progress(
                epoch, tc.epochs, batches, batches, row["train_loss"], lr, row, history, best_epoch
            )
            for cb in callbacks:
                cb.on_epoch_end(progress_row)
            _check_stop(stop)
    except Cancelled:
        cancelled = True
    finally:
        torch.set_num_threads(threads)

    # ---- finish with the best epoch's weights; its checkpoint then gets the whole run's history
    if best_state is not None:
        kept.load_state_dict(best_state)
        if saved_path is not None and len(history) > best_epoch:
            saved_path = save()
    model.eval()
    return FitResult(model, mc, tc, history, best_epoch, saved_path, cancelled)


SMALL_STEP = 2**12  # batch * 2**n_qubits amplitudes: below this a training step is too small to share


def _auto_threads(mc: ModelConfig, tc: TrainConfig, use_features: bool, device: torch.device) -> int | None:
    """1 when training a small head on cached features on the CPU, else None (leave torch's setting)."""
    if not use_features or device.type != "cpu":
        return None
    if mc.is_quantum and tc.batch_size * 2**mc.circuit.n_qubits > SMALL_STEP:
        return None
    return 1


def _batch_end(callbacks, stop, epoch, epochs, batch, batches, loss, lr, history, best_epoch) -> None:
    """Tell the callbacks a batch finished (only then is the loss synced to a float), then check `stop`."""
    if callbacks:
        p = Progress(epoch, epochs, batch, batches, loss.item(), lr, {}, history, best_epoch)
        for cb in callbacks:
            cb.on_batch_end(p)
    _check_stop(stop)
