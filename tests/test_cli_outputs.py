"""What commands write: checkpoints of one file name are told apart in explain and noise, as predict
names them.

Checkpoints are copies of the shipped ones (efficientnet_lite0, bundled: offline), the data a tiny
generated ants/bees folder of their classes.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import REPO, make_image_folder, run_cli

SHIPPED = REPO / "models"
QUANTUM = SHIPPED / "quantum-efficientnet_lite0-imagenet-q4d6-s0.pt"
NOISY = SHIPPED / "quantum-efficientnet_lite0-imagenet-q4d6-noisy-s0-dep0.1.pt"
LINEAR = SHIPPED / "linear-efficientnet_lite0-imagenet-s0.pt"


@pytest.fixture(autouse=True)
def _own_places(tmp_path, monkeypatch):
    """Offline (the bundled backbone), with the models folder and results database in tmp_path."""
    monkeypatch.setenv("QTL_OFFLINE", "1")
    monkeypatch.setenv("QTL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("QTL_RESULTS_DB", str(tmp_path / "results.db"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """2 x 6 train and 2 x 4 val images of the shipped checkpoints' classes."""
    return make_image_folder(tmp_path_factory.mktemp("outputs") / "data", classes=("ants", "bees"))


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, target))


class TestSameNamedCheckpoints:
    """Two checkpoints of one file name (a/model.pt, b/model.pt) are "model" and "model#2", as predict
    names them: explain dropped the first, noise gave both rows one name."""

    def test_explain_shows_both(self, capsys, tmp_path, data):
        a, b = copy(QUANTUM, tmp_path / "a" / "model.pt"), copy(LINEAR, tmp_path / "b" / "model.pt")
        image, figure = data / "val" / "ants" / "ants_0.png", tmp_path / "out.png"
        code, out, err = run_cli(capsys, "explain", image, "-c", a, "-c", b, "-o", figure, "-q")
        assert code == 0, err
        said = [
            line.split("  ", 1)[1].split(":")[0] for line in out.splitlines() if line.startswith(str(image))
        ]
        assert said == ["model", "model#2"] and figure.is_file()

    def test_noise_rows_are_told_apart(self, capsys, tmp_path, data):
        a, b = copy(QUANTUM, tmp_path / "a" / "model.pt"), copy(NOISY, tmp_path / "b" / "model.pt")
        argv = ["noise", a, b, "--strengths", 0, "--data", data, "--out", tmp_path / "n"]
        code, out, err = run_cli(capsys, *argv, "-q")
        assert code == 0, err
        assert "model: trained ideal" in out and "model#2: trained with dep 0.1" in out
        rows = list(csv.DictReader((tmp_path / "n.csv").open()))
        assert [r["model"] for r in rows] == ["model", "model#2"]
