"""The `st.cache_*` wrappers around the library: loaded checkpoints, dataset and weights status, figures
and evaluations, shared by every session of this server process. Each is keyed so a changed file or
folder is re-read."""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from qtl.quantum.circuit import CircuitConfig


@st.cache_resource(show_spinner="Loading checkpoint ...", max_entries=32)
def _load_checkpoint(path: str, mtime: float):
    """A loaded checkpoint (model in eval mode), shared read-only across sessions; keyed by file version."""
    from qtl.models.checkpoint import load_checkpoint

    return load_checkpoint(path)


def load_checkpoint(path: str | Path):
    """Load (cached) the checkpoint at `path`; raises qtl.models.checkpoint.CheckpointError on a bad file."""
    p = Path(path)
    return _load_checkpoint(str(p.resolve()), p.stat().st_mtime)


@st.cache_data(show_spinner=False, ttl=60)
def checkpoint_infos(directory: str, version: float) -> tuple[list, list]:
    """`qtl.models.store.scan_checkpoints` of `directory`: the valid checkpoints' metadata, newest first,
    and (path, reason) for the unreadable files (re-read when the folder changes)."""
    from qtl.models.store import scan_checkpoints

    return scan_checkpoints(directory)


def list_area(directory: Path) -> tuple[list, list]:
    """checkpoint_infos of `directory`, keyed by the newest change in it; ([], []) when it does not exist."""
    if not directory.is_dir():
        return [], []
    version = max([directory.stat().st_mtime] + [f.stat().st_mtime for f in directory.iterdir()])
    return checkpoint_infos(str(directory), version)


@st.cache_data(show_spinner=False, ttl=120)
def weights_availability(backbone: str):
    """Cached, downloadable or offline, for the backbone's ImageNet weights (never downloads; <= 2 s)."""
    from qtl.models.weights import weights_availability as state

    return state(backbone)


@st.cache_data(show_spinner="Checking ImageNet weights ...", ttl=120)
def backbone_choice(backbone: str, pretrained: bool):
    """`qtl.models.weights.resolve_backbone`: the backbone to use, or the bundled fallback with a notice (<=
    2 s)."""
    from qtl.models.weights import resolve_backbone

    return resolve_backbone(backbone, pretrained)


@st.cache_data(show_spinner=False, ttl=30)
def dataset_status(data_dir: str | None):
    """Found, downloadable or missing, for the configured dataset root."""
    from qtl.data.sources import dataset_status as status

    return status(data_dir)


@st.cache_data(show_spinner=False, ttl=60)
def dataset_classes(data_dir: str | None) -> list[str]:
    """Class names of the dataset, or [] when it is not on disk yet (it may be downloaded later)."""
    from qtl.data.datasets import open_dataset

    try:
        return open_dataset(data_dir, download=False).classes
    except ValueError:  # DatasetError, ArchiveError
        return []


@st.cache_data(show_spinner="Reading the dataset ...", ttl=60)
def dataset_summary(root: str):
    """qtl.data.datasets' PreparedDataset of a dataset root (classes, counts per split, skipped files)."""
    from qtl.data.datasets import open_dataset

    return open_dataset(root, download=False)


@st.cache_data(show_spinner=False, ttl=300)
def val_samples(data_dir: str | None) -> list[tuple[str, str]]:
    """[(path, class name)] of the dataset's val split; [] when there is no dataset on disk."""
    from qtl.data.datasets import open_dataset
    from qtl.data.folders import list_images

    try:
        ds = open_dataset(data_dir, download=False)
    except ValueError:  # DatasetError, ArchiveError
        return []
    return [(str(p), ds.classes[i]) for p, i in list_images(ds.root, "val", ds.classes)]


@st.cache_data(show_spinner="Drawing the circuit ...", max_entries=16)
def circuit_png(config: CircuitConfig, weights: tuple | None = None) -> bytes:
    """PNG of `config` drawn (optionally with trained weights), as st.pyplot would show it. Sessions share
    the bytes, never a figure: matplotlib draws one figure from one thread at a time, and two sessions
    showing one cached figure at once broke its drawing."""
    import io

    import torch

    from qtl.quantum.draw import draw_figure

    w = None if weights is None else torch.tensor(weights).reshape(config.weight_shape)
    with _DRAWING:
        fig = draw_figure(config, weights=w)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=200, bbox_inches="tight")
    return buf.getvalue()


_DRAWING = threading.Lock()  # matplotlib and PennyLane's drawer keep global state: one drawing at a time


@st.cache_data(show_spinner=False)
def backbone_size(name: str, pretrained: bool) -> tuple[int, int]:
    """(feature size F, parameter count) of a backbone, counted on the process's shared one (the random-init
    one when its ImageNet weights are not here: the counts are the same)."""
    from qtl.models.backbones import WeightsUnavailableError, shared_backbone

    try:
        module, features = shared_backbone(name, pretrained, allow_download=False)
    except WeightsUnavailableError:
        module, features = shared_backbone(name, False)
    return features, sum(p.numel() for p in module.parameters())


@st.cache_data(show_spinner="Measuring inference latency ...", max_entries=64)
def model_latency(path: str, mtime: float, repeats: int = 3) -> float:
    """Median seconds for one model to classify one 224x224 image (preprocessing included)."""
    import statistics

    from PIL import Image

    from qtl.analysis.inference import predict

    loaded = load_checkpoint(path)
    image = Image.new("RGB", (224, 224), (120, 110, 90))
    return statistics.median(predict([loaded], image).popitem()[1].latency_s for _ in range(repeats))


@st.cache_data(show_spinner=False, ttl=10)
def data_version(root: str) -> tuple[int, int, int]:
    """The version of a dataset folder the cached scores key on: its files, their bytes and the latest
    change (ns), every file under `root` (a k-fold checkpoint scores on a fold of all of them): an image
    replaced under its name, added or removed is scored again (the scores went stale until the server
    restarted). Read again every 10 s at most: a walk of 50,000 files takes 0.15-0.5 s, and a page
    reruns on every slider move."""
    import os

    files = size = latest = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                st_ = os.stat(os.path.join(folder, name))
            except OSError:  # removed meanwhile
                continue
            files, size, latest = files + 1, size + st_.st_size, max(latest, st_.st_mtime_ns)
    return files, size, latest


@st.cache_data(show_spinner="Evaluating on the val split ...", max_entries=64)
def evaluation(path: str, mtime: float, root: str, version: tuple):
    """qtl.analysis.inference.evaluate of a checkpoint on the val split of the dataset at `root` (cached
    per checkpoint file and `data_version` of the dataset). Raises ValueError when the dataset's classes
    are not the model's."""
    from qtl.analysis.inference import evaluate

    return evaluate(load_checkpoint(path), root)
