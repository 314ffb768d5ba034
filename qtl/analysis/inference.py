"""Inference with loaded checkpoints: class probabilities, quantum traces and evaluation.

    preds = predict([quantum, linear, finetuned], ["ant.jpg", pil_image])
    preds["quantum-..."].probs          # (N, C)
    quantum_trace(quantum, "ant.jpg")   # input angles and per-qubit <Z>
    evaluate(quantum, root).metrics     # accuracy, per-class P/R/F1, confusion matrix, ROC-AUC
    accuracy_at_training(quantum, root, "val")   # its own recorded val accuracy, on the same images

Loaded models that share a frozen backbone (same name and weights) run it once per batch of images,
and each head reads the same features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from qtl.config import DataRegime
from qtl.data.feed import IMAGE_EVAL_BATCH, FeatureBatches, eval_batch_size, eval_batches, logits
from qtl.data.folders import validate_dataset
from qtl.data.images import load_image, to_rgb, upright
from qtl.models.backbones import transform_from_params, transform_params
from qtl.models.checkpoint import LoadedModel
from qtl.training.metrics import compute_metrics

ImageInput = str | Path | bytes | Image.Image


@dataclass
class Prediction:
    """One model's answer for a batch of N images."""

    name: str
    variant: str
    class_names: list[str]
    probs: torch.Tensor  # (N, C) on CPU
    latency_s: float  # wall time for this model on all N images (preprocessing and backbone included)
    shared_backbone: bool = False  # the backbone pass was shared with other frozen models

    @property
    def predicted(self) -> list[str]:
        """The most probable class name per image."""
        return [self.class_names[i] for i in self.probs.argmax(1).tolist()]

    @property
    def confidence(self) -> list[float]:
        """The probability of the predicted class per image."""
        return self.probs.max(1).values.tolist()


IMAGE_TYPES = "paths, bytes, binary files or PIL images"
"""What `as_images` (and so `predict`, `quantum_trace`, `explain`) takes as an image."""


def _is_image(x) -> bool:
    """One image input: a path, bytes, a PIL image or a binary file object (anything with .read())."""
    return isinstance(x, (str, Path, bytes, bytearray, Image.Image)) or hasattr(x, "read")


def _not_an_image(x) -> TypeError:
    pixels = isinstance(x, (torch.Tensor, np.ndarray))
    hint = " (for pixels: PIL.Image.fromarray of an (H, W, 3) uint8 array)" if pixels else ""
    return TypeError(f"images must be {IMAGE_TYPES}, one or a sequence of them; got {type(x).__name__}{hint}")


def as_images(images: ImageInput | Sequence[ImageInput]) -> list[Image.Image]:
    """One or many paths, bytes, binary files or PIL images -> RGB PIL images; ImageLoadError for an
    undecodable one, TypeError for anything else (tensors and arrays of pixels included: make a PIL image
    of them first, `PIL.Image.fromarray`), ValueError for none."""
    if _is_image(images):
        images = [images]
    elif isinstance(images, (torch.Tensor, np.ndarray)) or not isinstance(images, Iterable):
        raise _not_an_image(images)
    out = []
    for im in images:
        if isinstance(im, Image.Image):
            im = upright(im)  # as a file of it loads: its EXIF orientation applied
            out.append(im if im.mode == "RGB" else to_rgb(im))  # 16-bit grayscale kept, not clipped
        elif _is_image(im):
            out.append(load_image(im))
        else:
            raise _not_an_image(im)
    if not out:
        raise ValueError("no images given")
    return out


def one_image(image: ImageInput) -> Image.Image:
    """`as_images` of a single image (a sequence of one is taken too); ValueError for several, which a
    function that explains or traces one image would otherwise cut to the first."""
    images = as_images(image)
    if len(images) != 1:
        raise ValueError(f"one image at a time, got {len(images)}: call it once per image")
    return images[0]


def check_batch_size(batch_size) -> int:
    """`batch_size` if it is a positive int, else ValueError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    return batch_size


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run the block with every model in eval mode (batch norm on its running statistics, which never
    move; a noisy engine's shots drawn per input), then give each submodule back the training flag it
    had, whatever mix of modes the caller left. A model already all in eval mode is not written at all
    (a shared backbone, which other threads run, never is). A model given twice counts once."""
    models = tuple({id(m): m for m in models}.values())
    before = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        if any(m.training for m in model.modules()):
            model.eval()
    try:
        yield
    finally:
        for m, training in reversed(before):
            if m.training != training:
                m.training = training


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` with each repeat told apart as every report tells them: "q", "q#2", "q#3"."""
    out: list[str] = []
    for base in names:
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def named_models(
    models: LoadedModel | Sequence[LoadedModel] | Mapping[str, LoadedModel],
) -> dict[str, LoadedModel]:
    """Models by the names every report gives them: their file names, a repeated one as "q#2", "q#3"
    (a mapping keeps its own names). ValueError for none, TypeError for anything but loaded
    checkpoints (a path: load it with `load_checkpoint` first)."""
    if isinstance(models, LoadedModel):
        models = [models]
    elif isinstance(models, (str, Path)):
        raise TypeError(f"models must be loaded checkpoints: load {str(models)!r} with load_checkpoint first")
    elif isinstance(models, nn.Module) or not isinstance(models, Iterable):
        raise _not_a_model(models)
    given = list(models.values()) if isinstance(models, Mapping) else list(models)
    for m in given:
        if not isinstance(m, LoadedModel):
            raise _not_a_model(m)
    named = (
        dict(models)
        if isinstance(models, Mapping)
        else dict(zip(unique_names([m.name for m in given]), given, strict=True))
    )
    if not named:
        raise ValueError("no models given: load a checkpoint first")
    return named


def _not_a_model(x) -> TypeError:
    return TypeError(
        f"models must be loaded checkpoints (LoadedModel, from load_checkpoint: it knows its class names "
        f"and preprocessing), one, a sequence or a {{name: model}} mapping; got a {type(x).__name__}"
    )


def _device(loaded: LoadedModel) -> torch.device:
    return next(loaded.model.parameters()).device


def eval_params(loaded: LoadedModel) -> dict:
    """The eval preprocessing parameters the checkpoint records (its backbone's current ones for older
    files): {"resize", "crop", "interpolation", "mean", "std"}."""
    if loaded.transform is not None:
        return loaded.transform
    return transform_params(loaded.model_config.backbone, loaded.model_config.pretrained)


def eval_transform(loaded: LoadedModel) -> Callable:
    """The eval preprocessing the checkpoint records: PIL RGB image -> (3, crop, crop) float tensor."""
    return transform_from_params(eval_params(loaded))


def _pixels(loaded: LoadedModel, images: list[Image.Image]) -> torch.Tensor:
    """(N, 3, H, W) normalised image tensor for the model's backbone, on its device."""
    transform = eval_transform(loaded)
    return torch.stack([transform(im) for im in images]).to(_device(loaded))


def _shared_key(loaded: LoadedModel):
    """Models with equal keys share one backbone pass; trainable backbones never share."""
    c = loaded.model_config
    if not c.frozen:
        return None
    transform = tuple(sorted((k, str(v)) for k, v in (loaded.transform or {}).items()))
    return (c.backbone, c.pretrained, loaded.backbone_weights, transform, str(_device(loaded)))


@torch.no_grad()
def predict(
    models: LoadedModel | Sequence[LoadedModel] | Mapping[str, LoadedModel],
    images: ImageInput | Sequence[ImageInput],
    *,
    batch_size: int = 32,
) -> dict[str, Prediction]:
    """Class probabilities of every model for every image.

    models: one LoadedModel, a list (named by their checkpoint file), or a {name: LoadedModel} mapping.
    images: one or many paths, bytes or PIL images. Raises data.ImageLoadError for an undecodable input
        (load images with `qtl.data.images.load_image` first to handle each bad file separately), and
        TypeError for what is no image input (`as_images`: a tensor of pixels, for one).
    batch_size: images per backbone pass, a positive int (ValueError otherwise).
    Returns {name: Prediction} in the order given; probs are (N, C) on CPU. The models run in eval mode
    and are left in the mode they were in.
    """
    check_batch_size(batch_size)
    named = named_models(models)
    pil = as_images(images)
    with eval_mode(*(m.model for m in named.values())):
        return _predict(named, pil, batch_size)


def _predict(named: dict[str, LoadedModel], pil: list[Image.Image], batch_size: int) -> dict[str, Prediction]:
    groups: dict = {}
    for name, m in named.items():
        groups.setdefault(_shared_key(m) or ("own", name), []).append(name)

    out: dict[str, Prediction] = {}
    for key, names in groups.items():
        first = named[names[0]]
        t0 = time.perf_counter()
        features = []
        for i in range(0, len(pil), batch_size):
            features.append(first.model.features(_pixels(first, pil[i : i + batch_size])))
        features = torch.cat(features)  # (N, F)
        shared_s = time.perf_counter() - t0
        for name in names:
            m = named[name]
            t1 = time.perf_counter()
            step = eval_batch_size(m.model.head, max(1, len(features)))  # within its engine's budget
            chunks = [m.model.forward_features(features[i : i + step]) for i in range(0, len(features), step)]
            probs = torch.softmax(torch.cat(chunks), dim=1).float().cpu()
            out[name] = Prediction(
                name,
                m.variant,
                list(m.class_names),
                probs,
                shared_s + time.perf_counter() - t1,
                shared_backbone=key[0] != "own" and len(names) > 1,
            )
    return {name: out[name] for name in named}


@dataclass
class QuantumTrace:
    """What the circuit saw and returned for one image."""

    angles: torch.Tensor  # (n_qubits,) embedding angles tanh(.) * pi/2, in (-pi/2, pi/2)
    expvals: torch.Tensor  # (n_qubits,) <Z_i> per qubit, in [-1, 1]
    probs: torch.Tensor  # (C,) class probabilities
    class_names: list[str]


@torch.no_grad()
def quantum_trace(loaded: LoadedModel, image: ImageInput) -> QuantumTrace:
    """The input angles and per-qubit <Z> of a quantum variant (`quantum` or `hybrid`) for one image (a
    path, bytes or PIL image; ValueError for several), in eval mode (the model is left in its own)."""
    if not loaded.model_config.is_quantum:
        raise ValueError(
            f"{loaded.name} is a {loaded.variant!r} model: only quantum variants have a circuit trace"
        )
    head = loaded.model.head
    picture = one_image(image)
    with eval_mode(loaded.model):
        features = loaded.model.features(_pixels(loaded, [picture]))  # (1, F)
        angles = head.angles(features)  # (1, n)
        expvals = head.engine(angles, head.q_params)  # (1, n)
        probs = torch.softmax(head.post_net(expvals), dim=1)
    return QuantumTrace(angles[0].cpu(), expvals[0].cpu(), probs[0].cpu(), list(loaded.class_names))


@dataclass
class SamplePrediction:
    path: str
    label: int  # true class index
    pred: int  # predicted class index
    probs: list[float]  # (C,)

    @property
    def correct(self) -> bool:
        return self.label == self.pred


@dataclass
class Evaluation:
    metrics: dict  # compute_metrics(): accuracy, loss, roc_auc, per_class, confusion_matrix...
    samples: list[SamplePrediction] = field(default_factory=list)  # one per image, dataset order
    seconds: float = 0.0

    @property
    def misclassified(self) -> list[SamplePrediction]:
        return [s for s in self.samples if not s.correct]


@dataclass
class SplitFeatures:
    """A loaded model's backbone features for one split of a dataset."""

    features: torch.Tensor  # (N, F) on the model's device
    labels: torch.Tensor  # (N,) int64 class indices, CPU
    paths: list[str]


def split_features(
    loaded: LoadedModel,
    root: str | Path,
    split: str = "val",
    *,
    batch_size: int = IMAGE_EVAL_BATCH,
    cache_dir: str | Path | None = None,
    progress: Callable | None = None,
) -> SplitFeatures:
    """The backbone features of every image of a split, in dataset order (`qtl.data.feed.eval_batches`):
    exact cached features for frozen variants (extracted once if needed, by the loaded model's own
    backbone, in float32 as `predict` runs it), a backbone pass over the images, `batch_size` at a time,
    otherwise. A checkpoint trained in another regime than the dataset's own splits (k folds, a few
    shots, its first classes) is scored on its own run's part: `split` "val" is the fold it selected
    its epoch on, "test" the one it never saw.

    Raises ValueError when the dataset's classes differ from the model's, it has no such split, or
    `batch_size` is not a positive int.
    """
    check_batch_size(batch_size)
    tc = loaded.train_config or {}
    regime = DataRegime.from_dict(tc.get("regime"))
    classes = validate_dataset(root)
    if list(classes[: regime.classes]) != list(loaded.class_names):
        raise ValueError(
            f"{loaded.name} predicts {list(loaded.class_names)}, but {root} has classes {classes}"
        )
    model = loaded.model
    with eval_mode(model):  # and back to the caller's mode
        batches = eval_batches(
            model,
            loaded.model_config,
            root,
            split,
            _device(loaded),
            batch_size=batch_size,
            cache_dir=cache_dir,
            progress=progress,
            transform=eval_transform(loaded),  # the preprocessing the checkpoint records
            exact=True,  # the features the model computes when it classifies, exported or served
            regime=regime,
            seed=tc.get("seed", 0),
        )
        if isinstance(batches, FeatureBatches):
            features = batches.x
        else:
            with torch.no_grad():
                features = torch.cat([model.features(x) for x, _ in batches])
    return SplitFeatures(features, batches.y.cpu(), batches.paths)


def evaluate(
    loaded: LoadedModel,
    root: str | Path,
    split: str = "val",
    *,
    batch_size: int = IMAGE_EVAL_BATCH,
    cache_dir: str | Path | None = None,
    progress: Callable | None = None,
) -> Evaluation:
    """Metrics and per-sample predictions of a loaded model on one split of a dataset: its head over
    `split_features`, EVAL_BATCH features at a time (fewer where its engine's memory budget asks:
    `eval_batch_size`), in eval mode (the model is left in its own mode). Raises ValueError when the
    dataset's classes differ from the model's.
    """
    t0 = time.perf_counter()
    with eval_mode(loaded.model):
        data = split_features(
            loaded, root, split, batch_size=batch_size, cache_dir=cache_dir, progress=progress
        )
        head = loaded.model.head
        head = FeatureBatches(head, data, eval_batch_size(head), data.features.device)
        probs = torch.cat([torch.softmax(out, 1) for out, _ in logits(head)]).float().cpu()  # (N, C)
    preds = probs.argmax(1)
    samples = [
        SamplePrediction(path, int(y), int(p), row)
        for path, y, p, row in zip(
            data.paths, data.labels.tolist(), preds.tolist(), probs.tolist(), strict=True
        )
    ]
    return Evaluation(
        compute_metrics(data.labels, probs, loaded.class_names), samples, time.perf_counter() - t0
    )


WHY_TRAINING_DIFFERS = (
    "the same images: training's val pass read the features it trained on, bfloat16 where the CPU has "
    "it; this one reads exact float32, as predict does (a model that samples shots draws them from its "
    "inputs, so it draws other shots too)"
)
"""Why a checkpoint's recorded val accuracy can differ from an evaluation on the same images by an image
or two, or more with shots (`qtl evaluate`, the Compare page)."""


def accuracy_at_training(
    loaded: LoadedModel, root: str | Path, split: str, n: int | None = None
) -> float | None:
    """The val accuracy the checkpoint recorded when it was trained, where `evaluate(loaded, root, split)`
    scores the same images: the val split of the dataset it recorded, with as many images as it recorded
    there (`n`, the images scored; a checkpoint of the dataset's own split: an image deleted since is
    another set). None otherwise."""
    from qtl.data.datasets import recorded_root

    record = (loaded.meta or {}).get("dataset")
    if split != "val" or recorded_root(record) != Path(root):
        return None
    regime = DataRegime.from_dict((loaded.train_config or {}).get("regime"))
    counts = (record or {}).get("counts", {}).get("val")
    if n is not None and regime == DataRegime() and counts and sum(counts.values()) != n:
        return None
    return (loaded.metrics or {}).get("val_acc")
