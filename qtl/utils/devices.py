"""`resolve_device`: the torch device a name means on this machine, refused in one line where it has none.

The CLI, `fit` and `load_checkpoint` resolve every device name through it.
"""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU; anything else is passed to torch.device. ValueError, in
    one line, for a name torch does not know or a CUDA device this machine does not have."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {str(device)!r}; give auto, cpu, cuda or cuda:N") from None
    if out.type == "cuda":
        count = torch.cuda.device_count()
        if out.index is not None and out.index >= count or not count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(f"device {str(device)!r} is not here: this machine has {have}; give auto or cpu")
    return out
