"""The engines' memory budgets (how many bytes a simulation may allocate, and how to say it) and their
large buffers."""

from __future__ import annotations

import collections
import functools
import math
import mmap
import os
import sys
import threading
from collections.abc import Callable

import torch

#: Bytes of a transparent huge page on x86-64 and most arm64 Linux kernels.
HUGE_PAGE = 2**21


_CONSTANT_TABLES: list = []  # every `constant_tables` cache, for `clear_constant_tables`


def constant_tables(maxsize: int) -> Callable[[Callable], Callable]:
    """`functools.lru_cache(maxsize)` for a builder of constant tensors, which it builds outside
    `torch.inference_mode`: a table first built in a forward under inference mode would be an inference
    tensor, and every later forward that needs gradients would fail on it."""

    def decorate(build: Callable) -> Callable:
        @functools.wraps(build)
        def outside_inference_mode(*args):
            with torch.inference_mode(False):
                return build(*args)

        cached = functools.lru_cache(maxsize=maxsize)(outside_inference_mode)
        _CONSTANT_TABLES.append(cached)
        return cached

    return decorate


def clear_constant_tables() -> None:
    """Empty every `constant_tables` cache (their tables are built again on first use)."""
    for cached in _CONSTANT_TABLES:
        cached.cache_clear()


def resolve_memory_budget(given: int | None, env: str, default: int) -> int:
    """An engine's memory budget in bytes: `given`, else $env when set (a whole number), else `default`.

    ValueError for a malformed $env or a budget that is not a positive whole number of bytes.
    """
    budget = given
    if budget is None:
        raw = os.environ.get(env)
        try:
            budget = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(f"{env} must be a whole number of bytes, got {raw!r}") from None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {budget!r}")
    return budget


def human_bytes(n_bytes: float) -> str:
    """Bytes as "12.3 MiB" / "4.0 GiB", for the engines' memory-budget messages."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


def check_budget(need: int, budget: int, engine: str, where: str, advice: str, env: str, error: type) -> None:
    """Raise `error` (one line) when the `engine` engine needs `need` bytes for `where` (e.g. "batch 8 at 20
    qubits"), over `budget`; `advice` says what to change, `env` names the budget's variable."""
    if need > budget:
        raise error(
            f"the {engine} engine needs about {human_bytes(need)} for {where}, over its memory budget of "
            f"{human_bytes(budget)}; {advice}, or raise memory_budget / {env}"
        )


def huge_page_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`torch.empty(shape)` for a long-lived buffer. Where the kernel has transparent huge pages, a CPU
    buffer of HUGE_PAGE bytes or more is a fresh anonymous mapping that starts on a huge page's
    boundary and asks for them (kernels set to "madvise" give them only on request, to "never" not at
    all, which leaves a plain buffer). Fresh: memory the allocator had used before is already in 4 KiB
    pages, which the advice does not change.

    A wide statevector step keeps a few such buffers per worker, which fill most of the last-level
    cache: in 4 KiB pages at random physical places some cache sets overflow and the step's time varies
    by a third from run to run; in 2 MiB pages every set holds the same share.
    """
    device = torch.device(device)
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype, device=device)
    # private: a shared anonymous mapping (mmap's default) is shmem, which "enabled=madvise" leaves out
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = torch.frombuffer(mapping, dtype=torch.uint8)  # holds the mapping while any view lives
    offset = -raw.data_ptr() % HUGE_PAGE
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE, offset, -(-nbytes // HUGE_PAGE) * HUGE_PAGE)
    except OSError:  # advice only: a kernel without huge pages leaves the buffer as it is
        pass
    return raw[offset : offset + nbytes].view(dtype).view(shape)


#: Most bytes of free buffers a `BufferPool` keeps for later leases; past it, returned buffers are freed.
POOL_BYTES = 2**30


class BufferPool:
    """Large CPU buffers kept between uses: a step that needs the same buffers again finds their pages
    already mapped, where a fresh allocation of that size is a new mapping whose pages fault in again
    (glibc returns large blocks to the system). At most `max_bytes` are kept, the shapes used longest
    ago given up first. Thread-safe. On other devices a lease hands out plain `torch.empty` tensors
    (their allocators cache already)."""

    def __init__(self, max_bytes: int = POOL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._free: collections.OrderedDict[tuple, list[torch.Tensor]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()  # a lease collected while the pool holds it gives back too

    def lease(self) -> Lease:
        """A lease: buffers taken from it come back to the pool when it is released or collected."""
        return Lease(self)

    def _take(self, key: tuple) -> torch.Tensor:
        with self._lock:
            free = self._free.get(key)
            if free:
                self._free.move_to_end(key)
                buffer = free.pop()
                self._bytes -= buffer.nbytes
                return buffer
        with torch.inference_mode(False):  # a buffer made in inference mode could not be written outside it
            return huge_page_empty(*key)

    def _give(self, buffers: list[torch.Tensor]) -> None:
        with self._lock:
            for buffer in buffers:
                key = (tuple(buffer.shape), buffer.dtype, buffer.device)
                self._free.setdefault(key, []).append(buffer)
                self._free.move_to_end(key)
                self._bytes += buffer.nbytes
            while self._bytes > self.max_bytes:  # the least recently used shapes go first
                key, free = next(iter(self._free.items()))
                self._bytes -= free.pop().nbytes
                if not free:
                    del self._free[key]


class Lease:
    """Buffers taken from a `BufferPool` for one use (a forward and its backward)."""

    def __init__(self, pool: BufferPool) -> None:
        self._pool, self._taken = pool, []

    def take(self, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised buffer of this shape (a kept one when the pool has one)."""
        device = torch.device(device)
        if device.type != "cpu":
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        buffer = self._pool._take((tuple(shape), dtype, device))
        self._taken.append(buffer)
        return buffer

    def zeros(self, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self.take(shape, dtype, device).zero_()

    def release(self) -> None:
        """Give every buffer back; none may be used after this."""
        taken, self._taken = self._taken, []
        if taken:
            self._pool._give(taken)

    def __del__(self) -> None:
        if sys.is_finalizing():  # at exit the pool may be gone already; the buffers go with the process
            return
        self.release()
