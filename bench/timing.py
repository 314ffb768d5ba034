"""How the benchmarks time a training step: one shared rule."""

from __future__ import annotations

import statistics
import time


def step_seconds(step, head, optimizer, x, y, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU of this process) seconds of `step(head, optimizer, x, y)` over `repeats` steps,
    after one warm-up step (which builds caches and state)."""
    step(head, optimizer, x, y)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step(head, optimizer, x, y)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)
