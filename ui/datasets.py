"""Datasets in the app: where uploads go (qtl's cache locally, the visitor's private area in demo mode),
their caps, the upload itself, cached thumbnails, and which dataset a checkpoint is scored on."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from ui.checkpoint_dirs import session_dir
from ui.session import active_data_dir
from ui.settings import settings

THUMB_PX = 112  # thumbnail edge on the Data page


def store() -> Path:
    """Where this session's arranged datasets live: <qtl cache>/datasets locally (persisted), the
    visitor's private area in demo mode (removed with it)."""
    from qtl.data.datasets import datasets_dir

    return session_dir() / "datasets" if settings().demo else datasets_dir()


def used_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (symlinks not followed)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def limits():
    """The archive caps for the next upload: qtl.data.archive's settings, and in demo mode what is left of
    the visitor's quota (`max_data_mb` for all their datasets together)."""
    from dataclasses import replace

    from qtl.data.archive import ArchiveLimits

    base, cap = ArchiveLimits.from_env(), settings().max_data_mb
    if cap is None:
        return base
    left = cap * 2**20 - (used_bytes(store()) if store().is_dir() else 0)
    return replace(base, max_bytes=max(0, min(base.max_bytes, left)))


def add_upload(upload, val_ratio: float, seed: int):
    """Arrange an uploaded zip (a Streamlit UploadedFile) into the store; returns the PreparedDataset.

    Raises qtl.data.archive.ArchiveError or qtl.data.folders.DatasetError with a one-line reason.
    """
    from qtl.data.datasets import open_dataset

    upload.seek(0)
    return open_dataset(upload, val_ratio=val_ratio, seed=seed, limits=limits(), store=store())


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(path: str, mtime: float) -> bytes | None:
    """A small JPEG of an image file (decoded at reduced scale), or None if it cannot be read."""
    import io

    from PIL import Image, UnidentifiedImageError

    from qtl.data.images import to_rgb

    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
            im = to_rgb(im)  # a 16-bit thumbnail as the model sees it, not white
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def samples(root: Path, split: str, cls: str, n: int) -> list[Path]:
    """The first `n` images of one class in one split, in name order (no decoding)."""
    from qtl.data.folders import is_image_file

    folder = root / split / cls
    return [p for p in sorted(folder.iterdir()) if is_image_file(p)][:n] if folder.is_dir() else []


def fallback_note(loaded) -> str:
    """Why `scoring_data` scores a checkpoint on the active dataset, in words ("" when it scores it on the
    dataset it was trained on)."""
    from qtl.data.datasets import recorded_root

    record = (loaded.meta or {}).get("dataset")
    if not record:  # trained before checkpoints recorded it
        return "the active dataset: this checkpoint does not record its own"
    if recorded_root(record) is None:  # absent, or a folder of that name holding other images
        name = record.get("name", "the one it was trained on")
        return f"the active dataset: {name}, as it was trained on, is not on this machine"
    return ""


def scoring_data(loaded) -> tuple[str | None, str | None]:
    """(root, None): the dataset a checkpoint is scored on, the one it was trained on if still there,
    else the active one; (None, why not) when neither is on disk."""
    from qtl.data.datasets import recorded_root
    from ui.cache import dataset_status

    recorded = recorded_root((loaded.meta or {}).get("dataset"))
    if recorded is not None:
        return str(recorded), None
    status = dataset_status(active_data_dir())
    if status.state != "found":
        return None, f"no dataset on disk to score it on ({status_words(status)}); {what_to_do()}"
    return str(status.path), None


def uploaded() -> list:
    """The datasets this session may make active (qtl.data.datasets.list_datasets of `store`)."""
    from qtl.data.datasets import list_datasets

    return list_datasets(store()) if store().is_dir() else []


def what_to_do() -> str:
    """What to do in the app when the active dataset is not on disk: choose one of those uploaded, else
    upload one (on the Data page)."""
    n = len(uploaded())
    if n:
        return f"choose one of the {n} uploaded dataset(s) on the Data page and make it active"
    return "upload one on the Data page and make it active"


# ---- a download that failed in this session


def download_reason(error: str) -> str:
    """A failed download's reason without qtl's command-line advice ("point to it with --data PATH or the
    QTL_DATA_DIR environment variable"), which a user of the app cannot follow."""
    from qtl.data.sources import WHERE_TO_PUT

    cut = error.find(f": {WHERE_TO_PUT}")
    return error[:cut] if cut >= 0 else error


def note_failed_job(error: str) -> bool:
    """After this session's job failed: when it failed downloading the active dataset (still to be
    downloaded: the default one, not on disk), keep why for this session (`status_words` says so instead
    of "downloadable") and return True; False for any other failure."""
    from qtl.data.sources import DOWNLOAD_FAILED
    from ui.cache import dataset_status

    if DOWNLOAD_FAILED not in error or dataset_status(active_data_dir()).state != "downloadable":
        return False
    st.session_state["data_download_failed"] = download_reason(error)
    return True


def download_failed(status) -> str | None:
    """Why the download of a downloadable dataset (its DatasetStatus) failed in this session, else None."""
    return st.session_state.get("data_download_failed") if status.state == "downloadable" else None


def status_words(status) -> str:
    """A DatasetStatus's message for a page: "its download failed in this session (why)" once it has, and
    never qtl's command-line advice."""
    if failed := download_failed(status):
        return f"{status.path.name} is not on disk: its download failed in this session ({failed})"
    return download_reason(status.message)


def failed_job_text(what: str, error: str) -> str:
    """The one line a page shows for this session's failed job ("Training failed: ..."): a failed download
    of the dataset said with what to do in the app."""
    if note_failed_job(error):
        reason = st.session_state["data_download_failed"]
        return f"{what} failed: the dataset could not be downloaded ({reason}); {what_to_do()}."
    return f"{what} failed: {error}"


# ---- the active dataset across a reload


DATA_PARAM = "data"  # ?data=<name of an uploaded dataset>: the active dataset survives a reload


def restore_active() -> None:
    """A new session (a reload, a new tab of the same address) makes the dataset the address names
    (`DATA_PARAM`, an uploaded dataset's folder name) active again; a name no uploaded dataset has is
    dropped from the address. Not in demo mode, where a visitor's uploads are their session's alone: a
    reload is another session, and the address would only carry the name of the visitor's file."""
    if settings().demo:
        return
    name = st.query_params.get(DATA_PARAM)
    if not name or st.session_state.get("data_restored"):
        return
    st.session_state["data_restored"] = True
    found = next((d for d in uploaded() if d.root.name == name), None)
    if found is None:
        del st.query_params[DATA_PARAM]
    else:
        st.session_state["data_dir"] = str(found.root)


def remember_active() -> None:
    """Keep the active dataset in the address (`DATA_PARAM`) on every run: a page change clears it (not
    in demo mode: `restore_active`)."""
    if settings().demo:
        return
    chosen = st.session_state.get("data_dir")
    name = Path(chosen).name if chosen and Path(chosen).resolve().parent == store().resolve() else None
    if name and st.query_params.get(DATA_PARAM) != name:
        st.query_params[DATA_PARAM] = name
    elif not name and DATA_PARAM in st.query_params:
        del st.query_params[DATA_PARAM]
