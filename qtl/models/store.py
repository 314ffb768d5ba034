"""The checkpoint store, a folder of checkpoint files (`qtl.paths.models_dir()` by default): list them,
import uploaded bytes safely, delete with care. One file's format is `qtl.models.checkpoint`'s.

`import_checkpoint(data, name, directory)` writes the bytes to a temporary file in `directory`, validates
them with `read_checkpoint_info` (a weights-only load, so a malicious pickle never runs code) and only
then renames the file into place under a clean, non-clobbering name. A bad file is removed and raises
`CheckpointError` with a one-line reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from qtl.models.checkpoint import SUFFIX, CheckpointError, CheckpointInfo, read_checkpoint_info
from qtl.paths import models_dir
from qtl.utils.atomic import atomic_write

MAX_NAME = 80
MAX_NAME_BYTES = 160  # UTF-8 bytes of a stem: room for -<k>.pt and a temporary file's name within 255


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
    """A file name made safe to store: letters and digits of any script (unicode word characters), "."
    and "-" kept, every other run of characters (spaces, path separators, control characters, symbols)
    one "_", never hidden or empty, at most MAX_NAME characters and MAX_NAME_BYTES bytes of UTF-8,
    ending in .pt: "../a b.pt" -> "a_b.pt", "mon modèle ünï 🐝.pt" -> "mon_modèle_ünï.pt"."""
    name = unicodedata.normalize("NFC", name)  # é as one letter, not e + a combining accent
    stem = Path(name.replace("\\", "/")).name
    stem = stem[: -len(SUFFIX)] if stem.lower().endswith(SUFFIX) else stem
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._-")[:MAX_NAME]
    while len(stem.encode()) > MAX_NAME_BYTES:  # 4-byte letters: file systems count bytes (255)
        stem = stem[:-1].rstrip("._-")
    return f"{stem or 'checkpoint'}{SUFFIX}"


def _free_path(directory: Path, name: str, others: Iterable[Path] = ()) -> Path:
    """directory/name, or directory/stem-2.pt, -3 ... when taken, in `directory` or in any of `others`:
    an import never overwrites, nor takes the name of a file listed beside it."""
    places = [directory, *others]
    path = directory / name
    stem, k = path.stem, 2
    while any((place / path.name).exists() for place in places):
        path = directory / f"{stem}-{k}{SUFFIX}"
        k += 1
    return path


def import_checkpoint(
    data: bytes, name: str, directory: str | Path, *, avoid: Iterable[str | Path] = ()
) -> CheckpointInfo:
    """Validate uploaded checkpoint bytes and store them in `directory` under a new, safe name.

    avoid: other folders listed with `directory` (the app's shipped checkpoints beside a session's own):
    no name taken there is used either, so that no two listed checkpoints share a name.

    Returns the stored checkpoint's metadata. Raises CheckpointError (nothing is left on disk) when the
    bytes are not a valid qtl checkpoint.
    """
    directory = Path(directory)
    others = [Path(d) for d in avoid if Path(d).resolve() != directory.resolve()]
    directory.mkdir(parents=True, exist_ok=True)
    if not data:
        raise CheckpointError(f"{name} is empty")
    while True:
        target = _free_path(directory, safe_name(name), others)
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
