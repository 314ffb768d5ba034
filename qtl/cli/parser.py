"""The `qtl` argparse parser: subcommands and their shared argument groups.

Torch-free: choices and defaults come from `qtl.config` and `qtl.quantum.circuit`, so `qtl --help` and
`qtl COMMAND --help` import no torch, torchvision or PennyLane. `main` runs `args.command`'s handler.
"""

from __future__ import annotations

import argparse
import math

from qtl.config import (
    BACKBONE_NAMES,
    BUNDLED_BACKBONE,
    DEFAULT_BACKBONE,
    DEFAULT_VARIANT,
    RUN_VARIANTS,
    SPLITS,
    VARIANTS,
    check_backbone_name,
)
from qtl.deploy.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, DEFAULT_WORKERS
from qtl.deploy.limits import DEFAULT_REQUEST_PIXELS, ServeLimits
from qtl.experiments.spec import AXES as SPEC_AXES
from qtl.quantum.circuit import ENTANGLERS, MAX_DEPTH, MAX_QUBITS, ROTATIONS, CircuitConfig

DEFAULT_COMPARE = ("quantum", "dressed-classical", "linear")
"""The variants `qtl compare` trains when --variants is not given."""
EXPORT_FORMATS = ("onnx", "torchscript")
"""`qtl export --format` (the formats of `qtl.deploy.export`, which imports torch)."""
MODELS_DEFAULT = "$QTL_MODELS_DIR, else models/ at the repository root"
"""Where checkpoints go by default (`qtl.paths.models_dir`), as the help says it."""
MODELS_HELP = f"checkpoint folder (default: {MODELS_DEFAULT})"
CACHE_DEFAULT = "$QTL_CACHE_DIR/features, else ~/.cache/qtl/features"
"""The feature cache's default (`qtl.data.features.default_cache_dir`), as the help says it."""


def _backbone_name(text: str) -> str:
    try:
        return check_backbone_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _effect(text: str) -> float:
    """--effect: a difference in accuracy, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a difference in accuracy in (0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    """A whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return int(text)


def _finite(zero: bool):
    """A finite number above 0 (0 too where `zero`), fractions allowed: the CPUs or GPUs a Ray task or
    replica requests, a size in MiB, a wait in milliseconds."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= 0 if zero else value > 0) or value != value or value == float("inf"):
            least = "0 or more" if zero else "above 0"
            raise argparse.ArgumentTypeError(f"must be a number {least}, got {text}")
        return value

    return parse


def _megabytes(text: str) -> float:
    """--max-request-mb: a size above 0 in MiB, at least one byte (fractions allowed)."""
    value = _finite(False)(text)
    if value * 2**20 < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte, got {text}")
    return value


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0 to 65535, got {text}")
    return int(text)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone",
        default=None,
        type=_backbone_name,
        metavar="NAME",
        help=f"pretrained backbone: {', '.join(BACKBONE_NAMES)}, or any timm model as timm/<model>; "
        f"where {DEFAULT_BACKBONE}'s ImageNet weights cannot be had, the bundled {BUNDLED_BACKBONE} "
        f"(default: {DEFAULT_BACKBONE})",
    )
    g.add_argument(
        "--random-init",
        action="store_true",
        help="randomly initialised backbone instead of ImageNet weights (no download needed)",
    )
    _add_circuit_args(p)
    g.add_argument(
        "--feature-dim",
        type=int,
        metavar="K",
        default=None,
        help="frozen heads: train on the training features' K principal components (reduced width)",
    )
    g = p.add_argument_group("quantum simulation (quantum and hybrid variants)")
    g.add_argument(
        "--q-delta", type=float, metavar="X", default=0.01, help="spread of the initial circuit angles"
    )
    g.add_argument(
        "--engine",
        default="native",
        help="'native' (statevector, up to 24 qubits), 'mps' (matrix product state, up to 128 qubits) "
        "or a PennyLane device, e.g. default.qubit",
    )
    g.add_argument(
        "--max-bond",
        type=int,
        metavar="D",
        default=None,
        help="mps engine: largest bond dimension kept, truncating by SVD (default: exact)",
    )
    g.add_argument(
        "--diff-method",
        default="best",
        help="PennyLane engines: how gradients are taken (best, backprop, adjoint, parameter-shift, ...)",
    )
    _add_noise_args(p)


def _add_noise_args(p: argparse.ArgumentParser, *, grid: bool = False) -> None:
    """Noise flags; with `grid` (qtl noise) the depolarizing strengths and shots come from the grid."""
    g = p.add_argument_group(
        "noise (quantum variants; the native engine then simulates density matrices, see docs/noise.md)"
    )
    channels = [("amplitude-damping", "amplitude damping (T1)"), ("phase-damping", "phase damping (T2)")]
    for name, what in channels if grid else [("depolarizing", "depolarizing channel"), *channels]:
        g.add_argument(
            f"--{name}",
            type=float,
            nargs="+",
            metavar="P",
            default=None,
            help=f"{what} after every gate: P, or P1 P2 for one- and two-qubit gates",
        )
    g.add_argument("--readout", type=float, metavar="P", default=0.0, help="readout bit-flip probability")
    if not grid:
        g.add_argument(
            "--shots", type=int, metavar="N", default=None, help="<Z> as the mean of N shots (default: exact)"
        )
    g.add_argument("--noise-seed", type=int, metavar="N", default=0, help="seed of the shot sampler")
    if not grid:
        g.add_argument(
            "--noise-from",
            default=None,
            metavar="BACKEND",
            help="the channels and readout error of a fake IBM backend's calibration for this circuit "
            "(e.g. FakeManilaV2; needs qtl[hardware]; see docs/hardware.md)",
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
    g.add_argument(
        "--reupload", action="store_true", help="embed the inputs again in every block (data re-uploading)"
    )


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
        help=f"feature cache folder (default: {CACHE_DEFAULT})",
    )


def _add_regime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data regime (which images a run trains, selects its epoch and is tested on)")
    g.add_argument(
        "--split",
        default="given",
        choices=SPLITS,
        help="given: the dataset's train/val (+ test/ if it has one); kfold: every image in stratified "
        "folds, test = fold seed %% folds, val = the next fold",
    )
    g.add_argument("--folds", type=int, metavar="K", default=5, help="folds of --split kfold")
    g.add_argument("--classes", type=int, metavar="K", default=None, help="only the first K classes")
    g.add_argument(
        "--per-class", type=int, metavar="N", default=None, help="few-shot: N training images per class"
    )
    g.add_argument(
        "--label-noise", type=float, metavar="P", default=0.0, help="share of training labels made wrong"
    )


def _add_effect_arg(p: argparse.ArgumentParser) -> None:
    what = "power analysis: the difference in accuracy each comparison should detect"
    p.add_argument("--effect", type=_effect, metavar="X", default=0.02, help=what)


def _add_seed_args(p: argparse.ArgumentParser, seeds_help: str = "number of seeds per variant") -> None:
    p.add_argument("--seeds", type=int, metavar="N", default=3, help=seeds_help)
    p.add_argument(
        "--first-seed", type=int, metavar="N", default=0, help="seeds are first-seed, first-seed + 1, ..."
    )


#: --data's default where a command scores checkpoints (`commands._scoring_root`)
RECORDED_DATA = "the dataset the checkpoints recorded, where it is here; else $QTL_DATA_DIR, else hymenoptera"
#: the same where a command scores one checkpoint
RECORDED_DATA_ONE = RECORDED_DATA.replace("checkpoints recorded", "checkpoint recorded")


def _add_data_arg(p: argparse.ArgumentParser, flag: str = "--data", default: str | None = None) -> None:
    # where checkpoints are scored, the split they recorded is the default (`commands._scoring_root`)
    whose = next(
        (w for w in ("checkpoints", "checkpoint") if default and default.startswith(f"the dataset the {w}")),
        "",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        flag,
        dest="data",
        default=None,
        metavar="PATH",
        help="a folder or a .zip: train/ + val/ (+ test/) with one folder per class, or class folders only; "
        "or a named dataset: digits, torchvision/<Name>[:class,...] "
        f"(default: {default or '$QTL_DATA_DIR, else hymenoptera, downloaded once'})",
    )
    g.add_argument(
        "--val-ratio",
        type=float,
        metavar="X",
        default=None,
        help=f"class folders only, with {flag}: share of each class held out for val (seeded, "
        "stratified; default 0.2" + (f", or the split the {whose} recorded)" if whose else ")"),
    )
    g.add_argument(
        "--split-seed",
        type=int,
        metavar="N",
        default=None,
        help=f"class folders only, with {flag}: seed of that split (default 0"
        + (f", or the {whose}'{'' if whose.endswith('s') else 's'})" if whose else ")"),
    )


def _add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        metavar="FILE",
        help=f"results database (default: $QTL_RESULTS_DB, else results.db in {MODELS_DEFAULT})",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing (not None or False, not already said)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if hidden or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


HELD_OUT_METRIC = "held-out"
"""`qtl runs --metric`'s default: each cell on test_acc where its runs have it, else on val_acc
(`qtl.experiments.stats.cell_metric`)."""


def _minutes(text: str) -> float:
    """A time limit in minutes for argparse: 0 (none) or more, finite."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of minutes, 0 or more, got {text}")
    return value


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
        "--freeze-batchnorm",
        action="store_true",
        default=None,
        help="trainable backbones keep their batch-norm statistics (small batches would replace them)",
    )
    g.add_argument(
        "--num-workers", type=int, metavar="N", default=0, help="DataLoader workers for image batches"
    )
    _add_data_arg(p)
    _add_regime_args(p)
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="checkpoint file, refused where one exists (default: a new name; a folder: a new name in it)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="let --out replace an existing file (a stopped run's own)"
    )
    p.add_argument("--models-dir", default=None, metavar="DIR", help=MODELS_HELP)

    p = command(
        "evaluate",
        "metrics of a checkpoint on a dataset split",
        "Accuracy, loss, per-class precision/recall/F1, confusion matrix and ROC-AUC of a checkpoint.",
    )
    p.add_argument("checkpoint", help="a .pt file written by qtl")
    _add_data_arg(p, default=RECORDED_DATA_ONE)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="which split to score")
    p.add_argument("--engine", default=None, help="run a quantum checkpoint on another engine")
    p.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")
    p.add_argument("--batch-size", type=int, metavar="N", default=32, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = command(
        "predict",
        "class probabilities for images from one or many checkpoints",
        "Class probabilities for each image, one line per checkpoint, so variants compare side by side.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (jpg, png, bmp, gif, webp, tiff), or folders of them (a folder's unreadable "
        "files are skipped, each said in one line)",
    )
    p.add_argument(
        "--checkpoint",
        "-c",
        action="append",
        required=True,
        metavar="FILE",
        help="a checkpoint, or with --runtime onnx|torchscript a file written by qtl export (repeatable)",
    )
    p.add_argument(
        "--runtime",
        default="torch",
        choices=("torch", *EXPORT_FORMATS),
        help="torch: qtl's checkpoints; onnx (onnxruntime) or torchscript: files written by qtl export",
    )
    p.add_argument("--engine", default=None, help="run quantum checkpoints on another engine")
    p.add_argument(
        "--device",
        default="auto",
        help="torch device; 'auto' picks CUDA when present (exported files run on the CPU: auto or cpu)",
    )
    p.add_argument("--json", action="store_true", help="print the probabilities as JSON")

    p = command(
        "export",
        "write a checkpoint as one portable ONNX or TorchScript file",
        "Export the whole classifier (backbone, head, and the trained circuit folded into plain matrix "
        "operations) as one graph from normalised images to class probabilities; the preprocessing and the "
        "class names go in the file's metadata. Runs without qtl or PennyLane: onnxruntime, or torch for "
        "TorchScript. Noisy models export exactly; shot sampling and MPS truncation are refused.",
    )
    p.add_argument("checkpoint", help="a .pt file written by qtl")
    p.add_argument(
        "--format",
        default=None,
        choices=EXPORT_FORMATS,
        help="file format (default: by -o's suffix: .onnx is ONNX, .torchscript or .ts TorchScript, any "
        "other suffix needs --format, and a format those suffixes contradict is refused; no -o: onnx)",
    )
    p.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="FILE",
        help="the exported file, in a folder that exists (default: beside the checkpoint, its name with "
        ".onnx or .torchscript in place of .pt: model.v1 -> model.v1.onnx); an existing FILE is replaced "
        "only if it is an earlier qtl export of that format from the same checkpoint",
    )

    p = command(
        "explain",
        "heatmaps of what drives each checkpoint's prediction",
        "Backpropagate each checkpoint's predicted class score through the whole model (quantum circuit "
        "included) and write the heatmaps over the images side by side: Grad-CAM on CNN backbones, "
        "gradient saliency on any backbone (transformers too).",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (jpg, png, bmp, gif, webp, tiff), or folders of them (a folder's unreadable "
        "files are skipped, each said in one line)",
    )
    p.add_argument(
        "--checkpoint", "-c", action="append", required=True, metavar="FILE", help="a checkpoint (repeatable)"
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "grad-cam", "saliency"),
        help="auto: grad-cam where the backbone is a CNN, else saliency",
    )
    p.add_argument("--output", "-o", default="explain.png", metavar="FILE", help="the figure (png, svg, pdf)")
    p.add_argument("--engine", default=None, help="run quantum checkpoints on another engine")
    p.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")

    limits = ServeLimits()
    p = command(
        "serve",
        "serve checkpoints as a REST API for image uploads (FastAPI on uvicorn, or Ray Serve)",
        "Answer POST /predict (multipart images in the field 'file'; ?explain=true adds heatmaps, "
        "&method=auto|grad-cam|saliency chooses them as qtl explain --method does; any other query "
        "parameter is refused) with every model's class probabilities, plus GET /models, GET (or HEAD) "
        "/healthz, the OpenAPI document at /openapi.json and its docs page at /docs (Swagger UI, loaded "
        "from a CDN: blank offline). "
        "Concurrent requests are micro-batched: one backbone pass per batch. Over-large, malformed or "
        "hostile uploads are refused with a 4xx and a one-line JSON reason.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="checkpoint files, or folders of checkpoints")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every one)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0: any free one)")
    p.add_argument(
        "--device", default="cpu", help="torch device of the models ('auto' picks CUDA when present)"
    )
    g = p.add_argument_group("micro-batching")
    g.add_argument(
        "--max-batch", type=_positive, metavar="N", default=DEFAULT_MAX_BATCH, help="images per batch"
    )
    g.add_argument(
        "--max-wait-ms",
        type=_finite(True),
        metavar="MS",
        default=DEFAULT_MAX_WAIT_S * 1000,
        help="how long a batch waits for more requests",
    )
    g.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        default=DEFAULT_WORKERS,
        help="batches computed at once (a GPU: 1; a CPU: a few small batches can beat one large one)",
    )
    g = p.add_argument_group("limits (each refusal is a 4xx with the reason)")
    g.add_argument(
        "--max-request-mb",
        type=_megabytes,
        metavar="MB",
        default=limits.max_request_bytes / 2**20,
        help="request body",
    )
    g.add_argument(
        "--max-images", type=_positive, metavar="N", default=limits.max_images, help="images per request"
    )
    g.add_argument(
        "--max-pixels",
        type=_positive,
        metavar="N",
        default=limits.max_pixels,
        help="width x height of one image",
    )
    g.add_argument(
        "--max-request-pixels",
        type=_positive,
        metavar="N",
        default=None,
        help=f"width x height of all images of one request together (default {DEFAULT_REQUEST_PIXELS:,}, "
        "or --max-pixels if larger)",
    )
    g.add_argument(
        "--formats", nargs="+", metavar="NAME", default=list(limits.formats), help="accepted image formats"
    )
    g = p.add_argument_group("Ray Serve (needs qtl[ray,serve])")
    g.add_argument("--ray", action="store_true", help="deploy as a Ray Serve application instead")
    g.add_argument("--address", default=None, help="an existing Ray cluster ('auto', ray://HOST:10001)")
    g.add_argument(
        "--replicas", type=_positive, metavar="N", default=1, help="copies of the models, each batching"
    )
    g.add_argument(
        "--cpus-per-replica", type=_finite(False), metavar="N", default=1, help="CPUs each replica requests"
    )

    p = command(
        "draw",
        "draw a circuit as text or a figure",
        "Draw the variational circuit of a config (gate names only), or of a quantum checkpoint with "
        "its trained angles.",
    )
    _add_circuit_args(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="draw this checkpoint's trained circuit (the circuit options are then refused: it has its own)",
    )
    p.add_argument(
        "--output", "-o", default=None, metavar="FILE", help="save a matplotlib figure (png, svg, pdf)"
    )

    p = command(
        "reproduce",
        "reproduce the paper's comparison: quantum, finetuned, linear (+ hybrid, dressed-classical)",
        "Train the paper's variants A quantum, B finetuned, C linear, plus hybrid and dressed-classical, "
        "with their recipes over N seeds on the best backbone available (ImageNet resnet18 where its "
        "weights can be had, else the bundled efficientnet_lite0), and write a Markdown and a JSON report: "
        "best- and final-epoch val accuracy (mean ± std), the selected epoch's accuracy on a held-out test "
        "fold (--split kfold, the default here), training time, parameter counts, the published numbers "
        "(Mari et al. 2019) beside them, and quantum against its controls paired by seed with the power "
        "of each comparison. --from merges reports of earlier runs; --load adds checkpoints.",
    )
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=RUN_VARIANTS, help="variants to train"
    )
    _add_seed_args(p, "number of seeds per variant (default: 3; none beside --load)")
    p.add_argument(
        "--from",
        dest="merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="merge these earlier reports instead of training",
    )
    p.add_argument(
        "--load",
        nargs="+",
        default=None,
        metavar="PATH",
        help="add these checkpoints' runs (no training unless --seeds is given too)",
    )
    p.set_defaults(seeds=None)  # reproduce: 3, or none beside --load (it trained every variant too)
    _add_model_args(p)
    _add_recipe_args(p, epochs_help="epochs for every variant (default: each recipe's)")
    p.add_argument(
        "--freeze-batchnorm",
        action="store_true",
        default=None,
        help="finetuned and hybrid keep the backbone's batch-norm statistics",
    )
    _add_data_arg(p)
    _add_regime_args(p)
    p.set_defaults(split="kfold")  # the honest protocol: a held-out test fold for every seed
    _add_effect_arg(p)
    p.add_argument("--models-dir", default=None, metavar="DIR", help=MODELS_HELP)
    p.add_argument(
        "--out", default=None, metavar="FILE", help="Markdown report (default: <models-dir>/paper-<time>.md)"
    )
    p.add_argument("--json", default=None, metavar="FILE", help="JSON report (default: beside --out)")

    p = command(
        "compare",
        "train (or load) variants over seeds: mean ± std table, JSON and CSV",
        "Train every variant with its recipe for each seed (or load existing checkpoints with --load), "
        "then print mean ± std of val accuracy, loss, best epoch, time and parameter counts per setup.",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_COMPARE),
        choices=RUN_VARIANTS,
        help="variants to compare (the kernel baselines too)",
    )
    _add_seed_args(p)
    p.add_argument(
        "--load",
        nargs="+",
        default=None,
        metavar="PATH",
        help="checkpoints or folders to compare (no training); setups differ by dataset too, and a "
        "second checkpoint of one run (settings, seed, data) is left out",
    )
    _add_model_args(p)
    _add_recipe_args(p, epochs_help="epochs for every variant")
    _add_data_arg(p)
    _add_regime_args(p)
    _add_effect_arg(p)
    p.add_argument("--models-dir", default=None, metavar="DIR", help=MODELS_HELP)
    p.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="runs and summary (default: <models-dir>/compare-<time>.json)",
    )
    p.add_argument(
        "--csv", default=None, metavar="FILE", help="summary table (default: <models-dir>/compare-<time>.csv)"
    )

    p = command(
        "noise",
        "accuracy of quantum checkpoints over noise strengths, shots and IBM backends",
        "Evaluate quantum checkpoints with their circuit under depolarizing noise of each strength and "
        "each shot count (native density-matrix engine), and on fake IBM backends (needs qtl[hardware]); "
        "print an accuracy table and write it as CSV, JSON and a plot. Other channels given below apply "
        "at every grid point. Every checkpoint runs on the native engine, whatever engine it was trained "
        "on: the ideal row of an mps checkpoint is its exact circuit, not the truncated one (--max-bond) "
        "qtl evaluate scores, and of a PennyLane device with shots, the exact values, not shots.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="quantum checkpoints to compare")
    p.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        metavar="P",
        default=[0.0, 0.01, 0.02, 0.05],
        help="depolarizing strengths after every gate (one- and two-qubit alike)",
    )
    p.add_argument(
        "--shots", type=int, nargs="+", metavar="N", default=[0], help="shot counts; 0 means exact <Z>"
    )
    p.add_argument(
        "--backends",
        nargs="+",
        metavar="NAME",
        default=[],
        help="fake IBM backends, e.g. FakeManilaV2 (needs: pip install 'qtl[hardware]')",
    )
    p.add_argument(
        "--backend-shots",
        type=_positive,
        nargs="+",
        metavar="N",
        default=[1024],
        help="shots on each backend (with --backends)",
    )
    p.add_argument(
        "--backend-minutes",
        type=_minutes,
        default=10.0,
        metavar="M",
        help="skip a backend simulation estimated to take longer (images x shots x 2^n amplitudes at a "
        "rate measured on a 2-core CPU; 0: no limit)",
    )
    _add_noise_args(p, grid=True)
    _add_data_arg(p, default=RECORDED_DATA)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="which split to score")
    p.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help=f"write PREFIX.csv, PREFIX.json and PREFIX.png (default: noise-<time> in {MODELS_DEFAULT})",
    )

    p = command(
        "sweep",
        "run a sweep spec (grids of runs) into the results database",
        f"Run every run of a TOML sweep spec (grids over any of {', '.join(SPEC_AXES)}) that the "
        "results database does not hold finished, "
        "writing each result as it arrives, then print per-cell statistics and quantum vs control "
        "comparisons. Re-running the same spec resumes it. Ctrl-C stops the current run(s) after their "
        "batch, without counting them (they run again on resume); a second Ctrl-C aborts.",
    )
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (see docs/study.md for an example)")
    _add_db_arg(p)
    g = p.add_argument_group("where runs execute")
    g.add_argument(
        "--backend",
        default="local",
        choices=("local", "processes", "ray"),
        help="local: one after another in this process; processes: --workers processes; ray: Ray tasks",
    )
    g.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        default=None,
        help="runs at once (default: 1 local, 2 processes, the cluster's CPUs / --cpus-per-run on Ray)",
    )
    g.add_argument("--address", default=None, help="Ray: an existing cluster ('auto', ray://HOST:10001)")
    g.add_argument(
        "--cpus-per-run", type=_finite(False), metavar="N", default=1, help="Ray: CPUs each task requests"
    )
    g.add_argument(
        "--gpus-per-run", type=_finite(True), metavar="N", default=0, help="Ray: GPUs each task requests"
    )
    g.add_argument("--device", default="auto", help="torch device; 'auto' picks CUDA when present")
    g.add_argument(
        "--cache-dir", default=None, metavar="DIR", help=f"feature cache folder (default: {CACHE_DEFAULT})"
    )
    p.add_argument(
        "--models-dir",
        default=None,
        metavar="DIR",
        help=f"checkpoints, if the spec saves them, go to DIR/sweeps/NAME/ (default DIR: {MODELS_DEFAULT})",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs done and to do) and stop")
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="run again, replacing their results, the done runs whose dataset lists other images than they "
        "trained on (without it such a sweep stops and says so)",
    )
    p.add_argument(
        "--max-runs",
        type=_positive,
        metavar="N",
        default=None,
        help="refuse a spec that plans more runs (default: $QTL_SWEEP_MAX_RUNS, else 100,000)",
    )
    p.add_argument("--mlflow", default=None, metavar="URI", help="also log runs to MLflow (needs mlflow)")

    p = command(
        "runs",
        "list, filter and export runs from the results database",
        "List the sweeps, or the runs of the results database (finished ones unless --status says "
        "otherwise), filtered by sweep and settings; export them as CSV or JSON; --report prints "
        "per-cell statistics and the paired quantum vs control comparisons.",
    )
    _add_db_arg(p)
    p.add_argument("--sweeps", action="store_true", help="list the sweeps and their run counts")
    p.add_argument("--sweep", default=None, metavar="NAME", help="only this sweep's runs")
    p.add_argument(
        "--status",
        default="done",
        choices=("done", "running", "pending", "failed", "cancelled", "interrupted", "any"),
        help="which runs (interrupted: marked running by a process that has ended, as a killed sweep leaves "
        "them; the next run of the spec trains them again)",
    )
    # a misspelt variant is refused (it listed no run, as if there were none)
    p.add_argument("--variant", choices=RUN_VARIANTS, default=None, help="only runs with this variant")
    for name, kind in (("backbone", str), ("qubits", int), ("depth", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"only runs with this {name}")
    p.add_argument(
        "--dataset",
        default=None,
        help="only runs on this dataset: the path the spec gave, its folder or zip name (three, five.zip), "
        "or a zip's name without .zip",
    )
    p.add_argument("--seed", type=int, default=None, help="only runs with this seed")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the runs as CSV ('-': stdout)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the runs as JSON ('-': stdout)")
    p.add_argument("--report", action="store_true", help="statistics per cell and paired comparisons")
    p.add_argument("--markdown", action="store_true", help="the report as Markdown tables (implies --report)")
    p.add_argument(
        "--metric",
        default=HELD_OUT_METRIC,
        choices=(HELD_OUT_METRIC, "val_acc", "test_acc"),
        help="what the report compares: held-out, each cell's test accuracy where its runs have a test "
        "split, else its val accuracy, each saying which (as qtl sweep's closing report and qtl study do); "
        "or the selected epoch's val accuracy, or its test accuracy, for every run",
    )
    _add_effect_arg(p)

    p = command(
        "study",
        "write the findings of a study (a sweep) as Markdown, from the results database",
        "For every dataset and data regime of a sweep: test accuracy per variant (val accuracy on a "
        "dataset without test/, though a sweep with no test accuracy at all is refused: qtl runs --report "
        "reports it; mean, 95% CI), each "
        "quantum head against its matched classical control and the kernel baselines paired by seed "
        "(Benjamini-Hochberg over all comparisons), the power of every comparison, and a plain "
        "conclusion. docs/study.md is this command's output.",
    )
    _add_db_arg(p)
    p.add_argument("--sweep", default="study", metavar="NAME", help="the sweep to report")
    p.add_argument(
        "--out", "-o", default=None, metavar="FILE", help="write the Markdown here (default: stdout)"
    )
    p.add_argument(
        "--made-by",
        default=None,
        metavar="TEXT",
        help="the command line that ran the sweep, quoted in the document",
    )
    _add_effect_arg(p)

    p = command(
        "diagnose",
        "barren-plateau scan: gradient variance of the circuit against qubits and depth",
        "Draw the variance, over random initialisations, of the gradient of a cost with respect to the "
        f"circuit's angles, against the number of qubits (2 .. {MAX_QUBITS}, matrix product state engine) "
        f"and the depth (1 .. {MAX_DEPTH}), for a local cost (the dressed head's mean <Z_i>) and a global "
        "one (the parity Z x Z x ... x Z), beside the exponential decay in the width theory predicts for "
        "the global cost.",
    )
    p.add_argument(
        "--qubits",
        type=int,
        nargs="+",
        metavar="N",
        default=[2, 4, 8, 16, 32, 64],
        help=f"widths to scan, 2 .. {MAX_QUBITS}",
    )
    p.add_argument(
        "--depths",
        type=int,
        nargs="+",
        metavar="L",
        default=[1, 2, 4],
        help=f"depths to scan, 1 .. {MAX_DEPTH}",
    )
    p.add_argument(
        "--samples", type=int, metavar="N", default=24, help="random initialisations per (width, depth)"
    )
    p.add_argument("--seed", type=int, metavar="N", default=0, help="seed of the initialisations")
    p.add_argument("--output", "-o", default="plateau.png", metavar="FILE", help="the figure (png, svg, pdf)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the scan as JSON")

    p = command(
        "data",
        "download (if needed) and verify a dataset",
        "Find the dataset (--path: a folder, a zip or a named dataset; else $QTL_DATA_DIR or the default "
        "location, where hymenoptera is downloaded if missing), arrange it (safe extraction, train/val "
        "split), and decode every image, listing the classes, counts per split, skipped and unreadable "
        "files.",
    )
    _add_data_arg(p, "--path")
    p.add_argument("--no-download", action="store_true", help="only verify; never touch the network")

    from qtl.cli.hardware import add_parser as add_hardware

    add_hardware(command, lambda q: _add_data_arg(q, default=RECORDED_DATA_ONE), _add_db_arg)
    parser.commands = sub.choices  # name -> its parser, whose get_default() gives an option's default
    return parser
