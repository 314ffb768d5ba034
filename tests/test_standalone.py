"""standalone.py, the script users copy beside an exported model: every file it cannot use is one line
on stderr naming the file, exit status 1, never a traceback (onnxruntime's NoSuchFile or InvalidProtobuf,
a KeyError for an ONNX file without qtl's metadata, Pillow's errors without the image's name)."""

from __future__ import annotations

import json

import pytest
from test_export import tiny_checkpoint

from qtl.deploy import standalone
from qtl.deploy.export import export_model


@pytest.fixture(scope="module")
def files(tmp_path_factory, hymenoptera_dir):
    """A qtl checkpoint, its ONNX and TorchScript exports, an ONNX model qtl did not write, a JPEG."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path_factory.mktemp("standalone")
    ckpt = tiny_checkpoint(folder / "m.pt", "linear", 2)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = folder / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    jpeg = next((hymenoptera_dir / "val" / "bees").iterdir())
    return {
        "checkpoint": ckpt,
        "onnx": export_model(ckpt, folder / "m.onnx")[0],
        "torchscript": export_model(ckpt, folder / "m.ts")[0],
        "foreign": foreign,
        "jpeg": jpeg,
        "folder": folder,
    }


def run(capsys, *argv) -> tuple[int, str, str]:
    code = standalone.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_exported_model_classifies(files, capsys):
    code, out, err = run(capsys, files["onnx"], files["jpeg"])
    assert code == 0, err
    answer = json.loads(out)
    assert answer["image"] == str(files["jpeg"]) and answer["label"] in ("c0", "c1")


def test_a_model_it_cannot_run_is_one_line_naming_it(files, capsys):
    folder = files["folder"]
    garbage = folder / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07\x12 not really a model")
    said = {
        folder / "missing.onnx": f"{folder / 'missing.onnx'}: no such model file",
        folder: f"{folder} is a folder, not an ONNX file",
        files["checkpoint"]: f"{files['checkpoint']} is not an ONNX file but a zip archive (a qtl checkpoint",
        files["torchscript"]: f"{files['torchscript']} is not an ONNX file but a zip archive",
        files["foreign"]: f"{files['foreign']} is an ONNX file not written by qtl export (no 'qtl' metadata)",
        garbage: f"{garbage} cannot be opened as an ONNX model: ",
    }
    for model, message in said.items():
        code, out, err = run(capsys, model, files["jpeg"])
        assert (code, out) == (1, "") and err.startswith(f"error: {message}"), err
        assert len(err.splitlines()) == 1


def test_an_image_it_cannot_use_is_one_line_naming_it(files, capsys):
    folder = files["folder"]
    cut = folder / "cut.jpg"
    cut.write_bytes(files["jpeg"].read_bytes()[:5000])
    notes = folder / "notes.jpg"
    notes.write_text("not an image")
    said = {
        folder / "missing.jpg": f"{folder / 'missing.jpg'}: no such image file",
        folder: f"{folder} is a folder, not an image file",
        notes: f"{notes} is not an image Pillow reads",
        cut: f"{cut} cannot be decoded: ",
    }
    for image, message in said.items():
        code, out, err = run(capsys, files["onnx"], files["jpeg"], image)
        assert (code, out) == (1, "") and err.startswith(f"error: {message}"), err
        assert len(err.splitlines()) == 1
