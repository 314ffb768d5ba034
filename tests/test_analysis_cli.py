"""The analysis commands a walkthrough found wrong: `qtl noise --out` cutting its prefix at a dot, its
report missing what it scored and on which engine, `qtl diagnose` checking --json after its scan and
scanning a repeated point again, `qtl draw` ignoring options and drawing inputs as zero angles, --engine
said nowhere to skip classical checkpoints, `qtl predict` failing on a folder with one bad file, and the
download error alone where a checkpoint's recorded dataset is not here.

Checkpoints are tiny (the 99k-parameter timm test backbone, random init: offline), as test_export's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, run_cli
from test_cli_outputs import refused as error_line
from test_export import tiny_checkpoint

from qtl.config import ModelConfig
from qtl.models.checkpoint import save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("QTL_OFFLINE", "1")
    monkeypatch.setenv("QTL_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("analysis") / "data", classes=("c0", "c1"))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("analysis-ckpt")
    return {
        "quantum": tiny_checkpoint(folder / "q.pt", "quantum", circuit=CircuitConfig(2, 1)),
        "one": tiny_checkpoint(folder / "one.pt", "quantum", circuit=CircuitConfig(1, 1)),
        "mps": tiny_checkpoint(
            folder / "m.pt", "quantum", circuit=CircuitConfig(3, 2), engine="mps", max_bond=2
        ),
        "linear": tiny_checkpoint(folder / "lin.pt", "linear"),
    }


def help_text(capsys, command: str) -> str:
    """`qtl COMMAND --help`, its words joined by single spaces."""
    from qtl import cli

    with pytest.raises(SystemExit) as exit:
        cli.main([command, "--help"])
    assert exit.value.code == 0
    return " ".join(capsys.readouterr().out.split())


# ---- qtl noise


class TestNoiseReport:
    def test_a_dot_in_the_prefix_is_kept(self, capsys, ckpts, data, tmp_path):
        """--out dots/sweep-p0.05 wrote dots/sweep-p0.csv, which --out dots/sweep-p0.1 overwrote."""
        for p in ("0.05", "0.1"):
            argv = [
                "noise",
                ckpts["quantum"],
                "--strengths",
                p,
                "--data",
                data,
                "--out",
                tmp_path / f"sweep-p{p}",
            ]
            code, out, err = run_cli(capsys, *argv, "-q")
            assert code == 0, err
            assert f"sweep-p{p}.csv, {tmp_path / f'sweep-p{p}.json'}, {tmp_path / f'sweep-p{p}.png'}" in out
        assert sorted(p.name for p in tmp_path.glob("sweep-*")) == [
            f"sweep-p{p}.{s}" for p in ("0.05", "0.1") for s in ("csv", "json", "png")
        ]
        rows = list(csv.DictReader((tmp_path / "sweep-p0.05.csv").open()))
        assert [r["depolarizing"] for r in rows] == ["0.05"]

    def test_rows_say_what_was_scored_once_each(self, capsys, ckpts, data, tmp_path):
        """Repeated --strengths and --shots were scored and reported twice; the rows now name their
        checkpoint, dataset and split, and the plot its split."""
        argv = ["noise", ckpts["quantum"], "--strengths", 0, 0.01, 0, "--shots", 0, 50, 0, "--data", data]
        code, out, err = run_cli(capsys, *argv, "--split", "train", "--out", tmp_path / "r", "-q")
        assert code == 0, err
        rows = list(csv.DictReader((tmp_path / "r.csv").open()))
        assert [(r["setting"], r["shots"]) for r in rows] == [
            ("ideal", ""), ("dep 0.01", ""), ("50 shots", "50"), ("dep 0.01, 50 shots", "50"),
        ]  # fmt: skip
        assert {(r["checkpoint"], r["data"], r["split"]) for r in rows} == {
            (str(ckpts["quantum"]), str(data), "train")
        }
        old = ["model", "setting", "backend", "depolarizing", "shots", "accuracy", "seconds"]
        assert list(rows[0]) == [*old, "split", "data", "checkpoint"]  # added after: read by position
        doc = json.loads((tmp_path / "r.json").read_text())
        assert len(doc) == 4 and {d["split"] for d in doc} == {"train"}

    def test_the_plot_names_the_split(self, ckpts, data):
        from qtl.analysis.robustness import head_inputs, noise_grid, noise_sweep, plot
        from qtl.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(ckpts["quantum"])
        for split in ("train", "val"):
            results = noise_sweep([loaded], [head_inputs(loaded, data, split)], noise_grid([0.0]))
            assert plot(results).axes[0].get_ylabel() == f"{split} accuracy"

    def test_a_checkpoint_on_another_engine_is_said_to_be_scored_on_the_native_one(
        self, capsys, ckpts, data, tmp_path
    ):
        argv = [
            "noise",
            ckpts["mps"],
            ckpts["quantum"],
            "--strengths",
            0,
            "--data",
            data,
            "--out",
            tmp_path / "n",
        ]
        exact = tiny_checkpoint(tmp_path / "exact.pt", "quantum", circuit=CircuitConfig(3, 2), engine="mps")
        argv.insert(3, exact)
        code, out, err = run_cli(capsys, *argv, "-q")
        assert code == 0, err
        notes = [line for line in err.splitlines() if line.startswith("qtl: note:")]
        assert len(notes) == 1 and str(ckpts["mps"]) in notes[0], err  # an exact MPS agrees: no note
        assert "its engine is mps (max bond 2: truncated)" in notes[0] and "native" in notes[0]
        assert "whatever engine it was trained on" in help_text(capsys, "noise")


# ---- qtl diagnose


class TestDiagnose:
    def test_json_in_a_missing_folder_is_refused_before_the_scan(self, capsys, tmp_path):
        argv = ["diagnose", "--qubits", 2, "--depths", 1, "--samples", 2, "-o", tmp_path / "p.png"]
        line = error_line(capsys, *argv, "--json", tmp_path / "nodir" / "p.json")
        assert line == f"qtl: error: no folder {tmp_path / 'nodir'} to write p.json into"
        assert not (tmp_path / "p.png").exists()  # the scan ran, and its figure was written, first

    def test_a_repeated_width_or_depth_is_scanned_once(self, capsys, tmp_path):
        argv = ["diagnose", "--qubits", 2, 3, 2, "--depths", 1, 1, "--samples", 2, "-o", tmp_path / "p.png"]
        code, out, err = run_cli(capsys, *argv, "--json", tmp_path / "p.json", "-q")
        assert code == 0, err
        rows = json.loads((tmp_path / "p.json").read_text())
        assert [(r["n_qubits"], r["depth"]) for r in rows[::2]] == [(2, 1), (3, 1)]
        assert "qtl: note: --qubits repeats a value: scanning 2 3 once each" in err
        assert "qtl: note: --depths repeats a value: scanning 1 once each" in err
        assert [line.split()[:2] for line in out.splitlines()[1:3]] == [["2", "1"], ["3", "1"]]
        # the widths scanned are too few to fit a decay: said once for the depth, not left unsaid
        assert out.count("depth 1: too few widths to fit a decay") == 1 and "decays as" not in out

    @pytest.mark.parametrize(
        "argv, said",
        [
            (["--depths", 0], "--depths must lie between 1 and 100"),
            (["--depths", -1], "--depths must lie between 1 and 100"),
            (["--depths", 200], "--depths must lie between 1 and 100"),
            (["--qubits", 129], "--qubits must lie between 2 and 128"),
        ],
    )
    def test_ranges_are_said_as_they_are(self, capsys, tmp_path, argv, said):
        """--depths 200 said 'between 0 and 100' though 0 is refused, --depths -1 'no gradient'."""
        line = error_line(capsys, "diagnose", *argv, "--samples", 2, "-o", tmp_path / "p.png")
        assert line == f"qtl: error: {said}"

    def test_help_gives_the_widths_it_takes(self, capsys):
        text = help_text(capsys, "diagnose")
        assert "(2 .. 128, matrix product state engine)" in text and "2 .. 64" not in text
        assert "depths to scan, 1 .. 100" in text


# ---- qtl draw


class TestDraw:
    def test_circuit_options_with_a_checkpoint_are_refused(self, capsys, ckpts):
        argv = ["draw", "--checkpoint", ckpts["quantum"], "--qubits", 7, "--depth", 3, "--entangler", "ring"]
        assert error_line(capsys, *argv) == (
            "qtl: error: --checkpoint draws the checkpoint's own circuit, so --qubits, --depth, --entangler "
            "would do nothing: drop them"
        )
        assert "--reupload would do nothing: drop it" in error_line(
            capsys, "draw", "--checkpoint", ckpts["quantum"], "--reupload"
        )

    def test_figure_path_is_checked_first(self, capsys, ckpts, tmp_path):
        line = error_line(capsys, "draw", "-o", tmp_path / "nodir" / "d.png")
        assert line == f"qtl: error: no folder {tmp_path / 'nodir'} to write d.png into"
        line = error_line(capsys, "draw", "--checkpoint", ckpts["quantum"], "-o", tmp_path / "d.txt")
        assert line.startswith(f"qtl: error: {tmp_path / 'd.txt'}: a figure is written as one of ")
        assert not (tmp_path / "d.txt").exists()

    def test_a_checkpoint_draws_its_inputs_as_inputs(self, capsys, ckpts):
        code, out, err = run_cli(capsys, "draw", "--checkpoint", ckpts["one"])
        assert code == 0, err
        assert "RY(x0)" in out and "RY(0.00)" not in out
        assert "1 qubit, depth 1: 3 gates (1 Hadamard, 2 RY), 1 trainable weight, circuit depth 3" in out
        code, out, _ = run_cli(capsys, "draw", "--qubits", 3)
        assert "3 qubits, depth 6:" in out and "18 trainable weights" in out


# ---- --engine on classical checkpoints


class TestEngineOnClassical:
    def test_refused_where_no_checkpoint_has_a_circuit(self, capsys, ckpts, data, tmp_path):
        lin = ckpts["linear"]
        said = f"qtl: error: --engine mps runs a quantum circuit, and {lin} (linear) has none: drop --engine"
        assert error_line(capsys, "evaluate", lin, "--engine", "mps", "--data", data) == said
        image = data / "val" / "c0" / "c0_0.png"
        assert error_line(capsys, "predict", "-c", lin, "--engine", "mps", image) == said
        assert (
            error_line(capsys, "explain", "-c", lin, "--engine", "mps", image, "-o", tmp_path / "e.png")
            == said
        )

    def test_said_for_the_classical_ones_among_quantum(self, capsys, ckpts, data):
        image = data / "val" / "c0" / "c0_0.png"
        argv = ["predict", "-c", ckpts["linear"], "-c", ckpts["quantum"], "--engine", "mps", image, "-q"]
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        said = f"--engine mps applies to the quantum checkpoints only, not to {ckpts['linear']} (linear)"
        assert err.strip() == f"qtl: note: {said}"
        assert out.count("->") == 2


# ---- qtl predict on a folder with an undecodable file


class TestPredictFolders:
    def test_a_bad_file_in_a_folder_is_skipped_and_said(self, capsys, ckpts, data, tmp_path):
        folder = tmp_path / "edge"
        folder.mkdir()
        for name in ("a.png", "b.png"):
            (folder / name).write_bytes((data / "val" / "c0" / "c0_0.png").read_bytes())
        (folder / "notimage.jpg").write_text("not an image")
        code, out, err = run_cli(capsys, "predict", "-c", ckpts["quantum"], folder, "-q")
        assert code == 0, err
        assert [line for line in out.splitlines() if not line.startswith(" ")] == [
            str(folder / "a.png"),
            str(folder / "b.png"),
        ]
        warnings = err.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith(
            f"qtl: warning: skipping image {folder / 'notimage.jpg'}: "
        )
        # named on the command line, it still fails, in one line
        line = error_line(
            capsys, "predict", "-c", ckpts["quantum"], folder / "a.png", folder / "notimage.jpg"
        )
        assert str(folder / "notimage.jpg") in line
        (folder / "a.png").unlink(), (folder / "b.png").unlink()
        code, out, err = run_cli(capsys, "predict", "-c", ckpts["quantum"], folder, "-q")
        assert (
            code == 1
            and out == ""
            and err.splitlines()[1:] == [f"qtl: error: no image in {folder} could be decoded"]
        )


# ---- the recorded dataset that is not here


class TestRecordedDatasetMissing:
    @pytest.fixture
    def no_default(self, monkeypatch, tmp_path):
        """No default dataset, and none to download (offline)."""
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "nowhere" / "hymenoptera_data"))
        monkeypatch.chdir(tmp_path)

    def test_said_before_the_download_fails(self, capsys, tmp_path, no_default):
        record = {"name": "scans", "root": "scans", "source": "scans"}
        ckpt = tiny_checkpoint(tmp_path / "c.pt", "linear", dataset=record)
        code, out, err = run_cli(capsys, "evaluate", ckpt, "-q")
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 2, err
        assert lines[0] == (
            "qtl: warning: the dataset the checkpoint recorded (scans) is not on this machine as trained on: "
            "scoring on the default dataset (--data names the one to use)"
        )
        assert lines[1].startswith("qtl: error: ")

    def test_checkpoints_that_disagree_are_said_to(self, capsys, tmp_path, no_default):
        """One checkpoint's dataset is here (in the working folder), the other's not: noise scored both on
        the default, saying nothing of either."""
        from qtl.data.datasets import open_dataset

        record = open_dataset(make_image_folder(tmp_path / "here", classes=("c0", "c1"))).record()
        circuit = CircuitConfig(2, 1)
        here = tiny_checkpoint(tmp_path / "a.pt", "quantum", dataset=record, circuit=circuit)
        gone = tiny_checkpoint(
            tmp_path / "b.pt", "quantum", dataset={"name": "scans", "root": "scans"}, circuit=circuit
        )
        code, _, err = run_cli(capsys, "noise", here, gone, "--strengths", 0, "-q")
        assert code == 1
        assert err.startswith(
            "qtl: warning: the checkpoints recorded different datasets (here, scans; not on this machine as "
            "trained on: scans): scoring on the default dataset (--data names the one to use)\n"
        ), err


def test_explain_says_why_a_heatmap_is_blank(capsys, data, tmp_path):
    """A linear head whose rows are all negative on a ReLU backbone's features (>= 0): the predicted class
    has no positive Grad-CAM evidence, and the line for it says so (the heatmap alone was a uniform
    tint)."""
    torch.manual_seed(0)
    mc = ModelConfig("linear", "resnet18", pretrained=False, class_names=("c0", "c1"))
    model = build_model(mc)
    with torch.no_grad():
        model.head.weight.copy_(-torch.arange(1.0, 3.0)[:, None].expand_as(model.head.weight))
    ckpt = save_checkpoint(tmp_path / "blank.pt", model, mc)
    image = data / "val" / "c0" / "c0_0.png"
    code, out, err = run_cli(capsys, "explain", image, "-c", ckpt, "-o", tmp_path / "why.png", "-q")
    assert code == 0, err
    assert f"{image}  blank: c0 (" in out
    assert "grad-cam (no positive Grad-CAM evidence for c0; try saliency)" in out


def test_checkpoints_on_one_name_at_two_places_are_told_apart():
    """Two checkpoints that recorded datasets of one name at different places: the warning names each
    with its place (it said "different datasets (flat)", one name)."""
    from qtl.cli.commands import _recorded_elsewhere

    records = [({"name": "flat", "root": "a/flat"}, None), ({"name": "flat", "root": "b/flat"}, None)]
    said = _recorded_elsewhere(records)
    assert said.startswith("the checkpoints recorded different datasets (flat at a/flat, flat at b/flat; ")
    assert _recorded_elsewhere([records[0], ({"name": "scans", "root": "scans"}, None)]).startswith(
        "the checkpoints recorded different datasets (flat, scans; "
    )
