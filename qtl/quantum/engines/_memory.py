"""The engines' memory budgets (how many bytes a simulation may allocate, and how to say it) and their
large buffers."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys

import torch

#: Bytes of a transparent huge page on x86-64 and most arm64 Linux kernels.
HUGE_PAGE = 2**21
_MADV_HUGEPAGE = 14


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


@functools.cache
def _madvise():
    """libc's madvise, or None off Linux or where it cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None


def huge_page_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`torch.empty(shape)` for a long-lived buffer. On Linux, a CPU buffer of HUGE_PAGE bytes or more
    starts on a huge page's boundary and asks the kernel for transparent huge pages (madvise; kernels
    set to "madvise" give them only on request, to "never" not at all, which leaves a plain buffer).

    A wide statevector step keeps a few such buffers per worker, which fill most of the last-level
    cache: in 4 KiB pages at random physical places some cache sets overflow and the step's time varies
    by a third from run to run; in 2 MiB pages every set holds the same share.
    """
    device = torch.device(device)
    item = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * item
    madvise = _madvise()
    if device.type != "cpu" or nbytes < HUGE_PAGE or madvise is None:
        return torch.empty(shape, dtype=dtype, device=device)
    raw = torch.empty(nbytes + HUGE_PAGE, dtype=torch.uint8)
    offset = -raw.data_ptr() % HUGE_PAGE
    start = raw.data_ptr() + offset
    length = min(-(-nbytes // HUGE_PAGE) * HUGE_PAGE, (raw.numel() - offset) // 4096 * 4096)
    madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_HUGEPAGE)  # advice: failure is harmless
    return raw[offset : offset + nbytes].view(dtype).view(shape)
