"""Decoding images as every path of qtl does: the library's loader (`qtl predict`, training), the server's
`decode_upload` and the portable `standalone.py`, for the modes Pillow's own RGB conversion gets wrong.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
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
    from qtl.analysis.inference import as_images

    limits = ServeLimits(formats=("PNG", "TIFF"))
    for name, path in files.items():
        loaded = load_image(path)
        uploaded = decode_upload(path.read_bytes(), path.name, limits)
        portable = standalone.rgb(Image.open(path))
        (given,) = as_images(Image.open(path))  # a PIL image handed to predict() (the app's uploads)
        decoders = (
            ("load_image", loaded),
            ("decode_upload", uploaded),
            ("standalone", portable),
            ("predict", given),
        )
        for decoder, image in decoders:
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


def test_a_32bit_image_of_8bit_levels_keeps_them(gray):
    """Image.fromarray of an int32 array of 0..255 (mode I), as a caller may hand predict(): its levels
    are kept, not shifted into black as 16-bit ones; every decoder alike."""
    from qtl.analysis.inference import as_images
    from qtl.data.images import to_rgb

    image = Image.fromarray(gray.astype(np.int32), "I")
    want = np.repeat(gray[..., None], 3, axis=2)
    for out in (to_rgb(image), standalone.rgb(image), as_images(image)[0]):
        assert np.array_equal(np.asarray(out), want)


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


# ---- shapes a model's resize would blow up


def thin_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of width x height: a few bytes to hundreds of KB for millions of pixels."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


THIN = [(20_000_000, 1), (1, 16_000), (10_100, 100)]


@pytest.mark.parametrize("size", THIN, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_thin_image_is_refused_before_decoding_everywhere(size, tmp_path, capsys):
    """Resizing the short side of 20,000,000 x 1 to 256 would make 5.12e9 pixels (OverflowError, a 500 in
    the server), 16,000 x 1 a gigapixel: refused by its header, in one line, by every decoder."""
    from test_export import tiny_checkpoint

    from qtl.data.images import ImageLoadError, check_image
    from qtl.deploy.limits import Refused

    path = tmp_path / "thin.png"
    path.write_bytes(thin_png(*size))
    said = f"{size[0]:,} x {size[1]:,} pixels, one side over 100 times the other"
    with pytest.raises(ImageLoadError, match=said):
        load_image(path)
    assert said in check_image(path)  # the training loader skips it, with the reason
    with pytest.raises(Refused, match=said) as refused:
        decode_upload(path.read_bytes(), "thin.png", ServeLimits())
    assert refused.value.status == 400
    with pytest.raises(ValueError, match=said):
        standalone.load(str(path))
    with pytest.raises(ValueError, match=said):  # a decoded image handed to the portable preprocessing
        standalone.preprocess(Image.new("RGB", size), {"resize": 256, "crop": 224})

    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 2)
    code, out, err = run_cli(capsys, "predict", path, "-c", ckpt)
    assert code == 1 and out == ""
    assert err == f"qtl: error: {path} is {said}: resizing its short side for a model would blow it up\n"
    assert standalone.main([str(tmp_path / "no-model.onnx"), str(path)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {path} is {said}: resizing its short side for a model would blow it up\n"
    )


def test_wide_but_not_thin_images_decode(tmp_path):
    """100:1 is the limit: a 25,600 x 256 panorama, and a 100 x 1 strip (resized: 25,600 x 256), pass."""
    for size in [(25_600, 256), (100, 1), (1, 100)]:
        assert load_image(thin_png(*size)).size == size
        assert decode_upload(thin_png(*size), "ok.png", ServeLimits()).size == size


#: EXIF orientation -> how the stored pixels are made from the upright photo (the inverse of the turn a
#: viewer applies: 3 turns by 180 degrees, 6 by 90 clockwise, 8 by 90 counter-clockwise)
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def sideways(photo: Image.Image, orientation: int, path: Path) -> Path:
    """`photo` stored turned, with the EXIF orientation tag that tells a viewer to turn it back (as a phone
    stores a portrait photo)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo.transpose(STORED[orientation]).save(path, exif=exif)
    return path


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_is_applied_by_every_decoder(hymenoptera_dir, tmp_path, suffix):
    """A photo stored sideways with its orientation tag decodes upright, as viewers and browsers show it, in
    the loader (also at draft scale), the server, the portable script and predict()'s PIL path; a photo
    already turned by ImageOps.exif_transpose is not turned twice."""
    from PIL import ImageOps

    from qtl.analysis.inference import as_images

    photo = load_image(sorted((hymenoptera_dir / "val" / "bees").iterdir())[0])
    assert photo.width != photo.height
    want = np.asarray(photo).astype(int)
    limits = ServeLimits(formats=("PNG", "JPEG"))
    for orientation in STORED:
        path = sideways(photo, orientation, tmp_path / f"o{orientation}.{suffix}")
        assert Image.open(path).getexif()[0x0112] == orientation
        decoded = {
            "load_image": load_image(path),
            "decode_upload": decode_upload(path.read_bytes(), path.name, limits),
            "standalone": standalone.load(str(path)),
            "predict": as_images(Image.open(path))[0],
            "predict, turned already": as_images(ImageOps.exif_transpose(Image.open(path)))[0],
        }
        for decoder, image in decoded.items():
            assert image.size == photo.size, (orientation, decoder)
            error = np.abs(np.asarray(image).astype(int) - want).mean()
            assert error < (4 if suffix == "jpg" else 1e-9), (orientation, decoder, error)
        small = load_image(path, draft=photo.height // 2)  # decoded at reduced scale, then turned
        assert (small.width > small.height) == (photo.width > photo.height), orientation


def test_a_sideways_photo_is_classified_as_the_upright_one(hymenoptera_dir, tmp_path, capsys):
    import json

    from test_export import tiny_checkpoint

    photo = load_image(sorted((hymenoptera_dir / "val" / "ants").iterdir())[1])
    upright_file = tmp_path / "upright.png"
    photo.save(upright_file)
    turned_file = sideways(photo, 6, tmp_path / "turned.png")
    ckpt = tiny_checkpoint(tmp_path / "m.pt", "linear", 3)
    code, out, err = run_cli(capsys, "predict", upright_file, turned_file, "-c", ckpt, "--json")
    assert code == 0, err
    upright, turned = (row["predictions"]["m"] for row in json.loads(out))
    assert list(turned["probs"].values()) == list(upright["probs"].values())


def test_corrupt_exif_is_read_as_no_tag(tmp_path):
    """A camera's corrupt EXIF block (a tag larger than the file, an offset past its end): the photo loads
    as stored in every decoder, not refused or turned by a half-read tag; a well-formed orientation in the
    same layout still turns. (Pillow warns of such a block when it opens the file, before qtl reads it.)"""
    import struct
    import warnings

    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(
        photo, "JPEG"
    )
    jpeg = photo.getvalue()

    def with_exif(payload: bytes) -> bytes:
        return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]

    head = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1)
    files = {
        "tag larger than the file": with_exif(head + struct.pack("<HHII", 0x0112, 3, 1000, 8) + bytes(4)),
        "offset past the end": with_exif(b"Exif\x00\x00II*\x00" + struct.pack("<I", 9999)),
        "orientation 6": with_exif(head + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)),
    }
    limits = ServeLimits(formats=("JPEG",))
    for name, data in files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.jpg"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own, at Image.open
            sizes = {
                load_image(data).size,
                decode_upload(data, path.name, limits).size,
                standalone.load(str(path)).size,
            }
        assert sizes == ({(30, 50)} if name == "orientation 6" else {(50, 30)}), name


def test_a_corrupt_exif_block_prints_no_warning(tmp_path):
    """An EXIF block whose entries are cut short: qtl reads it as no tag, but Pillow's "Corrupt EXIF data"
    warning, two lines on stderr, came out of `qtl predict` and the exported files' standalone.py. A
    process of its own: the filter is the module's, set when it is imported (pytest resets filters)."""
    import struct
    import subprocess
    import sys

    photo = io.BytesIO()
    Image.new("RGB", (50, 30), (90, 20, 200)).save(photo, "JPEG")
    jpeg = photo.getvalue()
    payload = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 5)  # five entries announced, none there
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:])
    for script in (  # each alone: either's filter is the process's
        f"from qtl.data.images import load_image; print(load_image({str(path)!r}).size)",
        "import sys; sys.path.insert(0, 'qtl/deploy'); import standalone;"
        f"print(standalone.load({str(path)!r}).size)",
    ):
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, "(50, 30)\n", ""), script
