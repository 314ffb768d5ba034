"""Export a checkpoint as one portable graph: ONNX or TorchScript, preprocessing and classes inside.

    export_model("models/quantum-....pt", "quantum.onnx")          # format from the suffix, or fmt=
    read_metadata("quantum.onnx")["class_names"]                     # ['ants', 'bees']

The graph is the whole classifier with its circuit folded into constants (`qtl.deploy.portable`):

    input   "images"         (B, 3, crop, crop) float32, RGB scaled to [0, 1], then (x - mean) / std
    output  "probabilities"  (B, C) float32, softmax over the classes in `class_names` order

Its metadata (ONNX: `metadata_props["qtl"]`; TorchScript: the extra file "qtl.json") is one JSON
document (`METADATA_KEY`): the variant, backbone, class names, the preprocessing (resize the short side
to `resize` with `interpolation`, centre-crop `crop`, mean, std), the circuit and noise, and the
checkpoint's recorded accuracy. Running an ONNX file needs only onnxruntime, numpy and Pillow
(`qtl.deploy.standalone`); a TorchScript file needs only torch.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from qtl.analysis.inference import eval_params
from qtl.deploy.portable import PortableClassifier
from qtl.models.checkpoint import LoadedModel, load_checkpoint
from qtl.utils.atomic import atomic_write

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
FORMAT = "qtl-export"
FORMAT_VERSION = 1
METADATA_KEY = "qtl"
TORCHSCRIPT_EXTRA = "qtl.json"
INPUT, OUTPUT = "images", "probabilities"
PREPROCESSING = (
    "resize the short side to `resize` pixels (`interpolation`), centre-crop `crop` x `crop`, RGB scaled "
    "to [0, 1], subtract `mean` and divide by `std` per channel; NCHW float32"
)


@contextmanager
def quiet_jit() -> Iterator[None]:
    """TorchScript calls without torch's FutureWarning that TorchScript is deprecated (it still works; the
    warning tells a user of `qtl export` nothing they can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
        yield


def export_metadata(loaded: LoadedModel) -> dict:
    """The JSON document stored in an exported file (see the module docstring)."""
    import qtl

    c = loaded.model_config
    params = eval_params(loaded)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "qtl_version": qtl.__version__,
        "name": loaded.name,
        "variant": c.variant,
        "backbone": c.backbone,
        "weights": loaded.backbone_weights,
        "class_names": list(loaded.class_names),
        "input": {"name": INPUT, "shape": ["batch", 3, params["crop"], params["crop"]], "dtype": "float32"},
        "output": {"name": OUTPUT, "shape": ["batch", len(loaded.class_names)], "dtype": "float32"},
        "preprocessing": {**params, "mean": list(params["mean"]), "std": list(params["std"])},
        "preprocessing_steps": PREPROCESSING,
        "circuit": c.circuit.to_dict() if c.is_quantum else None,
        "noise": c.noise.to_dict() if c.is_quantum and not c.noise.is_ideal else None,
        "val_acc": loaded.metrics.get("val_acc"),
    }


def _example(metadata: dict) -> torch.Tensor:
    """A (2, 3, crop, crop) input to trace with (2, not 1: the batch stays a dimension of the graph)."""
    _, channels, height, width = metadata["input"]["shape"]
    return torch.zeros(2, channels, height, width)


def _onnx_bytes(model: torch.nn.Module, metadata: dict) -> bytes:
    """The serialised ONNX model, dynamic in the batch, with the metadata as `metadata_props`."""
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (_example(metadata),),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.doc_string = f"qtl {metadata['variant']} classifier {metadata['name']}: {PREPROCESSING}"
    return proto.SerializeToString()


def _torchscript_bytes(model: torch.nn.Module, metadata: dict) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad(), quiet_jit():
        traced = torch.jit.trace(model, (_example(metadata),), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)})
    return buffer.getvalue()


def export_format(path: str | Path, fmt: str | None = None) -> str:
    """The format an export to `path` takes: `fmt` where given, else by the suffix (".onnx", any case, is
    ONNX, anything else TorchScript; an existing folder gets ONNX)."""
    path = Path(path)
    return fmt or ("onnx" if path.is_dir() or path.suffix.lower() == ".onnx" else "torchscript")


def export_model(
    checkpoint: str | Path | LoadedModel, path: str | Path, fmt: str | None = None
) -> tuple[Path, dict]:
    """Write `checkpoint` (a file or a loaded model) to `path` as ONNX or TorchScript (`fmt`, else the
    suffix: ".onnx" is ONNX, anything else TorchScript); returns (path written, metadata). The file
    appears whole or not at all.

    An existing folder as `path` gets the file inside it, named as the checkpoint with the format's
    suffix (`fmt`, else ONNX): export_model("models/q.pt", "out/") writes out/q.onnx. A previous export
    is overwritten; the checkpoint itself, or any other qtl checkpoint, never is (ValueError).

    Raises `qtl.deploy.portable.ExportRefused` (a ValueError) with the reason when the model cannot be
    exported exactly (shot sampling, MPS truncation, a circuit too wide to fold), CheckpointError for a
    bad checkpoint, ValueError for an unknown format or an output that would overwrite a checkpoint;
    each checked before the model is traced.
    """
    path = Path(path)
    source = checkpoint.path if isinstance(checkpoint, LoadedModel) else Path(checkpoint)
    fmt = export_format(path, fmt)
    if path.is_dir():
        name = source.stem if source is not None else checkpoint.name
        path = path / f"{name}{SUFFIXES.get(fmt, '')}"
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    _check_output(path, source)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    model = PortableClassifier(loaded)
    metadata = export_metadata(loaded)
    data = _onnx_bytes(model, metadata) if fmt == "onnx" else _torchscript_bytes(model, metadata)
    with atomic_write(path) as f:
        f.write(data)
    return path, metadata


def _check_output(path: Path, source: Path | None) -> None:
    """ValueError (one line) when `path` is a folder, or writing it would destroy the checkpoint
    `source` or another qtl checkpoint."""
    from qtl.models.checkpoint import CheckpointError, file_kind, read_checkpoint_info

    if path.is_dir():
        raise ValueError(f"the output {path} is a folder: name a file, or a folder without one of that name")
    if not path.is_file():
        return
    if source is not None and source.exists() and path.samefile(source):
        raise ValueError(
            f"the output {path} is the checkpoint being exported: name another file (-o), or leave -o "
            "out for the checkpoint's name with the format's suffix"
        )
    if file_kind(path) == "torch":
        try:
            read_checkpoint_info(path)
        except CheckpointError:
            return  # a torch file, but no qtl checkpoint
        raise ValueError(
            f"{path} is a qtl checkpoint: an export never overwrites one, name another file (-o)"
        )
