"""Benchmark: from an uploaded zip of 5,000 images to the Data page's summary (target: under 3 s).

Compares, in the same run on the same machine, on one generated zip (class folders only, JPEGs):
  * baseline: `zipfile.ZipFile.extractall` (no checks) and one `os.walk` counting the images per folder,
    i.e. the least any summary needs;
  * qtl: `open_dataset(zip)`, what the Data page calls after an upload: SHA-256 of the zip, the header
    checks, the streamed extraction counting real bytes, the layout scan, the stratified split, the
    arrangement into train/val and the manifest;
  * qtl again on the same zip (a re-upload: found by its SHA-256, nothing is extracted).
Peak Python heap (tracemalloc) during each shows that extraction streams: it stays near one chunk
(1 MiB) whatever the archive's size. Thumbnails are not part of the summary (the page decodes only the
dozen it shows).

    .venv/bin/python bench/dataset_upload.py [--images 5000] [--classes 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

from qtl.data.datasets import open_dataset  # noqa: E402


def make_zip(path: Path, images: int, classes: int, size=(160, 120)) -> int:
    """A zip of `images` noisy JPEGs in `classes` class folders under one wrapping folder; returns bytes."""
    g = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(images):
            c = i % classes
            arr = (g.integers(0, 60, (size[1], size[0], 3)) + 40 * c).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG", quality=85)
            zf.writestr(f"photos/class_{c}/img_{i:05d}.jpg", buf.getvalue())
        zf.writestr("__MACOSX/photos/._class_0", b"\x00")
    return path.stat().st_size


def baseline(archive: Path, out: Path) -> dict:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out)
    counts = {}
    for dirpath, _, files in os.walk(out):
        n = sum(f.lower().endswith(".jpg") for f in files)
        if n:
            counts[dirpath] = n
    return counts


def upload(archive: Path, store: Path):
    """What the Data page does with an upload (the file object Streamlit hands over)."""
    with open(archive, "rb") as f:
        return open_dataset(f, store=store)


def timed(fn, *args, trace: bool = False) -> tuple[float, float, object]:
    """(seconds, peak traced heap in MiB or nan, result); tracing slows Python, so it is a separate run."""
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = tmp / "photos.zip"
        zip_bytes = make_zip(archive, args.images, args.classes)
        rows = {"baseline extractall + walk": [], "qtl open_dataset (upload)": [], "qtl re-upload (hit)": []}
        peaks = {k: [] for k in rows}
        for r in range(args.repeats + 1):  # the last round only measures memory
            trace = r == args.repeats
            out = tmp / f"base{r}"
            s, m, counts = timed(baseline, archive, out, trace=trace)
            assert sum(counts.values()) == args.images
            (peaks if trace else rows)["baseline extractall + walk"].append(m if trace else s)
            shutil.rmtree(out)

            store = tmp / f"store{r}"
            s, m, ds = timed(upload, archive, store, trace=trace)
            assert ds.n_images == args.images, ds.n_images
            (peaks if trace else rows)["qtl open_dataset (upload)"].append(m if trace else s)
            s, m, again = timed(upload, archive, store, trace=trace)
            assert again.root == ds.root
            (peaks if trace else rows)["qtl re-upload (hit)"].append(m if trace else s)
            shutil.rmtree(store)

    base = statistics.median(rows["baseline extractall + walk"])
    print(
        f"{args.images} JPEGs in {args.classes} classes, zip {zip_bytes / 2**20:.1f} MB; "
        f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; median of {args.repeats}"
    )
    print(f"{'step':<30}{'seconds':>10}{'x baseline':>12}{'peak heap MiB':>15}")
    result = {"images": args.images, "classes": args.classes, "zip_mb": zip_bytes / 2**20, "rows": {}}
    for name, times in rows.items():
        med = statistics.median(times)
        peak = max(peaks[name])
        print(f"{name:<30}{med:>10.2f}{med / base:>12.2f}{peak:>15.1f}")
        result["rows"][name] = {"seconds": med, "ratio": med / base, "peak_mib": peak}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
