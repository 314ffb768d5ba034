"""The engines' memory budgets: how many bytes a simulation may allocate, and how to say it."""

from __future__ import annotations

import os


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
