"""Model files qtl is handed, as a reviewer found them: every reader says what a file is in one line.

Old-format torch files (raw pickles, `_use_new_zipfile_serialization=False`), harmful ones included,
read by the listing path (`read_checkpoint_info`, mapped) as by `load_checkpoint`; truncated checkpoints
and TorchScript files; hand-made checkpoints whose class names or metrics would break a reader later.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from qtl.config import ModelConfig
from qtl.deploy.export import export_model
from qtl.deploy.models import checkpoint_paths
from qtl.deploy.runtime import load_exported
from qtl.models.checkpoint import (
    CheckpointError,
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
        said = (
            "cut.pt is not a readable qtl checkpoint: it is damaged or truncated (an incomplete zip archive"
        )
        assert str(err.value).startswith(said), str(err.value)
        assert "Errno" not in str(err.value) and "miniz" not in str(err.value)
    for runtime in ("onnx", "torchscript"):
        with pytest.raises(ValueError, match=r"^cut\.pt is damaged or truncated"):
            load_exported(path, runtime)


def test_a_truncated_torchscript_file_is_said_to_be_damaged(tmp_path, exported):
    """--runtime torchscript called it "a torch file: a qtl checkpoint runs without --runtime"."""
    data = exported["torchscript"].read_bytes()
    path = tmp_path / "cut.torchscript"
    path.write_bytes(data[: len(data) // 2])
    assert file_kind(path) == "damaged"
    with pytest.raises(ValueError) as err:
        load_exported(path, "torchscript")
    assert str(err.value).startswith("cut.torchscript is damaged or truncated")
    assert "torch file" not in str(err.value)
    with pytest.raises(
        CheckpointError, match=r"^cut\.torchscript is not a readable qtl checkpoint: it is damaged"
    ):
        read_checkpoint_info(path)


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
