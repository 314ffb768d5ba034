"""The process's memory allocator, set for training steps that free and allocate the same large tensors
step after step.

    from qtl.utils.allocator import keep_freed_memory
    keep_freed_memory()      # once, early in a process (the `qtl` program does it first)

glibc gives a freed block of more than 128 KiB (a threshold it raises as it goes) back to the kernel,
and trims its heap once the free top passes twice that threshold, so the next step's tensors of the
same sizes come back as fresh pages, each a page fault on first touch: at 20 qubits the statevector
step took 17,000 of them and 1.7x the CPU time (docs/benchmarks.md, "The allocator"). Here
glibc takes blocks up to MMAP_THRESHOLD from its heap and keeps up to TRIM_THRESHOLD of it free, so
the memory a process holds stays at its peak rather than falling between steps. That suits a training
or benchmark process, not a long-lived server: the app and `qtl serve` keep glibc's defaults
(docs/hosting.md). Transparent huge pages for torch's tensors (`THP_MEM_ALLOC_ENABLE`) are left off:
their 2 MiB alignment fragments the kept heap, which then grows to TRIM_THRESHOLD.

The settings go into the environment too, where it does not hold them already (a value set there
wins), so worker processes started from this one (the sweeps' process backend) begin with them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks above it are mappings of their own
TRIM_THRESHOLD = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def keep_freed_memory() -> bool:
    """Set the environment and, where the allocator is glibc's, this process (mallopt) as the module
    says; True when glibc took both thresholds (none is set where either is not a whole number of bytes
    below 2 GiB)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    settings = {_M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", _M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_"}
    try:
        values = {param: int(os.environ[name]) for param, name in settings.items()}
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError, ValueError):  # a value that is no number; no mallopt
        return False
    if not all(0 <= v < 2**31 for v in values.values()):  # mallopt takes a C int: leave such a value to
        return False  # the processes started from here, which read it whole
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in values.items()])
