"""What checkpoints record about where they were made: no absolute path of the machine, and files written
by older qtl versions still load and predict as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, make_image_folder, zip_folder
from PIL import Image

from qtl.analysis.inference import predict
from qtl.config import ModelConfig
from qtl.data.datasets import open_dataset, recorded_root
from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig

SHIPPED = sorted((REPO / "models").glob("*.pt"))
MANIFEST = [line for line in (REPO / "models" / "SHIPPED").read_text().split() if line.endswith(".pt")]
DATA = Path(__file__).parent / "data"
PRE_MOVE = DATA / "quantum-resnet18-random-q4d2-fb103e4.pt"


def strings(value, where="") -> list[tuple[str, str]]:
    """Every (key path, string) inside nested dicts/lists/tuples; tensors are skipped."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [s for i, v in enumerate(value) for s in strings(v, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) else []


def absolute_paths(payload: dict) -> list[tuple[str, str]]:
    """The strings in a checkpoint (weights left out) that hold an absolute or home-relative path,
    alone or as a word of a longer text."""
    found = strings({k: v for k, v in payload.items() if k != "state_dict"})
    return [(k, s) for k, s in found if any(w.strip("'\"(`").startswith(("/", "~")) for w in s.split())]


def test_the_helper_finds_a_nested_path():
    """The search walks dicts and lists: a path deep inside meta is found, plain names are not."""
    payload = {"meta": {"dataset": {"root": "hymenoptera_data", "runs": [{"x": "/srv/data/ants"}]}}}
    assert absolute_paths(payload) == [(".meta.dataset.runs[0].x", "/srv/data/ants")]
    note = {"note": "made from '~/scans' by hand", "ratio": "1/2"}
    assert absolute_paths(note) == [(".note", "made from '~/scans' by hand")]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoints_hold_no_machine_path(path):
    """models/*.pt: model config, recipe, history and meta name no folder of the machine they came from."""
    assert absolute_paths(torch.load(path, map_location="cpu", weights_only=True)) == []


def test_every_shipped_checkpoint_was_searched():
    assert sorted(p.name for p in SHIPPED) == sorted(MANIFEST) and len(MANIFEST) >= 5


class TestRecordedDataset:
    @pytest.fixture
    def data_folder(self, tmp_path, monkeypatch) -> Path:
        """The data folder of a fresh machine, with hymenoptera's folder name holding a tiny dataset."""
        monkeypatch.setenv("QTL_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "cache" / "data" / "hymenoptera_data"))
        make_image_folder(tmp_path / "cache" / "data" / "hymenoptera_data")
        return tmp_path / "cache" / "data"

    def test_the_default_dataset_by_name(self, data_folder, tmp_path):
        """A newly saved checkpoint records the default dataset by name and finds its folder again."""
        ds = open_dataset(download=False)
        mc = ModelConfig("quantum", pretrained=False, class_names=ds.classes, circuit=CircuitConfig(2, 1))
        path = save_checkpoint(tmp_path / "q.pt", build_model(mc), mc, dataset=ds.record())
        recorded = read_checkpoint_info(path).meta["dataset"]
        assert (recorded["root"], recorded["source"]) == ("hymenoptera_data", "hymenoptera")
        assert absolute_paths(torch.load(path, weights_only=True)) == []
        assert recorded_root(recorded) == data_folder / "hymenoptera_data"

    def test_an_arranged_zip_relative_to_the_store(self, data_folder, tmp_path):
        ds = open_dataset(zip_folder(make_image_folder(tmp_path / "scans"), tmp_path / "scans.zip"))
        recorded = ds.record()
        assert recorded["source"] == "scans.zip" and recorded["root"] == ds.root.name
        assert recorded_root(recorded) == ds.root

    def test_an_arranged_folder_whose_images_moved_is_not_found(self, data_folder, tmp_path):
        """A folder of class folders is arranged as links to its images: once the folder moves (or an
        image goes), the arrangement's manifest still held the recorded counts, so it was found, and
        scoring failed on "train/ants has no image files"; it is not found now (callers fall back)."""
        source = tmp_path / "flat"
        for split in ("train", "val"):
            shutil.copytree(make_image_folder(tmp_path / "tree") / split, source, dirs_exist_ok=True)
        ds = open_dataset(source)
        recorded = ds.record()
        assert recorded_root(recorded) == ds.root
        next((source / "cats").iterdir()).unlink()  # one image gone: its link leads nowhere
        assert recorded_root(recorded) is None
        source.rename(tmp_path / "moved")  # the whole folder
        assert recorded_root(recorded) is None

    def test_a_folder_elsewhere_by_its_name(self, data_folder, tmp_path):
        """A dataset outside the data folder and the store is recorded by its folder name only; on a
        machine without that folder in the data folder, nothing is found (callers fall back)."""
        ds = open_dataset(make_image_folder(tmp_path / "elsewhere" / "mine"))
        recorded = ds.record()
        assert (recorded["root"], recorded["source"]) == ("mine", "mine")
        assert recorded_root(recorded) is None
        make_image_folder(data_folder / "mine")
        assert recorded_root(recorded) == data_folder / "mine"

    def test_a_folder_in_the_working_folder_by_its_path_there(self, data_folder, tmp_path, monkeypatch):
        """A project's data/tv3, trained from the project's folder, is recorded as data/tv3 (no absolute
        path) and found again from there; from another folder it is not (callers fall back)."""
        project = tmp_path / "project"
        make_image_folder(project / "data" / "tv3")
        monkeypatch.chdir(project)
        recorded = open_dataset("data/tv3").record()
        assert (recorded["root"], recorded["source"]) == ("data/tv3", "data/tv3")
        assert recorded_root(recorded) == project / "data" / "tv3"
        monkeypatch.chdir(tmp_path)
        assert recorded_root(recorded) is None
        monkeypatch.chdir(Path(tmp_path.anchor))  # a file system's root is no base: names only
        assert open_dataset(project / "data" / "tv3").record()["root"] == "tv3"

    def test_a_folder_of_that_name_holding_other_images_is_not_it(self, data_folder, tmp_path):
        """A relative root is looked for beside today's data folder: a folder of the recorded name whose
        images per split and class differ is another dataset, so it is not taken for the recorded one."""
        recorded = open_dataset(make_image_folder(tmp_path / "elsewhere" / "mine")).record()
        make_image_folder(data_folder / "mine", per_split=(5, 4))  # same classes, other images
        assert recorded_root(recorded) is None
        assert recorded_root({k: v for k, v in recorded.items() if k != "counts"}) == data_folder / "mine"

    def test_older_absolute_roots_still_resolve(self, tmp_path):
        """Checkpoints written before this rule hold an absolute root: used as it is when it exists."""
        folder = make_image_folder(tmp_path / "old")
        assert recorded_root({"root": str(folder)}) == folder
        assert recorded_root({"root": str(tmp_path / "gone")}) is None
        assert recorded_root(None) is None and recorded_root({}) is None


def pattern(k: int) -> Image.Image:
    """A deterministic 128x96 RGB test image (the same one the reference probabilities were made on)."""
    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([(x * (k + 1)) % 256, (y * (k + 2)) % 256, ((x + y) * 3 + 40 * k) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_a_checkpoint_from_before_the_layout_move_loads_and_predicts_the_same():
    """tests/data/quantum-resnet18-random-q4d2-fb103e4.pt was written by commit fb103e4 (flat qtl/
    modules), with random-init resnet18 and a perturbed 4-qubit depth-2 head; the .json beside it holds
    that code's probabilities on pattern(0..2). Today's code loads it and gives the same ones."""
    loaded = load_checkpoint(PRE_MOVE)
    assert (loaded.variant, loaded.model_config.circuit.n_qubits, loaded.class_names) == (
        "quantum",
        4,
        ["ants", "bees"],
    )
    expected = torch.tensor(json.loads(PRE_MOVE.with_suffix(".json").read_text())["probs"])
    probs = predict(loaded, [pattern(k) for k in range(3)])[loaded.name].probs
    assert probs.shape == (3, 2) and (probs.argmax(1) == expected.argmax(1)).all()
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-5)
    assert expected[:, 0].max() - expected[:, 0].min() > 0.1  # the images are told apart, not a constant
