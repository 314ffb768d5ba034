"""CPU work split across threads, each computing on one torch thread.

OpenMP keeps its thread count per thread, and a new thread starts with torch's last setting (the
machine's cores by default): two workers that each multiply with MKL would run on twice as many
threads as there are cores. Each task of `side_by_side` runs with one torch thread (the calling thread
too, restored afterwards), so two tasks on two cores take one core each; `share_cores` gives a pool's
threads a share each.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


def side_by_side(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run the tasks at once (the first in the calling thread, each on one torch thread, in the
    caller's grad and inference mode) and return their results in order; one task, or one torch
    thread, runs them in turn. For CPU work: OpenMP's count is per thread only where torch is built
    with it."""
    threads = torch.get_num_threads()
    if len(tasks) < 2 or threads < 2:
        return [task() for task in tasks]
    grad_mode = torch.is_grad_enabled()  # thread-local: each worker takes the caller's
    inference = torch.is_inference_mode_enabled()

    def in_worker(task):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad_mode):
            return task()

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(tasks) - 1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            others = [pool.submit(in_worker, task) for task in tasks[1:]]
            first = tasks[0]()
            return [first, *(f.result() for f in others)]
    finally:
        torch.set_num_threads(threads)


def share_cores(workers: int) -> Callable[[], None]:
    """An initializer for each of `workers` threads that compute with torch side by side (a thread
    pool's): each takes an equal share of torch's threads, at least one, so that together they run on
    no more than torch alone would where `workers` is at most its thread count (`qtl serve`'s compute
    threads: docs/benchmarks.md, "Serving"). torch also keeps the share as the setting that threads
    started later begin with; the calling thread keeps its own."""
    return functools.partial(torch.set_num_threads, max(1, torch.get_num_threads() // workers))
