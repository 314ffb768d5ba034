"""The checkpoints a server answers with, loaded once: a batch of images in, every model's answer out.

    store = ModelStore.load(["models/"])            # files, or folders of checkpoints
    store.predict(images)                           # per image: {model: {"label", "probabilities"}}
    store.explain(image)                            # per model: its heatmap over the image, as a PNG

`predict` is `qtl.analysis.inference.predict`: the frozen models on the same backbone and weights
share one backbone pass per batch, the others run their own. (Unlike `qtl.models.store`, the folder of
checkpoint files, this holds loaded models.)
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from qtl.config import MPS
from qtl.models.checkpoint import CheckpointError, LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What GET /models says of one model."""

    name: str
    variant: str
    classes: list[str]
    backbone: str
    weights: str
    accuracy: float | None  # the checkpoint's recorded val accuracy
    n_qubits: int | None
    depth: int | None
    noise: str | None  # the noise it simulates ("ideal" for quantum models without), None for classical
    engine: str | None = None  # the simulator of its circuit ("native", "mps", a PennyLane device)
    max_bond: int | None = None  # MPS bonds truncated to this (approximate), None where exact
    shots: int | None = None  # a PennyLane engine's sampled shots, None for exact expectations


def checkpoint_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Checkpoint files from files and folders (a folder: its valid checkpoints, newest first), one per
    model name: a model is named by its file's stem, so CheckpointError for two files of one name in
    different folders (the same file given twice counts once). What the server (`ModelStore.load`) and
    Ray Serve (`qtl.deploy.ray_serve.application`) serve. Every other *.pt file of a folder is skipped
    with a warning on this module's logger, one line each: its path and why it is no checkpoint."""
    from qtl.models.store import scan_checkpoints

    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found, skipped = scan_checkpoints(source)
            for path, reason in skipped:
                log.warning("skipped %s: %s", path, " ".join(reason.split()))
            if not found:
                raise CheckpointError(f"no qtl checkpoints in {source}{_exports_note(source)}")
            paths += [info.path for info in found]
        else:
            paths.append(source)
    if not paths:
        raise CheckpointError("no checkpoints given")
    named: dict[str, Path] = {}
    for path in paths:
        other = named.setdefault(path.stem, path)
        if other is not path and other.resolve() != path.resolve():
            raise CheckpointError(
                f"two checkpoints are named {path.stem!r} ({other} and {path}): models are named by their "
                "file names, so rename one"
            )
    return list(named.values())


def _exports_note(folder: Path) -> str:
    """For a folder without checkpoints, what it holds instead where that is exported files (`qtl
    export`'s suffixes): they are not served, their checkpoints are; else nothing."""
    from qtl.deploy.export import SUFFIX_FORMATS

    exported = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in SUFFIX_FORMATS and p.is_file())
    if not exported:
        return ""
    shown = ", ".join(exported[:3]) + (f" and {len(exported) - 3} more" if len(exported) > 3 else "")
    return (
        f" (it holds exported files, {shown}: qtl serve serves the .pt checkpoints they were exported from; "
        "an exported file runs with qtl predict --runtime or standalone.py)"
    )


class ModelStore:
    """Loaded models by name, evaluated together. Read-only once built, so one store serves every
    request (the models run on one compute thread, see `qtl.deploy.batching`)."""

    def __init__(self, models: dict[str, LoadedModel]) -> None:
        if not models:
            raise ValueError("a model store needs at least one model")
        self.models = models

    @classmethod
    def load(cls, sources: Sequence[str | Path], device: str = "cpu") -> ModelStore:
        """Load every checkpoint of `sources` (files or folders); names are the file stems, each once
        (`checkpoint_paths`)."""
        from qtl.models.checkpoint import load_checkpoint

        models: dict[str, LoadedModel] = {}
        for path in checkpoint_paths(sources):
            loaded = load_checkpoint(path, device)
            models[loaded.name] = loaded
        return cls(models)

    def info(self) -> list[ModelInfo]:
        out = []
        for name, m in self.models.items():
            c = m.model_config
            out.append(
                ModelInfo(
                    name=name,
                    variant=m.variant,
                    classes=list(m.class_names),
                    backbone=c.backbone,
                    weights=m.backbone_weights,
                    accuracy=m.metrics.get("val_acc"),
                    n_qubits=c.circuit.n_qubits if c.is_quantum else None,
                    depth=c.circuit.depth if c.is_quantum else None,
                    noise=c.noise.label() if c.is_quantum else None,
                    engine=c.engine if c.is_quantum else None,
                    max_bond=c.max_bond if c.is_quantum and c.engine == MPS else None,
                    shots=(c.shots or c.noise.shots) if c.is_quantum else None,  # an engine's, or sampled
                )
            )
        return out

    def predict(self, images: list[Image.Image]) -> list[dict[str, dict]]:
        """N RGB images -> per image, per model {"label", "probabilities": {class: p}}."""
        from qtl.analysis.inference import predict

        preds = predict(self.models, images)
        return [
            {
                name: {
                    "label": p.class_names[int(p.probs[i].argmax())],
                    "probabilities": dict(zip(p.class_names, p.probs[i].tolist(), strict=True)),
                }
                for name, p in preds.items()
            }
            for i in range(len(images))
        ]

    def explain(self, image: Image.Image, method: str = "auto") -> dict[str, dict]:
        """Per model its heatmap over `image` (the model's view, overlaid) as base64 PNG, the method, and
        a note where the heatmap is blank (`Explanation.note`, else None); the models on one shared
        backbone explain from one backbone pass (`explain_all`). method: as `qtl explain --method`
        (ValueError for grad-cam on a backbone without a convolutional feature map)."""
        from qtl.analysis.explain import explain_all, overlay

        out = {}
        for name, ex in explain_all(self.models, image, method=method).items():
            buffer = io.BytesIO()
            overlay(ex.image, ex.heatmap).save(buffer, format="PNG")
            png = base64.b64encode(buffer.getvalue()).decode()
            out[name] = {"heatmap_png": png, "method": ex.method, "note": ex.note}
        return out
