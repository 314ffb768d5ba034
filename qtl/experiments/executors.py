"""Where a sweep's runs execute: in this process, in N worker processes, or as Ray tasks.

    for index, run, done in execute(runs, backend="processes", workers=2, on_start=...):
        done.outcome or done.error             # results arrive as runs finish, in any order

Every backend calls the same worker function (`work`: `qtl.experiments.runs.train_run` plus the environment
and the
queue time) and keeps at most `workers` runs in flight, so `on_start` marks only runs that really run; a run
whose `on_start` returns False (another sweep has it) is not dispatched.
A `stop` (anything with `is_set()`) stops dispatching and cancels what is in flight: a local run stops
after its current batch, worker processes see a shared event, Ray tasks are cancelled.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import platform
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from qtl.experiments.runs import Outcome, Run, RunObserver, train_run
from qtl.utils.processes import die_with_parent

# Imported inside functions: torch (workers report its version) and ray (an optional extra).

BACKENDS = ("local", "processes", "ray")
FORWARDED_ENV = ("QTL_CACHE_DIR", "QTL_DATA_DIR", "QTL_MODELS_DIR", "QTL_OFFLINE", "TORCH_HOME")
"""Environment variables a Ray job passes to its workers (where the feature cache and weights live)."""


@dataclass
class Done:
    """What came back for one run: its Outcome, or a one-line error; where and how long it waited."""

    outcome: Outcome | None
    error: str | None = None
    environment: dict = field(default_factory=dict)
    queue_s: float = 0.0  # from dispatch to the worker starting it
    started: float = 0.0  # time.time() when the worker started it

    @property
    def cancelled(self) -> bool:
        """Stopped before it finished: a cancelled outcome (its best epoch so far), or no outcome at all
        from a task the stop cancelled (`STOPPED`; a Ray task), which is no failure either."""
        if self.outcome is None:
            return self.error == STOPPED
        return bool(self.outcome.row.get("cancelled"))


STOPPED = "stopped before it finished"
"""`Done.error` of a run whose task a stop cancelled (Ray raises TaskCancelledError: it read as a failure
with Ray's whole traceback)."""
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_ERROR = 300  # characters of a stored error


def one_line(exc: BaseException) -> str:
    """An exception as one clean line for the database and the summary, "ValueError: reason": a Ray task's
    error by the exception it wraps (its `cause`), without colour codes, line breaks or Ray's traceback
    (the error column held 1.5-7 KB of them), cut at MAX_ERROR characters."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    text = ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    traceback = any(line.startswith(('File "', "Traceback")) for line in lines)
    # a traceback's last line is the error itself; any other message is kept whole, on one line (torch's
    # load error gave its cause first, then advice)
    reason = (lines[-1] if traceback else " ".join(lines)) if lines else ""
    if reason.startswith(f"{type(exc).__name__}:"):
        reason = reason.split(":", 1)[1].strip()
    words = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return words if len(words) <= MAX_ERROR else words[: MAX_ERROR - 3] + "..."


def _is_cancellation(exc: BaseException) -> bool:
    """Whether Ray raised `exc` for a task it cancelled (TaskCancelledError, maybe wrapped in a
    RayTaskError), told by class name so that nothing here imports ray."""
    for e in (exc, getattr(exc, "cause", None)):
        if e is not None and any(c.__name__ == "TaskCancelledError" for c in type(e).__mro__):
            return True
    return False


@functools.cache
def environment() -> dict:
    """Versions, host and device of this process (recorded with every run it trains)."""
    import torch

    from qtl import __version__

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        **{name: version(name) for name in ("torch", "torchvision", "pennylane")},
        "qtl": __version__,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()})",
    }


_WORKER_STOP = None  # a worker process's shared stop event (set by `_init_worker`)


def work(run: Run, dispatched: float, *, callbacks=(), stop=None, progress=None) -> Done:
    """Train `run` here (any process or Ray worker) and report; an exception becomes `Done.error`."""
    started = time.time()
    try:
        outcome = train_run(run, callbacks=callbacks, stop=stop or _WORKER_STOP, progress=progress)
        error = None
    except Exception as exc:  # one failing run must not end the sweep: it is recorded as failed
        outcome, error = None, one_line(exc)
    return Done(outcome, error, environment(), started - dispatched, started)


def execute(
    runs: list[Run],
    *,
    backend: str = "local",
    workers: int | None = None,
    on_start: Callable[[int, Run], None] | None = None,
    observer: RunObserver | None = None,
    stop=None,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
) -> Iterator[tuple[int, Run, Done]]:
    """Yield (index, run, Done) for every run of `runs` that was dispatched, as each finishes.

    workers: runs in flight (local: always 1; default 2 processes, or on Ray the cluster's CPUs divided
        by cpus_per_run).
    observer: per-batch callbacks and preparation progress, for the local backend only.
    address: Ray only: an existing cluster ("auto", "ray://host:10001"); None starts a local instance.
    cpus_per_run / gpus_per_run: Ray only: the resources each task requests.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    on_start = on_start or (lambda i, run: None)
    if not runs:  # nothing left to run: no pool, no cluster to reach
        return
    if backend == "local":
        yield from _local(runs, on_start, observer or RunObserver(), stop)
    elif backend == "processes":
        yield from _processes(runs, workers or 2, on_start, stop)
    else:
        yield from _ray(runs, workers, on_start, stop, address, cpus_per_run, gpus_per_run)


def _local(runs, on_start, observer, stop):
    for i, run in enumerate(runs):
        if stop is not None and stop.is_set():
            return
        if on_start(i, run) is False:
            continue
        done = work(
            run,
            time.time(),
            callbacks=observer.callbacks(i, len(runs), run),
            stop=stop,
            progress=observer.preparing(i, len(runs), run),
        )
        yield i, run, done


def _windowed(runs, window, on_start, stop, submit, wait_any, cancel_all):
    """Keep `window` runs in flight: submit(run, t) -> handle; wait_any(handles) -> [(handle, Done)]."""
    queue = list(enumerate(runs))[::-1]
    inflight: dict = {}
    stopping = False
    while queue or inflight:
        if stop is not None and stop.is_set() and not stopping:
            stopping = True
            cancel_all(list(inflight))
            queue.clear()  # never dispatched: they stay pending (it looped on them for ever, waiting on none)
        while queue and len(inflight) < window:
            if stop is not None and stop.is_set():  # set between two dispatches: dispatch no more
                break
            i, run = queue.pop()
            if on_start(i, run) is not False:
                inflight[submit(run, time.time())] = (i, run)
        for handle, done in wait_any(list(inflight)):
            i, run = inflight.pop(handle)
            yield i, run, done


def _init_worker(stop_event, driver: int) -> None:
    """In each worker process: Ctrl-C is the driver's to handle; the shared event stops a run; on Linux
    the worker ends with the sweep, even one killed with SIGKILL (`die_with_parent`: its workers stayed,
    about 1 GB each, blocked on the pipe they were fed by)."""
    global _WORKER_STOP
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STOP = stop_event
    die_with_parent(driver, signal.SIGTERM)


def _processes(runs, workers, on_start, stop):
    ctx = multiprocessing.get_context("spawn")  # fork after torch's threads have started is unsafe
    event = ctx.Event()
    init = {"initializer": _init_worker, "initargs": (event, os.getpid())}
    with ProcessPoolExecutor(workers, mp_context=ctx, **init) as pool:

        def wait_any(futures):
            finished, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            return [(f, _result(f.result)) for f in finished]

        yield from _windowed(
            runs,
            workers,
            on_start,
            stop,
            lambda run, t: pool.submit(work, run, t),
            wait_any,
            lambda _: event.set(),
        )


def _result(get) -> Done:
    try:
        return get()
    except Exception as exc:  # the worker itself died (or Ray cancelled the task)
        return Done(None, STOPPED if _is_cancellation(exc) else one_line(exc))


#: How long a Ray cluster's address may take to accept a connection (ray.init itself retries for minutes)
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str | None) -> None:
    """ValueError, in one line, where an explicit cluster address ("host:port", "[ipv6]:port",
    "ray://host:port") accepts no connection within CONNECT_TIMEOUT_S; None and "auto" are left to Ray."""
    if address in (None, "auto") or ":" not in address:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise ValueError(f"no Ray cluster answers at {address} ({exc})") from None


def _ray(runs, workers, on_start, stop, address, cpus, gpus):
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        _check_reachable(address)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {**env, "PYTHONPATH": path}},
        )
    try:
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(work)
        window = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))

        def wait_any(refs):
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            return [(r, _result(lambda r=r: ray.get(r))) for r in ready]

        def cancel_all(refs):
            for r in refs:
                ray.cancel(r)

        yield from _windowed(runs, window, on_start, stop, remote.remote, wait_any, cancel_all)
    finally:
        if started_here:
            ray.shutdown()


def _package_root() -> str:
    """The folder holding the `qtl` package, so Ray workers import this qtl."""
    return str(Path(__file__).resolve().parents[1])
