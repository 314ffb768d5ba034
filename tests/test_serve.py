"""qtl serve: the REST API on a real uvicorn on a local port.

Answers: every variant (the shipped checkpoints and a hybrid one) labels real hymenoptera val images as
`qtl predict` does, alone and micro-batched with concurrent requests. Refusals: every hostile input of
the issue gets a 4xx with a one-line JSON reason, and the server still answers after each. Ray Serve
(slow): the same answers from a local Ray instance.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, tied_to_this_process
from PIL import Image

from qtl.deploy.batching import MicroBatcher
from qtl.deploy.limits import ServeLimits
from qtl.deploy.models import ModelStore
from qtl.deploy.server import create_app
from qtl.testing.served_api import ApiServer, multipart, post_images, request

SHIPPED = sorted((REPO / "models").glob("*.pt"))
QUANTUM = REPO / "models" / "quantum-efficientnet_lite0-imagenet-q4d6-s0.pt"
TOLERANCE = 1e-5


def val_images(root: Path, per_class: int) -> list[tuple[Path, str]]:
    """The first `per_class` val images of each class, with the class."""
    return [(p, d.name) for d in sorted((root / "val").iterdir()) for p in sorted(d.iterdir())[:per_class]]


def hybrid_from(quantum: Path, path: Path) -> Path:
    """A hybrid checkpoint (trainable backbone + dressed quantum circuit, stored whole) with the weights of
    a trained quantum one, so its labels are meaningful."""
    from qtl.models.checkpoint import load_checkpoint, save_checkpoint
    from qtl.models.variants import build_model

    q = load_checkpoint(quantum)
    config = dataclasses.replace(q.model_config, variant="hybrid")
    model = build_model(config, backbone=(q.model.backbone, q.model.in_features))
    model.head.load_state_dict(q.model.head.state_dict())
    return save_checkpoint(path, model.eval(), config, metrics={"val_acc": q.metrics["val_acc"]})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    """Every shipped checkpoint and a hybrid one: all five variants, noisy quantum included."""
    return [*SHIPPED, hybrid_from(QUANTUM, tmp_path_factory.mktemp("hybrid") / "hybrid-from-quantum.pt")]


@pytest.fixture(scope="module")
def server(checkpoints):
    with ApiServer(create_app(ModelStore.load(checkpoints), max_wait_s=0.05)) as running:
        yield running


# ---- answers


def test_every_variant_labels_val_images_as_qtl_predict(server, checkpoints, hymenoptera_dir, capsys):
    images = val_images(hymenoptera_dir, 4)
    code, out, err = run_cli(
        capsys, "predict", *[p for p, _ in images], *[f"-c{c}" for c in checkpoints], "--json"
    )
    assert code == 0, err
    expected = {row["image"]: row["predictions"] for row in json.loads(out)}
    names = [c.stem for c in checkpoints]
    variants = {m["variant"] for m in request(f"{server.url}/models")[1]}
    assert variants == {"quantum", "finetuned", "linear", "hybrid", "dressed-classical"}

    files = [(p.name, p.read_bytes()) for p, _ in images]
    status, together = post_images(server.url, files)  # one request with every image
    assert status == 200
    with ThreadPoolExecutor(len(files)) as pool:  # and one request per image, all at once
        alone = list(pool.map(lambda f: post_images(server.url, [f]), files))
    assert all(s == 200 for s, _ in alone)

    for answers in (together["images"], [a["images"][0] for _, a in alone]):
        assert [a["file"] for a in answers] == [p.name for p, _ in images]
        for (path, _), answer in zip(images, answers, strict=True):
            assert list(answer["models"]) == names
            for name, got in answer["models"].items():
                want = expected[str(path)][name]
                assert got["label"] == want["predicted"]
                assert list(got["probabilities"]) == list(want["probs"])
                assert np.allclose(
                    list(got["probabilities"].values()), list(want["probs"].values()), atol=TOLERANCE
                )
    for name in names:  # and the labels are right: each model scores >= 0.93 on val
        correct = sum(
            a["models"][name]["label"] == truth
            for (_, truth), a in zip(images, together["images"], strict=True)
        )
        assert correct >= 7, name


def test_models_health_and_docs(server, checkpoints):
    from qtl.models.checkpoint import read_checkpoint_info

    status, models = request(f"{server.url}/models")
    assert status == 200 and [m["name"] for m in models] == [c.stem for c in checkpoints]
    for m, path in zip(models, checkpoints, strict=True):
        info = read_checkpoint_info(path)
        assert (m["variant"], m["backbone"], m["classes"]) == (
            info.variant,
            "efficientnet_lite0",
            ["ants", "bees"],
        )
        assert m["accuracy"] == pytest.approx(info.val_acc)
        assert (m["n_qubits"] is not None) == (info.variant in ("quantum", "hybrid"))
    noisy = next(m for m in models if "noisy" in m["name"])
    assert "depolarizing" in noisy["noise"] or "dep" in noisy["noise"]
    assert request(f"{server.url}/healthz") == (
        200,
        {"status": "ok", "models": len(checkpoints), "pending": 0},
    )
    status, spec = request(f"{server.url}/openapi.json")
    assert status == 200 and {"/predict", "/models", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    status, page = request(f"{server.url}/docs")
    assert status == 200 and "swagger" in page.lower()


def test_explain_adds_each_models_heatmap(server, hymenoptera_dir):
    ((path, _),) = val_images(hymenoptera_dir, 1)[:1]
    status, answer = post_images(server.url, [(path.name, path.read_bytes())], "?explain=true")
    assert status == 200
    for name, got in answer["images"][0]["models"].items():
        heatmap = Image.open(io.BytesIO(base64.b64decode(got["heatmap_png"])))
        assert heatmap.format == "PNG" and heatmap.size == (224, 224), name
        assert got["heatmap_method"] in ("grad-cam", "saliency")
        assert np.asarray(heatmap).std() > 1  # a picture, not a blank
    status, plain = post_images(server.url, [(path.name, path.read_bytes())])
    assert "heatmap_png" not in plain["images"][0]["models"][QUANTUM.stem]


# ---- refusals


def png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "not an image " * 100)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg(hymenoptera_dir) -> bytes:
    return val_images(hymenoptera_dir, 1)[0][0].read_bytes()


def hostile_requests(jpeg: bytes) -> dict:
    """name -> (method, path, body, headers, expected status)."""

    def files(*parts):
        body, content_type = multipart(list(parts))
        return body, {"Content-Type": content_type}

    big = b"\0" * (50 * 2**20)
    tiny = png((2, 2), "RGB")
    return {
        "truncated jpeg": ("POST", "/predict", *files(("file", "bee.jpg", jpeg[: len(jpeg) // 3])), 400),
        # cut inside its header: the same fault, the same 400 (it was a 415, "not an image")
        "jpeg cut in its header": ("POST", "/predict", *files(("file", "bee.jpg", jpeg[:50])), 400),
        "png bomb 30000x30000": ("POST", "/predict", *files(("file", "bomb.png", png((30000, 30000)))), 413),
        "png over the pixel limit": ("POST", "/predict", *files(("file", "big.png", png((8000, 8000)))), 413),
        # its short side resized to 256 would be 5.12e9 pixels (OverflowError, a 500 for its whole batch)
        "png of 20000000 x 1": ("POST", "/predict", *files(("file", "line.png", png((20_000_000, 1)))), 400),
        "png of 1 x 16000": ("POST", "/predict", *files(("file", "line.png", png((1, 16_000)))), 400),
        # 108 million pixels in a request of a few KB, each image within max_pixels
        "3 pngs of 6000 x 6000": (
            "POST",
            "/predict",
            *files(*[("file", f"{i}.png", png((6000, 6000))) for i in range(3)]),
            413,
        ),
        "zip renamed .jpg": ("POST", "/predict", *files(("file", "photo.jpg", zipped())), 415),
        "0 bytes": ("POST", "/predict", *files(("file", "empty.jpg", b"")), 400),
        "50 MB body": ("POST", "/predict", *files(("file", "huge.jpg", big)), 413),
        "wrong content type": ("POST", "/predict", jpeg, {"Content-Type": "image/jpeg"}, 415),
        "json body": ("POST", "/predict", b'{"file": "bee.jpg"}', {"Content-Type": "application/json"}, 415),
        "no content type": ("POST", "/predict", jpeg, {}, 415),
        "path in the filename": ("POST", "/predict", *files(("file", "../../etc/passwd", jpeg)), 400),
        "windows path in the filename": ("POST", "/predict", *files(("file", "..\\x.jpg", jpeg)), 400),
        "1000 tiny images": (
            "POST",
            "/predict",
            *files(*[("file", f"{i}.png", tiny) for i in range(1000)]),
            413,
        ),
        "text instead of a file": ("POST", "/predict", *files(("file", None, b"bee.jpg")), 400),
        "no file field": ("POST", "/predict", *files(("image", "bee.jpg", jpeg)), 400),
        "broken multipart": (
            "POST",
            "/predict",
            b"--x\r\ngarbage",
            {"Content-Type": "multipart/form-data"},
            400,
        ),
        "explain not a boolean": ("POST", "/predict?explain=perhaps", *files(("file", "bee.jpg", jpeg)), 422),
        "explain misspelt": ("POST", "/predict?explian=true", *files(("file", "bee.jpg", jpeg)), 422),
        "unknown method": (
            "POST",
            "/predict?explain=true&method=lime",
            *files(("file", "bee.jpg", jpeg)),
            422,
        ),
        "GET /predict": ("GET", "/predict", None, {}, 405),
        "unknown path": ("GET", "/admin", None, {}, 404),
    }


HOSTILE = list(hostile_requests(b"x"))


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """A server over a small random-init model: refusals come before any model runs."""
    from test_export import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-quantum.pt", "quantum", 2)
    with ApiServer(create_app(ModelStore.load([ckpt]))) as running:
        yield running


@pytest.fixture(scope="module")
def hostile(jpeg) -> dict:
    return hostile_requests(jpeg)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_refused_with_a_4xx_and_the_server_answers_after(case, tiny_server, hostile, jpeg):
    method, path, body, headers, expected = hostile[case]
    status, answer = request(tiny_server.url + path, method, body, headers)
    assert status == expected, answer
    assert isinstance(answer, dict) and list(answer) == ["detail"], answer
    assert "\n" not in answer["detail"] and "Traceback" not in answer["detail"] and answer["detail"]
    assert request(f"{tiny_server.url}/healthz")[0] == 200
    status, fine = post_images(tiny_server.url, [("bee.jpg", jpeg)])
    assert status == 200 and fine["images"][0]["models"]["tiny-quantum"]["label"] in ("c0", "c1")


def test_a_misspelt_or_unknown_query_parameter_is_refused_not_ignored(tiny_server, jpeg):
    """`?explian=true` answered 200 without heatmaps; `method` without explain=true would be ignored too."""
    from qtl.analysis.explain import METHODS
    from qtl.deploy.server import METHODS as SERVED

    assert SERVED == METHODS  # the server's copy (torch-free) of what qtl explain --method offers
    for query, said in (
        ("?explian=true", "unknown query parameter 'explian': /predict takes explain and method"),
        ("?explain=true&x=1&y=2", "unknown query parameters 'x', 'y': /predict takes explain and method"),
        ("?method=saliency", "method chooses the heatmaps of explain=true: add explain=true, or drop method"),
    ):
        assert post_images(tiny_server.url, [("bee.jpg", jpeg)], query) == (422, {"detail": said})
    status, answer = post_images(tiny_server.url, [("bee.jpg", jpeg)], "?explain=true&method=lime")
    assert status == 422 and "'auto', 'grad-cam' or 'saliency'" in answer["detail"]


@pytest.mark.parametrize("method", ["saliency", "grad-cam"])
def test_explain_takes_the_method(tiny_server, jpeg, method):
    """A blank Grad-CAM map's note says "try saliency": ?method= is how, as qtl explain --method."""
    status, answer = post_images(tiny_server.url, [("bee.jpg", jpeg)], f"?explain=true&method={method}")
    assert status == 200, answer
    assert answer["images"][0]["models"]["tiny-quantum"]["heatmap_method"] == method


def test_a_method_a_model_cannot_use_is_a_422(tiny_server, jpeg):
    """grad-cam on a backbone without a convolutional feature map (a transformer) is the request's
    fault, said so, not a 500."""

    class NoFeatureMap(ModelStore):
        def explain(self, image, method="auto"):
            raise ValueError("vit_tiny has no convolutional feature map: use saliency")

    with ApiServer(create_app(NoFeatureMap(tiny_server.app.state.store.models))) as server:
        answer = post_images(server.url, [("bee.jpg", jpeg)], "?explain=true&method=grad-cam")
    assert answer == (
        422,
        {"detail": "method=grad-cam: vit_tiny has no convolutional feature map: use saliency"},
    )


def test_multipart_refusals_say_what_the_body_holds(tiny_server, jpeg):
    """Every parser error got "(at most 16 images)" appended, a body of one image and 17 text fields was
    "Too many fields ... (at most 16 images)", and a request without a content type "not no type"."""

    def send(*parts, content_type=None):
        body, multipart_type = multipart(list(parts))
        headers = {"Content-Type": content_type if content_type is not None else multipart_type}
        return request(f"{tiny_server.url}/predict", "POST", body, headers)

    image = ("file", "bee.jpg", jpeg)
    texts = [(f"note{i}", None, b"x") for i in range(17)]
    assert send(image, *texts) == (
        413,
        {
            "detail": "the body holds more than 16 text fields: /predict reads only the files in the "
            "field 'file'"
        },
    )
    assert send(image, *texts[:3])[0] == 200  # a few text fields are read past
    others = [("extra", f"{i}.jpg", jpeg) for i in range(7)]
    assert send(*[image] * 10, *others) == (
        413,
        {"detail": "the body holds more than 16 files: a request takes at most 16, every one an image in the "
         "field 'file'"},
    )  # fmt: skip
    assert send(image, ("image", "a.jpg", jpeg), ("photo", "b.jpg", jpeg)) == (
        400,
        {
            "detail": "the fields 'image', 'photo' hold files: /predict reads images from the field "
            "'file' only"
        },
    )
    # a part named only by filename*= (RFC 5987) is a text value to the parser: said as such, and why
    assert send(("file", None, jpeg)) == (
        400,
        {"detail": "the field 'file' must hold files, got a text value (a part without a filename= in its "
         "Content-Disposition)"},
    )  # fmt: skip
    status, answer = send(image, content_type="multipart/form-data")  # no boundary
    assert status == 400 and answer["detail"].startswith("malformed multipart body: ")
    # cut short: without its closing line, or inside its second file, the parser gave the first file
    # alone, a 200 that dropped an upload
    body, content_type = multipart([image, ("file", "b.jpg", jpeg)])
    for cut in (body[: body.rindex(b"--" + content_type.split("=")[1].encode())], body[: -len(jpeg) // 2]):
        assert request(f"{tiny_server.url}/predict", "POST", cut, {"Content-Type": content_type}) == (
            400,
            {"detail": "malformed multipart body: it ends before its closing boundary (cut short?)"},
        )
    assert "at most" not in answer["detail"]
    assert request(f"{tiny_server.url}/predict", "POST", jpeg, {}) == (
        415,
        {"detail": "send images as multipart/form-data in the field 'file', and this request has no "
         "Content-Type"},
    )  # fmt: skip


def test_a_jpeg_cut_short_is_one_answer_wherever_it_is_cut(tiny_server, jpeg):
    """Cut in its header (300 bytes) it was a 415 "not an image in an accepted format", cut later a 400
    "cannot be decoded": one fault, one answer."""
    for size in (50, 300, len(jpeg) // 3):
        status, answer = post_images(tiny_server.url, [("bee.jpg", jpeg[:size])])
        assert status == 400 and answer["detail"].startswith("bee.jpg cannot be decoded as JPEG: "), size


def test_healthz_answers_head(tiny_server):
    """HEAD /healthz (what many probes send) was a 405; then its schema gave GET and HEAD one operationId
    ("healthz_healthz_get" twice), which OpenAPI requires unique."""
    status, body = request(f"{tiny_server.url}/healthz", "HEAD")
    assert (status, body) == (200, "")
    spec = request(f"{tiny_server.url}/openapi.json")[1]
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) and "get" in spec["paths"]["/healthz"]


def test_models_name_the_engine_and_its_approximations(tiny_server, tmp_path):
    """A model on MPS truncated to bond 2 was described as noise "ideal", like an exact one."""
    from test_export import tiny_checkpoint

    from qtl.quantum.noise import NoiseConfig

    truncated = tiny_checkpoint(tmp_path / "mps.pt", "quantum", 2, engine="mps", max_bond=2)
    linear = tiny_checkpoint(tmp_path / "lin.pt", "linear", 2)
    sampled = tiny_checkpoint(
        tmp_path / "sampled.pt", "quantum", 2, noise=NoiseConfig(shots=50)
    )  # --shots 50
    loaded = ModelStore.load([truncated, linear, sampled]).models
    store = ModelStore({**tiny_server.app.state.store.models, **loaded})
    with ApiServer(create_app(store)) as server:
        status, models = request(f"{server.url}/models")
    assert status == 200
    got = {m["name"]: (m["engine"], m["max_bond"], m["shots"], m["noise"]) for m in models}
    assert got == {
        "tiny-quantum": ("native", None, None, "ideal"),
        "mps": ("mps", 2, None, "ideal"),
        "lin": (None, None, None, None),
        "sampled": ("native", None, 50, "50 shots"),  # its shots were null: "exact expectations"
    }


def test_serves_limits_are_checked_by_the_parser_with_the_flags_name(capsys):
    """--max-request-mb -1 said "max_request_bytes must be a positive whole number, got -1048576",
    --max-wait-ms -5 "max_wait_s must be at least 0, got -0.005": the flag and the value given."""
    for argv, said in (
        (["--max-request-mb", "-1"], "argument --max-request-mb: must be a number above 0, got -1"),
        (["--max-request-mb", "0"], "argument --max-request-mb: must be a number above 0, got 0"),
        (["--max-request-mb", "1e-9"], "argument --max-request-mb: must be at least one byte, got 1e-9"),
        (["--max-wait-ms", "-5"], "argument --max-wait-ms: must be a number 0 or more, got -5"),
        (["--max-wait-ms", "nan"], "argument --max-wait-ms: must be a number 0 or more, got nan"),
        (["--cpus-per-replica", "0"], "argument --cpus-per-replica: must be a number above 0, got 0"),
    ):
        with pytest.raises(SystemExit) as exited:
            run_cli(capsys, "serve", "m.pt", *argv)
        assert exited.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(said)


def test_a_folder_of_exports_says_exports_are_not_served(tmp_path):
    from qtl.models.checkpoint import CheckpointError

    for name in ("b.onnx", "a.ts", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CheckpointError) as refused:
        ModelStore.load([tmp_path])
    assert str(refused.value) == (
        f"no qtl checkpoints in {tmp_path} (it holds exported files, a.ts, b.onnx: qtl serve serves the .pt "
        "checkpoints they were exported from; an exported file runs with qtl predict --runtime or "
        "standalone.py)"
    )


def test_a_streamed_body_is_cut_at_the_limit(tiny_server):
    """No Content-Length (chunked): the bytes are counted as they arrive."""
    body, content_type = multipart([("file", "huge.png", b"\0" * (25 * 2**20))])

    def chunks():
        for i in range(0, len(body), 2**20):
            yield body[i : i + 2**20]

    # http.client sends an iterable without Content-Length as Transfer-Encoding: chunked
    status, answer = request(f"{tiny_server.url}/predict", "POST", chunks(), {"Content-Type": content_type})
    assert status == 413 and "over the limit" in answer["detail"]
    assert request(f"{tiny_server.url}/healthz")[0] == 200


def test_limits_are_configurable(tiny_server, jpeg):
    limits = ServeLimits(max_images=2, formats=("PNG",), max_pixels=100)
    with ApiServer(create_app(tiny_server.app.state.store, limits)) as server:
        status, answer = post_images(server.url, [("a.jpg", jpeg)])
        assert status == 415 and "(PNG)" in answer["detail"]
        status, answer = post_images(server.url, [("a.png", png((11, 10), "RGB"))])
        assert status == 413 and "11 x 10 pixels, over the limit of 100" in answer["detail"]
        status, answer = post_images(server.url, [(f"{i}.png", png((5, 5), "RGB")) for i in range(3)])
        assert status == 413
        assert post_images(server.url, [(f"{i}.png", png((5, 5), "RGB")) for i in range(2)])[0] == 200


def test_max_pixels_above_pillows_own_limit_holds(tiny_server, monkeypatch):
    """--max-pixels 200000000: an image of 196 million pixels was refused by Pillow's own check (over
    178,956,970), in Pillow's numbers; the server's limit is the one that holds now. (Headers alone:
    nothing is decoded before the size is checked.)"""
    import struct
    import zlib

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back afterwards

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def header_only(width: int, height: int) -> bytes:  # 1-bit gray, its pixel data cut to 4 bytes
        ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(4)) + chunk(b"IEND", b"")

    with ApiServer(create_app(tiny_server.app.state.store, ServeLimits(max_pixels=200_000_000))) as server:
        status, answer = post_images(server.url, [("within.png", header_only(14_000, 14_000))])
        assert status == 400 and answer["detail"].startswith("within.png cannot be decoded"), answer
        status, answer = post_images(server.url, [("over.png", header_only(14_000, 15_000))])
        assert (status, answer["detail"]) == (
            413,
            "over.png is 14000 x 15000 pixels, over the limit of 200,000,000 pixels",
        )


def test_formats_are_pillows_names_or_file_extensions(tiny_server, jpeg, tmp_path, capsys):
    """--formats JPG started a server that refused every JPEG (415): a file extension names its format,
    and a name Pillow cannot read is refused at startup, in one line with the choices."""
    assert ServeLimits(formats=("jpg", "PNG", ".tif", "jpeg")).formats == ("JPEG", "PNG", "TIFF")
    with ApiServer(create_app(tiny_server.app.state.store, ServeLimits(formats=("JPG",)))) as server:
        assert post_images(server.url, [("a.jpg", jpeg)])[0] == 200
        status, answer = post_images(server.url, [("a.png", png((5, 5), "RGB"))])
        assert status == 415 and answer["detail"] == "a.png is not an image in an accepted format (JPEG)"
    for name in ("XYZ", "pdf"):  # PDF: Pillow writes it, never reads it
        with pytest.raises(
            ValueError, match=f"^'{name}' is no image format Pillow reads: choose from .*JPEG"
        ):
            ServeLimits(formats=("PNG", name))
    code, out, err = run_cli(capsys, "serve", tmp_path / "none.pt", "--formats", "JPG", "XYZ")
    assert code == 1 and err.startswith("qtl: error: 'XYZ' is no image format Pillow reads: choose from ")
    assert len(err.splitlines()) == 1


def test_the_pixels_of_a_request_together_are_limited(tiny_server):
    """Each image within max_pixels, together over max_request_pixels: refused before any is decoded."""
    assert ServeLimits().max_request_pixels == 100_000_000  # the default
    assert ServeLimits(max_pixels=200_000_000).max_request_pixels == 200_000_000  # one image always fits
    with pytest.raises(ValueError, match="max_request_pixels must be a positive whole number, got 0"):
        ServeLimits(max_request_pixels=0)
    limits = ServeLimits(max_pixels=100, max_request_pixels=250)
    with ApiServer(create_app(tiny_server.app.state.store, limits)) as server:
        assert post_images(server.url, [(f"{i}.png", png((10, 10), "RGB")) for i in range(2)])[0] == 200
        status, answer = post_images(server.url, [(f"{i}.png", png((10, 10), "RGB")) for i in range(3)])
    assert (status, answer) == (
        413,
        {
            "detail": "the 3 images hold 300 pixels together, over the limit of 250 pixels per request: "
            "send fewer or smaller images"
        },
    )


# ---- micro-batching


def test_concurrent_requests_share_batches(tiny_server, jpeg):
    store = tiny_server.app.state.store
    with ApiServer(create_app(store, max_batch=8, max_wait_s=0.2)) as server:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: post_images(server.url, [(f"{i}.jpg", jpeg)]), range(12)))
        stats = server.app.state.batcher.stats
    assert all(status == 200 for status, _ in answers)
    assert stats.requests == 12 and stats.images == 12
    assert stats.batches < 12 and 1 < stats.largest <= 8  # requests shared batches, never over max_batch
    probs = [a["images"][0]["models"]["tiny-quantum"]["probabilities"] for _, a in answers]
    assert np.allclose([list(p.values()) for p in probs], list(probs[0].values()), atol=TOLERANCE)


def run(coroutine):
    return asyncio.run(coroutine)


def test_batcher_gathers_splits_and_carries():
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=4, max_wait_s=0.05, workers=1)

    async def main():
        return await asyncio.gather(
            batcher.submit([1]), batcher.submit([2, 3]), batcher.submit([4, 5]), batcher.submit([6])
        )

    assert run(main()) == [[2], [4, 6], [8, 10], [12]]
    assert calls == [[1, 2, 3], [4, 5, 6]]  # [4, 5] did not fit the first batch: it opened the second
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.largest) == (2, 4, 3)
    batcher.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_batcher_runs_at_most_workers_batches_at_once(workers):
    active, most = [0], [0]
    lock = threading.Lock()

    def slow(items):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return items

    batcher = MicroBatcher(slow, max_batch=2, max_wait_s=0.0, workers=workers)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, i]) for i in range(6)))

    assert run(main()) == [[i, i] for i in range(6)]
    assert most[0] == workers and batcher.stats.batches == 6
    batcher.close()


def test_compute_threads_share_torchs_threads(tiny_server):
    """The server's compute threads each run torch on an equal share of its threads (a new thread
    would start with all of them), so together they ask for no more than torch alone."""
    import torch

    def threads():
        time.sleep(0.05)  # every worker takes one
        return torch.get_num_threads()

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    batcher = create_app(tiny_server.app.state.store, workers=4).state.batcher

    async def main():
        return await asyncio.gather(*(batcher.compute(threads) for _ in range(4)))

    try:
        got = run(main())
    finally:
        batcher.close()
        torch.set_num_threads(before)
    assert got == [1, 1, 1, 1]


def test_batcher_waits_at_most_max_wait_alone_and_passes_errors():
    def fail(items):
        raise RuntimeError("model broke")

    batcher = MicroBatcher(lambda items: items, max_batch=64, max_wait_s=0.05)
    t0 = time.perf_counter()
    assert run(batcher.submit(["a"])) == ["a"]
    assert time.perf_counter() - t0 < 1.0
    batcher.close()
    broken = MicroBatcher(fail, max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="model broke"):
        run(broken.submit([1]))
    broken.close()


def test_a_failing_item_fails_its_own_request_only():
    """A batch that fails runs each request again alone: the one whose item breaks `run` gets the error,
    the requests that shared its batch their answers."""
    calls = []

    def double(items):
        calls.append(list(items))
        if "poison" in items:
            raise OverflowError("cannot resize")
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=8, max_wait_s=0.1, workers=1)

    async def main():
        return await asyncio.gather(
            batcher.submit([1]),
            batcher.submit(["poison", 2]),
            batcher.submit([3, 4]),
            return_exceptions=True,
        )

    good, bad, other = run(main())
    batcher.close()
    assert (good, other) == ([2], [6, 8])
    assert isinstance(bad, OverflowError) and str(bad) == "cannot resize"
    assert calls == [[1, "poison", 2, 3, 4], [1], ["poison", 2], [3, 4]]
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.images) == (2, 2, 3)


def test_a_request_that_breaks_the_model_leaves_its_batch_answered(tiny_server, jpeg):
    """Over HTTP: the poisoned request is its own 500, every request batched with it a 200."""

    calls = []

    class Poisoned(ModelStore):
        def predict(self, images):
            calls.append([image.width for image in images])
            if any(image.width == 13 for image in images):
                raise OverflowError("Python int too large to convert to C int")
            return super().predict(images)

    store = Poisoned(tiny_server.app.state.store.models)
    files = [[("poison.png", png((13, 13), "RGB"))]] + [[(f"{i}.jpg", jpeg)] for i in range(5)]
    with ApiServer(create_app(store, max_batch=8, max_wait_s=0.3, workers=1)) as server:
        with ThreadPoolExecutor(len(files)) as pool:
            answers = list(pool.map(lambda f: post_images(server.url, f), files))
    assert answers[0] == (500, {"detail": "internal error (OverflowError); the server log has the details"})
    assert [status for status, _ in answers[1:]] == [200] * 5
    assert any(13 in widths and len(widths) > 1 for widths in calls)  # it did share a batch


def test_a_failing_model_is_a_one_line_500_without_internals(tiny_server, jpeg):
    class Broken(ModelStore):
        def predict(self, images):
            raise RuntimeError("secret internal state /etc/shadow")

    with ApiServer(create_app(Broken(tiny_server.app.state.store.models))) as server:
        status, answer = post_images(server.url, [("a.jpg", jpeg)])
        assert status == 500 and answer == {
            "detail": "internal error (RuntimeError); the server log has the details"
        }
        assert request(f"{server.url}/healthz")[0] == 200


# ---- which checkpoints


def test_two_checkpoints_of_one_name_are_refused_by_both_servers(tmp_path, capsys):
    """Models are named by their file stems: a/m.pt and b/m.pt are refused alike by the server and by Ray
    Serve, which silently served one of them; the same file given twice is served once."""
    from test_export import tiny_checkpoint

    from qtl.deploy.models import checkpoint_paths
    from qtl.deploy.ray_serve import application
    from qtl.models.checkpoint import CheckpointError

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = tiny_checkpoint(tmp_path / "a" / "m.pt", "linear", 2, seed=1)
    b = tiny_checkpoint(tmp_path / "b" / "m.pt", "linear", 2, seed=2)
    said = f"two checkpoints are named 'm' ({a} and {b}): models are named by their file names, so rename one"
    with pytest.raises(CheckpointError) as refused:
        application([a, b])
    assert str(refused.value) == said
    with pytest.raises(CheckpointError) as refused:
        ModelStore.load([a, b])
    assert str(refused.value) == said
    code, out, err = run_cli(capsys, "serve", a, tmp_path / "b", "--ray", "--port", free_port())
    assert code == 1 and err.splitlines()[-1] == f"qtl: error: {said}"  # before Ray starts
    assert checkpoint_paths([a, tmp_path / "a", a]) == [a]
    assert list(ModelStore.load([a, a]).models) == ["m"]


def test_a_folders_files_that_are_no_checkpoints_are_said_skipped(tmp_path, caplog):
    """Serving a folder skipped its other *.pt files silently: each is one warning line with the reason."""
    import logging

    from test_export import tiny_checkpoint

    folder = tmp_path / "models"
    folder.mkdir()
    good = tiny_checkpoint(folder / "good.pt", "linear", 2)
    (folder / "notes.pt").write_text("not a checkpoint")
    (folder / "cut.pt").write_bytes(good.read_bytes()[:2000])
    (folder / "readme.txt").write_text("not a .pt file: not a candidate")
    with caplog.at_level(logging.WARNING, logger="qtl.deploy.models"):
        assert list(ModelStore.load([folder]).models) == ["good"]
    said = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0] for line in said] == [
        f"skipped {folder / 'cut.pt'}",
        f"skipped {folder / 'notes.pt'}",
    ]
    assert all("\n" not in line and len(line.split(": ", 1)[1]) > 5 for line in said)
    good.unlink()
    done = subprocess.run(  # the program's own stderr (in this process pytest holds the log)
        [sys.executable, "-m", "qtl", "serve", str(folder), "--port", "0"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        **tied_to_this_process(),  # it is refused, but should it serve, it dies with pytest
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and lines[-1] == f"qtl: error: no qtl checkpoints in {folder}"
    assert [line.split(":")[:3] for line in lines[:-1]] == [
        ["qtl", " warning", f" skipped {folder / 'cut.pt'}"],
        ["qtl", " warning", f" skipped {folder / 'notes.pt'}"],
    ]


def test_the_address_of_a_server_on_port_0_names_the_port_it_opened():
    from qtl.deploy.server import listen, listen_url

    with listen("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        assert port != 0 and listen_url(sock) == f"http://127.0.0.1:{port}"
    with listen("::1", 0) as sock:
        assert listen_url(sock) == f"http://[::1]:{sock.getsockname()[1]}"


# ---- the command line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_qtl_serve_answers_curl_like_requests(tmp_path, jpeg, capsys):
    from test_export import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "served.pt", "linear", 3)
    proc = subprocess.Popen(  # port 0: a free one, which the address it prints names (it said :0)
        [sys.executable, "-m", "qtl", "serve", str(ckpt), "--port", "0", "--max-wait-ms", "1"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **tied_to_this_process(),  # it dies with pytest, even a killed one
    )
    try:
        said = proc.stderr.readline()  # the first line, once the models are loaded
        url = (
            said.split(" at ", 1)[1].split()[0] if " at " in said else pytest.fail(said + proc.stderr.read())
        )
        port = int(url.rsplit(":", 1)[1])
        assert said.startswith("serving served at http://127.0.0.1:") and port != 0
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(f"{url}/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.poll() else ""
            )
            time.sleep(0.3)
        status, answer = post_images(url, [("bee.jpg", jpeg)])
        from qtl.analysis.inference import predict
        from qtl.models.checkpoint import load_checkpoint

        want = predict(load_checkpoint(ckpt), jpeg)["served"]
        got = answer["images"][0]["models"]["served"]
        assert status == 200 and got["label"] == want.predicted[0]
        assert np.allclose(list(got["probabilities"].values()), want.probs[0].tolist(), atol=TOLERANCE)
        # the same port again: a busy port is one line, before any model loads
        code, _, err = run_cli(capsys, "serve", ckpt, "--port", port)
        assert (
            code == 1
            and err.strip() == f"qtl: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- Ray Serve (slow: a local Ray instance starts)


@pytest.mark.slow
def test_ray_serve_gives_the_single_process_answers(tiny_server, jpeg, hymenoptera_dir, tmp_path):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from test_export import tiny_checkpoint

    from qtl.deploy.ray_serve import run_ray

    ckpts = [
        tiny_checkpoint(tmp_path / "rq.pt", "quantum", 3, seed=1),
        tiny_checkpoint(tmp_path / "rl.pt", "linear", 3, seed=2),
    ]
    files = [(p.name, p.read_bytes()) for p, _ in val_images(hymenoptera_dir, 2)]
    with ApiServer(create_app(ModelStore.load(ckpts))) as single:
        expected = post_images(single.url, files)
        expected_models = request(f"{single.url}/models")
        refusals = {q: post_images(single.url, files, q) for q in ("?explian=true", "?method=saliency")}
    assert all(status == 422 for status, _ in refusals.values())
    port = free_port()
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False)
    try:
        run_ray(ckpts, host="127.0.0.1", port=port, blocking=False, max_wait_s=0.01)
        url = f"http://127.0.0.1:{port}"
        got = post_images(url, files)
        assert got[0] == 200 and expected[0] == 200
        for a, b in zip(got[1]["images"], expected[1]["images"], strict=True):
            assert a["file"] == b["file"] and a["models"].keys() == b["models"].keys()
            for name in a["models"]:
                assert a["models"][name]["label"] == b["models"][name]["label"]
                assert np.allclose(
                    list(a["models"][name]["probabilities"].values()),
                    list(b["models"][name]["probabilities"].values()),
                    atol=TOLERANCE,
                )
        status, refused = request(f"{url}/predict", "POST", jpeg, {"Content-Type": "image/jpeg"})
        assert status == 415 and list(refused) == ["detail"]
        for query, refused in refusals.items():  # a query it does not take: as the single process
            assert post_images(url, files, query) == refused
        assert request(f"{url}/models") == expected_models
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_blank_heatmap_comes_with_its_note():
    """?explain=true on a model whose predicted class has no positive Grad-CAM evidence (a linear head
    whose rows are all negative): the answer says why its heatmap is blank; a plain answer has no note."""
    import torch

    from qtl.config import ModelConfig
    from qtl.models.checkpoint import LoadedModel
    from qtl.models.variants import build_model

    mc = ModelConfig("linear", pretrained=False, class_names=("against", "for"))
    torch.manual_seed(0)
    loaded = LoadedModel(build_model(mc).eval(), mc, list(mc.class_names), [], {}, {})
    with torch.no_grad():  # features are >= 0, so 'against' (-1 per feature) wins over 'for' (-2)
        loaded.model.head.weight.copy_(torch.tensor([-1.0, -2.0]).repeat_interleave(512).view(2, 512))
    picture = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
        picture, "PNG"
    )
    with ApiServer(create_app(ModelStore({"blank": loaded}))) as server:
        status, answer = post_images(server.url, [("x.png", picture.getvalue())], "?explain=true")
        assert status == 200
        got = answer["images"][0]["models"]["blank"]
        assert got["label"] == "against" and got["heatmap_method"] == "grad-cam"
        assert got["heatmap_note"] == "no positive Grad-CAM evidence for against; try saliency"
        status, plain = post_images(server.url, [("x.png", picture.getvalue())])
        assert status == 200 and "heatmap_note" not in plain["images"][0]["models"]["blank"]
