"""Run qtl in this process and stall one atomic write half way, so a test can kill -9 it mid-write.

    python tests/midwrite.py NAME N qtl ARGS...        the `qtl ARGS...` command line
    python tests/midwrite.py NAME N import FILE DIR    import_checkpoint(FILE's bytes, NAME, DIR)

The N-th file written by `qtl.utils.atomic.atomic_write` for a target called NAME gets only the first half of
its first write; then the process prints "MIDWRITE <temporary file>" on stderr and sleeps until it is
killed. Everything else runs as in production: the stall replaces the file object that atomic_write opens
(`qtl.utils.atomic.open`), nothing in qtl knows about it.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
from pathlib import Path

import qtl.utils.atomic


class _Stalled:
    """A file whose first write stores half the bytes, reaches the disk, and never returns."""

    def __init__(self, f) -> None:
        self._f, self.name = f, f.name

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        os.fsync(self._f.fileno())
        print(f"MIDWRITE {self.name}", file=sys.stderr, flush=True)
        while True:
            signal.pause()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def stall(name: str, nth: int) -> None:
    """Make the nth atomic write of a file called `name` stall half way (see the module docstring)."""
    seen = 0

    def open_(file, mode="r", *args, **kwargs):
        nonlocal seen
        f = builtins.open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(f".{name}."):
            seen += 1
            if seen == nth:
                return _Stalled(f)
        return f

    qtl.utils.atomic.open = open_  # atomic_write looks `open` up in its module first


def main(argv: list[str]) -> int:
    name, nth, what, *rest = argv
    stall(name, int(nth))
    if what == "qtl":
        from qtl.cli import main as qtl_main

        return qtl_main(rest)
    if what == "import":
        from qtl.models.store import import_checkpoint

        source, directory = rest
        import_checkpoint(Path(source).read_bytes(), name, directory)
        return 0
    raise SystemExit(f"unknown action {what!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
