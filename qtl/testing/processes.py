"""Child processes that cannot outlive the process that started them: servers a test or a benchmark
starts, which a killed pytest (SIGKILL, a CI timeout, a second Ctrl-C) would otherwise leave running,
holding their ports, as no teardown runs.

    subprocess.Popen(cmd, **tied_to_this_process())
"""

from __future__ import annotations

import functools
import os
import signal

from qtl.utils.processes import can_die_with_parent, die_with_parent


def tied_to_this_process() -> dict:
    """Keyword arguments for `subprocess.Popen` (or `run`): a child started with them cannot outlive us.

    The child gets its own session, so a teardown's `os.killpg` reaches whatever it starts, and on Linux
    the kernel's parent-death signal, SIGKILL (`qtl.utils.processes.die_with_parent`, set between fork
    and exec; Popen raises where the kernel refuses it): when this process dies and no teardown runs, the
    child goes too. The signal comes when the *thread* that started the child ends, so start long-lived
    children from the main thread (pytest's fixtures and tests run there). Elsewhere than Linux: the
    session only. What the child itself starts gets no signal (neither streamlit nor `qtl serve` starts a
    process); a teardown's killpg reaches it.
    """
    if not can_die_with_parent():
        return {"start_new_session": True}
    return {
        "start_new_session": True,
        "preexec_fn": functools.partial(die_with_parent, os.getpid(), signal.SIGKILL),
    }
