"""One safe checkpoint format for every variant.

A checkpoint is a `torch.save`d dict of plain values and tensors only, so it loads with
`torch.load(weights_only=True)`, which never executes code from the file:

    format          "qtl-checkpoint"
    format_version  FORMAT_VERSION
    model_config    ModelConfig.to_dict(): variant, backbone, pretrained, class names, circuit, engine...
    train_config    TrainConfig.to_dict() (the recipe) or None; never how a machine ran it (device, data
                    folder, cache, workers, threads: `MachineConfig`). Files written before that split
                    also hold those keys; `TrainConfig.from_dict` drops them.
    scope           "head": frozen variants store only the head's weights (kilobytes), the backbone is
                    rebuilt on load from (backbone, weights id); "full": backbone and head
    state_dict      the stored weights (no engine internals: any engine can run any checkpoint)
    backbone        {"name", "weights", "fingerprint"}: the fingerprint proves a rebuilt backbone matches
    history         one dict per epoch; metrics: the saved epoch's row
    meta            {"versions": {qtl, torch, torchvision, pennylane}, "created": ISO time, "parameters",
                     "dataset": qtl.data.datasets.PreparedDataset.record() of the training data, if known:
                     its folder by name or relative to the data folder, never an absolute path,
                     "training": {"epochs_done", "epochs", "stopped"}, what `fit` wrote it at: epochs
                     trained of those planned, and why it stopped early (STOP_REASONS; None: finished)}

A checkpoint `fit` writes says whether its run finished (`stopped_early`, `stop_note`): one cancelled,
interrupted or killed partway keeps its best epoch so far, told apart from a finished run's. Of a file
without `meta["training"]` (written before qtl kept it, or by `save_checkpoint` without `training=`)
nothing is claimed.

Files are written atomically (temporary file in the same folder, then os.replace).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import weakref
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import qtl
from qtl.config import ModelConfig, TrainConfig
from qtl.models.backbones import transform_params, weights_id
from qtl.models.backbones.common import check_params
from qtl.models.heads import count_parameters
from qtl.models.variants import Classifier, build_head, build_model
from qtl.paths import models_dir
from qtl.quantum.noise import NoiseConfig
from qtl.utils.atomic import atomic_save
from qtl.utils.devices import resolve_device

log = logging.getLogger(__name__)

FORMAT = "qtl-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".pt"
ZIP_MAGIC = b"PK\x03\x04"  # how a zip, torch.save's format since torch 1.6, starts


class CheckpointError(ValueError):
    """A file is not a usable qtl checkpoint; the message says why and what to do."""


def checkpoint_name(model_config: ModelConfig, seed: int | None = None, stamp: str | None = None) -> str:
    """A file name that says what is inside, e.g. "quantum-resnet18-random-q4d6-s0-20261125-120000.pt":
    <variant>-<backbone>-<imagenet|random>[-q<qubits>d<depth>[-reupload][-<engine>][-noisy] | -w<width>]
    [-f<feature_dim>][-s<seed>]-<stamp>.pt,
    the stamp defaulting to the current time (to the microsecond, so names do not collide)."""
    c = model_config
    parts = [c.variant, c.backbone, "imagenet" if c.pretrained else "random"]
    if c.is_quantum:
        parts.append(f"q{c.circuit.n_qubits}d{c.circuit.depth}" + ("-reupload" if c.circuit.reupload else ""))
        if c.engine != "native":
            parts.append(re.sub(r"[^a-z0-9]+", "", c.engine))
        if not c.noise.is_ideal:
            parts.append("noisy")
    elif c.variant == "dressed-classical":
        parts.append(f"w{c.circuit.n_qubits}")
    if c.feature_dim is not None:
        parts.append(f"f{c.feature_dim}")
    if seed is not None:
        parts.append(f"s{seed}")
    parts.append(stamp or datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
    return "-".join(parts) + SUFFIX


def default_checkpoint_path(
    model_config: ModelConfig, directory: str | Path | None = None, *, seed: int | None = None
) -> Path:
    """A new `checkpoint_name` in `directory` (default: the store, `models_dir()`)."""
    return Path(directory or models_dir()) / checkpoint_name(model_config, seed)


def library_versions() -> dict[str, str]:
    """Versions of qtl, torch, torchvision and pennylane, for the checkpoint's metadata."""
    try:
        pennylane = version("pennylane")
    except Exception:
        pennylane = "unknown"
    return {
        "qtl": qtl.__version__,
        "torch": str(torch.__version__),  # TorchVersion would need an unsafe global to unpickle
        "torchvision": str(torchvision.__version__),
        "pennylane": pennylane,
    }


def backbone_fingerprint(backbone: nn.Module) -> str:
    """A short SHA-256 over the backbone's weights, to check that a rebuilt backbone is the same one."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        if t.is_floating_point():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _stored_state(model: Classifier, scope: str) -> dict[str, torch.Tensor]:
    """The weights a checkpoint keeps: the head's (scope "head") or everything's, minus engine internals."""
    source = model.head if scope == "head" else model
    return {k: v.detach().cpu().clone() for k, v in _weights(source).items()}


def save_checkpoint(
    path: str | Path,
    model: Classifier,
    model_config: ModelConfig,
    *,
    history: list[dict] | tuple = (),
    metrics: dict | None = None,
    train_config: TrainConfig | None = None,
    fingerprint: str | None = None,
    dataset: dict | None = None,
    training: dict | None = None,
) -> Path:
    """Write `model` to `path` atomically and return the path. Frozen variants store only their head.

    fingerprint: `backbone_fingerprint(model.backbone)` when the caller already has it (fit() saves
    many times over one frozen backbone); computed here otherwise. Only head-only checkpoints use it.
    dataset: where the training data came from and how it was split (`PreparedDataset.record()`: no
        absolute path; `qtl.data.datasets.recorded_root` finds the folder again).
    training: `training_record(epochs_done, epochs, stopped)`: how far the run that wrote it got (`fit`
        passes it at every save); None records nothing (`stopped_early` then claims nothing).
    numpy scalars and zero-dimensional tensors in metrics, history and dataset are written as Python
    numbers.
    Raises ValueError, before writing anything, for what `load_checkpoint` would refuse: a model that is
    not the one `model_config` builds (another variant, head or width), metrics that are not numbers, or
    values other than plain ones (str, numbers, bool, None, lists, dicts, tensors).
    """
    path = Path(path)
    scope = "head" if model_config.frozen else "full"
    history, metrics = _plain(list(history)), _plain(dict(metrics or {}))
    dataset = _plain(dict(dataset)) if dataset else None
    _check_saving(path, model, model_config, history, metrics, dataset)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict() if train_config is not None else None,
        "scope": scope,
        "state_dict": _stored_state(model, scope),
        "backbone": {
            "name": model_config.backbone,
            "weights": weights_id(model_config.backbone, model_config.pretrained),
            "fingerprint": (fingerprint or backbone_fingerprint(model.backbone)) if scope == "head" else None,
            "transform": transform_params(model_config.backbone, model_config.pretrained),
        },
        "history": [dict(row) for row in history],
        "metrics": metrics,
        "meta": {
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parameters": count_parameters(model.head),
            **({"dataset": dataset} if dataset else {}),
            **({"training": training_record(**training)} if training is not None else {}),
        },
    }
    atomic_save(payload, path)
    return path


STOP_REASONS = {
    "cancelled": "cancelled",  # a stop request (Cancel, a sweep's Ctrl-C), or a callback's `Cancelled`
    "interrupted": "interrupted",  # Ctrl-C (KeyboardInterrupt) in the training process; Ray's cancel too
    "diverged": "its loss diverged",
    "failed": "training failed",  # any other error in an epoch
    "unfinished": "still training, or its process was killed",  # saved at an improvement, not at the end
}
"""Why a run stopped early, as `meta["training"]["stopped"]` records it -> the words listings use."""
AGAIN = "train it again with the same settings to finish it"
NEXT_STEPS = {
    "diverged": "train it again with a lower learning rate",
    "unfinished": f"unless a run is still writing it, {AGAIN}",
}
"""What to do about a run that stopped early, by its reason (else AGAIN): the load warning's last words."""


def training_record(epochs_done: int, epochs: int, stopped: str | None = None) -> dict:
    """`meta["training"]`: epochs trained of those planned, and why fewer (a STOP_REASONS key; None where
    the run trained them all: a stop after its last epoch is no early stop)."""
    if stopped is not None and stopped not in STOP_REASONS:
        raise ValueError(f"unknown stop reason {stopped!r}; one of {', '.join(STOP_REASONS)}")
    epochs_done, epochs = int(epochs_done), int(epochs)
    return {
        "epochs_done": epochs_done,
        "epochs": epochs,
        "stopped": stopped if stopped is not None and epochs_done < epochs else None,
    }


def stopped_early(meta: dict | None) -> dict | None:
    """{"epochs_done", "epochs", "stopped"} of a checkpoint whose run stopped before its last epoch, from
    `meta["training"]` (which `fit` records at every save), else None: a finished run, or a file written
    without that record (before qtl kept it, or by `save_checkpoint` without `training=`), of which
    nothing is claimed (its history may end at its best epoch: older files kept no more)."""
    record = meta.get("training") if isinstance(meta, dict) else None
    if isinstance(record, dict):
        done, planned, why = record.get("epochs_done"), record.get("epochs"), record.get("stopped")
        if type(done) is int and type(planned) is int and why is not None:
            return {"epochs_done": done, "epochs": planned, "stopped": str(why)}
    return None


def stop_note(stopped: dict | None) -> str | None:
    """A few words for an early-stopped run (`stopped_early`), e.g. "stopped early: 3 of 30 epochs
    (cancelled)", "unfinished: at least 3 of 30 epochs (still training, or its process was killed)": a
    save at an improvement counts the epochs up to it; None for a finished one."""
    if not stopped:
        return None
    why = stopped.get("stopped")
    head = "unfinished: at least" if why == "unfinished" else "stopped early:"
    reason = f" ({STOP_REASONS.get(why, why)})" if why else ""
    return f"{head} {stopped['epochs_done']} of {stopped['epochs']} epochs{reason}"


class _HowFar:
    """How far the run that wrote a checkpoint got, from its `meta` (`stopped_early`, `stop_note`)."""

    meta: dict

    @property
    def stopped(self) -> dict | None:
        """`stopped_early`: the run stopped before its last epoch (None: finished, or not recorded)."""
        return stopped_early(self.meta)

    @property
    def stop_note(self) -> str | None:
        """ "stopped early: 3 of 30 epochs (cancelled)" and the like (`stop_note`), None when finished."""
        return stop_note(self.stopped)


def _plain(value):
    """`value` with numpy scalars and zero-dimensional tensors as Python numbers, inside dicts, lists and
    tuples too (torch's safe loader refuses numpy objects, and metrics must be numbers)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic) or isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


_PLAIN = (str, int, float, bool, type(None))


def _unplain(value, where: str) -> str | None:
    """Where in `value` something other than plain values and tensors sits (what a checkpoint may hold,
    and torch's safe loader reads back), or None."""
    if isinstance(value, (dict, list, tuple)) and type(value) in (dict, list, tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            found = _unplain(k, where) if isinstance(value, dict) else None
            found = found or _unplain(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return None
    return f"{where} is a {type(value).__name__} ({value!r:.60})"


def _check_saving(
    path: Path, model: Classifier, mc: ModelConfig, history: list, metrics: dict, dataset: dict | None
) -> None:
    """ValueError for a checkpoint `load_checkpoint` would refuse: its checks, run before writing."""
    cannot = f"cannot save {path.name}"
    for value, where in ((history, "history"), (metrics, "metrics"), (dataset, "dataset")):
        if found := _unplain(value, where):
            raise ValueError(f"{cannot}: {found}, where a checkpoint holds plain values and tensors only")
    if problem := _metrics_problem(metrics):
        raise ValueError(f"{cannot}: {problem}")
    if model.frozen != mc.frozen:
        has, wants = ("frozen", "trainable") if model.frozen else ("trainable", "frozen")
        raise ValueError(f"{cannot}: the model's backbone is {has}, a {mc.variant} model's is {wants}")
    with torch.random.fork_rng(devices=[]):  # a fresh head only for its weights' names and shapes
        expected = _weights(build_head(mc, model.in_features))
    if problem := _weights_problem(_weights(model.head), expected):
        raise ValueError(f"{cannot}: the model is not the {mc.variant} model its config describes: {problem}")


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stores of `module`: its state_dict without engine internals."""
    return {k: v for k, v in module.state_dict().items() if ".engine." not in f".{k}"}


def _weights_problem(stored: dict, expected: dict) -> str | None:
    """How `stored` weights differ from the `expected` ones of the model they are for (names, then
    shapes), or None."""
    if set(stored) != set(expected):
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        return f"missing {missing[:3]}, unexpected {extra[:3]}"
    for k, v in stored.items():
        if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            return f"weight {k} has shape {shape}, the model expects {tuple(expected[k].shape)}"
    return None


def _read(path: str | Path, *, mmap: bool = False) -> dict:
    """Load and validate the raw payload with weights_only=True; CheckpointError on anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    _sniff(path)
    try:  # torch maps only its zip format: older files (raw pickles, _use_new_zipfile_serialization=False)
        with path.open("rb") as f:  # are read whole, still weights_only
            zipped = f.read(4) == ZIP_MAGIC
    except OSError:
        zipped = True  # as `_sniff`, left to torch.load to read, or to say why not
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as exc:  # torch's safe loader refused an object in the file
        raise CheckpointError(_refused(path.name, str(exc))) from None
    except Exception as exc:  # a damaged zip, a truncated file, text, another program's data ...
        said = str(exc).strip().splitlines()[0] if isinstance(exc, (RuntimeError, OSError)) else ""
        raise CheckpointError(
            f"{path.name} is not a readable qtl checkpoint (damaged, or not a checkpoint): "
            f"{said or type(exc).__name__}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a qtl checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path.name} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} uses checkpoint format {version}, newer than this qtl reads "
            f"({FORMAT_VERSION}); upgrade qtl"
        )
    for key, kind in (("model_config", dict), ("state_dict", dict), ("backbone", dict), ("history", list)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path.name} is damaged: '{key}' is missing or not a {kind.__name__}")
    if payload.get("scope") not in ("head", "full"):
        raise CheckpointError(f"{path.name} is damaged: unknown weights scope {payload.get('scope')!r}")
    _check_classes(payload["model_config"].get("class_names"), path.name)
    _check_metrics(payload.get("metrics"), path.name)
    return payload


def _check_classes(names: object, filename: str) -> None:
    """CheckpointError unless the recorded class names are distinct, non-empty strings (one output
    each: two of one name would print, answer as JSON and serve as one class)."""
    if names is None:
        return  # ModelConfig.from_dict says what a config without them means
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) and c.strip() for c in names):
        raise CheckpointError(f"{filename} is damaged: class names must be non-empty strings, got {names!r}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise CheckpointError(
            f"{filename} is damaged: class names must be distinct, {', '.join(map(repr, repeated))} repeats"
        )


def _check_metrics(metrics: object, filename: str) -> None:
    """CheckpointError unless the saved epoch's metrics are a dict of numbers (or None, a value not
    measured), val_acc a fraction: listings, the server and the app read them as numbers."""
    if problem := _metrics_problem(metrics):
        raise CheckpointError(f"{filename} is damaged: {problem}")


def _metrics_problem(metrics: object) -> str | None:
    """What is wrong with a checkpoint's metrics (`_check_metrics`), or None."""
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return f"'metrics' is a {type(metrics).__name__}, not a dict"
    for key, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"metric {key!r} is {value!r}, not a number"
    acc = metrics.get("val_acc")
    if acc is not None and not 0 <= acc <= 1:  # NaN too
        return f"val_acc {acc!r} is not a fraction between 0 and 1"
    return None


def file_kind(path: Path) -> str:
    """What a file is by its first bytes: "torchscript" (a TorchScript archive, as `qtl export` writes),
    "onnx" (an ONNX model: its protobuf opens with ir_version, then producer_name), "torch" (a zip or a
    pickle, what torch.save writes), "damaged" (a zip's start without a readable zip: a truncated
    checkpoint or TorchScript file), "unreadable", or "other"."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
        if head == ZIP_MAGIC:  # a zip: torch's format, or a TorchScript archive
            with zipfile.ZipFile(path) as zf:
                return "torchscript" if any(n.endswith("/constants.pkl") for n in zf.namelist()) else "torch"
    except zipfile.BadZipFile:
        return "damaged"  # its end, the zip's directory, is missing or broken
    except OSError:
        return "unreadable"
    if len(head) > 2 and head[0] == 0x08 and head[1] < 0x80 and head[2] == 0x12:  # fields 1 (varint) and 2
        return "onnx"
    return "torch" if head[:1] == b"\x80" else "other"  # pickle protocols 2+ start so


QTL_CHECKPOINT = "a qtl checkpoint"
FILE_KINDS = {  # file_kind -> what every message calls such a file
    "torch": "a torch file or zip archive (no readable qtl checkpoint)",
    "damaged": "a damaged or truncated zip archive (as a copy or download cut short leaves)",
    "onnx": "an ONNX file",
    "torchscript": "a TorchScript file",
}


def describe_file(path: Path, kind: str | None = None) -> str | None:
    """What a model file is, in the one wording `qtl export`, `--runtime` and the commands that write no
    report over a model all use: `QTL_CHECKPOINT` for a checkpoint this qtl reads, else `FILE_KINDS` of
    its `file_kind`; None for any other file, or one that cannot be opened. kind: `file_kind(path)`,
    where the caller has it already."""
    kind = kind or file_kind(path)
    if kind == "torch":
        try:
            read_checkpoint_info(path)
        except Exception:  # newer, damaged, another program's: CheckpointError, or a hand-made file's own
            return FILE_KINDS["torch"]
        return QTL_CHECKPOINT
    return FILE_KINDS.get(kind)


def _sniff(path: Path) -> None:
    """CheckpointError for a file that is plainly no checkpoint (`file_kind`), before torch reads it:
    text, an image, an ONNX file, a TorchScript archive (which the safe loader cannot read), or a zip cut
    short (torch would say "[Errno 22] Invalid argument" or speak of miniz). An unreadable file is left
    to torch.load to say why."""
    exported = "(what `qtl export` writes), not a checkpoint: load the .pt checkpoint it was exported from"
    kind = file_kind(path)
    if kind == "damaged":
        raise CheckpointError(
            f"{path.name} is not a readable qtl checkpoint: it is {FILE_KINDS[kind]}; copy it again, "
            "or retrain"
        )
    if kind == "other" and path.suffix.lower() == ".onnx":
        kind = "onnx"  # named so, though its first bytes are no ONNX model's: onnxruntime says why
    if kind in ("onnx", "torchscript"):
        raise CheckpointError(
            f"{path.name} is {FILE_KINDS[kind]} {exported} (`qtl predict --runtime {kind}` runs it)"
        )
    if kind == "other":
        raise CheckpointError(f"{path.name} is not a qtl checkpoint (nor any file torch.save writes)")


def _refused(name: str, reason: str) -> str:
    """Why the safe loader refused a file, without torch's advice to load it unsafely instead."""
    found = re.search(r"GLOBAL ([\w.]+)", reason)
    what = f" ({found.group(1)})" if found else ""
    return (
        f"{name} is not a qtl checkpoint, or is unsafe: it holds Python objects{what} where a qtl checkpoint "
        "holds only plain values and tensors. qtl never executes code from a file, so it does not load it"
    )


def _model_config(payload: dict, name: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(payload["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{name}: {exc}") from None


@dataclass
class CheckpointInfo(_HowFar):
    """A checkpoint's metadata, read without building its model."""

    path: Path
    variant: str
    backbone: str
    weights: str  # "IMAGENET1K_V1" or "random"
    class_names: list[str]
    n_qubits: int | None  # None for non-quantum variants
    depth: int | None
    val_acc: float | None  # of the saved (best) epoch
    best_epoch: int | None
    epochs: int  # epochs recorded in the history
    created: str  # ISO time (UTC)
    size_bytes: int
    model_config: ModelConfig
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    train_config: dict | None = None  # the recipe (`TrainConfig.to_dict()`), None where none was saved


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Metadata of a checkpoint (validated as in `load_checkpoint`, but no model is built)."""
    path = Path(path)
    payload = _read(path, mmap=True)
    mc = _model_config(payload, path.name)
    metrics = payload.get("metrics") or {}
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}  # `_read` does not check it
    return CheckpointInfo(
        path=path,
        variant=mc.variant,
        backbone=mc.backbone,
        weights=str(payload["backbone"].get("weights")),
        class_names=list(mc.class_names),
        n_qubits=mc.circuit.n_qubits if mc.is_quantum else None,
        depth=mc.circuit.depth if mc.is_quantum else None,
        val_acc=metrics.get("val_acc"),
        best_epoch=metrics.get("epoch"),
        epochs=len(payload["history"]),
        created=str(meta.get("created", "")),
        size_bytes=path.stat().st_size,
        model_config=mc,
        history=payload["history"],
        metrics=metrics,
        meta=meta,
        train_config=payload.get("train_config"),
    )


def earlier_best(path: str | Path, mc: ModelConfig, tc: TrainConfig, dataset: dict | None) -> dict | None:
    """The saved (best) epoch's metrics of the checkpoint at `path` where an earlier run of these same
    settings wrote it: the model (class names included), the recipe and the data (`dataset`, the
    `PreparedDataset.record()` `fit` stores; None for given features); finished or stopped early. None
    where there is no file, or it holds another run's (or is unreadable, or predates the recipe's
    record): `fit` overwrites such a file from its first epoch, as before."""
    if not Path(path).is_file():
        return None
    try:
        info = read_checkpoint_info(path)
        stored_tc = TrainConfig.from_dict(info.train_config) if info.train_config is not None else None
    except (CheckpointError, TypeError, ValueError):
        return None
    same = (
        stored_tc is not None
        and stored_tc.to_dict() == tc.to_dict()
        and info.model_config.to_dict() == mc.to_dict()
        and info.meta.get("dataset") == (_plain(dict(dataset)) if dataset else None)
    )
    metrics = info.metrics
    return dict(metrics) if same and "val_acc" in metrics and "val_loss" in metrics else None


@dataclass
class LoadedModel(_HowFar):
    """A checkpoint rebuilt into a model, in eval mode, plus everything it recorded."""

    model: Classifier
    model_config: ModelConfig
    class_names: list[str]
    history: list[dict]
    metrics: dict
    meta: dict
    path: Path | None = None
    train_config: dict | None = None
    backbone_weights: str = ""  # "IMAGENET1K_V1" or "random"
    transform: dict | None = None  # the eval preprocessing it was trained with (None: older checkpoints)

    @property
    def variant(self) -> str:
        return self.model_config.variant

    @property
    def name(self) -> str:
        """A short label: the file name without suffix, else the variant."""
        return self.path.stem if self.path is not None else self.variant


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    engine: str | None = None,
    noise: NoiseConfig | None = None,
) -> LoadedModel:
    """Rebuild a checkpoint's model (backbone by name and weights id, then the stored weights).

    Head-only (frozen-variant) checkpoints run on the process's one shared backbone of their name and
    weights (`qtl.models.backbones.shared_backbone`): N of them loaded hold one copy of its weights.

    device: where to run it: "cpu", "cuda", "cuda:N", "auto" (CUDA when present) or a torch.device;
        ValueError, in one line, for one this machine does not have (`qtl.utils.devices.resolve_device`).
    engine: run a quantum checkpoint on another engine ("native" or a PennyLane device name).
    noise: run it under other noise than it recorded (`NoiseConfig()`: ideal).
    Raises CheckpointError (wrong or corrupt file, unknown variant, mismatched shapes, newer format, a
    rebuilt backbone that differs from the trained one) or backbones.WeightsUnavailableError (the
    ImageNet weights it needs are not cached; the message names the file to fetch).
    A checkpoint of a run that stopped early loads as any other, with a one-line warning on this module's
    logger (the CLI prints it) naming how far it got (`LoadedModel.stop_note`).
    """

    path = Path(path)
    device = resolve_device(device)
    payload = _read(path)
    mc = _model_config(payload, path.name)
    if engine is not None:
        mc = ModelConfig.from_dict({**mc.to_dict(), "engine": engine})
    if noise is not None:
        mc = replace(mc, noise=noise)
    scope = payload["scope"]
    if (scope == "head") != mc.frozen:
        raise CheckpointError(f"{path.name} is damaged: scope {scope!r} does not fit variant {mc.variant!r}")

    # head-only: onto the process's one shared backbone (N checkpoints on one backbone hold one copy);
    # a fully stored model needs no ImageNet weights: its state_dict replaces them all
    if scope == "head":
        from qtl.models.backbones import shared_backbone

        backbone, build_config = shared_backbone(mc.backbone, mc.pretrained, device=device), mc
    else:
        backbone, build_config = None, ModelConfig.from_dict({**mc.to_dict(), "pretrained": False})
    with torch.random.fork_rng(devices=[]):
        model = build_model(build_config, backbone=backbone)
    target = model.head if scope == "head" else model
    stored = payload["state_dict"]
    if problem := _weights_problem(stored, _weights(target)):
        raise CheckpointError(f"{path.name} does not match its {mc.variant} model: {problem}")
    target.load_state_dict(stored, strict=False)

    fingerprint = payload["backbone"].get("fingerprint")
    if scope == "head" and fingerprint and _shared_fingerprint(model.backbone) != fingerprint:
        raise CheckpointError(
            f"{path.name} was trained on different {mc.backbone} ({payload['backbone'].get('weights')}) "
            "weights than the ones available here; retrain it, or restore the original weights file"
        )
    model.to(device).eval()
    stopped = stopped_early(payload.get("meta"))
    if stopped:
        next_step = NEXT_STEPS.get(stopped.get("stopped"), AGAIN)
        log.warning("%s: %s; it holds the best of those epochs: %s", path.name, stop_note(stopped), next_step)
    return LoadedModel(
        model=model,
        model_config=mc,
        class_names=list(mc.class_names),
        history=payload["history"],
        metrics=payload.get("metrics") or {},
        meta=payload.get("meta") or {},
        path=path,
        train_config=payload.get("train_config"),
        backbone_weights=str(payload["backbone"].get("weights")),
        transform=_transform(payload, path.name),
    )


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # shared backbone -> fingerprint


def _shared_fingerprint(backbone: nn.Module) -> str:
    """`backbone_fingerprint` of a shared backbone, hashed once: it never changes."""
    if backbone not in _FINGERPRINTS:
        _FINGERPRINTS[backbone] = backbone_fingerprint(backbone)
    return _FINGERPRINTS[backbone]


def _transform(payload: dict, filename: str) -> dict | None:
    """The recorded eval preprocessing, checked; None when the checkpoint predates recording it."""
    recorded = payload["backbone"].get("transform")
    if recorded is None:
        return None
    try:
        return check_params(recorded)
    except ValueError as exc:
        raise CheckpointError(f"{filename} is damaged: {exc}") from None
