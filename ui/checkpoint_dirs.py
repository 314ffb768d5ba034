"""Where checkpoints live: models/ locally; in demo mode models/ is read-only and each session writes to
its own temporary area."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import streamlit as st

from ui.settings import settings

SESSION_TTL_S = 24 * 3600  # per-session demo areas older than this are removed
AUTOLOAD_MAX = 6  # user-trained checkpoints a new session loads, besides the shipped ones
SHIPPED_MANIFEST = "SHIPPED"  # in models/: the shipped checkpoints' file names


def _cleanup_old_sessions(root: Path) -> None:
    for d in root.glob("session-*"):
        if d.is_dir() and time.time() - d.stat().st_mtime > SESSION_TTL_S:
            shutil.rmtree(d, ignore_errors=True)


def session_dir() -> Path:
    """Where this session writes checkpoints and uploads: models/ locally, a private temp dir in demo mode."""
    s = settings()
    if not s.demo:
        s.models_dir.mkdir(parents=True, exist_ok=True)
        return s.models_dir
    current = st.session_state.get("session_dir")
    if current and Path(current).is_dir():
        return Path(current)
    root = Path(tempfile.gettempdir()) / "qtl-sessions"
    root.mkdir(parents=True, exist_ok=True)
    _cleanup_old_sessions(root)
    path = Path(tempfile.mkdtemp(prefix=f"session-{st.session_state['session_id']}-", dir=root))
    st.session_state["session_dir"] = str(path)
    return path


def writable(directory: str | Path) -> bool:
    """Whether this process may create and delete files in `directory` (or, where it does not exist
    yet, create it in its nearest existing parent): False on a read-only mount or a folder without
    write permission for this user (root writes past permissions, not past a read-only mount)."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def checkpoint_areas() -> list[tuple[str, Path, bool]]:
    """(label, directory, writable) for each place checkpoints are listed from: writable only where this
    session may change files and the folder takes changes (not a read-only mount or folder). After
    models/ (and in demo mode this session's own area), each sweep's folder that holds checkpoints
    (`checkpoints = true`: models/sweeps/<name>/), so a sweep's best models can be loaded here too."""
    s = settings()
    if not s.demo:
        areas = [("models/", s.models_dir, writable(s.models_dir))]
    else:
        own = session_dir()
        areas = [(server_label(), s.models_dir, False), ("this session", own, writable(own))]
    return areas + [(f"sweep {d.name}", d, not s.demo and writable(d)) for d in sweep_dirs()]


def sweep_dirs() -> list[Path]:
    """The sweeps' checkpoint folders in models/ (models/sweeps/<name>/ holding a .pt file), by name."""
    root = settings().models_dir / "sweeps"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.pt")))


def server_label() -> str:
    """How a demo names models/: "shipped (read-only)" when it holds only the shipped checkpoints, else
    "on the server (read-only)" (a model trained or a file uploaded there locally is no shipped one)."""
    directory, shipped = settings().models_dir, set(shipped_names())
    others = [p for p in directory.glob("*.pt") if p.name not in shipped] if directory.is_dir() else []
    return "on the server (read-only)" if others else "shipped (read-only)"


def shipped_names() -> list[str]:
    """The file names the manifest `models/SHIPPED` lists (one per line, # comments): the checkpoints that
    come with the app. Without a manifest, in demo mode every file in models/ is shipped, else none."""
    directory = settings().models_dir
    manifest = directory / SHIPPED_MANIFEST
    if manifest.is_file():
        lines = (line.split("#", 1)[0].strip() for line in manifest.read_text().splitlines())
        return [name for name in lines if name]
    return sorted(p.name for p in directory.glob("*.pt")) if settings().demo and directory.is_dir() else []


def autoload_checkpoints() -> list[str]:
    """What a new session starts with loaded: the newest other checkpoints in models/ (at most
    AUTOLOAD_MAX, newest first: a local user's own runs), then every shipped one, which is always there
    however many runs were trained since. By name only: nothing is read here, so the first page paints at
    once; a bad file is dropped, and said why, when a page loads it."""
    directory = settings().models_dir
    if not directory.is_dir():
        return []
    shipped = [directory / name for name in shipped_names() if (directory / name).is_file()]
    others = [p for p in directory.glob("*.pt") if p.name not in {q.name for q in shipped}]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p.resolve()) for p in others[:AUTOLOAD_MAX] + shipped]


def can_modify(path: str | Path) -> bool:
    """May this session delete or overwrite `path`? Always locally; in demo mode only in its own area."""
    if not settings().demo:
        return True
    return Path(path).resolve().is_relative_to(session_dir().resolve())
