"""Export a checkpoint as one portable graph: ONNX or TorchScript, preprocessing and classes inside.

    export_model("models/quantum-....pt", "quantum.onnx")          # format from the suffix, or fmt=
    read_metadata("quantum.onnx")["class_names"]                     # ['ants', 'bees']

The graph is the whole classifier with its circuit folded into constants (`qtl.deploy.portable`):

    input   "images"         (B, 3, crop, crop) float32, RGB scaled to [0, 1], then (x - mean) / std
    output  "probabilities"  (B, C) float32, softmax over the classes in `class_names` order

Its metadata (ONNX: `metadata_props["qtl"]`; TorchScript: the extra file "qtl.json") is one JSON
document (`METADATA_KEY`): the variant, backbone, class names, the preprocessing (resize the short side
to `resize` with `interpolation`, centre-crop `crop`, mean, std), the circuit and noise, the
checkpoint's recorded accuracy, and the checkpoint it came from (`source`: file name and SHA-256), so
that an export replaces only an earlier export of its own checkpoint. Running an ONNX file needs only
onnxruntime, numpy and Pillow (`qtl.deploy.standalone`); a TorchScript file needs only torch.
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
from qtl.utils.atomic import atomic_write, check_folder
from qtl.utils.download import sha256_file

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
SUFFIX_FORMATS = {".onnx": "onnx", ".torchscript": "torchscript", ".ts": "torchscript"}
"""The suffixes that choose a format by themselves (`export_format`)."""
CHECKPOINT_SUFFIXES = (".pt", ".pth")
"""qtl's checkpoint suffixes, which an export's default name drops (`default_output`)."""
FORMAT = "qtl-export"
FORMAT_VERSION = 1
METADATA_KEY = "qtl"
TORCHSCRIPT_EXTRA = "qtl.json"
INPUT, OUTPUT = "images", "probabilities"
LABELS = {"onnx": "ONNX", "torchscript": "TorchScript"}
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


def source_record(loaded: LoadedModel) -> dict:
    """What an export records of the checkpoint it came from: {"file": its file name, "sha256": of its
    bytes}, each None for a model without a file (built in memory, or its file gone since). The digest
    tells two checkpoints of one name apart (a/q.pt, b/q.pt), and one checkpoint renamed for itself."""
    path = loaded.path
    if path is None or not Path(path).is_file():
        return {"file": None, "sha256": None}
    return {"file": Path(path).name, "sha256": sha256_file(Path(path))}


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
        "source": source_record(loaded),
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
    """The format an export to `path` takes: `fmt` where given, else by the suffix (any case): ".onnx" is
    ONNX, ".torchscript" or ".ts" TorchScript; an existing folder gets ONNX. ValueError (one line) for any
    other suffix without `fmt`: ".pt" and ".pth" name qtl's checkpoints (a TorchScript file under .pt is
    written only when asked for by `fmt`), and an unknown one (".jpg", none) is more likely a slip than a
    wish for TorchScript. (A `fmt` that one of those suffixes contradicts is refused by `check_suffix`.)"""
    path = Path(path)
    if fmt:
        return fmt
    if path.is_dir():
        return "onnx"
    suffix = path.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path.name}: {suffix} is the suffix of qtl checkpoints, and an exported file there is no "
            "checkpoint; name it .torchscript or .onnx, or give the format (--format torchscript) to write "
            f"TorchScript under {suffix} anyway"
        )
    said = f"the suffix {suffix}" if suffix else "no suffix"
    raise ValueError(
        f"{path.name} has {said}, which names no export format: name it .onnx or .torchscript, or give the "
        "format (--format onnx|torchscript)"
    )


def check_suffix(path: Path, fmt: str) -> None:
    """ValueError (one line) where `path`'s suffix names another format than `fmt`: TorchScript under
    .onnx is no ONNX file, whatever its name says, and every reader that goes by the suffix (`qtl predict
    --runtime`'s default, onnxruntime users) would take it for one."""
    named = SUFFIX_FORMATS.get(path.suffix.lower())
    if named is None or named == fmt:
        return
    own = ".torchscript (or .ts)" if fmt == "torchscript" else SUFFIXES[fmt]
    raise ValueError(
        f"{path.name} names {'an' if named == 'onnx' else 'a'} {LABELS[named]} file by its suffix, but the "
        f"format asked for is {fmt}: name it {own}, or drop the format (--format) to write {LABELS[named]}"
    )


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """Where an export of `checkpoint` goes without a file named: beside it, its name with the format's
    suffix in place of .pt or .pth (models/q.pt -> models/q.onnx), any other name kept whole
    (model.v1 -> model.v1.onnx, never the model.onnx of model.v2 too)."""
    checkpoint = Path(checkpoint)
    name = checkpoint.stem if checkpoint.suffix.lower() in CHECKPOINT_SUFFIXES else checkpoint.name
    return checkpoint.with_name(name + SUFFIXES[fmt])


def export_path(checkpoint: str | Path | LoadedModel, path: str | Path, fmt: str | None = None):
    """(the file an export of `checkpoint` to `path` writes, its format): `path` itself, or for an
    existing folder the checkpoint's file inside it, named as `default_output` names it (a model without
    a file: its name). ValueError for an unknown format or suffix (`export_format`)."""
    path = Path(path)
    fmt = export_format(path, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if path.is_dir():
        source = checkpoint.path if isinstance(checkpoint, LoadedModel) else Path(checkpoint)
        name = default_output(source, fmt).name if source is not None else checkpoint.name + SUFFIXES[fmt]
        path = path / name
    return path, fmt


def export_model(
    checkpoint: str | Path | LoadedModel, path: str | Path, fmt: str | None = None
) -> tuple[Path, dict]:
    """Write `checkpoint` (a file or a loaded model) to `path` as ONNX or TorchScript (`fmt`, else the
    suffix: `export_format`); returns (path written, metadata). The file appears whole or not at all.

    An existing folder as `path` gets the file inside it (`export_path`): export_model("models/q.pt",
    "out/") writes out/q.onnx. An existing file is replaced only where it is an earlier qtl export of the
    same format from the same checkpoint (by the SHA-256 its metadata records; an export that records
    none, by name and variant), or empty; any other file (the checkpoint itself, another checkpoint, an
    image, the other format's export, another checkpoint's export) never is.

    Raises `qtl.deploy.portable.ExportRefused` (a ValueError) with the reason when the model cannot be
    exported exactly (shot sampling, MPS truncation, a circuit too wide to fold), CheckpointError for a
    bad checkpoint, ValueError for an unknown format, a suffix that names none or another, a folder that
    cannot take the file or an output it may not replace; each checked before the model is traced.
    """
    path, fmt = export_path(checkpoint, path, fmt)
    source = checkpoint.path if isinstance(checkpoint, LoadedModel) else Path(checkpoint)
    check_folder(path)
    _check_output(path, source, fmt)  # what an existing file is comes first: the reason to keep it
    check_suffix(path, fmt)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    metadata = export_metadata(loaded)
    _check_replaces(path, fmt, metadata)
    model = PortableClassifier(loaded)
    data = _onnx_bytes(model, metadata) if fmt == "onnx" else _torchscript_bytes(model, metadata)
    with atomic_write(path) as f:
        f.write(data)
    return path, metadata


def _check_output(path: Path, source: Path | None, fmt: str) -> None:
    """ValueError (one line) when `path` is a folder, or exists and is anything but an earlier qtl export
    of format `fmt` (or an empty file): the checkpoint `source`, another checkpoint, any other file.
    Whose export it is, `_check_replaces` says once the checkpoint is loaded."""
    from qtl.models.checkpoint import QTL_CHECKPOINT, describe_file, file_kind

    if path.is_dir():
        raise ValueError(f"the output {path} is a folder: name a file, or a folder without one of that name")
    if not path.exists() and not path.is_symlink():
        return
    if source is not None and source.exists() and path.exists() and path.samefile(source):
        raise ValueError(
            f"the output {path} is the checkpoint being exported: name another file (-o), or leave -o "
            "out for the checkpoint's name with the format's suffix"
        )
    if not path.is_file():
        raise ValueError(f"the output {path} exists and is no regular file: name another file (-o)")
    kind = file_kind(path)
    what = describe_file(path, kind)
    if what == QTL_CHECKPOINT:
        raise ValueError(f"{path} is {what}: an export never overwrites one, name another file (-o)")
    if path.stat().st_size == 0:
        return  # nothing to lose (a file made to receive the export, as mktemp does)
    what = what or "no qtl export"
    if kind == fmt:
        try:
            read_metadata(path)
        except ValueError:
            what = f"{what}, but no qtl export"
        else:
            return  # an earlier export of this format: replaced
    raise ValueError(
        f"{path} exists and is {what}: an export replaces only an earlier qtl {LABELS[fmt]} export, so name "
        "another file (-o) or remove it first"
    )


def _check_replaces(path: Path, fmt: str, metadata: dict) -> None:
    """ValueError (one line) where `path` holds a qtl export (of format `fmt`, as `_check_output` let
    through) of another checkpoint than the one whose export `metadata` describes (`same_source`)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    earlier = read_metadata(path)
    if same_source(earlier, metadata):
        return
    before, now = ((m.get("source") or {}).get("file") for m in (earlier, metadata))
    # retrained under its name (qtl train --out q.pt --overwrite), or another folder's q.pt: the export
    # may be the old model's last copy
    changed = f" ({now} has changed since, or is another {now})" if before and before == now else ""
    raise ValueError(
        f"{path} is a qtl {LABELS[fmt]} export of {_source_label(earlier)}, not of "
        f"{_source_label(metadata)}{changed}: an export replaces only an earlier export of its own "
        "checkpoint, so name another file (-o) or remove it first"
    )


def same_source(earlier: dict, metadata: dict) -> bool:
    """Whether two exports' metadata come from one checkpoint: their recorded SHA-256 (`source_record`)
    where both have one, else (an export from before qtl recorded it, or a model without a file) the
    same name and variant."""
    a, b = (m.get("source") or {} for m in (earlier, metadata))
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return (earlier.get("name"), earlier.get("variant")) == (metadata.get("name"), metadata.get("variant"))


def _source_label(metadata: dict) -> str:
    """The checkpoint an export came from, in a few words: "q.pt (sha256 1f2e3d4c5b6a)", else (no file
    recorded) "q (quantum)"."""
    source = metadata.get("source") or {}
    if source.get("file") and source.get("sha256"):
        return f"{source['file']} (sha256 {source['sha256'][:12]})"
    return f"{metadata.get('name')} ({metadata.get('variant')})"


def read_metadata(path: str | Path) -> dict:
    """The `qtl` metadata of an exported file, read from the file without running it (ONNX needs the
    `onnx` package, as exporting does); ValueError (one line, naming the file) when it is no file written
    by qtl export or its metadata is incomplete (`check_metadata`)."""
    from qtl.models.checkpoint import file_kind

    path = Path(path)
    kind = file_kind(path)
    if kind == "torchscript":
        import zipfile

        extra = f"/extra/{TORCHSCRIPT_EXTRA}"
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 2 and n.endswith(extra)]
                document = zf.read(names[0]).decode("utf-8", "replace") if names else None
        except (zipfile.BadZipFile, OSError) as exc:  # a member's data damaged (CRC, compression)
            raise ValueError(f"{path.name} is damaged: {exc}") from None
    elif kind == "onnx":
        import onnx

        try:
            proto = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and others: a damaged file
            raise ValueError(f"{path.name} is damaged or no ONNX model: {type(exc).__name__}") from None
        document = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    else:
        raise ValueError(f"{path.name} is not a file written by qtl export (neither ONNX nor TorchScript)")
    return check_metadata(path.name, document)


REQUIRED = {
    "variant": str,
    "class_names": list,
    "preprocessing": dict,
    "input": dict,
    "output": dict,
}
"""The metadata keys every reader of an export needs, and their types (`check_metadata`)."""


def check_metadata(name: str, document: str | None) -> dict:
    """The metadata JSON of the exported file `name`, parsed and checked: a qtl export's format and a
    version this qtl reads, the keys in `REQUIRED` of their types, at least two distinct non-empty class
    names, preprocessing `transform_from_params` takes, and the input and output names. ValueError, one
    line naming the file, for anything missing or wrong."""
    from qtl.models.backbones.common import check_params

    if not document:
        raise ValueError(f"{name} is not a file written by qtl export (no '{METADATA_KEY}' metadata)")
    try:
        metadata = json.loads(document)
    except ValueError as exc:
        raise ValueError(f"{name} has damaged '{METADATA_KEY}' metadata (not JSON: {exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ValueError(f"{name} is not a file written by qtl export (format {found!r})")
    version = metadata.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{name} has damaged '{METADATA_KEY}' metadata: format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{name} uses export format {version}, newer than this qtl reads ({FORMAT_VERSION}); upgrade qtl"
        )
    damaged = f"{name} has incomplete '{METADATA_KEY}' metadata"
    missing = [key for key in REQUIRED if key not in metadata]
    if missing:
        raise ValueError(f"{damaged}: no {', '.join(repr(k) for k in missing)}")
    for key, kind in REQUIRED.items():
        if not isinstance(metadata[key], kind):
            raise ValueError(f"{damaged}: {key!r} is not a {kind.__name__}")
    classes = metadata["class_names"]
    if len(classes) < 2 or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f"{damaged}: class_names must be 2 or more non-empty names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{damaged}: class_names repeat a name, {classes!r}")
    try:
        check_params(metadata["preprocessing"])
    except ValueError as exc:
        raise ValueError(f"{damaged}: preprocessing: {exc}") from None
    for key in ("input", "output"):
        if not isinstance(metadata[key].get("name"), str):
            raise ValueError(f"{damaged}: {key!r} has no name")
    return metadata
