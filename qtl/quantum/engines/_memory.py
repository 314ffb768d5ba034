"""The engines' memory budgets (how many bytes a simulation may allocate, and how to say it) and their
large buffers."""

from __future__ import annotations

import math
import mmap
import os

import torch

#: Bytes of a transparent huge page on x86-64 and most arm64 Linux kernels.
HUGE_PAGE = 2**21


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
