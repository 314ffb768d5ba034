"""Resident memory of importing torch as the app does, for the torch build of this interpreter.

The app's server imports torch and, through torchvision and timm (the bundled backbone is timm's),
`torch._dynamo` and sympy. This script imports torch and torch._dynamo, runs one small matmul, and prints
the process's resident memory (RSS) with its private (anonymous) and file-backed parts, and which torch
build it is (CUDA or CPU-only). Run it with each build's interpreter to compare the floor a server pays
before it loads any model:

    .venv/bin/python bench/torch_memory.py
    /path/to/cpu-venv/bin/python bench/torch_memory.py   # torch from https://download.pytorch.org/whl/cpu
"""

from __future__ import annotations

import time


def memory_mb() -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of this process in MB (Linux /proc)."""
    with open("/proc/self/status") as f:
        fields = ("VmRSS", "RssAnon", "RssFile")
        return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(fields)}


def main() -> None:
    t0 = time.perf_counter()
    import torch
    import torch._dynamo  # noqa: F401  (what torchvision and timm pull in)

    (torch.randn(64, 64) @ torch.randn(64, 64)).sum().item()
    seconds = time.perf_counter() - t0
    m = memory_mb()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
    print(
        f"torch {torch.__version__} ({build}): RSS {m['VmRSS']:.0f} MB = {m['RssAnon']:.0f} MB private + "
        f"{m['RssFile']:.0f} MB mapped files, after {seconds:.1f} s of imports"
    )


if __name__ == "__main__":
    main()
