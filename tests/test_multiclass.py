"""Any number of classes, end to end: generated 4-class and 10-class datasets through the library and the
command line (datasets from class folders and zips, heads, training, metrics, checkpoints, reports)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from conftest import make_class_folders, run_cli, zip_folder

from qtl.analysis.inference import evaluate, predict
from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.data.datasets import open_dataset
from qtl.models.checkpoint import load_checkpoint
from qtl.quantum.circuit import CircuitConfig
from qtl.training.fit import fit


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    """10 colour classes x 6 images, class folders only, arranged with the default split (5 + 1)."""
    tmp = tmp_path_factory.mktemp("ten")
    return open_dataset(make_class_folders(tmp / "src", 10, 6), store=tmp / "store")


class TestTenClasses:
    def test_linear_and_a_two_qubit_quantum_head(self, ten, tmp_path):
        """10 classes: linear separates the colours; a 3-qubit circuit (fewer qubits than classes) learns."""
        assert ten.counts["val"] == {f"class_{c}": 1 for c in range(10)}
        lin = fit(
            ModelConfig("linear", pretrained=False),
            dataclasses.replace(recipe("linear"), epochs=15, lr=1e-2, augment=False),
            MachineConfig(data_dir=ten.root),
            checkpoint_path=tmp_path / "lin.pt",
        )
        assert lin.best["val_acc"] >= 0.8  # chance is 0.1
        q = fit(
            ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(n_qubits=3, depth=2)),
            dataclasses.replace(recipe("quantum"), epochs=60, lr=1e-3, step_size=100),
            MachineConfig(data_dir=ten.root),
            checkpoint_path=tmp_path / "q.pt",
        )
        assert q.model.head.post_net.weight.shape == (10, 3)
        assert q.best["val_acc"] >= 0.3  # 3x chance, from random-init features
        assert min(r["val_loss"] for r in q.history) < math.log(10) - 0.3  # below the uniform guess's loss
        for path, result in ((tmp_path / "lin.pt", lin), (tmp_path / "q.pt", q)):
            loaded = load_checkpoint(path)
            assert loaded.class_names == ten.classes
            assert (
                loaded.meta["dataset"]["val_ratio"] == 0.2 and loaded.meta["dataset"]["layout"] == "classes"
            )
            ev = evaluate(loaded, ten.root)
            m = ev.metrics
            assert len(m["confusion_matrix"]) == 10 and all(len(r) == 10 for r in m["confusion_matrix"])
            assert sum(map(sum, m["confusion_matrix"])) == 10 and set(m["per_class"]) == set(ten.classes)
            assert m["accuracy"] == pytest.approx(result.best["val_acc"])
            assert m["macro_f1"] == pytest.approx(sum(r["f1"] for r in m["per_class"].values()) / 10)
        (pred,) = predict(load_checkpoint(tmp_path / "q.pt"), [s.path for s in ev.samples[:3]]).values()
        assert pred.probs.shape == (3, 10)


class TestFourClassesFromTheCommandLine:
    def test_zip_train_evaluate_predict_data(self, tmp_path, capsys):
        """`--data x.zip` of 4 class folders: train quantum and linear, evaluate and predict 4 classes."""
        src = make_class_folders(tmp_path / "src", 4, 8, fmt="jpg")
        archive = zip_folder(src, tmp_path / "four.zip", prefix="four/", extra={"four/notes.txt": b"x"})
        common = ["--random-init", "--data", archive, "--val-ratio", 0.25, "--split-seed", 1]
        q, lin = tmp_path / "q.pt", tmp_path / "lin.pt"
        code, _, err = run_cli(capsys, "train", "quantum", *common, "--epochs", 20, "--lr", 2e-3, "--out", q)
        assert code == 0, err
        assert "skipped 1 file(s):\n  four/notes.txt: not inside a class folder" in err
        code, _, err = run_cli(
            capsys, "train", "linear", *common, "--epochs", 10, "--no-augment", "--out", lin
        )
        assert code == 0, err
        assert load_checkpoint(q).meta["dataset"]["seed"] == 1

        code, out, _ = run_cli(
            capsys, "evaluate", lin, "--data", archive, "--val-ratio", 0.25, "--split-seed", 1
        )
        assert code == 0
        for c in range(4):
            assert f"\nclass_{c} " in out
        matrix = out.split("confusion matrix")[1].strip().splitlines()[2:]  # after the title and header
        assert len(matrix) == 4 and sum(int(v) for row in matrix for v in row.split()[1:]) == 8

        split = ["--val-ratio", 0.25, "--split-seed", 1]
        code, out, _ = run_cli(capsys, "evaluate", lin, "--data", archive, *split, "--json")
        m = json.loads(out)["metrics"]
        assert m["accuracy"] >= 0.75 and len(m["per_class"]) == 4

        image = next((src / "class_2").iterdir())
        code, out, _ = run_cli(capsys, "predict", image, "-c", q, "-c", lin, "--json")
        doc = json.loads(out)
        for pred in doc[0]["predictions"].values():
            assert len(pred["probs"]) == 4 and sum(pred["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert doc[0]["predictions"]["lin"]["predicted"] == "class_2"

        figure = tmp_path / "why.png"
        code, out, err = run_cli(capsys, "explain", image, image, "-c", q, "-c", lin, "-o", figure)
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 5 and lines[-1] == f"saved {figure}"
        assert all(line.endswith("grad-cam") for line in lines[:4])
        from PIL import Image

        with Image.open(figure) as im:
            assert im.format == "PNG" and im.width > im.height  # 2 rows of 3 panels

        code, out, _ = run_cli(capsys, "data", "--path", archive, "--val-ratio", 0.25, "--split-seed", 1)
        assert code == 0
        assert "classes 4: class_0, class_1, class_2, class_3" in out
        assert "val split off: 0.25 per class, seed 1" in out
        assert "four/notes.txt: not inside a class folder" in out
