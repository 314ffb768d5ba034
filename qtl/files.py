"""Atomic file writes: a reader sees the old file or the new one, never half of one.

    with atomic_write(path) as f:   # a temporary file beside `path`
        f.write(...)                # an exception here leaves `path` as it was
    # now renamed over `path`

Checkpoints, the feature cache, downloads and uploaded checkpoints are all written this way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: Permissions of a finished file (a temporary file is created 0600).
FILE_MODE = 0o644


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file in `path`'s folder; when the block ends without an exception it is flushed to
    disk and renamed over `path`, else it is removed. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # f.name is the temporary file's path
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
