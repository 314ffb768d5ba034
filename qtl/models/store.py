"""The checkpoint store, a folder of checkpoint files (`qtl.paths.models_dir()` by default): list them,
import uploaded bytes safely, delete with care. One file's format is `qtl.models.checkpoint`'s.

`import_checkpoint(data, name, directory)` writes the bytes to a temporary file in `directory`, validates
them with `read_checkpoint_info` (a weights-only load, so a malicious pickle never runs code) and only
then renames the file into place under a clean, non-clobbering name. A bad file is removed and raises
`CheckpointError` with a one-line reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from qtl.models.checkpoint import SUFFIX, CheckpointError, CheckpointInfo, read_checkpoint_info
from qtl.paths import models_dir
from qtl.utils.atomic import atomic_write

MAX_NAME = 80


def list_checkpoints(directory: str | Path | None = None) -> list[CheckpointInfo]:
    """Every valid checkpoint (*.pt) in `directory` (default: `models_dir()`), newest first.

    Files that are not valid checkpoints are skipped; `scan_checkpoints` also says why.
    """
    return scan_checkpoints(directory)[0]


def scan_checkpoints(
    directory: str | Path | None = None,
) -> tuple[list[CheckpointInfo], list[tuple[Path, str]]]:
    """(every valid checkpoint in `directory`, newest first; (path, one-line reason) for every other *.pt
    file there, by name)."""
    directory = Path(directory) if directory is not None else models_dir()
    if not directory.is_dir():
        return [], []
    infos, bad = [], []
    for p in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            infos.append(read_checkpoint_info(p))
        except CheckpointError as exc:
            bad.append((p, str(exc)))
    return sorted(infos, key=lambda i: (i.created, i.path.name), reverse=True), bad


def safe_name(name: str) -> str:
    """Only [A-Za-z0-9._-], ending in .pt, never hidden or empty: "../a b.pt" -> "a_b.pt"."""
    stem = Path(name.replace("\\", "/")).name
    stem = stem[: -len(SUFFIX)] if stem.lower().endswith(SUFFIX) else stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:MAX_NAME]
    return f"{stem or 'checkpoint'}{SUFFIX}"


def _free_path(directory: Path, name: str) -> Path:
    """directory/name, or directory/stem-2.pt, -3 ... when taken: an import never overwrites."""
    path = directory / name
    stem, k = path.stem, 2
    while path.exists():
        path = directory / f"{stem}-{k}{SUFFIX}"
        k += 1
    return path


def import_checkpoint(data: bytes, name: str, directory: str | Path) -> CheckpointInfo:
    """Validate uploaded checkpoint bytes and store them in `directory` under a new, safe name.

    Returns the stored checkpoint's metadata. Raises CheckpointError (nothing is left on disk) when the
    bytes are not a valid qtl checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not data:
        raise CheckpointError(f"{name} is empty")
    while True:
        target = _free_path(directory, safe_name(name))
        try:
            with atomic_write(target, replace=False) as f:
                f.write(data)
                f.flush()
                try:
                    read_checkpoint_info(f.name)
                except CheckpointError as exc:
                    raise CheckpointError(str(exc).replace(Path(f.name).name, name)) from None
        except FileExistsError:  # a concurrent import took the name meanwhile: take the next one
            continue
        return read_checkpoint_info(target)


def delete_checkpoint(path: str | Path, allowed_dirs: list[str | Path]) -> None:
    """Delete a checkpoint file, only if it is a .pt file directly inside one of `allowed_dirs`.

    Raises PermissionError otherwise (e.g. a shipped checkpoint in a read-only demo).
    """
    path = Path(path).resolve()
    if path.suffix != SUFFIX or not any(path.parent == Path(d).resolve() for d in allowed_dirs):
        raise PermissionError(f"{path.name} is not in a folder this session may change")
    path.unlink()
