"""Training: `fit()`, callbacks and cancellation (the configs it takes live in `qtl.config`).

    result = fit(ModelConfig("quantum"), recipe("quantum"), checkpoint_path="models/q.pt")
    result.history[-1]["val_acc"], result.best_epoch

`qtl.data.feed` builds what a run reads, in one place: frozen variants (`quantum`, `linear`,
`dressed-classical`) train their head on features extracted once and cached on disk (epochs index an
in-memory (N, F) tensor with a seeded permutation and never touch the backbone); trainable-backbone
variants (`finetuned`, `hybrid`) and frozen runs with augmentation but no cached views
(`augment=True, views=0`) run images through the backbone every epoch. `fit` itself never asks which.

The run's `DataRegime` (`TrainConfig.regime`) picks its train, val and test images (`qtl.data.protocol`):
the best epoch is chosen on val, and the test split, where there is one, is scored once on that epoch
(`FitResult.test`, the checkpoint's metrics). Each history row also holds the epoch's gradient norms
per parameter group (`qtl.training.gradients`); a warning is logged, and handed to the callbacks, when
the circuit's gradients vanish. The kernel baselines (`qtl.models.kernels`) are fitted once on the same
features instead, with C and the kernel width chosen on val.

Progress goes to `Callback`s (the CLI's progress bar and the app use the same ones). A run stops early
when a callback raises `Cancelled` or the `stop` event is set; `fit` then returns with `cancelled=True`.
The checkpoint is rewritten atomically after every epoch that improves val accuracy, so a cancelled or
crashed run leaves the last good checkpoint intact. An epoch whose loss is NaN or infinite stops the run
with `Diverged` (a ValueError) before it can be kept.

Every save records how far the run got (`meta["training"]`, `qtl.models.checkpoint.training_record`):
one rule for every path that stops a run before its last epoch. A save at an improvement says
"unfinished" (what a killed process leaves); the run's end rewrites it as finished, or as stopped early
at epoch k of N and why: "cancelled" (`Cancelled`, the stop event), "interrupted" (Ctrl-C),
"diverged", "failed" (any other error). Listings and loaders tell such a checkpoint apart by it
(`CheckpointInfo.stop_note`); a later complete run into the same file replaces it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from qtl.config import MachineConfig, ModelConfig, TrainConfig
from qtl.data.datasets import open_dataset
from qtl.data.feed import FeatureBatches, Feed, loss_and_accuracy, training_feed
from qtl.models.backbones import load_backbone, shared_backbone
from qtl.models.checkpoint import (
    STOP_REASONS,
    backbone_fingerprint,
    earlier_best,
    save_checkpoint,
    training_record,
)
from qtl.models.variants import Classifier, build_model, check_feature_dim
from qtl.training.gradients import COLUMNS, GradientNorms
from qtl.training.optim import make_optimizer
from qtl.training.steps import step_for_run, train_step
from qtl.utils.devices import resolve_device

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised (by a callback, or by `fit` when `stop` is set) to end a run early."""


class Diverged(ValueError):
    """Raised by `fit` when an epoch's training or val loss is not finite (NaN or inf): the weights are
    lost, so the run stops there. A checkpoint it wrote keeps the best epoch before it."""


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
    warning: str | None = None  # on_epoch_end: why this epoch's gradients look wrong (vanishing circuit)

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
    history: list[dict]  # one row per completed epoch: epoch, train/val loss and acc, lr, time_s, grad_*
    best_epoch: int | None  # 1-based; None when cancelled before the first epoch finished
    checkpoint_path: Path | None  # where the best epoch was saved, if a path was given (None where
    # `kept_earlier`: the file was left to a better earlier run)
    cancelled: bool = False
    test: dict = field(default_factory=dict)  # test_loss, test_acc, n_test of the best epoch ({}: no test)
    sizes: dict = field(default_factory=dict)  # n_train, n_val: the images the run trained and selected on
    dataset: dict | None = None  # its data's `PreparedDataset.record()` (None: given features)
    kept_earlier: Path | None = None  # the checkpoint path, where it still holds an earlier run of these
    # settings that this run stopped before beating (`checkpoint.earlier_best`): its row is the file's

    @property
    def best(self) -> dict | None:
        """The history row of the best epoch."""
        return None if self.best_epoch is None else self.history[self.best_epoch - 1]

    @property
    def metrics(self) -> dict | None:
        """The best epoch's row with the test metrics and split sizes: what its checkpoint records."""
        return None if self.best is None else {**self.best, **self.test, **self.sizes}


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every batch-norm layer of `module` in eval mode: it normalises with its ImageNet running
    statistics and never updates them (its affine weights still train)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _check_stop(stop: StopFlag | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled("stop requested")


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    machine: MachineConfig | None = None,
    *,
    callbacks: Callback | Sequence[Callback] = (),
    checkpoint_path: str | Path | None = None,
    features: tuple | None = None,
    model: Classifier | None = None,
    stop: StopFlag | None = None,
    progress: Callable | None = None,
) -> FitResult:
    """Train a variant and keep its best epoch by val accuracy (ties: lower val loss).

    model_config: the architecture; empty class_names are filled from the dataset.
    train_config: the recipe (see `qtl.config.recipe`).
    machine: where the data and feature cache are, the device, workers and threads (default: auto).
    callbacks: a `Callback`, or a sequence of them: each receives `Progress` after every batch and epoch
        and may raise `Cancelled`.
    checkpoint_path: if given, the best epoch so far is saved there atomically after each improvement
        (a kernel SVM has no checkpoint: a warning says that nothing is written). Where the file holds an
        earlier run of the same settings (`checkpoint.earlier_best`), it is written only once this run
        beats that run's best epoch, or finishes (`FitResult.kept_earlier` where neither happened).
    features: frozen variants only: a (train, val) or (train, val, test) tuple of FeatureSets (features
        (N, F) or (V, N, F), labels (N,), N paths, the same classes and width F as the backbone's, all
        finite) used instead of extracting them from the dataset at `machine.data_dir`; ValueError for
        any that is not so, before training.
    model: start from this model (e.g. fixed initial weights) instead of building a fresh one.
    stop: anything with `is_set()` (a threading.Event); checked after every batch.
    progress: passed to feature extraction and dataset download (progress reporting while preparing).

    Raises `Diverged` (a ValueError) when an epoch's loss is NaN or inf: no checkpoint of that epoch is
    written; one written before keeps the best epoch before it.

    Randomness: fit seeds torch's global generator with `train_config.seed` (the head's initialisation,
    dropout and the like) and restores the caller's generator state when it returns, so the caller's own
    random stream goes on as if fit had not run (the CPU's and, where in use, the CUDA devices'). Since
    that generator is one per process, fits running at once in threads of one process draw from it in
    turn and are not reproducible; run them in processes (`qtl sweep --backend processes`).
    """
    tc, machine = train_config, machine or MachineConfig()
    device = resolve_device(machine.device)
    callbacks = _as_callbacks(callbacks)
    if features is not None:
        if not model_config.frozen:
            raise ValueError(f"features= only serve frozen variants, not {model_config.variant!r}")
        _check_features(features)
    if model is None:
        check_feature_dim(model_config)
    if model_config.is_kernel and checkpoint_path is not None:
        log.warning(
            "%s: a kernel SVM has no checkpoint, so nothing is written to %s (its scores are in the "
            "returned FitResult)",
            model_config.variant,
            checkpoint_path,
        )
        checkpoint_path = None
    with torch.random.fork_rng(devices=_rng_devices(device)):
        return _fit(
            model_config, tc, machine, device, callbacks, checkpoint_path, features, model, stop, progress
        )


def _fit(
    model_config: ModelConfig,
    tc: TrainConfig,
    machine: MachineConfig,
    device: torch.device,
    callbacks: tuple[Callback, ...],
    checkpoint_path: str | Path | None,
    features: tuple | None,
    model: Classifier | None,
    stop: StopFlag | None,
    progress: Callable | None,
) -> FitResult:
    """`fit`'s work, its arguments checked, inside its fork of torch's random state."""
    # ---- dataset: its classes (the first `tc.regime.classes` of them) are the model's outputs;
    # checkpoints record where it came from
    if features is None:
        prepared = open_dataset(machine.data_dir, progress=progress)
        root, classes, dataset = prepared.root, tuple(prepared.classes), prepared.record()
    else:
        root, classes, dataset = None, tuple(features[0].classes), None
    classes = classes[: tc.regime.classes]
    if model_config.class_names and tuple(model_config.class_names) != classes:
        raise ValueError(
            f"model_config.class_names {list(model_config.class_names)} != dataset classes {list(classes)}"
        )
    mc = dataclasses.replace(model_config, class_names=classes)

    # ---- model: seeded head init, so the same seed gives the same run; a frozen variant's head sits
    # on the process's shared backbone (read-only, built once)
    torch.manual_seed(tc.seed)
    built = model is None
    if built:
        model = build_model(
            mc, backbone=shared_backbone(mc.backbone, mc.pretrained, device=device) if mc.frozen else None
        )
    model = model.to(device)
    if features is not None and features[0].features.shape[-1] != model.in_features:
        raise ValueError(
            f"features= are {features[0].features.shape[-1]} wide, but the model's head takes the "
            f"{model.in_features} features of {mc.backbone}: extract them with that backbone"
        )
    # a cache miss runs the model's own frozen backbone when fit() built it (a given model's may differ
    # from the weights the cache key names), else one backbone loaded on the first miss and then reused
    backbone = (
        model.backbone if built else functools.cache(lambda: load_backbone(mc.backbone, mc.pretrained)[0])
    )

    # ---- feed, optimizer, schedule
    generator = torch.Generator().manual_seed(tc.seed)  # batch order, views and augmentation
    feed = training_feed(
        model,
        mc,
        tc,
        machine,
        device,
        generator,
        root=root,
        features=features,
        progress=progress,
        backbone=backbone,
    )
    sizes = {"n_train": len(feed.train.y), "n_val": len(feed.val.y)}
    for split, n in sizes.items():
        if not n:  # e.g. a regime that keeps no training image
            raise ValueError(f"nothing to train on: this run's {split[2:]} split holds no images")
    if mc.is_kernel:  # fitted once, C and width chosen on val
        return dataclasses.replace(_fit_kernel(model, mc, tc, feed, callbacks, sizes), dataset=dataset)
    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.step_size, gamma=tc.gamma)
    step = _step_for(feed, optimizer, tc)  # train_step, or closed-form / compiled on cached features
    best = _BestEpoch(model, mc, tc, checkpoint_path, dataset)
    history: list[dict] = []
    batches, cancelled = len(feed.train), False
    norms, warned = GradientNorms(model, batches), False

    threads = torch.get_num_threads()
    try:
        run_threads = machine.cpu_threads or _auto_threads(mc, tc, feed, device)
        if run_threads is not None:
            torch.set_num_threads(run_threads)
        for epoch in range(1, tc.epochs + 1):
            t0 = time.perf_counter()
            lr = optimizer.param_groups[-1]["lr"]

            # ---- train: one pass over the train batches
            model.train()
            if tc.freeze_batchnorm:
                freeze_batchnorm(model.backbone)
            loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
            for b, (x, y) in enumerate(feed.train, start=1):
                loss, ok = step(feed.train.forward, optimizer, x, y)
                norms.after_step(step)
                loss_sum += loss * len(y)
                correct += ok
                seen += len(y)
                _batch_end(callbacks, stop, epoch, tc.epochs, b, batches, loss, lr, history, best.epoch)

            # ---- evaluate on the val split
            model.eval()
            val_loss, val_acc = loss_and_accuracy(feed.val)

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
                **norms.epoch(),
            }
            _check_finite(row, tc, best)  # before a NaN epoch could be kept or checkpointed
            history.append(row)
            warning = norms.warning(row)
            if warning and not warned:  # once per run: the rows keep every epoch's norms
                log.warning("%s", warning)
                warned = True

            # ---- keep the best epoch, and checkpoint it atomically
            best.offer(history)

            done = Progress(
                epoch, tc.epochs, batches, batches, row["train_loss"], lr, row, history, best.epoch, warning
            )
            for cb in callbacks:
                cb.on_epoch_end(done)
            _check_stop(stop)
    except Cancelled:
        cancelled = True
    except BaseException as exc:  # Ctrl-C, Diverged, any error: the checkpoint says the run stopped
        best.stopped(history, _stop_reason(exc))
        raise
    finally:
        torch.set_num_threads(threads)

    # ---- finish with the best epoch's weights; only now is the test split read
    try:
        best.restore()
        model.eval()
        test = _test_metrics(feed.test) if best.epoch is not None else {}
        best.record(history, {**test, **sizes}, "cancelled" if cancelled else None)
    except BaseException as exc:  # a Ctrl-C or an error while the test split is scored: the file says so
        best.stopped(history, "cancelled" if cancelled else _stop_reason(exc))
        raise
    return FitResult(
        model, mc, tc, history, best.epoch, best.saved, cancelled, test, sizes, dataset, best.kept_earlier
    )


def _stop_reason(exc: BaseException) -> str:
    """Why an exception stopped a run, as its checkpoint records it (`checkpoint.STOP_REASONS`)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "diverged" if isinstance(exc, Diverged) else "failed"


def _as_callbacks(callbacks) -> tuple[Callback, ...]:
    """One callback, or a sequence of them, as a tuple; TypeError now, before any work, for anything else
    (a callback needs both hooks: `on_batch_end` and `on_epoch_end`)."""
    if callbacks is None:
        return ()
    hooks = ("on_batch_end", "on_epoch_end")
    if any(hasattr(callbacks, h) for h in hooks):
        callbacks = (callbacks,)
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a Callback or a list of them, got {callbacks!r}") from None
    for cb in callbacks:
        if not all(callable(getattr(cb, h, None)) for h in hooks):
            raise TypeError(f"callbacks must be Callbacks (on_batch_end and on_epoch_end), got {cb!r}")
    return callbacks


_SPLITS = ("train", "val", "test")


def _check_features(features) -> None:
    """ValueError, one line, unless `features` is a (train, val) or (train, val, test) tuple of
    FeatureSets that each hold at least one image, as many labels and paths as feature rows, labels that
    index their classes, finite values of one width, and the same classes as train."""
    if not isinstance(features, list | tuple) or len(features) not in (2, 3):
        got = f"{len(features)} of them" if isinstance(features, list | tuple) else type(features).__name__
        raise ValueError(
            f"features= takes a (train, val) or (train, val, test) tuple of FeatureSets, got {got}"
        )
    train = features[0]
    for split, fs in zip(_SPLITS, features, strict=False):
        x, y = getattr(fs, "features", None), getattr(fs, "labels", None)
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(f"features= {split}: a FeatureSet of tensors, got {type(fs).__name__}")
        if x.dim() not in (2, 3) or not x.is_floating_point():
            raise ValueError(
                f"features= {split}: features must be floats, (N, F) or (V, N, F), got {x.dtype} "
                f"{tuple(x.shape)}"
            )
        n = x.shape[-2]
        if y.dim() != 1 or len(y) != n:
            raise ValueError(f"features= {split}: {n} feature rows but labels of shape {tuple(y.shape)}")
        if len(fs.paths) != n:
            raise ValueError(f"features= {split}: {n} feature rows but {len(fs.paths)} paths")
        if not n:
            raise ValueError(f"features= {split} holds no images")
        if len(fs.classes) < 2:
            raise ValueError(
                f"features= {split}: a classifier needs at least 2 classes, got {list(fs.classes)}"
            )
        if list(fs.classes) != list(train.classes):
            raise ValueError(
                f"features= {split}'s classes {list(fs.classes)} differ from train's {list(train.classes)}"
            )
        if x.shape[-1] != train.features.shape[-1]:
            raise ValueError(
                f"features= {split} is {x.shape[-1]} wide and train {train.features.shape[-1]}: every split "
                "takes the features of one backbone"
            )
        whole = not y.is_floating_point() or torch.equal(y, y.round())
        if not whole or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(
                f"features= {split}: labels must be class indices (whole numbers), got {y.dtype}"
            )
        bad = (y < 0) | (y >= len(fs.classes))
        if bad.any():
            raise ValueError(
                f"features= {split}: label {y[bad][0].item():g} is no class index (0 to {len(fs.classes) - 1}"
                f" for {list(fs.classes)})"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"features= {split} holds NaN or infinite values")


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose random state `fit` forks: `torch.manual_seed` seeds them all, so every one,
    where the run uses CUDA or the caller has CUDA started; none for a CPU run in a CPU process."""
    if device.type == "cuda" or torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def _check_finite(row: dict, tc: TrainConfig, best: _BestEpoch) -> None:
    """`Diverged` when this epoch's train or val loss is NaN or infinite: its weights are lost, and no
    later epoch can recover them. Said with the learning rates and what became of the checkpoint."""
    for which in ("train", "val"):
        value = row[f"{which}_loss"]
        if math.isfinite(value):
            continue
        lrs = f"--lr, now {tc.lr:g}" + (f"; --backbone-lr, now {tc.backbone_lr:g}" if tc.backbone_lr else "")
        if best.saved is not None:
            kept = f"; {best.saved} keeps epoch {best.epoch}, the best before it"
        elif best.earlier is not None:
            kept = f"; {best.path} keeps an earlier run of these settings ({best.earlier_words()})"
        elif best.path is not None:
            kept = "; no checkpoint was written"
        else:
            kept = ""
        raise Diverged(
            f"training diverged at epoch {row['epoch']}: the {which} loss is {value}; lower the learning "
            f"rate ({lrs}){kept}"
        )


def _test_metrics(batches, with_loss: bool = True) -> dict:
    """test_loss, test_acc and n_test of the model as it is now ({} without a test split)."""
    if batches is None:
        return {}
    loss, acc = loss_and_accuracy(batches)
    return {"test_loss": loss if with_loss else None, "test_acc": acc, "n_test": len(batches.y)}


def _fit_kernel(
    model: Classifier, mc: ModelConfig, tc: TrainConfig, feed: Feed, callbacks, sizes
) -> FitResult:
    """Fit a kernel baseline on the feed's features (`qtl.models.kernels.KernelSVM.fit`): one history row
    (no losses: an SVM has no cross-entropy), then the test split once. Never saved as a checkpoint."""
    t0 = time.perf_counter()
    chosen = model.head.fit(feed.train.x.cpu(), feed.train.y.cpu(), feed.val.x.cpu(), feed.val.y.cpu())
    row = {"epoch": 1, "train_loss": None, "train_acc": chosen["train_acc"], "val_loss": None}
    row.update(val_acc=chosen["val_acc"], lr=None, time_s=time.perf_counter() - t0, **dict.fromkeys(COLUMNS))
    model.eval()
    history = [row]
    for cb in callbacks:
        cb.on_epoch_end(Progress(1, 1, 1, 1, 0.0, 0.0, row, history, 1))
    test = _test_metrics(feed.test, with_loss=False)
    return FitResult(model, mc, tc, history, 1, None, False, test, sizes)


def _step_for(feed: Feed, optimizer: torch.optim.Optimizer, tc: TrainConfig) -> Callable:
    """For a head on cached features, the fastest step with `train_step`'s trajectory
    (`qtl.training.steps.step_for_run`: closed-form, or compiled for a long run); image batches always take
    the eager `train_step`."""
    if not isinstance(feed.train, FeatureBatches):
        return train_step
    n_steps = tc.epochs * len(feed.train)
    return step_for_run(train_step, feed.train.forward, optimizer, n_steps, tc.batch_size)


class _BestEpoch:
    """The best epoch so far by val accuracy (ties: lower val loss): its weights kept in memory and,
    when a path is given, in a checkpoint rewritten atomically at every improvement.

    Where the path holds an earlier run of the same settings (`checkpoint.earlier_best`: a rerun of a
    cancelled or finished run), the file is left as it is until this run beats that run's best epoch,
    or finishes: a rerun stopped before then (cancelled again, Ctrl-C, killed) never replaces the
    better epoch the earlier run kept, and says so."""

    def __init__(
        self,
        model: Classifier,
        mc: ModelConfig,
        tc: TrainConfig,
        path: str | Path | None,
        dataset: dict | None,  # where the data came from, for the checkpoint (`qtl.data.datasets`)
    ) -> None:
        self.model, self.mc, self.tc, self.path, self.dataset = model, mc, tc, path, dataset
        self.kept = model.head if model.frozen else model  # a frozen backbone never changes: the head only
        self.epoch: int | None = None  # 1-based
        self.key, self.state, self.saved = None, None, None
        self.fingerprint = None  # of the frozen backbone, hashed on the first save
        self.earlier = earlier_best(path, mc, tc, dataset) if path is not None else None

    @property
    def held(self) -> bool:
        """Whether an improvement was left unwritten, the earlier run's file being better (`earlier` is
        cleared by the first save)."""
        return self.earlier is not None and self.epoch is not None

    def _beats_earlier(self, key: tuple) -> bool:
        """Whether `key` beats the earlier run's best epoch in the file (True where there is none)."""
        return self.earlier is None or key > (self.earlier["val_acc"], -self.earlier["val_loss"])

    def offer(self, history: list[dict]) -> None:
        """Keep the latest epoch (history[-1]) if it beats the best so far."""
        row = history[-1]
        key = (row["val_acc"], -row["val_loss"])
        if self.key is None or key > self.key:
            self.epoch, self.key = row["epoch"], key
            self.state = copy.deepcopy(self.kept.state_dict())
            if self.path is not None and self._beats_earlier(key):
                self.earlier = None  # the file is this run's from now on
                self.saved = self._save(history, stopped="unfinished")  # until the run's end says more

    def restore(self) -> None:
        """Load the best epoch's weights back."""
        if self.state is not None:
            self.kept.load_state_dict(self.state)

    def record(self, history: list[dict], extra: dict, stopped: str | None = None) -> None:
        """Rewrite the best epoch's checkpoint with the whole run's history and `extra` metrics (the test
        split's, scored on the restored weights; the split sizes), finished or `stopped` early (a
        `checkpoint.STOP_REASONS` key: only where fewer epochs than planned ran)."""
        finished = stopped is None or len(history) >= self.tc.epochs  # a stop after the last epoch is none
        if self.held and finished:  # never past the earlier run's best, but finished: its file now
            self.earlier = None
            self.saved = self._save(history, extra, stopped=stopped)
        elif self.saved is not None:
            self.saved = self._save(history, extra, stopped=stopped)
        elif self.held:
            self._say_kept_earlier(history, stopped)

    def earlier_words(self) -> str:
        """The earlier run's best epoch in the file, e.g. "epoch 12, val acc 0.9477"."""
        return f"epoch {self.earlier.get('epoch', 0)}, val acc {self.earlier['val_acc']:.4f}"

    @property
    def kept_earlier(self) -> Path | None:
        """The path, where it still holds an earlier run of these settings that this run did not beat."""
        return Path(self.path) if self.held else None

    def _say_kept_earlier(self, history: list[dict], reason: str) -> None:
        """Say that the file still holds the earlier run's better epoch, this run having stopped early."""
        log.warning(
            "%s still holds an earlier run of these settings (%s): this run stopped early (%s) after %d of "
            "%d epochs without beating it (its best: epoch %d, val acc %.4f)",
            self.path,
            self.earlier_words(),
            STOP_REASONS.get(reason, reason),
            len(history),
            self.tc.epochs,
            self.epoch,
            self.key[0],
        )

    def stopped(self, history: list[dict], reason: str) -> None:
        """Rewrite the checkpoint, if one was written, as stopped early for `reason` with the history so
        far, on the way out of an exception: the model gets the best epoch's weights back first (it trained
        on since, or holds NaNs). A failure to write is logged, never raised over the exception that
        stopped the run."""
        if self.saved is None:
            if self.held:
                self._say_kept_earlier(history, reason)
            return
        try:
            self.restore()
            self.saved = self._save(history, stopped=reason)
        except Exception as exc:  # a full disk ...: the file keeps its "unfinished" record
            log.warning("could not record in %s that its run stopped (%s): %s", self.saved, reason, exc)

    def _save(self, history: list[dict], extra: dict | None = None, *, stopped: str | None) -> Path:
        """Checkpoint the model as it is now (the best epoch's weights: at the improvement, or restored), its
        metrics (with `extra`, the test metrics once known), the history so far and how far the run got
        (`checkpoint.training_record`: `stopped` early, or None where it finished)."""
        if self.mc.frozen and self.fingerprint is None:
            self.fingerprint = backbone_fingerprint(self.model.backbone)
        metrics = {**history[self.epoch - 1], **(extra or {})}
        return save_checkpoint(
            self.path,
            self.model,
            self.mc,
            history=history,
            metrics=metrics,
            train_config=self.tc,
            fingerprint=self.fingerprint,
            dataset=self.dataset,
            training=training_record(len(history), self.tc.epochs, stopped),
        )


#: batch * 2**n_qubits amplitudes: up to this a training step is too small to share between threads
#: (bench/peers.py measures it; docs/benchmarks.md, "Peers")
SMALL_STEP = 2**15


def is_small_step(batch_size: int, n_qubits: int) -> bool:
    """Whether a quantum head's training step is too small to share between threads (`SMALL_STEP`)."""
    return batch_size * 2**n_qubits <= SMALL_STEP


def _auto_threads(mc: ModelConfig, tc: TrainConfig, feed: Feed, device: torch.device) -> int | None:
    """1 when training a small head on cached features on the CPU, else None (leave torch's setting)."""
    if not isinstance(feed.train, FeatureBatches) or device.type != "cpu":
        return None
    if mc.is_quantum and not is_small_step(tc.batch_size, mc.circuit.n_qubits):
        return None
    return 1


def _batch_end(callbacks, stop, epoch, epochs, batch, batches, loss, lr, history, best_epoch) -> None:
    """Tell the callbacks a batch finished (only then is the loss synced to a float), then check `stop`."""
    if callbacks:
        p = Progress(epoch, epochs, batch, batches, loss.item(), lr, {}, history, best_epoch)
        for cb in callbacks:
            cb.on_batch_end(p)
    _check_stop(stop)
