"""Model files qtl is handed, as a reviewer found them: every reader says what a file is in one line.

Where `qtl export -o` may write (only over an earlier export of its format) and which format a suffix
picks; old-format torch files (raw pickles, `_use_new_zipfile_serialization=False`), harmful ones
included, read by the listing path (`read_checkpoint_info`, mapped) as by `load_checkpoint`; truncated
checkpoints and TorchScript files; exports with incomplete metadata; hand-made checkpoints whose class
names or metrics would break a reader later.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image

from qtl.cli.output import check_outputs
from qtl.config import ModelConfig
from qtl.deploy.export import export_model, read_metadata
from qtl.deploy.models import checkpoint_paths
from qtl.deploy.runtime import load_exported
from qtl.models.checkpoint import (
    FILE_KINDS,
    QTL_CHECKPOINT,
    CheckpointError,
    describe_file,
    file_kind,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from qtl.models.store import import_checkpoint, scan_checkpoints
from qtl.models.variants import build_model

TINY = "timm/test_efficientnet"  # random init: no download
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    mc = ModelConfig("linear", TINY, pretrained=False, class_names=("c0", "c1"))
    metrics = {"epoch": 1, "val_acc": 0.5, "val_loss": 0.7}
    return save_checkpoint(path, build_model(mc), mc, history=[metrics], metrics=metrics)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint and its two exports, made once (read-only: tests copy what they change)."""
    folder = tmp_path_factory.mktemp("exported")
    ckpt = tiny_checkpoint(folder / "m.pt")
    files = {fmt: export_model(ckpt, folder / f"m.{fmt}", fmt)[0] for fmt in ("onnx", "torchscript")}
    return {"checkpoint": ckpt, **files}


def one_line_error(err: str) -> str:
    assert err.startswith("qtl: error: ") and len(err.splitlines()) == 1, err
    return err


# ---- qtl export -o: which format, and what it may replace


def test_an_export_never_replaces_a_file_that_is_no_export_of_its_format(tmp_path, capsys, exported):
    """`qtl export q.pt -o photo.jpg` replaced the JPEG with a TorchScript zip; with --format too it
    replaced it. Other files are refused in one line and kept; an ONNX export is no TorchScript one."""
    ckpt = exported["checkpoint"]
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), "red").save(photo)
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    foreign = tmp_path / "foreign.torchscript"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), foreign)
    other_format = tmp_path / "other.torchscript"
    other_format.write_bytes(exported["onnx"].read_bytes())  # a qtl ONNX export under another name
    kept = {p: p.read_bytes() for p in (photo, notes, foreign, other_format)}
    cases = [
        (photo, (), "photo.jpg has the suffix .jpg, which names no export format"),
        (photo, ("--format", "torchscript"), f"{photo} exists and is no qtl export: an export replaces only"),
        (notes, (), f"{notes} exists and is no qtl export: an export replaces only an earlier qtl ONNX"),
        (foreign, (), f"{foreign} exists and is a TorchScript file, but no qtl export: an export replaces"),
        (
            foreign,
            ("--format", "onnx"),
            f"{foreign} exists and is a TorchScript file: an export replaces only",
        ),
        (
            other_format,
            (),
            f"{other_format} exists and is an ONNX file: an export replaces only an earlier qtl "
            "TorchScript export",
        ),
    ]
    for output, extra, message in cases:
        code, out, err = run_cli(capsys, "export", ckpt, "-o", output, *extra)
        assert (code, out) == (1, ""), (output, err)
        assert message in one_line_error(err), err
    assert {p: p.read_bytes() for p in kept} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_an_earlier_export_of_its_format_or_an_empty_file_is_replaced(tmp_path, capsys, exported):
    ckpt = exported["checkpoint"]
    for fmt in ("onnx", "torchscript"):
        earlier = tmp_path / f"earlier.{fmt}"
        earlier.write_bytes(exported[fmt].read_bytes())
        code, out, err = run_cli(capsys, "export", ckpt, "-o", earlier)
        assert code == 0 and out.startswith(f"wrote {earlier} ({fmt},"), err
    empty = tmp_path / "made-by-mktemp.ts"
    empty.touch()
    code, out, err = run_cli(capsys, "export", ckpt, "-o", empty)
    assert code == 0 and out.startswith(f"wrote {empty} (torchscript,"), err
    assert read_metadata(empty)["class_names"] == ["c0", "c1"]


def test_a_pt_output_needs_the_format_asked_for_and_then_says_what_it_is(tmp_path, capsys, exported):
    """-o x.pt wrote TorchScript silently, which qtl's .pt readers then refused. Without --format it is
    refused (the suffix of checkpoints); asked for, it is written, and every .pt reader names it a
    TorchScript export with the way to run it."""
    ckpt = exported["checkpoint"]
    for name in ("x.pt", "x.PTH"):
        code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / name)
        assert (code, out) == (1, "")
        assert f"{name}: {Path(name).suffix.lower()} is the suffix of qtl checkpoints" in one_line_error(err)
        assert "--format torchscript" in err
    assert not list(tmp_path.iterdir())
    target = tmp_path / "x.pt"
    code, out, err = run_cli(capsys, "export", ckpt, "-o", target, "--format", "torchscript")
    assert code == 0 and out.startswith(f"wrote {target} (torchscript,"), err
    assert file_kind(target) == "torchscript"
    for read in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"x\.pt is a TorchScript file .*--runtime torchscript"):
            read(target)
    _, skipped = scan_checkpoints(tmp_path)  # the folder listing of serve, compare --load and the app
    assert [(p.name, "--runtime torchscript" in why) for p, why in skipped] == [("x.pt", True)]
    assert load_exported(target, "torchscript").class_names == ["c0", "c1"]


def test_a_suffix_that_names_no_format_is_refused_unless_the_format_is_given(tmp_path, capsys, exported):
    ckpt = exported["checkpoint"]
    for name, said in (("model.bin", "the suffix .bin"), ("model", "no suffix")):
        code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / name)
        assert (code, out) == (1, "") and f"{name} has {said}, which names no export format" in err
    assert not list(tmp_path.iterdir())
    code, out, err = run_cli(capsys, "export", ckpt, "-o", tmp_path / "model.bin", "--format", "onnx")
    assert code == 0 and file_kind(tmp_path / "model.bin") == "onnx", err
    with pytest.raises(ValueError, match="names no export format"):
        export_model(ckpt, tmp_path / "m.jpg")  # the library as the CLI


# ---- old-format torch files: qtl's message on every path, and no code runs


class Evil:
    """Unpickling this creates `marker` (builtins.open in write mode): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def old_format_files(folder: Path, marker: Path) -> dict[str, Path]:
    payload = {"format": "qtl-checkpoint", "format_version": 1, "model_config": Evil(marker)}
    files = {"legacy": folder / "legacy.pt", "raw": folder / "raw.pt", "plain": folder / "plain.pt"}
    torch.save(payload, files["legacy"], _use_new_zipfile_serialization=False)
    files["raw"].write_bytes(pickle.dumps(payload, protocol=2))
    torch.save({"weight": torch.zeros(2)}, files["plain"], _use_new_zipfile_serialization=False)
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_old_format_files_get_qtl_message_on_the_listing_path_and_run_nothing(tmp_path):
    """read_checkpoint_info (the app's list and upload, serve and compare --load folders) mapped the
    file and gave torch's advice "mmap can only be used with files saved with
    `torch.save(_use_new_zipfile_serialization=True)`"; load_checkpoint said qtl's reason."""
    marker = tmp_path / "marker.txt"
    folder = tmp_path / "models"
    folder.mkdir()
    files = old_format_files(folder, marker)
    unsafe = r"is not a qtl checkpoint, or is unsafe: it holds Python objects \((io|builtins)\.open\) "
    said = {
        "legacy": unsafe,
        "raw": unsafe,
        "plain": r"is not a qtl checkpoint \(no 'qtl-checkpoint' marker\)$",
    }
    for key, path in files.items():
        for read in (read_checkpoint_info, load_checkpoint):
            with pytest.raises(CheckpointError, match=f"^{path.name} {said[key]}") as err:
                read(path)
            assert "mmap" not in str(err.value) and "torch.save" not in str(err.value)
        with pytest.raises(CheckpointError, match=f"^up-{path.name} {said[key]}"):  # the app's upload
            import_checkpoint(path.read_bytes(), f"up-{path.name}", tmp_path / "uploads")
    _, skipped = scan_checkpoints(folder)
    assert sorted(p.name for p, _ in skipped) == ["legacy.pt", "plain.pt", "raw.pt"]
    for path, why in skipped:
        assert re.match(f"{path.name} {said[path.stem]}", why), why
    with pytest.raises(CheckpointError, match="no qtl checkpoints in"):  # qtl serve / compare --load
        checkpoint_paths([folder])
    assert not marker.exists()
    assert not list((tmp_path / "uploads").iterdir())


def test_the_evil_payload_is_real(tmp_path):
    """Control: unpickled without protection, the payload does create the marker."""
    marker = tmp_path / "marker.txt"
    pickle.loads(pickle.dumps(Evil(marker))).close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_qtl_checkpoint_in_the_old_format_is_listed(tmp_path, exported):
    """The old serialisation of a real checkpoint is read whole instead of mapped, and listed."""
    payload = torch.load(exported["checkpoint"], weights_only=True)
    path = tmp_path / "old.pt"
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    assert read_checkpoint_info(path).class_names == ["c0", "c1"]
    assert [i.path.name for i in scan_checkpoints(tmp_path)[0]] == ["old.pt"]


# ---- truncated files


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_a_truncated_checkpoint_is_said_to_be_damaged(tmp_path, exported, fraction):
    """It said "[Errno 22] Invalid argument" (or torch's miniz advice), from torch."""
    data = exported["checkpoint"].read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    for read in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            read(path)
        said = "cut.pt is not a readable qtl checkpoint: it is a damaged or truncated zip archive (as a copy"
        assert str(err.value).startswith(said), str(err.value)
        assert "Errno" not in str(err.value) and "miniz" not in str(err.value)
    for runtime in ("onnx", "torchscript"):
        with pytest.raises(ValueError, match=r"^cut\.pt is a damaged or truncated zip archive"):
            load_exported(path, runtime)


def test_a_truncated_torchscript_file_is_said_to_be_damaged(tmp_path, exported):
    """--runtime torchscript called it "a torch file: a qtl checkpoint runs without --runtime"."""
    data = exported["torchscript"].read_bytes()
    path = tmp_path / "cut.torchscript"
    path.write_bytes(data[: len(data) // 2])
    assert file_kind(path) == "damaged"
    with pytest.raises(ValueError) as err:
        load_exported(path, "torchscript")
    assert str(err.value).startswith("cut.torchscript is a damaged or truncated zip archive")
    assert "torch file" not in str(err.value)
    with pytest.raises(
        CheckpointError, match=r"^cut\.torchscript is not a readable qtl checkpoint: it is a damaged"
    ):
        read_checkpoint_info(path)


# ---- one name for a file, whichever reader refuses it


def test_a_file_is_named_alike_by_export_the_report_outputs_and_runtime(tmp_path, exported):
    """`qtl export -o`, the outputs no report may replace (`check_outputs`) and --runtime each named a
    file in their own words ("a torch file", "a damaged zip (...)", "a model export (ONNX, ...)"): each
    now says what `describe_file` says, in a refusal naming the file."""
    data = exported["checkpoint"].read_bytes()
    files = {
        "checkpoint": tmp_path / "m.pt",
        "torch": tmp_path / "weights.pt",
        "damaged": tmp_path / "cut.pt",
        "onnx": tmp_path / "m.onnx",
        "torchscript": tmp_path / "m.torchscript",
    }
    files["checkpoint"].write_bytes(data)
    torch.save({"w": torch.zeros(2)}, files["torch"])
    files["damaged"].write_bytes(data[: len(data) // 2])
    for fmt in ("onnx", "torchscript"):
        files[fmt].write_bytes(exported[fmt].read_bytes())
    source = tiny_checkpoint(tmp_path / "source.pt")
    names = {label: describe_file(path) for label, path in files.items()}
    assert names == {"checkpoint": QTL_CHECKPOINT, **FILE_KINDS}
    for label, path in files.items():
        what, other = names[label], "torchscript" if label == "onnx" else "onnx"
        with pytest.raises(ValueError) as by_outputs:
            check_outputs({"--json": path})
        assert f"--json {path} is {what}: " in str(by_outputs.value)
        with pytest.raises(ValueError) as by_export:
            export_model(source, path, other)
        assert re.match(rf"{re.escape(str(path))} (exists and )?is {re.escape(what)}: ", str(by_export.value))
        with pytest.raises(ValueError) as by_runtime:
            load_exported(path, other)
        assert re.match(
            rf"{re.escape(path.name)} is (not .+ but )?{re.escape(what)}: ", str(by_runtime.value)
        )
        assert all(len(str(e.value).splitlines()) == 1 for e in (by_outputs, by_export, by_runtime))


# ---- exports with incomplete or broken metadata


def with_onnx_metadata(source: Path, target: Path, document: str | None) -> Path:
    import onnx

    proto = onnx.load_model(str(source))
    props = [(p.key, p.value) for p in proto.metadata_props if p.key != "qtl"]
    del proto.metadata_props[:]
    for key, value in props + ([("qtl", document)] if document is not None else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(target))
    return target


def metadata_cases(full: dict) -> dict[str, tuple[str, str]]:
    """name -> (the metadata document, what the one-line message says)."""
    partial = {k: full[k] for k in ("format", "format_version", "name", "variant", "class_names")}
    return {
        "partial": (
            json.dumps(partial),
            "has incomplete 'qtl' metadata: no 'preprocessing', 'input', 'output'",
        ),
        "badjson": (
            "{'format': 'qtl-export'}",
            "has damaged 'qtl' metadata (not JSON: Expecting property name",
        ),
        "notdict": ("[1, 2]", "is not a file written by qtl export (format 'list')"),
        "classes": (json.dumps({**full, "class_names": ["a", "a"]}), "class_names repeat a name"),
        "preprocessing": (
            json.dumps({**full, "preprocessing": {"crop": 224}}),
            "has incomplete 'qtl' metadata: preprocessing: malformed transform parameters",
        ),
        "newer": (json.dumps({**full, "format_version": 99}), "uses export format 99, newer than this qtl"),
    }


def test_an_onnx_file_with_incomplete_metadata_is_one_line_naming_it(tmp_path, capsys, exported):
    """A partial block raised a bare KeyError: 'preprocessing' in predict; invalid JSON said "Expecting
    property name..." without the file's name."""
    image = tmp_path / "bee.jpg"
    Image.new("RGB", (40, 30), "yellow").save(image)
    full = read_metadata(exported["onnx"])
    for name, (document, message) in metadata_cases(full).items():
        path = with_onnx_metadata(exported["onnx"], tmp_path / f"{name}.onnx", document)
        with pytest.raises(ValueError) as err:
            load_exported(path)
        assert str(err.value).startswith(f"{name}.onnx ") and message in str(err.value), str(err.value)
        assert len(str(err.value).splitlines()) == 1
        with pytest.raises(ValueError, match=f"^{name}.onnx "):
            read_metadata(path)
        code, out, err = run_cli(capsys, "predict", image, "-c", path, "--runtime", "onnx")
        assert (code, out) == (1, "") and f"{name}.onnx " in one_line_error(err), err
    full_copy = with_onnx_metadata(exported["onnx"], tmp_path / "full.onnx", json.dumps(full))
    assert load_exported(full_copy).class_names == ["c0", "c1"]  # control: the rewrite keeps a good file


def test_a_torchscript_file_with_incomplete_metadata_is_one_line_naming_it(tmp_path, exported):
    full = read_metadata(exported["torchscript"])
    module = torch.jit.script(torch.nn.Linear(2, 2))
    for name, (document, message) in metadata_cases(full).items():
        path = tmp_path / f"{name}.torchscript"
        torch.jit.save(module, str(path), _extra_files={"qtl.json": document})
        with pytest.raises(ValueError) as err:
            load_exported(path)
        assert str(err.value).startswith(f"{name}.torchscript ") and message in str(err.value)


# ---- hand-made checkpoints that passed validation and broke later


def edited(source: Path, target: Path, edit) -> Path:
    payload = torch.load(source, weights_only=True)
    edit(payload)
    torch.save(payload, target)
    return target


def set_classes(names):
    return lambda p: p["model_config"].__setitem__("class_names", names)


def set_metric(key, value):
    return lambda p: p["metrics"].__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (set_classes(["a", "a"]), "class names must be distinct, 'a' repeats"),
        (set_classes(["a", "b", "a", "b", "c"]), "class names must be distinct, 'a', 'b' repeats"),
        (set_classes(["a", ""]), "class names must be non-empty strings, got ['a', '']"),
        (set_classes(["a", "  "]), "class names must be non-empty strings"),
        (set_classes(["a", 3]), "class names must be non-empty strings"),
        (set_metric("val_acc", "high"), "metric 'val_acc' is 'high', not a number"),
        (set_metric("epoch", [1]), "metric 'epoch' is [1], not a number"),
        (set_metric("val_loss", True), "metric 'val_loss' is True, not a number"),
        (set_metric("val_acc", float("nan")), "val_acc nan is not a fraction between 0 and 1"),
        (set_metric("val_acc", 3.0), "val_acc 3.0 is not a fraction between 0 and 1"),
        (lambda p: p.__setitem__("metrics", ["val_acc", 0.9]), "'metrics' is a list, not a dict"),
    ],
    ids=[
        "dup",
        "dups",
        "empty",
        "blank",
        "number",
        "metric-text",
        "metric-list",
        "metric-bool",
        "acc-nan",
        "acc-3",
        "metrics-list",
    ],
)
def test_hand_made_checkpoints_that_would_break_later_are_refused(tmp_path, exported, edit, message):
    """["a", "a"] printed two "a" in predict and collapsed in JSON and the server; val_acc "high" made
    the server's GET /models answer 500 for every model."""
    path = edited(exported["checkpoint"], tmp_path / "hand.pt", edit)
    for read in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            read(path)
        assert str(err.value).startswith(f"hand.pt is damaged: {message}"), str(err.value)
    good = edited(exported["checkpoint"], tmp_path / "good.pt", lambda p: None)
    assert [p.name for p in checkpoint_paths([tmp_path])] == [good.name]  # what qtl serve <folder> loads


def test_metrics_not_measured_and_integer_ones_still_load(tmp_path, exported):
    """None (a value not measured: grad_* of a group absent) and ints (epoch, n_test) are numbers enough."""

    def edit(p):
        p["metrics"].update(grad_circuit=None, n_test=12, val_acc=1)

    info = read_checkpoint_info(edited(exported["checkpoint"], tmp_path / "ok.pt", edit))
    assert info.val_acc == 1 and info.metrics["grad_circuit"] is None
