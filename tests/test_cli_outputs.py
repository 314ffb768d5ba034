"""The files commands write where the user names them (`qtl.cli.output.check_outputs`): no report,
figure or JSON is written over a checkpoint, a model export, a results database or one of the command's
own inputs, and `qtl train --out` replaces no existing file unless told to; each refusal is one line,
before any work, with nothing written. Ordinary reports are still overwritten, as before.

Checkpoints are copies of the shipped ones (efficientnet_lite0, bundled: offline), the data a tiny
generated ants/bees folder of their classes.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import zipfile
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


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(capsys, *argv) -> str:
    """Run a command that must refuse: exit status 1, one `qtl: error:` line, nothing on stdout."""
    code, out, err = run_cli(capsys, *argv, "-q")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("qtl: error: "), (
        code,
        out,
        err,
    )
    return lines[0]


def results_db(path: Path) -> Path:
    from qtl.experiments.database import ResultsDB

    with ResultsDB(path):
        pass
    return path


def onnx_like(path: Path) -> Path:
    """A file that opens as ONNX's protobuf does (ir_version, then producer_name: `file_kind`)."""
    path.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(64))
    return path


def torchscript_like(path: Path) -> Path:
    """A zip laid out as a TorchScript archive (`file_kind`: a constants.pkl inside)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/constants.pkl", b"\x80\x02]q\x00.")
    return path


class TestRefusals:
    def test_reproduce_out_over_its_own_checkpoint(self, capsys, tmp_path):
        """`reproduce --load ow/self.pt --out ow/self.pt` wrote the Markdown over the checkpoint."""
        ckpt = copy(QUANTUM, tmp_path / "ow" / "self.pt")
        before = digest(ckpt)
        line = refused(capsys, "reproduce", "--load", ckpt, "--out", ckpt)
        assert f"--out {ckpt} is one of this command's inputs" in line
        assert digest(ckpt) == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["self.pt"]

    def test_reproduce_json_over_another_checkpoint(self, capsys, tmp_path):
        ckpt, other = copy(QUANTUM, tmp_path / "ow" / "q.pt"), copy(LINEAR, tmp_path / "ow" / "l.pt")
        before = digest(other)
        line = refused(capsys, "reproduce", "--load", ckpt, "--out", tmp_path / "r.md", "--json", other)
        assert f"--json {other} is a qtl checkpoint" in line
        assert digest(other) == before and not (tmp_path / "r.md").exists()

    def test_compare_json_and_csv_over_checkpoints(self, capsys, tmp_path):
        """`compare --load ow/q.pt --json ow/l2.pt --csv ow/l3.pt` replaced two checkpoints by JSON/CSV."""
        ow = tmp_path / "ow"
        q, l2, l3 = (copy(QUANTUM, ow / name) for name in ("q.pt", "l2.pt", "l3.pt"))
        before = [digest(p) for p in (q, l2, l3)]
        line = refused(capsys, "compare", "--load", q, "--json", l2, "--csv", l3)
        assert f"--json {l2} is a qtl checkpoint" in line and "name another file" in line
        assert [digest(p) for p in (q, l2, l3)] == before
        line = refused(capsys, "compare", "--load", ow, "--json", tmp_path / "c.json", "--csv", q)
        assert f"--csv {q} is one of this command's inputs" in line  # a folder's checkpoints are inputs
        assert [digest(p) for p in (q, l2, l3)] == before and not (tmp_path / "c.json").exists()

    @pytest.mark.parametrize("subcommand", ["run", "backends"])
    def test_hardware_json_over_a_checkpoint(self, capsys, tmp_path, data, subcommand):
        """`hardware run CKPT --json x.pt` replaced the checkpoint x.pt by the report (after the job)."""
        ckpt, target = copy(QUANTUM, tmp_path / "q.pt"), copy(QUANTUM, tmp_path / "x.pt")
        before = digest(target)
        if subcommand == "run":
            argv = ["run", ckpt, "--backend", "FakeManilaV2", "--samples", 2, "--shots", 20, "--data", data]
            argv += ["--db", tmp_path / "r.db"]
        else:
            argv = ["backends", "--no-real"]
        line = refused(capsys, "hardware", *argv, "--json", target)
        assert f"--json {target} is a qtl checkpoint" in line
        assert digest(target) == before and not (tmp_path / "r.db").exists()  # nothing submitted
        if subcommand == "run":
            line = refused(capsys, "hardware", *argv, "--json", ckpt)
            assert f"--json {ckpt} is one of this command's inputs" in line

    def test_train_out_refuses_an_existing_file(self, capsys, tmp_path, data):
        """`train linear ... --out ow/keep.pt` silently replaced another model; --overwrite says to."""
        keep = copy(QUANTUM, tmp_path / "ow" / "keep.pt")
        before = digest(keep)
        argv = ["train", "linear", "--backbone", "efficientnet_lite0", "--epochs", 1, "--data", data]
        line = refused(capsys, *argv, "--out", keep)
        assert f"--out {keep} exists: choose another name or delete it" in line
        assert digest(keep) == before
        code, out, err = run_cli(capsys, *argv, "--out", keep, "--overwrite", "-q")
        assert code == 0, err
        from qtl.models.checkpoint import read_checkpoint_info

        assert read_checkpoint_info(keep).variant == "linear"

    def test_noise_figure_over_an_image_it_scores(self, capsys, tmp_path, data):
        """`noise CKPT --data D --out D/val/ants/ants_0` wrote its figure over that image of the data it
        scored (as a folder of class folders: its arranged copy links to the image)."""
        flat = tmp_path / "flat"
        for split in ("train", "val"):
            shutil.copytree(data / split, flat, dirs_exist_ok=True)
        image, ckpt = flat / "ants" / "ants_0.png", copy(QUANTUM, tmp_path / "q.pt")
        before = digest(image)
        line = refused(
            capsys, "noise", ckpt, "--strengths", 0, "--data", flat, "--out", image.with_suffix("")
        )
        assert f"--out's .png {image} is one of this command's inputs" in line
        assert digest(image) == before and not image.with_suffix(".csv").exists()
        beside = flat / "ants" / "report"  # a new name: the next arrangement took report.png for an ant
        line = refused(capsys, "noise", ckpt, "--strengths", 0, "--data", flat, "--out", beside)
        assert f"--out's .csv {beside}.csv is inside the data it scores (" in line
        assert line.endswith("): write it elsewhere")
        assert not list((flat / "ants").glob("report.*"))

    def test_outputs_where_no_file_can_be_written(self, capsys, tmp_path, data):
        """An output under a file, or on a disk nothing can be written to, is refused before any work:
        `train --out FILE/x.pt` and `--models-dir FILE` failed at the first save (after an epoch) with
        "[Errno 17] File exists", `explain -o /proc/x.png` after computing its heatmaps."""
        blocker = tmp_path / "notes.txt"
        blocker.write_text("kept\n")
        argv = ["train", "linear", "--backbone", "efficientnet_lite0", "--epochs", 1, "--data", data]
        line = refused(capsys, *argv, "--out", blocker / "x.pt")
        assert line == f"qtl: error: no folder {blocker} (a file) to write x.pt into"
        line = refused(capsys, *argv, "--models-dir", blocker / "sub")
        assert line == f"qtl: error: no folder {blocker} (a file) to write its checkpoint into"
        line = refused(capsys, "compare", "--variants", "linear", "--seeds", 1, "--data", data,
                       "--models-dir", blocker)  # fmt: skip
        assert line.startswith(f"qtl: error: no folder {blocker} (a file) to write compare-")
        if Path("/proc/self").is_dir():
            image, ckpt = data / "val" / "ants" / "ants_0.png", copy(QUANTUM, tmp_path / "q.pt")
            line = refused(capsys, "explain", image, "-c", ckpt, "-o", "/proc/x.png")
            assert line == "qtl: error: cannot write x.png into /proc: no file can be created there"
        assert blocker.read_text() == "kept\n" and not (tmp_path / "models").exists()

    def test_reports_into_a_folder_not_made_yet(self, capsys, tmp_path):
        """check_outputs lets an output's missing folder through where the command makes it: hardware's
        --json did not, and failed with Errno 2 after its work (a device job, for `hardware run`)."""
        target = tmp_path / "new" / "deeper" / "backends.json"
        code, _, err = run_cli(capsys, "hardware", "backends", "--no-real", "--json", target, "-q")
        assert code == 0 and target.read_text().startswith("["), err

    def test_split_options_without_the_data_they_split(self, capsys, tmp_path):
        """`evaluate CKPT --val-ratio 7` scored the checkpoint's recorded split, the option ignored."""
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        line = refused(capsys, "evaluate", ckpt, "--val-ratio", 7)
        assert line.startswith("qtl: error: --val-ratio splits the folder or zip --data names: pass it too")
        line = refused(capsys, "noise", ckpt, "--strengths", 0, "--val-ratio", 0.5, "--split-seed", 3)
        assert "--val-ratio and --split-seed split the folder or zip --data names" in line

    def test_explain_figure_over_the_image_it_explains(self, capsys, tmp_path, data):
        image = copy(data / "val" / "ants" / "ants_0.png", tmp_path / "ant.png")
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        before = digest(image), digest(ckpt)
        line = refused(capsys, "explain", image, "-c", ckpt, "-o", image)
        assert f"--output {image} is one of this command's inputs" in line
        assert (digest(image), digest(ckpt)) == before

    def test_figures_and_noise_files_over_model_exports(self, capsys, tmp_path):
        """An ONNX or TorchScript export under a figure's or a report's name stays (noise writes
        PREFIX.csv, .json and .png)."""
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        svg, json_ = torchscript_like(tmp_path / "c.svg"), onnx_like(tmp_path / "n.json")
        before = digest(svg), digest(json_)
        line = refused(capsys, "draw", "--checkpoint", ckpt, "-o", svg)
        assert f"--output {svg} is a TorchScript file:" in line
        line = refused(capsys, "noise", ckpt, "--strengths", 0, "--out", tmp_path / "n")
        assert f"{json_} is an ONNX file:" in line
        assert (digest(svg), digest(json_)) == before
        assert not (tmp_path / "n.csv").exists() and not (tmp_path / "n.png").exists()

    def test_diagnose_json_over_a_checkpoint(self, capsys, tmp_path):
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        before = digest(ckpt)
        argv = ["diagnose", "--qubits", 2, "--depths", 1, "--samples", 2, "-o", tmp_path / "p.png"]
        assert f"--json {ckpt} is a qtl checkpoint" in refused(capsys, *argv, "--json", ckpt)
        assert digest(ckpt) == before and not (tmp_path / "p.png").exists()

    def test_runs_and_study_over_the_database_or_a_checkpoint(self, capsys, tmp_path):
        db = results_db(tmp_path / "r.db")
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        before = digest(db), digest(ckpt)
        line = refused(capsys, "runs", "--db", db, "--csv", db)
        assert f"--csv {db} is one of this command's inputs" in line
        assert "is a qtl checkpoint" in refused(capsys, "runs", "--db", db, "--json", ckpt)
        assert "is a qtl checkpoint" in refused(capsys, "study", "--db", db, "--out", ckpt)
        other = results_db(tmp_path / "other.db")
        line = refused(capsys, "study", "--db", db, "--out", other)
        assert f"--out {other} is an SQLite database" in line
        assert (digest(db), digest(ckpt)) == before
        line = refused(capsys, "runs", "--db", db, "--csv", tmp_path / "a", "--json", tmp_path / "a")
        assert f"--csv and --json both name {tmp_path / 'a'}" in line and not (tmp_path / "a").exists()

    def test_runs_and_study_over_a_spec_or_a_database_log(self, capsys, tmp_path):
        """A report replaces an earlier report, never a sweep spec, a database's write-ahead log or a
        script: `qtl runs --csv s1.toml` wrote the runs over the spec they came from."""
        db = results_db(tmp_path / "r.db")
        spec, wal, script = tmp_path / "s1.toml", tmp_path / "r.db-wal", tmp_path / "run"
        for path in (spec, wal, script):
            path.write_text("kept\n")
        line = refused(capsys, "runs", "--db", db, "--csv", spec)
        assert f"--csv {spec} exists and is a .toml file, not a report or figure" in line
        assert "name another file or remove it first" in line
        assert "is a .db-wal file" in refused(capsys, "runs", "--db", db, "--json", wal)
        assert "is a file without a suffix" in refused(capsys, "study", "--db", db, "--out", script)
        assert all(path.read_text() == "kept\n" for path in (spec, wal, script))


class TestReportsAreStillOverwritten:
    def test_compare_rewrites_its_earlier_report(self, capsys, tmp_path):
        ckpt = copy(QUANTUM, tmp_path / "q.pt")
        j, c = tmp_path / "report.json", tmp_path / "report.csv"
        j.write_text('{"old": true}\n')
        c.write_text("old\n")
        code, out, err = run_cli(capsys, "compare", "--load", ckpt, "--json", j, "--csv", c, "-q")
        assert code == 0, err
        assert '"runs"' in j.read_text() and next(csv.reader(c.open()))[:2] == ["variant", "setup"]

    def test_runs_rewrites_a_csv(self, capsys, tmp_path):
        db, report = results_db(tmp_path / "r.db"), tmp_path / "runs.csv"
        report.write_text("old\n")
        code, _, err = run_cli(capsys, "runs", "--db", db, "--csv", report, "-q")
        assert code == 0, err
        assert report.read_text().startswith("id,variant,")
        deeper = tmp_path / "new" / "runs.json"  # its folder made, as compare's are: it was Errno 2
        code, _, err = run_cli(capsys, "runs", "--db", db, "--json", deeper, "-q")
        assert code == 0 and deeper.read_text().startswith("["), err


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
