"""Benchmark: latency of a classifier in torch eager against its exported file in onnxruntime.

For each checkpoint (default: the shipped quantum, noisy quantum and finetuned ones) the same real
hymenoptera val images, preprocessed once, go through

    torch eager   the loaded checkpoint's model (`Classifier.forward` + softmax, what `predict` runs
                  after preprocessing), under torch.no_grad, torch's default threads
    onnxruntime   the `qtl export --format onnx` file, CPUExecutionProvider, its default threads
    torchscript   the `qtl export --format torchscript` file

at batch 1 and batch 32. Each time is the median of --repeats calls after WARM_UP calls; the
ratio is eager / onnxruntime, measured in the same run on the same inputs, whose outputs are also
compared (max |difference| of the probabilities).

    .venv/bin/python bench/export_latency.py [--checkpoints A.pt B.pt] [--repeats 20] [--threads N]
                                             [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine

from qtl.analysis.inference import eval_transform
from qtl.data.images import load_image
from qtl.deploy.export import export_model
from qtl.deploy.runtime import load_exported
from qtl.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [
    "quantum-efficientnet_lite0-imagenet-q4d6-s0.pt",
    "quantum-efficientnet_lite0-imagenet-q4d6-noisy-s0-dep0.1.pt",
    "finetuned-efficientnet_lite0-imagenet-s1.pt",
]
BATCHES = (1, 32)
WARM_UP = 3


def median_seconds(run, x, repeats: int) -> tuple[float, np.ndarray]:
    for _ in range(WARM_UP):  # first-call allocations, TorchScript's profiling runs
        out = run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    from qtl.data.sources import resolve_dataset

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoints", nargs="+", default=[str(REPO / "models" / name) for name in DEFAULT])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per batch size and runtime")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and onnxruntime threads (default: theirs)"
    )
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = resolve_dataset(download=False)
    paths = sorted((root / "val").glob("*/*"))[: max(BATCHES)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in map(Path, args.checkpoints):
            loaded = load_checkpoint(ckpt)
            transform = eval_transform(loaded)
            pixels = torch.stack([transform(load_image(p)) for p in paths])  # (32, 3, H, W)
            files = {
                fmt: export_model(loaded, Path(tmp) / f"{ckpt.stem}.{fmt}", fmt)[0]
                for fmt in ("onnx", "torchscript")
            }
            runtimes = {
                "onnxruntime": load_exported(files["onnx"]),
                "torchscript": load_exported(files["torchscript"]),
            }

            def eager(x: np.ndarray, model=loaded.model) -> np.ndarray:
                with torch.no_grad():
                    return torch.softmax(model(torch.from_numpy(x)), 1).numpy()

            for batch in BATCHES:
                x = pixels[:batch].numpy()
                eager_s, reference = median_seconds(eager, x, args.repeats)
                row = {"checkpoint": ckpt.name, "batch": batch, "torch_eager_s": eager_s}
                for name, model in runtimes.items():
                    seconds, out = median_seconds(model.run, x, args.repeats)
                    row[f"{name}_s"] = seconds
                    row[f"{name}_max_abs_diff"] = float(np.abs(out - reference).max())
                row["eager_over_onnxruntime"] = eager_s / row["onnxruntime_s"]
                rows.append(row)
                print(
                    f"{ckpt.stem:<60} batch {batch:>2}: eager {eager_s * 1e3:8.1f} ms  "
                    f"onnxruntime {row['onnxruntime_s'] * 1e3:8.1f} ms  "
                    f"torchscript {row['torchscript_s'] * 1e3:8.1f} ms  "
                    f"eager/ort {row['eager_over_onnxruntime']:5.2f}x  "
                    f"max |diff| ort {row['onnxruntime_max_abs_diff']:.1e} "
                    f"ts {row['torchscript_max_abs_diff']:.1e}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "repeats": args.repeats, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
