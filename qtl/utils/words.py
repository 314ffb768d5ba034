"""Counts in words, for messages and tables."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless n is 1: '1 qubit', '2 qubits', '0 epochs' (nouns whose plural adds
    an s)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
