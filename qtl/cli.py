"""The `qtl` command line: parse arguments -> config dataclasses -> one library call -> print.

    qtl train quantum --random-init --epochs 5         train a variant, save its best epoch
    qtl evaluate models/quantum-....pt --json          accuracy, per-class P/R/F1, confusion, ROC-AUC
    qtl predict ant.jpg bee.png -c a.pt -c b.pt        class probabilities, models side by side
    qtl draw --qubits 4 --depth 6 [--output fig.png]   the circuit as text or a figure
    qtl compare --seeds 3 --random-init                variants x seeds: a mean ± std table, JSON and CSV
    qtl data [--path PATH]                             download (if needed) and verify a dataset

Results go to stdout; progress bars, epoch lines and warnings go to stderr. Errors print one line,
`qtl: error: ...`, and exit non-zero (1, or 130 when interrupted); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from qtl.backbones import BACKBONES, DEFAULT_BACKBONE, WeightsUnavailableError
from qtl.circuit import ENTANGLERS, ROTATIONS, CircuitConfig
from qtl.download import DownloadError
from qtl.train import Callback, Progress, resolve_device
from qtl.variants import DEFAULT_VARIANT, VARIANTS, ModelConfig

EXPECTED_ERRORS = (ValueError, TypeError, WeightsUnavailableError, DownloadError, OSError)
"""Failures with a message meant for the user (DatasetError, ImageLoadError and CheckpointError are
ValueErrors); anything else is a bug and keeps its traceback."""
COMPARE_FIELDS = ("val_acc", "val_loss", "best_epoch", "train_time_s", "classical", "quantum")
DEFAULT_COMPARE = ("quantum", "dressed-classical", "linear")


# ---- progress on stderr


class ProgressBar:
    """One redrawn line on a terminal; on anything else (a log file, CI) a sparse line every
    `interval` seconds and at the end of each phase, so logs stay short."""

    def __init__(self, stream=None, *, enabled: bool = True, interval: float = 10.0, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if not self.tty else 0.1
        self.width = width
        self._shown = 0.0  # monotonic time of the last draw
        self._open = False  # a terminal line is waiting for its newline
        self._phase: tuple | None = None
        self._start = 0.0
        self._done = 0

    def update(
        self, done: int, total: int, label: str, info: str = "", unit: str = "", end_line: bool = True
    ) -> None:
        """Show `done` of `total` (total 0: unknown). A new label, or `done` going back, starts a phase.

        end_line: off a terminal, print a line when the phase completes (off when another line follows).
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if self._phase != (label, total) or done < self._done:
            self._phase, self._start = (label, total), now
            self._shown = 0.0 if self.tty else now  # logs get no line for a phase's first step
        self._done = done
        finished = total > 0 and done >= total
        if (not finished and now - self._shown < self.interval) or (
            finished and not self.tty and not end_line
        ):
            return
        self._shown = now
        frac = min(done / total, 1.0) if total else 0.0
        count = f"{_amount(done, unit)}/{_amount(total, unit)}" if total else _amount(done, unit)
        elapsed = now - self._start
        eta = f", eta {elapsed / frac - elapsed:.0f}s" if 0 < frac < 1 and elapsed > 1 else ""
        fill = int(frac * self.width)
        text = f"{label} [{'#' * fill}{'.' * (self.width - fill)}] {count} {elapsed:.0f}s{eta}"
        text += f"  {info}" if info else ""
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._open = True
            if finished:
                self.close()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the terminal line, so the next output starts on a fresh one."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def message(self, text: str) -> None:
        """A line of its own on the stream (progress talk: silent when the bar is disabled)."""
        if not self.enabled:
            return
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def hook(self, label: str, unit: str = ""):
        """A library `progress(done, total)` callback that draws this bar."""
        return lambda done, total: self.update(done, total, label, unit=unit)


def _amount(n: int, unit: str) -> str:
    return f"{n / 1e6:.1f}MB" if unit == "B" else str(n)


class BarCallback(Callback):
    """fit() callbacks -> the bar per batch; one line per epoch (or none, for compare's many runs)."""

    def __init__(self, bar: ProgressBar, prefix: str = "", epoch_lines: bool = True) -> None:
        self.bar, self.prefix, self.epoch_lines = bar, prefix, epoch_lines

    def on_batch_end(self, p: Progress) -> None:
        self.bar.update(
            p.batch,
            p.batches,
            f"{self.prefix}epoch {p.epoch}/{p.epochs}",
            f"loss {p.loss:.4f}",
            end_line=not self.epoch_lines,
        )

    def on_epoch_end(self, p: Progress) -> None:
        if self.epoch_lines:
            m = p.metrics
            best = "  *best" if p.best_epoch == p.epoch else ""
            self.bar.message(
                f"{self.prefix}epoch {p.epoch}/{p.epochs}: train loss {m['train_loss']:.4f} acc "
                f"{m['train_acc']:.3f} | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | "
                f"lr {m['lr']:.2g} | {m['time_s']:.1f}s{best}"
            )
        else:
            self.bar.close()


# ---- arguments


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list(BACKBONES), help="ImageNet backbone")
    g.add_argument(
        "--random-init",
        action="store_true",
        help="randomly initialised backbone instead of ImageNet weights (no download needed)",
    )
    _add_circuit_args(p)
    g = p.add_argument_group("quantum simulation (quantum and hybrid variants)")
    g.add_argument(
        "--q-delta", type=float, metavar="X", default=0.01, help="spread of the initial circuit angles"
    )
    g.add_argument("--engine", default="native", help="'native' or a PennyLane device, e.g. default.qubit")
    g.add_argument(
        "--diff-method",
        default="best",
        help="PennyLane engines: how gradients are taken (best, backprop, adjoint, parameter-shift, ...)",
    )
    g.add_argument(
        "--shots",
        type=int,
        metavar="N",
        default=None,
        help="PennyLane engines: sample shots (default: exact)",
    )


def _add_circuit_args(p: argparse.ArgumentParser) -> None:
    d = CircuitConfig()
    g = p.add_argument_group("circuit")
    g.add_argument(
        "--qubits", type=int, metavar="N", default=d.n_qubits, help="qubits (also the dressed layers' width)"
    )
    g.add_argument(
        "--depth", type=int, metavar="N", default=d.depth, help="trainable [entangler, rotation] blocks"
    )
    g.add_argument("--entangler", default=d.entangler, choices=ENTANGLERS, help="CNOT pattern of each block")
    g.add_argument("--rotation", default=d.rotation, choices=ROTATIONS, help="trainable rotation layer")
    g.add_argument("--no-hadamard", action="store_true", help="start in |0> instead of |+> on every wire")


def _add_recipe_args(p: argparse.ArgumentParser, *, epochs_help: str) -> None:
    g = p.add_argument_group("training recipe (defaults: the variant's recipe)")
    g.add_argument("--epochs", type=int, metavar="N", default=None, help=epochs_help)
    g.add_argument("--lr", type=float, metavar="X", default=None, help="head learning rate")
    g.add_argument("--batch-size", type=int, metavar="N", default=None, help="images per optimisation step")
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="RandomResizedCrop + flip on training images (frozen variants cache 5 views)",
    )
    g.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")
    g.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="feature cache folder (default: ~/.cache/qtl/features)",
    )


def _add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="dataset root with train/ and val/ (default: $QTL_DATA_DIR, else hymenoptera, downloaded once)",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing (not None or False, not already said)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if hidden or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress")
    parser = argparse.ArgumentParser(
        prog="qtl",
        description="Quantum transfer learning: ImageNet backbones with a dressed quantum circuit head.",
        epilog="Run 'qtl COMMAND --help' for a command's options.",
        formatter_class=fmt,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or epoch lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, parents=[common], formatter_class=fmt)

    p = command(
        "train",
        "train one variant and save its best epoch",
        "Train a variant with its recipe (override any field), keeping the epoch with the best val "
        "accuracy in a checkpoint. Frozen variants extract features once (cached) and train the head.",
    )
    p.add_argument("variant", nargs="?", default=DEFAULT_VARIANT, choices=VARIANTS, help="what to train")
    _add_model_args(p)
    _add_recipe_args(p, epochs_help="passes over the training set")
    g = p.add_argument_group("recipe extras")
    g.add_argument(
        "--seed", type=int, metavar="N", default=0, help="seeds head init, batch order and augmentation"
    )
    g.add_argument(
        "--backbone-lr", type=float, metavar="X", default=None, help="learning rate of a trainable backbone"
    )
    g.add_argument(
        "--views", type=int, metavar="N", default=None, help="augmented views to cache for frozen variants"
    )
    g.add_argument(
        "--num-workers", type=int, metavar="N", default=0, help="DataLoader workers for image batches"
    )
    _add_data_arg(p)
    p.add_argument("--out", default=None, metavar="FILE", help="checkpoint file (default: a new name)")
    p.add_argument("--models-dir", default=None, metavar="DIR", help="checkpoint folder (default: models/)")
    p.set_defaults(func=cmd_train)

    p = command(
        "evaluate",
        "metrics of a checkpoint on a dataset split",
        "Accuracy, loss, per-class precision/recall/F1, confusion matrix and ROC-AUC of a checkpoint.",
    )
    p.add_argument("checkpoint", help="a .pt file written by qtl")
    _add_data_arg(p)
    p.add_argument("--split", default="val", choices=("train", "val"), help="which split to score")
    p.add_argument("--engine", default=None, help="run a quantum checkpoint on another engine")
    p.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")
    p.add_argument("--batch-size", type=int, metavar="N", default=32, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = command(
        "predict",
        "class probabilities for images from one or many checkpoints",
        "Class probabilities for each image, one line per checkpoint, so variants compare side by side.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, bmp, gif, webp, tiff)")
    p.add_argument(
        "--checkpoint", "-c", action="append", required=True, metavar="FILE", help="a checkpoint (repeatable)"
    )
    p.add_argument("--engine", default=None, help="run quantum checkpoints on another engine")
    p.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")
    p.add_argument("--json", action="store_true", help="print the probabilities as JSON")
    p.set_defaults(func=cmd_predict)

    p = command(
        "draw",
        "draw a circuit as text or a figure",
        "Draw the variational circuit of a config (gate names only), or of a quantum checkpoint with "
        "its trained angles.",
    )
    _add_circuit_args(p)
    p.add_argument(
        "--checkpoint", default=None, metavar="FILE", help="draw this checkpoint's trained circuit"
    )
    p.add_argument(
        "--output", "-o", default=None, metavar="FILE", help="save a matplotlib figure (png, svg, pdf)"
    )
    p.set_defaults(func=cmd_draw)

    p = command(
        "compare",
        "train (or load) variants over seeds: mean ± std table, JSON and CSV",
        "Train every variant with its recipe for each seed (or load existing checkpoints with --load), "
        "then print mean ± std of val accuracy, loss, best epoch, time and parameter counts per setup.",
    )
    p.add_argument(
        "--variants", nargs="+", default=list(DEFAULT_COMPARE), choices=VARIANTS, help="variants to compare"
    )
    p.add_argument("--seeds", type=int, metavar="N", default=3, help="number of seeds per variant")
    p.add_argument(
        "--first-seed", type=int, metavar="N", default=0, help="seeds are first-seed, first-seed + 1, ..."
    )
    p.add_argument(
        "--load",
        nargs="+",
        default=None,
        metavar="PATH",
        help="checkpoints or folders to compare (no training)",
    )
    _add_model_args(p)
    _add_recipe_args(p, epochs_help="epochs for every variant")
    _add_data_arg(p)
    p.add_argument("--models-dir", default=None, metavar="DIR", help="checkpoint folder (default: models/)")
    p.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="runs and summary (default: <models-dir>/compare-<time>.json)",
    )
    p.add_argument(
        "--csv", default=None, metavar="FILE", help="summary table (default: <models-dir>/compare-<time>.csv)"
    )
    p.set_defaults(func=cmd_compare)

    p = command(
        "data",
        "download (if needed) and verify a dataset",
        "Find the dataset (--path, $QTL_DATA_DIR, or the default location), download hymenoptera there "
        "if it is missing, and decode every image, listing the classes, counts and unreadable files.",
    )
    p.add_argument("--path", default=None, help="dataset root, or where to download hymenoptera")
    p.add_argument("--no-download", action="store_true", help="only verify; never touch the network")
    p.set_defaults(func=cmd_data)
    return parser


# ---- configs from arguments


def _model_config(args, variant: str) -> ModelConfig:
    circuit = CircuitConfig(
        n_qubits=args.qubits,
        depth=args.depth,
        entangler=args.entangler,
        rotation=args.rotation,
        hadamard=not args.no_hadamard,
    )
    return ModelConfig(
        variant=variant,
        backbone=args.backbone,
        pretrained=not args.random_init,
        circuit=circuit,
        engine=args.engine,
        diff_method=args.diff_method,
        shots=args.shots,
        q_delta=args.q_delta,
    )


def _plan(args, variants: list[str], seeds: list[int], root: Path):
    """`qtl.runs.plan_runs` with the command line's overrides: one Run per (variant, seed)."""
    from qtl.checkpoint import models_dir
    from qtl.runs import RECIPE_OVERRIDES, plan_runs

    overrides = {k: getattr(args, k) for k in RECIPE_OVERRIDES if getattr(args, k) is not None}
    directory = Path(args.models_dir) if args.models_dir else models_dir()
    runs = plan_runs(
        variants,
        _model_config(args, variants[0]),
        seeds,
        directory,
        epochs=args.epochs,
        overrides=overrides,
        data=str(root),
    )
    extra = {"device": args.device, "cache_dir": args.cache_dir}
    for name in ("backbone_lr", "views", "num_workers"):
        if getattr(args, name, None) is not None:
            extra[name] = getattr(args, name)
    return [dataclasses.replace(r, train_config=dataclasses.replace(r.train_config, **extra)) for r in runs]


def _dataset(path, bar: ProgressBar, *, download: bool = True) -> Path:
    from qtl.data import resolve_dataset

    return resolve_dataset(path, download=download, progress=bar.hook("downloading dataset", unit="B"))


def _loaded_from_fit(result):
    """A fit() result as a `LoadedModel` (what `qtl.runs.run_row` reads), without reloading the file."""
    from qtl.checkpoint import LoadedModel

    return LoadedModel(
        model=result.model,
        model_config=result.model_config,
        class_names=list(result.model_config.class_names),
        history=result.history,
        metrics=result.best or {},
        meta={},
        path=result.checkpoint_path,
        train_config=result.train_config.to_dict(),
    )


# ---- commands


def cmd_train(args, bar: ProgressBar) -> int:
    from qtl.train import fit

    root = _dataset(args.data, bar)
    (run,) = _plan(args, [args.variant], [args.seed], root)
    path = Path(args.out) if args.out else run.checkpoint_path
    tc = run.train_config
    bar.message(
        f"training {args.variant} on {root} ({run.model_config.backbone} "
        f"{'random init' if args.random_init else 'ImageNet'}): {tc.epochs} epochs, batch {tc.batch_size}, "
        f"{tc.optimizer} lr {tc.lr:g}, seed {tc.seed}"
    )
    try:
        result = fit(
            run.model_config,
            tc,
            callbacks=[BarCallback(bar)],
            checkpoint_path=path,
            progress=bar.hook("extracting features"),
        )
    except KeyboardInterrupt:
        if path.is_file():
            bar.close()
            print(f"qtl: interrupted; the last good checkpoint is kept at {path}", file=sys.stderr)
        raise
    best = result.best
    print(
        f"best epoch {result.best_epoch}/{len(result.history)}: val acc {best['val_acc']:.4f}, "
        f"val loss {best['val_loss']:.4f}"
    )
    print(f"checkpoint: {result.checkpoint_path}")
    return 0


def cmd_evaluate(args, bar: ProgressBar) -> int:
    from qtl.checkpoint import load_checkpoint
    from qtl.inference import evaluate

    loaded = load_checkpoint(args.checkpoint, resolve_device(args.device), engine=args.engine)
    root = _dataset(args.data, bar)
    ev = evaluate(loaded, root, args.split, batch_size=args.batch_size, progress=bar.hook("evaluating"))
    bar.close()
    m = ev.metrics
    if args.json:
        out = {"checkpoint": str(args.checkpoint), "data": str(root), "split": args.split, "metrics": m}
        print(json.dumps(out, indent=2))
        return 0
    c = loaded.model_config
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    print(f"checkpoint  {args.checkpoint} ({c.variant}, {c.backbone} {loaded.backbone_weights})")
    print(f"data        {root} ({args.split}, {m['n']} images)")
    print(f"accuracy    {m['accuracy']:.4f}")
    print(f"loss        {m['loss']:.4f}")
    print(f"ROC-AUC     {auc}")
    print(f"macro F1    {m['macro_f1']:.4f}\n")
    names = m["class_names"]
    w = max(8, *(len(n) for n in names)) + 2
    print(f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        r = m["per_class"][name]
        print(f"{name:<{w}}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['support']:>10}")
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    print(" " * w + "".join(f"{n:>{w}}" for n in names))
    for name, row in zip(names, m["confusion_matrix"], strict=True):
        print(f"{name:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    return 0


def cmd_predict(args, bar: ProgressBar) -> int:
    from qtl.checkpoint import load_checkpoint
    from qtl.data import load_image
    from qtl.inference import predict

    images = [load_image(path) for path in args.images]  # a bad file fails here, by name
    device = resolve_device(args.device)
    models = [load_checkpoint(path, device, engine=args.engine) for path in args.checkpoint]
    preds = predict(models, images)
    if args.json:
        out = [
            {
                "image": image,
                "predictions": {
                    name: {
                        "predicted": p.predicted[i],
                        "probs": dict(zip(p.class_names, p.probs[i].tolist(), strict=True)),
                    }
                    for name, p in preds.items()
                },
            }
            for i, image in enumerate(args.images)
        ]
        print(json.dumps(out, indent=2))
        return 0
    w = max(len(name) for name in preds) + 2
    for i, image in enumerate(args.images):
        print(image)
        for name, p in preds.items():
            probs = "  ".join(f"{c} {v:.4f}" for c, v in zip(p.class_names, p.probs[i].tolist(), strict=True))
            print(f"  {name:<{w}}{probs}  -> {p.predicted[i]}")
    return 0


def cmd_draw(args, bar: ProgressBar) -> int:
    from qtl.circuit import circuit_summary
    from qtl.draw import draw_figure, draw_text

    weights = None
    if args.checkpoint:
        from qtl.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.checkpoint)
        if not loaded.model_config.is_quantum:
            raise ValueError(f"{args.checkpoint} is a {loaded.variant!r} model: it has no circuit to draw")
        config, weights = loaded.model_config.circuit, loaded.model.head.q_params.detach()
    else:
        config = CircuitConfig(args.qubits, args.depth, args.entangler, args.rotation, not args.no_hadamard)
    s = circuit_summary(config)
    gates = ", ".join(f"{n} {k}" for k, n in s["gate_counts"].items())
    summary = (
        f"{s['n_qubits']} qubits, depth {config.depth}: {s['n_gates']} gates ({gates}), "
        f"{s['n_weights']} trainable weights, circuit depth {s['circuit_depth']}"
    )
    if args.output:
        fig = draw_figure(config, weights)
        fig.savefig(args.output, bbox_inches="tight")
        print(f"{summary}\nsaved {args.output}")
    else:
        print(draw_text(config, weights))
        print(summary)
    return 0


def cmd_compare(args, bar: ProgressBar) -> int:
    from qtl.checkpoint import list_checkpoints, load_checkpoint, models_dir
    from qtl.runs import run_row, summarise
    from qtl.train import fit

    rows = []
    if args.load:
        paths = []
        for p in map(Path, args.load):
            paths += [i.path for i in list_checkpoints(p)] if p.is_dir() else [p]
        if not paths:
            raise ValueError(f"no checkpoints found in {', '.join(args.load)}")
        for path in paths:
            rows.append({**run_row(load_checkpoint(path)), "checkpoint": str(path)})
    else:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
        root = _dataset(args.data, bar)
        runs = _plan(args, args.variants, list(range(args.first_seed, args.first_seed + args.seeds)), root)
        for i, run in enumerate(runs):
            prefix = f"[{run.label} {i + 1}/{len(runs)}] "
            result = fit(
                run.model_config,
                run.train_config,
                callbacks=[BarCallback(bar, prefix, epoch_lines=False)],
                checkpoint_path=run.checkpoint_path,
                progress=bar.hook(prefix + "extracting features"),
            )
            row = {**run_row(_loaded_from_fit(result)), "checkpoint": str(result.checkpoint_path)}
            rows.append(row)
            bar.message(f"{prefix}val acc {row['val_acc']:.4f} (best epoch {row['best_epoch']})")
    summary = summarise(rows, "setup", COMPARE_FIELDS)
    variant_of = {r["setup"]: r["variant"] for r in rows}
    for s in summary:
        s["variant"] = variant_of[s["setup"]]
    print(format_summary(summary))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = Path(args.models_dir) if args.models_dir else models_dir()
    json_path = Path(args.json) if args.json else directory / f"compare-{stamp}.json"
    csv_path = Path(args.csv) if args.csv else directory / f"compare-{stamp}.csv"
    for path in (json_path, csv_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"runs": rows, "summary": summary}, indent=2) + "\n")
    columns = ["variant", "setup", "n"] + [f"{f}_{k}" for f in COMPARE_FIELDS for k in ("mean", "std")]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: s[k] for k in columns} for s in summary)
    print(f"\nwrote {json_path} and {csv_path}")
    return 0


def format_summary(summary: list[dict]) -> str:
    """The compare table: one line per setup, mean ± std per field."""

    def pm(s: dict, f: str, digits: int) -> str:
        mean, std = s[f"{f}_mean"], s[f"{f}_std"]
        return "n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"

    header = ("setup", "n", "val acc", "val loss", "best epoch", "train time (s)", "params c/q")
    lines = [
        (
            s["setup"],
            str(s["n"]),
            pm(s, "val_acc", 4),
            pm(s, "val_loss", 4),
            pm(s, "best_epoch", 1),
            pm(s, "train_time_s", 1),
            f"{s['classical_mean']:.0f}/{s['quantum_mean']:.0f}",
        )
        for s in summary
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *lines]
    )


def cmd_data(args, bar: ProgressBar) -> int:
    from qtl.data import SPLITS, ImageFolderDataset, download_hymenoptera

    path = Path(args.path).expanduser() if args.path else None
    if path is not None and not args.no_download and not (path.exists() and any(path.iterdir())):
        root = download_hymenoptera(path, progress=bar.hook("downloading hymenoptera", unit="B"))
    else:
        root = _dataset(path, bar, download=not args.no_download)
    bar.close()
    print(f"dataset {root}")
    skipped = 0
    for split in SPLITS:
        ds = ImageFolderDataset(root, split)  # decodes every file once
        counts = {c: ds.targets.count(i) for i, c in enumerate(ds.classes)}
        print(f"  {split}: {len(ds)} images, " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        for p, reason in ds.skipped:
            print(f"  unreadable: {p}: {reason}")
        skipped += len(ds.skipped)
    print("ok" if not skipped else f"ok, {skipped} unreadable file(s) will be skipped")
    return 0


# ---- entry point


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="qtl: warning: %(message)s")
    bar = ProgressBar(enabled=not args.quiet)
    try:
        return args.func(args, bar)
    except KeyboardInterrupt:
        bar.close()
        if args.debug:
            raise
        print("qtl: error: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        bar.close()
        if args.debug:
            raise
        print(f"qtl: error: {_one_line(exc)}", file=sys.stderr)
        return 1
