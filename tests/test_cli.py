"""The `qtl` command line, run in-process through `main([...])` on a tiny generated dataset.

One module-scoped training run writes the checkpoints that evaluate, predict, draw and compare use;
every backbone is random-init and every cache lives in the session's temporary folders.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_image_folder, run_cli

from qtl import cli
from qtl.analysis.inference import predict
from qtl.cli.progress import ProgressBar
from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info
from qtl.testing.image_folders import make_class_folders, zip_folder

COMMANDS = ("train", "evaluate", "predict", "explain", "draw", "compare", "noise", "data", "sweep", "runs")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cli") / "tiny")


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory) -> dict:
    """Train `quantum` (3 qubits, depth 2, overridden recipe) and `dressed-classical`, 1 epoch each."""
    folder = tmp_path_factory.mktemp("ckpt")
    q, dc = folder / "q.pt", folder / "dc.pt"
    common = ["--random-init", "--data", tiny, "--epochs", 1]
    q_args = ["train", "quantum", *common, "--qubits", 3, "--depth", 2, "--lr", 0.01, "--batch-size", 3]
    q_args += ["--seed", 5, "--out", q]
    results = {
        "quantum": cli.main([str(a) for a in q_args]),
        "dressed-classical": cli.main([str(a) for a in ["train", "dressed-classical", *common, "--out", dc]]),
    }
    return {"quantum": q, "dressed-classical": dc, "codes": results}


class TestHelp:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_subcommand_has_help_with_defaults(self, capsys, command):
        """`qtl COMMAND --help` exits 0 and shows its usage and its options' defaults."""
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0
        assert out.startswith(f"usage: qtl {command}")
        assert "--debug" in out

    @pytest.mark.parametrize(
        "argv, said",
        [
            (["runs", "--report", "--effect", "-1"], "--effect: must be a difference in accuracy in (0, 1]"),
            (["compare", "--effect", "0"], "--effect: must be a difference in accuracy in (0, 1], got 0"),
            (["study", "--effect", "abc"], "--effect: must be a difference in accuracy in (0, 1], got abc"),
            (["sweep", "s.toml", "--max-runs", "-1"], "--max-runs: must be a whole number of at least 1"),
            (["serve", "m.pt", "--workers", "0"], "--workers: must be a whole number of at least 1, got 0"),
            (["serve", "m.pt", "--max-batch", "0"], "--max-batch: must be a whole number of at least 1"),
            (["serve", "m.pt", "--port", "99999"], "--port: must be a TCP port, 0 to 65535, got 99999"),
            (["serve", "m.pt", "--port", "-5"], "--port: must be a TCP port, 0 to 65535, got -5"),
            (["sweep", "s.toml", "--cpus-per-run", "0"], "--cpus-per-run: must be a number above 0, got 0"),
            (["sweep", "s.toml", "--gpus-per-run", "-1"], "--gpus-per-run: must be a number 0 or more"),
            (["sweep", "s.toml", "--workers", "0"], "--workers: must be a whole number of at least 1, got 0"),
            (["runs", "--variant", "quantm"], "--variant: invalid choice: 'quantm'"),
        ],
    )
    def test_an_effect_or_a_limit_out_of_range_is_refused_before_any_work(self, capsys, argv, said):
        """A power analysis for a negative difference, or a run limit below one, meant nothing (they
        printed power 1.00 for ±-1.000): argparse refuses them in one line."""
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2 and said in capsys.readouterr().err

    def test_ray_serve_needs_a_port_number(self, capsys):
        """--ray --port 0 printed an address ending in :0 (Ray's proxy binds the port itself)."""
        code, _, err = run_cli(capsys, "serve", "m.pt", "--ray", "--port", "0")
        assert code == 1 and "--ray needs a port number" in err

    def test_defaults_are_shown(self, capsys):
        """Recipe-independent defaults appear in the help text; unset recipe overrides do not."""
        with pytest.raises(SystemExit):
            cli.main(["train", "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "(default: quantum)" in out and "(default: resnet18)" in out and "(default: 6)" in out
        assert "(default: None)" not in out

    def test_installed_console_script(self):
        """The console script from pyproject.toml runs `qtl --help` in a real process."""
        script = Path(sys.executable).parent / "qtl"
        proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for command in COMMANDS:
            assert command in proc.stdout

    def test_help_imports_no_torch(self):
        """Building the parser and printing help (top level and a command's) imports no torch, torchvision
        or PennyLane: their import is what made `qtl --help` slow. Checked in a fresh interpreter."""
        code = (
            "import sys, contextlib, io, qtl.cli\n"
            "for argv in (['--help'], ['train', '--help'], ['compare', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        qtl.cli.build_parser().parse_args(argv)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'pennylane') if m in sys.modules))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[]"

    def test_choices_come_from_the_library(self, capsys):
        """The parser's torch-free choices and defaults are the library's own."""
        from qtl.config import DEFAULT_VARIANT, VARIANTS
        from qtl.models.backbones import BACKBONE_NAMES
        from qtl.quantum.circuit import ENTANGLERS, ROTATIONS

        args = cli.build_parser().parse_args(["train"])
        assert (args.variant, args.backbone) == (DEFAULT_VARIANT, None)  # None: DEFAULT_BACKBONE or fallback
        with pytest.raises(SystemExit):
            cli.main(["train", "--help"])
        out = capsys.readouterr().out
        for choices in (VARIANTS, ENTANGLERS, ROTATIONS):
            assert "{" + ",".join(choices) + "}" in out
        assert ", ".join(BACKBONE_NAMES) + ", or any timm model as timm/<model>" in " ".join(out.split())
        assert cli.build_parser().parse_args(["train", "--backbone", "timm/convnext_atto"]).backbone
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["train", "--backbone", "alexnet"])

    def test_no_command_prints_help_and_fails(self, capsys):
        code, _, err = run_cli(capsys)
        assert code == 2 and "usage: qtl" in err


class TestPythonM:
    def test_python_m_qtl_is_the_qtl_command(self, capsys):
        """`python -m qtl` is the same command line as `qtl`: its help, output and exit codes."""

        def m(*argv):
            cmd = [sys.executable, "-m", "qtl", *argv]
            return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)

        argv = ("draw", "--qubits", "2", "--depth", "1")
        proc, (code, out, _) = m(*argv), run_cli(capsys, *argv)
        assert (proc.returncode, proc.stdout) == (code, out) == (0, out) and "2 qubits, depth 1" in out
        with pytest.raises(SystemExit):
            cli.main(["train", "--help"])
        out = capsys.readouterr().out
        assert m("train", "--help").stdout == out and out.startswith("usage: qtl train ")
        bad = m("train", "--epochs", "many")
        assert bad.returncode == 2 and "usage: qtl train" in bad.stderr  # argparse's usage error
        assert m().returncode == 2  # no command: usage on stderr, like `qtl`


class TestTrainEvaluatePredict:
    def test_train_writes_a_checkpoint_with_the_options(self, checkpoints, tiny):
        """Command-line options reach the model and training configs stored in the checkpoint."""
        assert checkpoints["codes"] == {"quantum": 0, "dressed-classical": 0}
        info = read_checkpoint_info(checkpoints["quantum"])
        assert (info.variant, info.weights, info.n_qubits, info.depth) == ("quantum", "random", 3, 2)
        assert info.class_names == ["cats", "dogs"] and info.epochs == 1
        tc = torch.load(checkpoints["quantum"], weights_only=True)["train_config"]
        assert (tc["lr"], tc["batch_size"], tc["seed"], tc["epochs"]) == (0.01, 3, 5, 1)
        assert not {"data", "device", "cache_dir", "num_workers", "cpu_threads"} & set(tc)  # machine settings
        assert read_checkpoint_info(checkpoints["dressed-classical"]).variant == "dressed-classical"

    def test_train_reports_progress_and_result(self, capsys, tiny, tmp_path):
        """Progress and epoch lines go to stderr; the result (best epoch, checkpoint) to stdout."""
        out_file = tmp_path / "lin.pt"
        code, out, err = run_cli(
            capsys, "train", "linear", "--random-init", "--no-augment", "--data", tiny, "--epochs", 2,
            "--out", out_file,
        )  # fmt: skip
        assert code == 0
        assert f"checkpoint: {out_file}" in out and "best epoch" in out
        assert "epoch 1/2:" in err and "epoch 2/2:" in err and "| val loss" in err
        assert "epoch" not in out.replace("best epoch", "")
        assert read_checkpoint_info(out_file).epochs == 2

    def test_train_out_a_folder_writes_the_checkpoint_inside(self, capsys, tiny, tmp_path):
        """--out an existing folder: the checkpoint under its own name there (it trained, then failed
        with "[Errno 21] Is a directory" and lost the run)."""
        folder = tmp_path / "mine"
        folder.mkdir()
        args = ["train", "linear", "--random-init", "--data", tiny, "--epochs", 1, "-q", "--out", folder]
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        (saved,) = folder.glob("*.pt")
        assert saved.name.startswith("linear-") and load_checkpoint(saved).variant == "linear"

    def test_quiet_train_prints_no_progress(self, capsys, tiny, tmp_path):
        code, out, err = run_cli(
            capsys, "-q", "train", "linear", "--random-init", "--no-augment", "--data", tiny, "--epochs", 1,
            "--out", tmp_path / "l.pt",
        )  # fmt: skip
        assert code == 0 and err == "" and "checkpoint:" in out

    def test_evaluate_json_agrees_with_the_training_record(self, capsys, checkpoints, tiny):
        """evaluate's accuracy on val equals the val accuracy fit() recorded for the saved epoch."""
        code, out, _ = run_cli(capsys, "evaluate", checkpoints["quantum"], "--data", tiny, "--json")
        assert code == 0
        m = json.loads(out)["metrics"]
        cm = m["confusion_matrix"]
        assert m["n"] == 8 and sum(map(sum, cm)) == 8
        assert [sum(row) for row in cm] == [4, 4]  # 4 val images per class
        assert m["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / 8)
        assert m["accuracy"] == pytest.approx(read_checkpoint_info(checkpoints["quantum"]).val_acc)
        assert set(m["per_class"]) == {"cats", "dogs"}
        assert m["roc_auc"] is None or 0.0 <= m["roc_auc"] <= 1.0

    def test_evaluate_without_data_scores_on_the_dataset_the_checkpoint_recorded(
        self, capsys, tmp_path, monkeypatch
    ):
        """No --data: the checkpoint's own dataset where it is here (a zip's arranged copy), not
        $QTL_DATA_DIR's (another one, of other classes), with the metrics --data naming it gives;
        --data still picks another."""
        archive = zip_folder(make_class_folders(tmp_path / "scans", 2, 6), tmp_path / "scans.zip")
        ckpt = tmp_path / "l.pt"
        args = ["train", "linear", "--random-init", "--no-augment", "--data", archive, "--epochs", 1]
        assert run_cli(capsys, *args, "-q", "--out", ckpt)[0] == 0
        monkeypatch.setenv("QTL_DATA_DIR", str(make_image_folder(tmp_path / "other", classes=("x", "y"))))
        code, out, err = run_cli(capsys, "evaluate", ckpt, "--json")
        assert code == 0 and "the dataset the checkpoint recorded (--data picks another)" in err
        got = json.loads(out)
        _, named, _ = run_cli(capsys, "evaluate", ckpt, "--data", archive, "--json")
        assert got["metrics"] == json.loads(named)["metrics"] and got["metrics"]["n"] > 0
        code, _, err = run_cli(capsys, "evaluate", ckpt, "--data", tmp_path / "other")
        assert code == 1 and "has classes ['x', 'y']" in err
        # a train/val folder used in place, then moved: the default dataset is scored, and said so (it
        # was a silent switch of data)
        folder = make_image_folder(tmp_path / "inplace")
        ckpt = tmp_path / "f.pt"
        assert (
            run_cli(
                capsys,
                "train",
                "linear",
                "--random-init",
                "--data",
                folder,
                "--epochs",
                1,
                "-q",
                "--out",
                ckpt,
            )[0]
            == 0
        )
        folder.rename(tmp_path / "moved")
        monkeypatch.setenv("QTL_DATA_DIR", str(make_image_folder(tmp_path / "default")))
        code, _, err = run_cli(capsys, "evaluate", ckpt)
        assert code == 0
        said = (
            "the dataset the checkpoint recorded (inplace) is not on this machine as trained on: scoring on"
        )
        assert f"qtl: warning: {said} default instead" in err

    def test_the_accuracy_at_training_is_said_only_for_the_images_it_was_on(self, capsys, tmp_path):
        """Scored on as many val images as the checkpoint's dataset recorded: its own accuracy is the
        one to compare; one image fewer (deleted from the source since) is another set, where it still
        said "the same images"."""
        from qtl.analysis.inference import accuracy_at_training
        from qtl.data.datasets import recorded_root

        archive = zip_folder(make_class_folders(tmp_path / "scans", 2, 6), tmp_path / "scans.zip")
        ckpt = tmp_path / "l.pt"
        args = ["train", "linear", "--random-init", "--no-augment", "--data", archive, "--epochs", 1]
        assert run_cli(capsys, *args, "-q", "--out", ckpt)[0] == 0
        loaded = load_checkpoint(ckpt)
        record = loaded.meta["dataset"]
        root, n = recorded_root(record), sum(record["counts"]["val"].values())
        assert accuracy_at_training(loaded, root, "val", n) == loaded.metrics["val_acc"]
        assert accuracy_at_training(loaded, root, "val", n - 1) is None

    def test_evaluate_with_data_splits_class_folders_as_the_checkpoint_did(self, capsys, tmp_path):
        """Trained on class folders split 0.5 with seed 3: --data naming the folder scores the same val
        images as the recorded dataset (it split 0.2 with seed 0: a val of training images); an explicit
        --val-ratio still wins."""
        flat = make_class_folders(tmp_path / "flat", 2, 10)
        ckpt = tmp_path / "l.pt"
        args = ["train", "linear", "--random-init", "--no-augment", "--data", flat, "--epochs", 1]
        assert run_cli(capsys, *args, "--val-ratio", 0.5, "--split-seed", 3, "-q", "--out", ckpt)[0] == 0
        recorded = json.loads(run_cli(capsys, "evaluate", ckpt, "--json")[1])["metrics"]
        named = json.loads(run_cli(capsys, "evaluate", ckpt, "--data", flat, "--json")[1])["metrics"]
        assert named == recorded and named["n"] == 10
        other = run_cli(capsys, "evaluate", ckpt, "--data", flat, "--val-ratio", 0.2, "--json")[1]
        assert json.loads(other)["metrics"]["n"] == 4

    def test_evaluate_says_the_accuracy_at_training_where_it_differs(self, capsys, checkpoints, tiny):
        """The checkpoint's own val accuracy (training read its fast features) beside evaluate's exact
        one, on the same images, only where the two differ."""
        from qtl.cli.output import format_evaluation

        loaded = load_checkpoint(checkpoints["quantum"])
        out = run_cli(capsys, "evaluate", checkpoints["quantum"], "--data", tiny, "--json")[1]
        m = json.loads(out)["metrics"]
        text = format_evaluation("q.pt", loaded, tiny, "val", m, recorded=m["accuracy"] - 0.125)
        assert f"at training {m['accuracy'] - 0.125:.4f} (the same images" in text
        assert "at training" not in format_evaluation("q.pt", loaded, tiny, "val", m, recorded=m["accuracy"])
        assert "at training" not in format_evaluation("q.pt", loaded, tiny, "val", m)

    def test_evaluate_text(self, capsys, checkpoints, tiny):
        code, out, _ = run_cli(
            capsys, "evaluate", checkpoints["dressed-classical"], "--data", tiny, "--split", "train"
        )
        assert code == 0
        assert "(train, 12 images)" in out and "ROC-AUC" in out and "confusion matrix" in out
        assert "precision" in out and "cats" in out and "dogs" in out

    def test_predict_takes_folders_of_images(self, capsys, checkpoints, tiny, tmp_path):
        """A folder stands for its image files, subfolders included, hidden ones and other files left out
        (it was "cannot decode val: [Errno 21] Is a directory"); a folder without images is one line."""
        val = shutil.copytree(tiny / "val", tmp_path / "val")  # the module's dataset stays as it is
        (val / ".cache").mkdir()
        (val / ".cache" / "thumb.png").write_bytes((val / "cats" / "cats_0.png").read_bytes())
        (val / "notes.txt").write_text("not an image")
        expected = sorted(str(p) for p in val.glob("*/*.png") if p.parent.name != ".cache")
        code, out, _ = run_cli(capsys, "predict", val, "-c", checkpoints["quantum"], "--json")
        assert code == 0 and [row["image"] for row in json.loads(out)] == expected
        (tmp_path / "empty").mkdir()
        code, _, err = run_cli(capsys, "predict", tmp_path / "empty", "-c", checkpoints["quantum"])
        assert code == 1 and "empty is a folder with no image files (.bmp" in err

    def test_predict_many_checkpoints_side_by_side(self, capsys, checkpoints, tiny):
        """Probabilities for every (image, checkpoint) pair, equal to the library's predict()."""
        images = [tiny / "val" / "cats" / "cats_0.png", tiny / "val" / "dogs" / "dogs_1.png"]
        paths = [checkpoints["quantum"], checkpoints["dressed-classical"]]
        code, out, _ = run_cli(capsys, "predict", *images, "-c", paths[0], "-c", paths[1], "--json")
        assert code == 0
        got = json.loads(out)
        expected = predict([load_checkpoint(p) for p in paths], [str(i) for i in images])
        assert [row["image"] for row in got] == [str(i) for i in images]
        for i, row in enumerate(got):
            assert list(row["predictions"]) == ["q", "dc"]
            for name, pred in row["predictions"].items():
                probs = expected[name].probs[i].tolist()
                assert list(pred["probs"].values()) == pytest.approx(probs, abs=1e-6)
                assert pred["predicted"] == ["cats", "dogs"][max(range(2), key=probs.__getitem__)]

        code, out, _ = run_cli(capsys, "predict", *images, "-c", paths[0], "-c", paths[1])
        assert code == 0
        blocks = out.split(str(images[1]))
        assert all("q " in b and "dc " in b and "->" in b for b in blocks)


class TestDraw:
    def test_text(self, capsys):
        """One line per wire, and the summary of the configured circuit."""
        code, out, _ = run_cli(capsys, "draw", "--qubits", 3, "--depth", 2, "--entangler", "ring")
        assert code == 0
        wires = [line for line in out.splitlines() if line[:2] in ("0:", "1:", "2:", "3:")]
        assert [w[:2] for w in wires] == ["0:", "1:", "2:"]
        assert "3 qubits, depth 2" in out and "6 trainable weights" in out
        # --reupload draws the re-uploaded RY(x) of every block (it was ignored: 16 gates, 9 RY)
        from qtl.quantum.circuit import CircuitConfig, gates

        code, out, _ = run_cli(capsys, "draw", "--qubits", 3, "--depth", 2, "--reupload")
        assert (
            code == 0 and f"{len(gates(CircuitConfig(3, 2, reupload=True)))} gates (3 Hadamard, 15 RY" in out
        )

    def test_figure_of_a_checkpoint(self, capsys, checkpoints, tmp_path):
        """--checkpoint draws the trained circuit (its own config), --output writes a PNG."""
        fig = tmp_path / "circuit.png"
        code, out, _ = run_cli(capsys, "draw", "--checkpoint", checkpoints["quantum"], "--output", fig)
        assert code == 0 and "3 qubits, depth 2" in out
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestCompare:
    def test_two_variants_two_seeds(self, capsys, tiny, tmp_path):
        """Trains 2 x 2 runs; JSON and CSV hold the runs and their mean ± sample std per setup."""
        j, c, models = tmp_path / "cmp.json", tmp_path / "cmp.csv", tmp_path / "models"
        code, out, _ = run_cli(
            capsys, "compare", "--variants", "quantum", "dressed-classical", "--seeds", 2, "--epochs", 1,
            "--random-init", "--qubits", 2, "--depth", 1, "--data", tiny, "--models-dir", models,
            "--json", j, "--csv", c,
        )  # fmt: skip
        assert code == 0
        doc = json.loads(j.read_text())
        runs, summary = doc["runs"], doc["summary"]
        assert sorted((r["variant"], r["seed"]) for r in runs) == [
            ("dressed-classical", 0), ("dressed-classical", 1), ("quantum", 0), ("quantum", 1),
        ]  # fmt: skip
        for r in runs:
            assert read_checkpoint_info(r["checkpoint"]).val_acc == pytest.approx(r["val_acc"])
        assert [s["variant"] for s in summary] == ["quantum", "dressed-classical"]
        for s in summary:
            accs = [r["val_acc"] for r in runs if r["variant"] == s["variant"]]
            assert s["n"] == 2
            assert s["val_acc_mean"] == pytest.approx(statistics.mean(accs))
            assert s["val_acc_std"] == pytest.approx(statistics.stdev(accs))
            assert s["setup"] in out
        q = next(s for s in summary if s["variant"] == "quantum")
        assert q["quantum_mean"] == 2  # 2 qubits x depth 1 trainable angles
        assert "±" in out

        with open(c, newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["variant"] for r in rows] == ["quantum", "dressed-classical"]
        for row, s in zip(rows, summary, strict=True):
            assert float(row["val_acc_mean"]) == pytest.approx(s["val_acc_mean"])
            assert float(row["val_acc_std"]) == pytest.approx(s["val_acc_std"])
            assert int(row["n"]) == 2

        # --load reads the same runs back from the checkpoints they wrote, without training
        j2, c2 = tmp_path / "load.json", tmp_path / "load.csv"
        code, _, _ = run_cli(capsys, "compare", "--load", models, "--json", j2, "--csv", c2)
        assert code == 0
        loaded = json.loads(j2.read_text())["runs"]
        key = lambda r: (r["variant"], r["seed"])  # noqa: E731
        assert sorted((key(r), r["val_acc"]) for r in loaded) == sorted((key(r), r["val_acc"]) for r in runs)

        # a copy of one run's checkpoint is the same sample again, not one more seed: left out, and said
        copy = Path(models) / "zz-copy.pt"
        shutil.copy(runs[0]["checkpoint"], copy)
        code, _, err = run_cli(capsys, "compare", "--load", models, "--json", j2, "--csv", c2)
        said = [f"left out {p}: another checkpoint of the same run" for p in (copy, runs[0]["checkpoint"])]
        assert code == 0 and err.count("left out") == 1 and any(line in err for line in said)
        assert sorted(key(r) for r in json.loads(j2.read_text())["runs"]) == sorted(key(r) for r in runs)


class TestData:
    def test_verify_reports_unreadable_files(self, capsys, tiny, tmp_path):
        root = tmp_path / "data"
        shutil.copytree(tiny, root)
        bad = root / "train" / "cats" / "broken.jpg"
        bad.write_bytes(b"not an image")
        code, out, _ = run_cli(capsys, "data", "--path", root, "--no-download")
        assert code == 0
        assert "train: 12 images, cats 6, dogs 6" in out and "val: 8 images" in out
        assert "\n  train/cats/broken.jpg: " in out and str(bad) not in out  # named as in the folder given
        assert "unreadable 1 image file(s)" in out and "ok, 1 unreadable" in out

    def test_split_options_a_dataset_with_val_does_not_take_are_said(self, capsys, tiny, tmp_path):
        """--val-ratio/--split-seed on a zip with its own val/ are noted, even under --quiet (they were
        ignored silently), and the zip is extracted once; without them, or on class folders, no note."""
        archive = zip_folder(tiny, tmp_path / "pets.zip")
        code, _, err = run_cli(capsys, "--quiet", "data", "--path", archive, "--val-ratio", "0.5")
        assert code == 0
        assert (
            "qtl: note: the split asked for (val ratio 0.5, seed 0) does not apply: pets.zip has its own"
            in err
        )
        code, _, err = run_cli(capsys, "data", "--path", archive)
        assert code == 0 and "note:" not in err
        flat = make_class_folders(tmp_path / "flat", 2, 5)
        code, out, err = run_cli(capsys, "data", "--path", flat, "--val-ratio", "0.4")
        assert code == 0 and "note:" not in err and "val: 4 images" in out

    def test_the_bar_says_what_it_prepares(self, tmp_path):
        from qtl.cli.commands import _preparing

        archive = zip_folder(make_class_folders(tmp_path / "f", 2, 2), tmp_path / "shapes.zip")
        assert _preparing(str(archive)) == "extracting shapes.zip"
        assert _preparing(None) == _preparing(str(tmp_path / "f")) == "downloading the dataset"


class TestProgressBar:
    def test_log_files_get_sparse_lines(self):
        """Off a terminal, a fast phase prints one line (its end), not one per step."""
        stream = io.StringIO()
        bar = ProgressBar(stream, interval=60.0)
        for i in range(1, 101):
            bar.update(i, 100, "extracting features")
        for i in range(1, 51):
            bar.update(i * 1_000_000, 50_000_000, "downloading", unit="B")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("extracting features [") and "100/100" in lines[0]
        assert "50.0MB/50.0MB" in lines[1]

    def test_terminals_get_one_redrawn_line(self):
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        stream = Terminal()
        bar = ProgressBar(stream)
        for i in range(1, 4):
            bar.update(i, 3, "epoch 1/1", f"loss {i}")
        bar.message("done")
        text = stream.getvalue()
        assert text.startswith("\r") and text.endswith("\ndone\n")
        assert text.count("\n") == 2  # the finished bar's line, then the message

    def test_disabled(self):
        stream = io.StringIO()
        bar = ProgressBar(stream, enabled=False)
        bar.update(1, 1, "x")
        bar.message("y")
        assert stream.getvalue() == ""


class TestErrors:
    def one_line_error(self, capsys, *argv, code: int = 1) -> str:
        """Run a failing command quietly: exit `code`, exactly one stderr line `qtl: error: ...`."""
        status, _, err = run_cli(capsys, "-q", *argv)
        assert status == code
        assert "Traceback" not in err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("qtl: error: "), err
        return lines[0]

    def test_missing_dataset(self, capsys, tmp_path):
        line = self.one_line_error(capsys, "train", "--random-init", "--data", tmp_path / "nowhere")
        assert "nowhere" in line and "does not exist" in line

    def test_missing_default_dataset_offline(self, capsys, tmp_path, monkeypatch):
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "absent"))
        line = self.one_line_error(capsys, "data", "--no-download")
        assert str(tmp_path / "absent") in line and "QTL_DATA_DIR" in line

    def test_bad_image(self, capsys, checkpoints, tmp_path):
        bad = tmp_path / "photo.jpg"
        bad.write_text("this is not a jpeg")
        line = self.one_line_error(capsys, "predict", bad, "-c", checkpoints["quantum"])
        assert "photo.jpg" in line

    def test_corrupt_checkpoint(self, capsys, checkpoints, tiny, tmp_path):
        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(checkpoints["quantum"].read_bytes()[:200])
        line = self.one_line_error(capsys, "evaluate", corrupt, "--data", tiny)
        assert "corrupt.pt" in line

    def test_bad_qubits(self, capsys, tiny):
        line = self.one_line_error(capsys, "train", "--random-init", "--qubits", 0, "--data", tiny)
        assert "n_qubits" in line

    def test_offline_without_weights_suggests_random_init(self, capsys, tiny, monkeypatch):
        """--backbone resnet18 asked for, no cached ImageNet weights and no network: name the file, the
        folder, the bundled backbone and --random-init."""
        monkeypatch.setenv("QTL_OFFLINE", "1")
        line = self.one_line_error(capsys, "train", "--backbone", "resnet18", "--data", tiny, "--epochs", 1)
        assert "resnet18-" in line and ".pth" in line and "--random-init" in line
        assert "--backbone efficientnet_lite0" in line

    def test_offline_default_falls_back_to_the_bundled_backbone(
        self, capsys, caplog, tiny, monkeypatch, tmp_path
    ):
        """No --backbone and resnet18's weights out of reach: one warning, then the bundled pretrained
        efficientnet_lite0 trains (not random init)."""
        monkeypatch.setenv("QTL_OFFLINE", "1")
        out = tmp_path / "q.pt"
        args = ["train", "linear", "--no-augment", "--data", tiny, "--epochs", 1, "--out", out]
        code, stdout, err = run_cli(capsys, *args)
        assert code == 0, err
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # "qtl: warning: ..."
        assert len(warnings) == 1
        assert "resnet18" in warnings[0] and "bundled pretrained efficientnet_lite0" in warnings[0]
        assert "efficientnet_lite0 (ImageNet, bundled)" in err
        info = read_checkpoint_info(out)
        assert (info.backbone, info.weights) == ("efficientnet_lite0", "IMAGENET1K_LITE0_57934424")

    def test_interrupt(self, capsys, tiny, monkeypatch):
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr("qtl.training.fit.fit", interrupted)
        line = self.one_line_error(capsys, "train", "--random-init", "--data", tiny, code=130)
        assert "interrupted" in line

    @pytest.mark.parametrize(
        "device, said",
        [
            ("nonsense", "unknown device 'nonsense'; give auto, cpu, cuda or cuda:N"),
            ("cuda", "device 'cuda' is not here: this machine has no CUDA device; give auto or cpu"),
        ],
    )
    def test_a_device_this_machine_lacks_is_one_line(
        self, capsys, checkpoints, tiny, monkeypatch, device, said
    ):
        """--device nonsense, or cuda where there is none: torch's RuntimeError was a traceback (serve,
        predict, train)."""
        monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
        image = next(tiny.glob("val/*/*"))
        code, _, err = run_cli(capsys, "predict", image, "-c", checkpoints["quantum"], "--device", device)
        assert code == 1 and err.strip() == f"qtl: error: {said}"

    def test_debug_shows_the_traceback(self, tmp_path):
        from qtl.data.folders import DatasetError

        with pytest.raises(DatasetError):
            cli.main(["--debug", "train", "--random-init", "--data", str(tmp_path / "nowhere")])
