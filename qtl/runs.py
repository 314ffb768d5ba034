"""Training requests: several (variant, seed) runs trained one after another as one background job.

    runs = plan_runs(["quantum", "linear"], base=ModelConfig(pretrained=False), seeds=[0, 1],
                     epochs=3, directory="models")
    job = JobRunner().submit("train", training_work(runs))
    job.snapshot().records    # one row per finished epoch: run, variant, seed, epoch, losses, accuracies

The app's Train page and its quick start both build their work here, so the page holds no training logic.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from qtl.checkpoint import checkpoint_name
from qtl.config import MachineConfig, ModelConfig, TrainConfig, recipe
from qtl.jobs import Job
from qtl.train import Callback, Progress, fit

RECIPE_OVERRIDES = ("lr", "batch_size", "augment")  # what a form may override on top of a variant's recipe


@dataclass(frozen=True)
class Run:
    """One `fit` call: what to train, how, where its best epoch is saved, and on what machine settings."""

    model_config: ModelConfig
    train_config: TrainConfig
    checkpoint_path: Path
    machine: MachineConfig = MachineConfig()

    @property
    def label(self) -> str:
        return f"{self.model_config.variant} seed {self.train_config.seed}"


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
    machine: the machine settings of every run (dataset root, device ...; default: auto).
    """
    if not variants:
        raise ValueError("choose at least one variant")
    if not seeds:
        raise ValueError("give at least one seed")
    bad = set(overrides or {}) - set(RECIPE_OVERRIDES)
    if bad:
        raise ValueError(f"cannot override {sorted(bad)}; allowed: {RECIPE_OVERRIDES}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    for variant in variants:
        mc = dataclasses.replace(base, variant=variant)
        for seed in seeds:
            tc = dataclasses.replace(recipe(variant), seed=int(seed), **(overrides or {}))
            if epochs is not None:
                tc = dataclasses.replace(tc, epochs=int(epochs))
            if tc.augment and mc.frozen and tc.views == 0:  # cached views keep epochs off the backbone
                tc = dataclasses.replace(tc, views=recipe("linear").views)
            path = Path(directory) / checkpoint_name(mc, int(seed), stamp)
            runs.append(Run(mc, tc, path, machine or MachineConfig()))
    return runs


class _Reporter(Callback):
    """Forwards fit's progress to a Job: overall fraction, a status line, and one record per epoch."""

    def __init__(self, job: Job, run: Run, index: int, total: int) -> None:
        self.job, self.run, self.index, self.total = job, run, index, total

    def _fraction(self, p: Progress) -> float:
        return (self.index + p.fraction) / self.total

    def on_batch_end(self, p: Progress) -> None:
        self.job.report(
            self._fraction(p),
            f"{self.run.label} ({self.index + 1}/{self.total}): epoch {p.epoch}/{p.epochs}, "
            f"batch {p.batch}/{p.batches}, loss {p.loss:.3f}",
        )

    def on_epoch_end(self, p: Progress) -> None:
        row = {
            "run": self.run.label,
            "variant": self.run.model_config.variant,
            "seed": self.run.train_config.seed,
        }
        self.job.report(self._fraction(p), record={**row, **p.metrics})


def training_work(runs: list[Run]):
    """The job work for `runs`: trains them in order, stops at a cancel, returns one summary per run.

    Each summary: label, variant, seed, checkpoint (str or None), best_epoch, val_acc, val_loss,
    train_time_s, epochs_done, cancelled.
    """
    if not runs:
        raise ValueError("nothing to train")

    def work(job: Job) -> list[dict]:
        summaries = []
        for i, run in enumerate(runs):
            if job.cancelled:
                break
            job.report(i / len(runs), f"{run.label} ({i + 1}/{len(runs)}): preparing data and features")
            t0 = time.perf_counter()
            result = fit(
                run.model_config,
                run.train_config,
                run.machine,
                callbacks=[_Reporter(job, run, i, len(runs))],
                checkpoint_path=run.checkpoint_path,
                stop=job,
            )
            best = result.best or {}
            summaries.append(
                {
                    "label": run.label,
                    "variant": run.model_config.variant,
                    "seed": run.train_config.seed,
                    "checkpoint": str(result.checkpoint_path) if result.checkpoint_path else None,
                    "best_epoch": result.best_epoch,
                    "val_acc": best.get("val_acc"),
                    "val_loss": best.get("val_loss"),
                    "train_time_s": time.perf_counter() - t0,
                    "epochs_done": len(result.history),
                    "cancelled": result.cancelled,
                }
            )
            job.report(message=f"{run.label}: done")
        return summaries

    return work


# ---- comparing finished runs


def run_row(loaded) -> dict:
    """One comparable row for a loaded checkpoint (`qtl.checkpoint.LoadedModel`).

    Keys: variant, setup (what must match for runs to be seeds of one another), seed, best_epoch,
    val_acc, val_loss (of the saved epoch), classical / quantum (trainable parameter counts), train_time_s
    (sum over the recorded epochs).
    """
    from qtl.heads import count_parameters

    mc, metrics = loaded.model_config, loaded.metrics or {}
    weights = "imagenet" if mc.pretrained else "random"
    circuit = f", {mc.circuit.n_qubits}q d{mc.circuit.depth} {mc.engine}" if mc.is_quantum else ""
    counts = count_parameters(loaded.model, trainable_only=True)
    if mc.frozen:  # frozen backbones are trained by nobody: count the head only
        counts = count_parameters(loaded.model.head)
    return {
        "variant": mc.variant,
        "setup": f"{mc.variant} ({mc.backbone} {weights}{circuit})",
        "seed": (loaded.train_config or {}).get("seed"),
        "best_epoch": metrics.get("epoch"),
        "val_acc": metrics.get("val_acc"),
        "val_loss": metrics.get("val_loss"),
        "classical": counts["classical"],
        "quantum": counts["quantum"],
        "train_time_s": sum(row.get("time_s", 0.0) for row in loaded.history),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value). ValueError when empty."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def summarise(rows: list[dict], by: str, fields: tuple[str, ...]) -> list[dict]:
    """Group rows by `rows[i][by]` and give, per group: by, n, and <field>_mean / <field>_std for each
    field (None values are left out; a field with no values gives None). Groups keep first-seen order."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    out = []
    for key, members in groups.items():
        summary = {by: key, "n": len(members)}
        for f in fields:
            values = [float(r[f]) for r in members if r.get(f) is not None]
            mean, std = mean_std(values) if values else (None, None)
            summary[f"{f}_mean"], summary[f"{f}_std"] = mean, std
        out.append(summary)
    return out
