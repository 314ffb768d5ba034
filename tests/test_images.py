"""Decoding images as every path of qtl does: the library's loader (`qtl predict`, training), the server's
`decode_upload` and the portable `standalone.py`, for the modes Pillow's own RGB conversion gets wrong.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from qtl.data.images import load_image
from qtl.deploy import standalone
from qtl.deploy.limits import ServeLimits, decode_upload


@pytest.fixture(scope="module")
def gray(hymenoptera_dir) -> np.ndarray:
    """A real photo (an ant) as 8-bit gray levels, (H, W) uint8."""
    path = sorted((hymenoptera_dir / "val" / "ants").iterdir())[0]
    return np.asarray(Image.open(path).convert("L"))


def deep_files(gray: np.ndarray, folder: Path) -> dict[str, Path]:
    """The same gray photo as an 8-bit PNG and at other depths: 16-bit PNG (I;16), 32-bit integer TIFF
    (I) holding 16-bit values, float TIFFs (F) of 0..1 and of 0..255."""
    files = {
        "8-bit png": (Image.fromarray(gray), "png"),
        "16-bit png": (Image.fromarray(gray.astype(np.uint16) * 257), "png"),
        "32-bit int tiff": (Image.fromarray(gray.astype(np.int32) * 257, "I"), "tiff"),
        "float 0..1 tiff": (Image.fromarray(gray.astype(np.float32) / 255, "F"), "tiff"),
        "float 0..255 tiff": (Image.fromarray(gray.astype(np.float32), "F"), "tiff"),
    }
    out = {}
    for name, (image, fmt) in files.items():
        out[name] = folder / f"{name.replace(' ', '-')}.{fmt}"
        image.save(out[name])
    assert Image.open(out["16-bit png"]).mode == "I;16"  # what a 16-bit grayscale PNG opens as
    return out


def test_deep_grayscale_reads_as_its_8bit_image_everywhere(gray, tmp_path):
    """Pillow's convert("RGB") clips 16-bit levels at 255 (the photo turns white): every decoder of qtl
    keeps the top 8 bits instead, so every depth gives the 8-bit file's RGB pixels."""
    files = deep_files(gray, tmp_path)
    want = np.repeat(gray[..., None], 3, axis=2).astype(int)
    limits = ServeLimits(formats=("PNG", "TIFF"))
    for name, path in files.items():
        loaded = load_image(path)
        uploaded = decode_upload(path.read_bytes(), path.name, limits)
        portable = standalone.rgb(Image.open(path))
        for decoder, image in (("load_image", loaded), ("decode_upload", uploaded), ("standalone", portable)):
            assert image.mode == "RGB", (name, decoder)
            assert np.abs(np.asarray(image).astype(int) - want).max() <= 1, (name, decoder)


def test_a_16bit_photo_is_classified_as_its_8bit_copy(gray, tmp_path, capsys):
    import json

    from test_export import tiny_checkpoint

    files = deep_files(gray, tmp_path)
    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 3)
    code, out, err = run_cli(capsys, "predict", files["8-bit png"], files["16-bit png"], "-c", ckpt, "--json")
    assert code == 0, err
    eight, sixteen = (row["predictions"]["m"] for row in json.loads(out))
    assert sixteen["predicted"] == eight["predicted"]
    assert np.allclose(list(sixteen["probs"].values()), list(eight["probs"].values()), atol=1e-6)


def test_other_modes_still_decode_as_before(tmp_path):
    """Palette with transparency, gray with alpha, 1-bit, CMYK: unchanged by the deep-gray path."""
    cases = {
        "P": Image.new("P", (4, 3), 1),
        "LA": Image.new("LA", (4, 3), (90, 10)),
        "1": Image.new("1", (4, 3), 1),
        "CMYK": Image.new("CMYK", (4, 3), (0, 255, 0, 0)),
    }
    for mode, image in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
        want = np.asarray(image.convert("RGB"))
        assert np.array_equal(np.asarray(load_image(buffer.getvalue())), want), mode
        assert np.array_equal(np.asarray(standalone.rgb(image)), want), mode
