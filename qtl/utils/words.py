"""Counts, durations and errors in words, for messages and tables."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless n is 1: '1 qubit', '2 qubits', '0 epochs' (nouns whose plural adds
    an s)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float | None) -> str:
    """Seconds in the unit that shows them: "n/a" (None), "0.35 ms", "12.0 s", "2.5 min", "1.4 h" (a
    2-minute sweep read "0.0 h", a 0.35 ms device-time estimate "0 s"). Each unit is picked after
    rounding, so 0.9996 s is "1.0 s" (not "1e+03 ms") and 59.96 s "1.0 min" (not "60.0 s")."""
    if seconds is None:
        return "n/a"
    ms = float(f"{seconds * 1e3:.3g}")
    if ms < 1000:
        return f"{ms:.3g} ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if round(seconds / 60, 1) < 60 else f"{seconds / 3600:.1f} h"


def error_line(exc: BaseException) -> str:
    """An exception's message on one line (every run of whitespace, line breaks too, as one space), or
    its type's name where the message is empty: what a one-line refusal or a table's error cell shows."""
    return " ".join(str(exc).split()) or type(exc).__name__
