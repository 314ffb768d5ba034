"""`seeded`: random draws fixed by a seed inside a block, and the caller's streams untouched after it.

Augmentation is drawn this way per item (`qtl.data.feed.SeededItems`: per image and epoch; the cached
views of `qtl.data.features`: per image and view), so neither worker processes nor the order items load
in change what a run learns. The generators are process-wide: a thread drawing from them while another is
inside the block gets the block's numbers (`qtl.training.fit`: fits in threads are not reproducible).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator and Python's `random` seeded by `seed` inside, both as they were after: the
    caller's streams (the training process's, where items load in it) go on as if nothing was drawn.
    Accelerators' generators are not touched (`torch.manual_seed` would reseed them for good)."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)
