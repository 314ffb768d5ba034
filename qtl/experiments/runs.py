"""Lists of training runs: plan them, train them one after another, describe each finished run as one row.

    runs = plan_runs(["quantum", "linear"], base=ModelConfig(pretrained=False), seeds=[0, 1],
                     epochs=3, directory="models")
    outcomes = train_runs(runs, observer=..., stop=...)   # the one loop: the app's job, `qtl compare`
    outcomes[0].row                                       # ROW_FIELDS: variant, setup, seed, val_acc ...

`train_run` trains one run (sweep workers call it in other processes); `checkpoint_row` gives the same
row for a checkpoint loaded from disk, so trained and loaded runs compare in one table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from qtl.config import (
    MACHINE_KEYS,
    DataRegime,
    MachineConfig,
    ModelConfig,
    TrainConfig,
    circuit_label,
    recipe,
    recipe_label,
    run_settings,
)
from qtl.data.datasets import recorded_root, split_suffix
from qtl.experiments.stats import dataset_label, setup_label
from qtl.models.checkpoint import checkpoint_name, load_checkpoint
from qtl.models.heads import count_parameters
from qtl.paths import DEFAULT_DATASET, HYMENOPTERA_DIRNAME, default_data_dir
from qtl.training.fit import Callback, Diverged, fit

log = logging.getLogger(__name__)

RECIPE_OVERRIDES = ("lr", "batch_size", "augment", "regime")  # what a form may override on a variant's recipe

ROW_FIELDS = (
    "id", "label", "variant", "setup", "backbone", "weights", "dataset", "qubits", "depth", "entangler",
    "rotation", "engine", "noise", "reupload", "feature_dim", "split", "n_classes", "per_class",
    "label_noise", "seed", "lr", "epochs", "recipe", "circuit_options", "best_epoch", "val_acc",
    "val_loss", "test_acc", "test_loss", "train_acc", "n_train", "n_test", "classical", "quantum",
    "train_time_s", "epochs_done", "cancelled", "checkpoint",
)  # fmt: skip
"""The one description of a finished run (trained now or loaded from a checkpoint), in column order.
val_* are the selected (best) epoch's on the split it was selected on; test_* that epoch's on the held-out
test split (None where the run had none); split, n_classes, per_class and label_noise its data regime;
recipe and circuit_options what else its recipe and circuit changed (`qtl.config.recipe_label`,
`circuit_label`)."""


@dataclass(frozen=True)
class Run:
    """One `fit` call: what to train, how, where its best epoch is saved (None: nowhere), and how this
    machine runs it (the dataset folder, device ...: not part of the run's id)."""

    model_config: ModelConfig
    train_config: TrainConfig
    checkpoint_path: Path | None = None
    dataset: str | None = None  # the dataset's name in ids and rows (None: rows take the one it records)
    machine: MachineConfig = MachineConfig()

    @property
    def label(self) -> str:
        return f"{self.model_config.variant} seed {self.train_config.seed}"

    @property
    def name(self) -> str:
        """The label with what tells a sweep's runs apart, e.g. "quantum 4q d6 seed 0", "linear seed 1",
        "linear on digits seed 2 (kfold-5, 5 per class)": a dataset other than the default and a data
        regime other than the dataset's own splits are named."""
        c, regime = self.model_config, self.train_config.regime
        size = f" {c.circuit.n_qubits}q d{c.circuit.depth}" if c.is_quantum else ""
        size = f" w{c.circuit.n_qubits}" if c.variant == "dressed-classical" else size
        data = f" on {dataset_label(self.dataset)}" if self.dataset not in (None, DEFAULT_DATASET) else ""
        parts = f" ({regime.label})" if regime != DataRegime() else ""
        return f"{c.variant}{size}{data} seed {self.train_config.seed}{parts}"

    @property
    def id(self) -> str:
        """A stable id from the configs: the same run in any sweep, on any machine, has the same id."""
        return run_id(self.model_config, self.train_config, self.dataset)


def run_id(model_config: ModelConfig, train_config: TrainConfig | dict, dataset: str | None = None) -> str:
    """12 hex digits of a SHA-256 over what is trained: the architecture (only the circuit settings the
    variant uses), the recipe and the dataset's name. Class names do not count, nor the machine settings
    that checkpoints from before `MachineConfig` hold in their train config. Settings at their defaults
    are left out too, so a new config field (with a default) never changes the ids of existing runs. A
    kernel SVM's recipe counts only by its seed and data regime (`kernel_recipe`)."""
    tc = train_config if isinstance(train_config, dict) else train_config.to_dict()
    tc = kernel_recipe(model_config.variant, tc) if model_config.is_kernel else tc
    recipe_ = {k: v for k, v in tc.items() if k not in MACHINE_KEYS}
    model = _trained(model_config)
    doc = {
        "model": {"variant": model["variant"], **_changed(model, _trained(ModelConfig(model["variant"])))},
        "train": _changed(recipe_, TrainConfig().to_dict()),
        "dataset": dataset,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


KERNEL_TRAIN_KEYS = ("seed", "regime")
"""What a kernel SVM's one fit takes from its recipe (`qtl.config.recipe`): the rest (epochs, lr, batch
size ...) it ignores."""


def kernel_recipe(variant: str, train: dict) -> dict:
    """A kernel SVM's train config as its id and row take it: its variant's recipe with the run's seed and
    data regime (KERNEL_TRAIN_KEYS). A spec's epochs or lr made other ids, so kernels were fitted again
    and reported in cells of their own; runs at the recipe's values (every one before) keep their ids."""
    out = recipe(variant).to_dict()
    out.update({k: train[k] for k in KERNEL_TRAIN_KEYS if k in train})
    return out


def _changed(d: dict, default: dict) -> dict:
    """`d` without the entries equal to `default`'s (recursively into nested dicts)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and isinstance(default.get(k), dict):
            v = _changed(v, default[k])
            if v:
                out[k] = v
        elif k not in default or default[k] != v:
            out[k] = v
    return out


def _trained(mc: ModelConfig) -> dict:
    """The model config without what its variant ignores: no circuit or engine for a classical head;
    a dressed-classical head and the RBF kernel keep only the width; the quantum kernel its circuit
    (always re-uploading, so that flag is dropped)."""
    d = {k: v for k, v in mc.to_dict().items() if k != "class_names"}
    if not mc.is_quantum:
        for k in ("engine", "diff_method", "shots", "q_delta"):
            d.pop(k)
        if mc.variant == "quantum-kernel":
            d["circuit"] = {k: v for k, v in d["circuit"].items() if k != "reupload"}
        elif mc.variant in ("dressed-classical", "rbf-svm"):
            d["circuit"] = {"n_qubits": mc.circuit.n_qubits}
        else:
            d["circuit"] = None
    return d


def parse_seeds(text: str) -> list[int]:
    """ "0, 1,2" -> [0, 1, 2] (commas or semicolons); ValueError naming the bad item."""
    seeds = []
    for item in text.replace(";", ",").split(","):
        if item.strip():
            try:
                seeds.append(int(item))
            except ValueError:
                raise ValueError(f"seed {item.strip()!r} is not an integer") from None
    if not seeds:
        raise ValueError("give at least one seed")
    return seeds


def plan_runs(
    variants: list[str],
    base: ModelConfig,
    seeds: list[int],
    directory: str | Path,
    *,
    epochs: int | None = None,
    overrides: dict | None = None,
    machine: MachineConfig | None = None,
) -> list[Run]:
    """One `Run` per (variant, seed), each from the variant's recipe.

    base: the shared architecture (backbone, circuit, engine ...); its variant is replaced per run.
    epochs: replaces every recipe's epochs when given.
    overrides: recipe fields to replace for every run, only those in RECIPE_OVERRIDES.
    machine: how this machine runs every run (dataset folder, device ...; default: auto).
    """
    if not variants:
        raise ValueError("choose at least one variant")
    if not seeds:
        raise ValueError("give at least one seed")
    seeds = [int(seed) for seed in seeds]
    if (twice := next((seed for i, seed in enumerate(seeds) if seed in seeds[:i]), None)) is not None:
        raise ValueError(f"seed {twice} is given twice: each seed trains (and saves) one run per variant")
    bad = set(overrides or {}) - set(RECIPE_OVERRIDES)
    if bad:
        raise ValueError(f"cannot override {sorted(bad)}; allowed: {RECIPE_OVERRIDES}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    for variant in variants:
        mc = dataclasses.replace(base, variant=variant)
        for seed in seeds:
            tc = recipe_for(variant, seed=seed, epochs=epochs, **(overrides or {}))
            path = None if mc.is_kernel else Path(directory) / checkpoint_name(mc, seed, stamp)
            runs.append(Run(mc, tc, path, machine=machine or MachineConfig()))  # a kernel SVM keeps none
    return runs


def recipe_for(variant: str, *, epochs: int | None = None, **fields) -> TrainConfig:
    """The variant's recipe with `fields` replaced; frozen variants that augment cache their views
    (so their epochs never run the backbone)."""
    tc = dataclasses.replace(recipe(variant), **fields)
    if epochs is not None:
        tc = dataclasses.replace(tc, epochs=int(epochs))
    if tc.augment and ModelConfig(variant).frozen and tc.views == 0:
        tc = dataclasses.replace(tc, views=recipe("linear").views)
    return tc


# ---- training a list of runs


@dataclass
class Outcome:
    """A finished (or cancelled) run as plain data, picklable across processes: its row (ROW_FIELDS),
    its per-epoch history and the wall time of the whole `train_run` call. `kept_earlier`: the run
    stopped before it beat an earlier run of its settings in its checkpoint file, which keeps that run
    (`FitResult.kept_earlier`): row and history are that run's, as the file's are."""

    row: dict
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    kept_earlier: bool = False


class RunObserver:
    """What `train_runs` tells its caller about run `index` of `total`. Override what you need."""

    def callbacks(self, index: int, total: int, run: Run) -> list[Callback]:
        """fit() callbacks for this run (progress bars, job reports)."""
        return []

    def preparing(self, index: int, total: int, run: Run):
        """A `progress(done, total)` hook for the run's download and feature extraction, or None."""
        return None

    def finished(self, index: int, total: int, run: Run, outcome: Outcome) -> None:
        """The run has ended (cancelled runs too: outcome.row["cancelled"])."""


def train_run(run: Run, *, callbacks=(), stop=None, progress=None) -> Outcome:
    """Train one run with `fit` and describe it: its row (ROW_FIELDS), history and wall time."""
    t0 = time.perf_counter()
    result = fit(
        run.model_config,
        run.train_config,
        run.machine,
        callbacks=callbacks,
        checkpoint_path=run.checkpoint_path,
        stop=stop,
        progress=progress,
    )
    if result.kept_earlier is not None:  # stopped before it beat the run of these settings in the file:
        loaded = load_checkpoint(result.kept_earlier)  # the row stays that run's, as the file does
        return Outcome(checkpoint_row(loaded), loaded.history, time.perf_counter() - t0, kept_earlier=True)
    row = result_row(
        result.model,
        result.model_config,
        result.train_config.to_dict(),
        result.history,
        result.metrics,
        checkpoint=result.checkpoint_path,
        cancelled=result.cancelled,
        dataset=run.dataset,
        recorded=recorded_dataset(result.dataset),
    )
    return Outcome(row, result.history, time.perf_counter() - t0)


def train_runs(runs: list[Run], *, observer: RunObserver | None = None, stop=None) -> list[Outcome]:
    """Train `runs` in order (the CLI's compare and the app's jobs); stops after a cancelled run or when
    `stop.is_set()`. Returns one Outcome per run that finished: a run whose loss diverged (`Diverged`)
    is left out with a warning, and the others train (one NaN seed stopped them all)."""
    if not runs:
        raise ValueError("nothing to train")
    observer = observer or RunObserver()
    outcomes = []
    for i, run in enumerate(runs):
        if stop is not None and stop.is_set():
            break
        try:
            outcome = train_run(
                run,
                callbacks=observer.callbacks(i, len(runs), run),
                stop=stop,
                progress=observer.preparing(i, len(runs), run),
            )
        except Diverged as exc:
            log.warning("%s left out: %s", run.name, exc)
            continue
        outcomes.append(outcome)
        observer.finished(i, len(runs), run, outcome)
        if outcome.row["cancelled"]:
            break
    return outcomes


# ---- describing finished runs


def result_row(
    model,
    model_config: ModelConfig,
    train_config: dict | None,
    history: list[dict],
    best: dict | None,
    *,
    checkpoint=None,
    cancelled: bool = False,
    dataset: str | None = None,
    recorded: str | None = None,
) -> dict:
    """The row (ROW_FIELDS) of a finished run, from what both `fit` and a checkpoint record.

    classical / quantum: trainable parameter counts (a frozen backbone is trained by nobody: the head's;
    a kernel SVM's are its dual coefficients and intercepts); train_time_s: the sum over the recorded
    epochs; best_epoch, val_*, test_*, train_acc, n_train, n_test: the kept epoch's (`best`, e.g.
    `FitResult.metrics` or a checkpoint's metrics); dataset: the run's name for its data, in its id and
    row, else (None) the row names it as the data recorded (`recorded`, `recorded_dataset`), so runs on
    two datasets never share a cell, and the id stays the run's.
    """
    mc, tc, best = model_config, train_config or {}, best or {}
    counts = count_parameters(model.head) if mc.frozen else count_parameters(model, trainable_only=True)
    row = {
        "id": run_id(mc, tc, dataset) if tc else None,
        "label": f"{mc.variant} seed {tc.get('seed')}",
        **run_settings(mc, tc),
        "dataset": dataset if dataset is not None else recorded,
        "n_classes": mc.n_classes or None,
        "recipe": recipe_label(mc, tc) if tc else None,
        "circuit_options": circuit_label(mc),
        "best_epoch": best.get("epoch"),
        "val_acc": best.get("val_acc"),
        "val_loss": best.get("val_loss"),
        "test_acc": best.get("test_acc"),
        "test_loss": best.get("test_loss"),
        "train_acc": best.get("train_acc"),
        "n_train": best.get("n_train"),
        "n_test": best.get("n_test"),
        "classical": counts["classical"],
        "quantum": counts["quantum"],
        "train_time_s": sum(row.get("time_s") or 0.0 for row in history),
        "epochs_done": len(history),
        "cancelled": bool(cancelled),
        "checkpoint": str(checkpoint) if checkpoint else None,
    }
    row["setup"] = setup_label(row)
    return {k: row[k] for k in ROW_FIELDS}


def checkpoint_row(loaded) -> dict:
    """The row (ROW_FIELDS) of a loaded checkpoint (`qtl.models.checkpoint.LoadedModel`), as `train_run` gives
    for the run that wrote it, its dataset named from what it recorded (`recorded_dataset`); cancelled
    where that run stopped before its last epoch (`LoadedModel.stopped`: cancelled, interrupted, killed)."""
    return result_row(
        loaded.model,
        loaded.model_config,
        loaded.train_config,
        loaded.history,
        loaded.metrics,
        checkpoint=loaded.path,
        cancelled=getattr(loaded, "stopped", None) is not None,
        recorded=recorded_dataset(loaded.meta.get("dataset")),
    )


def recorded_dataset(record: dict | None) -> str | None:
    """A checkpoint's dataset (`meta["dataset"]`, `PreparedDataset.record()`) as rows name it: None for
    qtl's default set (the download, its folder by name, or `default_data_dir()` however it was passed)
    and for a checkpoint that recorded none (older ones: their rows stay in one cell with the default
    set's, as before), else the record's name, with its val split where qtl made one other than the
    default ("flat-r0.5-s3", `split_suffix`): runs on other splits of one folder are other data, where
    compare took them for checkpoints of one run."""
    if not record or record.get("source") == DEFAULT_DATASET or record.get("name") == HYMENOPTERA_DIRNAME:
        return None
    root = recorded_root(record)
    if root is not None and root.resolve() == default_data_dir().resolve():
        return None
    split = record.get("val_ratio")
    return record.get("name") + (split_suffix(split, record.get("seed") or 0) if split is not None else "")
