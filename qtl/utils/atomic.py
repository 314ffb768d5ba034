"""Atomic file writes: a reader sees the old file or the new one, never half of one.

    with atomic_write(path) as f:   # a temporary file beside `path`
        f.write(...)                # an exception here leaves `path` as it was
    # now renamed over `path`
    atomic_save(obj, path)          # torch.save(obj) the same way
    check_folder(path)              # before any work: ValueError where no file can be written there

Checkpoints, the feature cache, downloads and uploaded checkpoints are all written this way.

Faults:
- a process killed mid-write (kill -9, power cut before the rename) leaves at most its temporary file,
  `.<name>.<host>-<pid>.<random>.part`, which no reader takes for `<name>`; the next atomic write into
  that folder removes the temporary files of writers on this host that no longer run;
- a write that fails for lack of space (or a file size limit, a read-only or failing disk) raises
  `WriteError`, an OSError whose one-line message names the file and the reason; `path` is unchanged.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# torch is imported only by atomic_save: atomic_write serves torch-free callers (downloads, uploads).

#: Permissions of a finished file (a temporary file is created 0600).
FILE_MODE = 0o644
PART = ".part"
#: errnos that mean "this disk cannot take the file", as opposed to a bug or a bad path
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)\.[^.]+\.part$")


class WriteError(OSError):
    """A file could not be written (disk full, file too large, read-only disk); nothing was changed."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphans(directory: str | Path) -> list[Path]:
    """Delete the temporary files that writers on this host left in `directory` when they died
    (their process no longer runs); returns them. Live writers' files and other files are kept."""
    host, removed = _host(), []
    for p in Path(directory).glob(f".*{PART}"):
        m = _TEMP.match(p.name)
        if m and m["host"] == host and not _running(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link(tmp: str, path: Path) -> None:
    """Give the finished file `path` as its name unless the name is taken (atomically: a hard link)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename (a race remains there)
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)


@contextmanager
def atomic_write(path: str | Path, *, replace: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file in `path`'s folder; when the block ends without an exception it is flushed to
    disk and renamed over `path`, else it is removed. The folder is created if needed.

    replace=False never overwrites: FileExistsError when `path` exists by then (even when another
    process or thread took the name while the block ran).
    Raises WriteError when the disk refuses the bytes (see WRITE_ERRNOS); `path` is then unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=PART
        )
        os.close(fd)
        with open(tmp, "wb") as f:  # f.name is the temporary file's path
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        if replace:
            os.replace(tmp, path)
        else:
            _link(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS or isinstance(exc, WriteError):
            raise
        error = WriteError(f"cannot write {path}: {exc.strerror or exc}; any previous {path.name} is kept")
        error.errno = exc.errno
        raise error from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_save(obj, path: str | Path) -> None:
    """`torch.save(obj)` to `path` with `atomic_write`.

    The bytes are serialised in memory first: torch.save streaming into a file turns a failed write (a
    full disk) into an opaque RuntimeError ("unexpected pos"), while a plain write raises WriteError.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def check_folder(path: str | Path, made: bool = False) -> None:
    """ValueError (one line) where the folder of `path` cannot take a new file: missing (with `made`, the
    write makes it, so its nearest existing folder is checked; without, it is never made: a typo in -o
    would leave a tree behind), a file, or not writable (a read-only disk, /proc). Checked by creating
    and removing a temporary file there, so the reason is the system's own and no temporary name of the
    real write ever shows. Call it before any work."""
    path = Path(path)
    folder = path.parent
    while made and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        what = " (a file)" if folder.exists() else ""
        raise ValueError(f"no folder {folder}{what} to write {path.name} into")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:  # /proc says ENOENT of a file it cannot create
        why = "no file can be created there" if exc.errno == errno.ENOENT else exc.strerror or exc
        raise ValueError(f"cannot write {path.name} into {folder}: {why}") from None
