"""How the benchmarks report: a PASS/FAIL line per target, and the JSON record with the command."""

from __future__ import annotations

import json
import os
import sys


def verdict(ok: bool, text: str) -> bool:
    """Print "PASS  text" or "FAIL  text"; return ok."""
    print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return ok


def save_json(path: str, record: dict) -> None:
    """Write `record`, with the command that made it, to `path`."""
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    with open(path, "w") as f:
        json.dump({**record, "command": command}, f, indent=1)
