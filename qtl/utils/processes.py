"""A child process that ends with its parent: on Linux, the kernel's parent-death signal.

    die_with_parent(parent_pid, signal.SIGTERM)   # first thing in the child (or in Popen's preexec_fn)

A sweep's worker processes call it (`qtl.experiments.executors`: they stayed, about 1 GB each, after a
sweep killed with SIGKILL), and so do the servers tests start (`qtl.testing.processes`).
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# looked up once, at import: a child between fork and exec (Popen's preexec_fn) should only call it
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
if _PRCTL is not None:
    _PRCTL.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def can_die_with_parent() -> bool:
    """Whether `die_with_parent` can tie a child to its parent here (Linux)."""
    return _PRCTL is not None


def die_with_parent(parent: int, sig: int) -> None:
    """In a child of process `parent`: have the kernel send it `sig` when the parent ends (the setting
    survives exec), and end now where the parent is already gone (it ended before the setting, so no
    signal will come). It comes when the parent's *thread* that started this child ends. OSError where
    the kernel refuses; nothing elsewhere than Linux."""
    if _PRCTL is None:
        return
    if _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)
