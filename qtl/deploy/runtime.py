"""Exported files (`qtl export`) run by onnxruntime or TorchScript, answering as `qtl.analysis.predict`.

    model = load_exported("quantum.onnx")                  # runtime from the suffix, or runtime=
    predict_exported([model], ["bee.jpg"])["quantum"].predicted      # ['bees']

The preprocessing is the one the file records (its metadata), so an exported file and its checkpoint
give the same probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qtl.analysis.inference import ImageInput, Prediction, as_images, check_batch_size, unique_names
from qtl.deploy.export import METADATA_KEY, SUFFIX_FORMATS, TORCHSCRIPT_EXTRA, check_metadata, quiet_jit
from qtl.models.checkpoint import FILE_KINDS, describe_file, file_kind

RUNTIMES = ("onnx", "torchscript")


@dataclass
class ExportedModel:
    """An exported classifier: `run` maps (B, 3, H, W) normalised float32 images to (B, C) probabilities."""

    path: Path
    runtime: str  # "onnx" or "torchscript"
    metadata: dict
    session: object  # an onnxruntime.InferenceSession or a torch.jit.ScriptModule

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def variant(self) -> str:
        return self.metadata["variant"]

    def run(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 normalised images -> (B, C) float32 probabilities."""
        if self.runtime == "onnx":
            meta = self.metadata
            (probs,) = self.session.run([meta["output"]["name"]], {meta["input"]["name"]: images})
            return probs
        with torch.no_grad():
            return self.session(torch.from_numpy(images)).numpy()


def load_exported(
    path: str | Path, runtime: str | None = None, *, threads: int | None = None
) -> ExportedModel:
    """Open an exported file with onnxruntime ("onnx") or TorchScript ("torchscript"; default: by the
    suffix, as `qtl export` names its files (`SUFFIX_FORMATS`), else TorchScript). threads: onnxruntime's
    intra-op threads (default: its own choice; TorchScript uses torch's). ValueError, one line, for a
    missing, damaged or foreign file, or one whose metadata is incomplete
    (`qtl.deploy.export.check_metadata`)."""
    path = Path(path)
    runtime = runtime or SUFFIX_FORMATS.get(path.suffix.lower(), "torchscript")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if not path.is_file():
        raise ValueError(f"no exported model at {path}")
    if mismatch := _mismatch(path, runtime):
        raise ValueError(mismatch)
    try:
        if runtime == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            document = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        else:
            extra = {TORCHSCRIPT_EXTRA: ""}
            with quiet_jit():
                session = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            document = extra[TORCHSCRIPT_EXTRA]
    except Exception as exc:  # onnxruntime and TorchScript raise their own types for damaged files
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name} cannot be opened as {runtime}: {said}") from None
    return ExportedModel(path, runtime, check_metadata(path.name, document), session)


def _mismatch(path: Path, runtime: str) -> str | None:
    """Why `path` cannot be opened with `runtime`, from its first bytes (`file_kind`), in one line naming
    it as every message does (`describe_file`); None where it may be (the runtime itself then says
    whether it is damaged)."""
    kind = file_kind(path)
    what, wanted = describe_file(path, kind), FILE_KINDS[runtime]
    if kind == "damaged":
        return f"{path.name} is {what}: copy or export it again"
    if kind == "torch":
        return f"{path.name} is not {wanted} but {what}: qtl checkpoints run without --runtime"
    if kind in ("onnx", "torchscript") and kind != runtime:
        return f"{path.name} is not {wanted} but {what}: --runtime {kind} runs it"
    if kind == "other" and runtime == "torchscript":
        return f"{path.name} is not {wanted}"
    return None


def predict_exported(
    models: ExportedModel | Sequence[ExportedModel],
    images: ImageInput | Sequence[ImageInput],
    *,
    batch_size: int = 32,
) -> dict[str, Prediction]:
    """Class probabilities of every exported model for every image, as `qtl.analysis.inference.predict`
    returns them: {name: Prediction}, probs (N, C) on CPU."""
    from qtl.models.backbones import transform_from_params

    models = [models] if isinstance(models, ExportedModel) else list(models)
    if not models:
        raise ValueError("no exported models given")
    check_batch_size(batch_size)
    pil = as_images(images)
    out: dict[str, Prediction] = {}
    for name, m in zip(unique_names([m.name for m in models]), models, strict=True):
        t0 = time.perf_counter()
        transform = transform_from_params(m.metadata["preprocessing"])
        probs = []
        for i in range(0, len(pil), batch_size):
            batch = torch.stack([transform(im) for im in pil[i : i + batch_size]]).numpy()
            probs.append(torch.from_numpy(m.run(batch)))
        out[name] = Prediction(name, m.variant, m.class_names, torch.cat(probs), time.perf_counter() - t0)
    return out
