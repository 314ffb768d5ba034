"""What walking the commands as users found: refusals of one line that say what the user can do, before
any work, with nothing written; help that says what the command takes."""

from __future__ import annotations

import json
import shutil

from conftest import REPO
from test_cli_outputs import refused


def test_study_names_the_sweeps_a_database_holds(capsys, tmp_path):
    """`qtl study` without --sweep reports the sweep named "study"; on a database without one it said only
    that the sweep had no finished runs, where `qtl runs` names the sweeps there are."""
    db = shutil.copyfile(REPO / "docs" / "wide.db", tmp_path / "wide.db")
    line = refused(capsys, "study", "--db", db)
    assert line == f"qtl: error: no sweep 'study' in {db}; it holds: wide"
    assert "it holds: wide" in refused(capsys, "study", "--db", db, "--sweep", "wdie")


def test_sweep_help_names_every_axis(capsys):
    """The help listed 10 of the spec's 21 axes; it names each one a grid may vary."""
    from qtl.cli import main
    from qtl.experiments.spec import AXES

    try:
        main(["sweep", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split("grids over any of ", 1)[1].split(")", 1)[0]
    assert listed.split(", ") == list(AXES)


def test_noise_scores_a_test_split_and_refuses_backend_shots_alone(capsys, tmp_path):
    """`qtl noise --split test` (evaluate and hardware offer it; noise offered train and val only): its
    ideal row is evaluate's accuracy on test. --backend-shots without --backends did nothing, silently."""
    import csv
    import json

    from conftest import find_hymenoptera, make_image_folder, run_cli

    data = make_image_folder(tmp_path / "data", classes=("ants", "bees"), per_split=(2, 1))
    for name in ("ants", "bees"):  # test: 8 real val images a class, which the model mostly gets right
        (data / "test" / name).mkdir(parents=True)
        for image in sorted((find_hymenoptera() / "val" / name).iterdir())[:8]:
            shutil.copy(image, data / "test" / name)
    model = REPO / "models" / "quantum-efficientnet_lite0-imagenet-q4d6-s0.pt"
    common = ["--data", data, "--split", "test", "-q"]
    code, out, err = run_cli(capsys, "evaluate", model, *common, "--json")
    assert code == 0, err
    accuracy = json.loads(out)["metrics"]["accuracy"]
    assert accuracy >= 0.75  # real images: a score that a wrong split or wrong images would not give
    code, _, err = run_cli(capsys, "noise", model, "--strengths", 0, "--out", tmp_path / "n", *common)
    assert code == 0, err
    (row,) = csv.DictReader((tmp_path / "n.csv").open())
    assert row["split"] == "test" and float(row["accuracy"]) == round(accuracy, 4)
    line = refused(capsys, "noise", model, "--backend-shots", 100, "--out", tmp_path / "m")
    assert "no --backends names a backend to run on, so --backend-shots would do nothing" in line
    assert not (tmp_path / "m.csv").exists()


def test_a_run_a_stop_cancelled_is_said_stopped_not_failed():
    """Ray's first Ctrl-C cancels its tasks: a run with no outcome whose error is STOPPED read 'failed:
    stopped before it finished' though the database and the summary count it stopped."""
    import io

    from test_runs_status import LINEAR

    from qtl.cli.progress import ProgressBar, SweepBar
    from qtl.experiments.executors import STOPPED, Done

    stream = io.StringIO()
    bar = SweepBar(ProgressBar(stream), "ray")
    bar.ended(0, 2, LINEAR, Done(None, STOPPED))
    bar.ended(1, 2, LINEAR, Done(None, "ValueError: no"))
    first, second = stream.getvalue().splitlines()
    assert first.endswith("] stopped; not counted") and second.endswith("] failed: ValueError: no")


def test_runs_lists_interrupted_runs_and_the_dry_run_names_unsaved_checkpoints(capsys, tmp_path):
    """`qtl runs --status interrupted` (the library had the state, the parser refused the word); the dry
    run of a spec keeping checkpoints names its done runs that have none, as the sweep's end does."""
    from conftest import make_image_folder, run_cli
    from test_exp_claims import finished
    from test_runs_status import LINEAR, QUANTUM, gone_owner

    from qtl.experiments.database import ResultsDB
    from qtl.experiments.spec import load_spec, plan

    db = tmp_path / "r.db"
    with ResultsDB(db) as results:
        results.add_sweep("s", "", [QUANTUM, LINEAR])
        results.start(QUANTUM.id, owner=gone_owner())
    code, out, err = run_cli(
        capsys, "runs", "--db", db, "--sweep", "s", "--status", "interrupted", "--json", "-"
    )
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [QUANTUM.id]

    data = make_image_folder(tmp_path / "tiny")
    spec_file = tmp_path / "c.toml"
    spec_file.write_text(
        f'name = "c"\ndataset = "{data}"\npretrained = false\nvariant = "linear"\nseeds = 1\n'
        "checkpoints = true\n"
    )
    models = tmp_path / "models"
    (run,) = plan(load_spec(spec_file), models_dir=models)
    with ResultsDB(db) as results:  # finished by another sweep, which kept no checkpoint
        results.add_sweep("other", "", [run])
        results.start(run.id)
        finished(results, run)
    argv = ["sweep", spec_file, "--db", db, "--models-dir", models, "--dry-run"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert (
        "note: checkpoints = true: 1 run finished before (in this or another sweep) has no checkpoint" in out
    )


def test_a_sweep_without_its_dataset_says_how_a_spec_names_one(capsys, tmp_path, monkeypatch):
    """A spec on the default dataset, offline and without it: the advice named --data PATH alone, which
    qtl sweep does not take."""
    monkeypatch.setenv("QTL_OFFLINE", "1")
    monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "nothing"))
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nvariant = "linear"\nseeds = 1\n')
    line = refused(capsys, "sweep", spec, "--db", tmp_path / "r.db", "--dry-run")
    assert "point to it with --data PATH (a sweep spec: dataset = PATH) or the QTL_DATA_DIR" in line
    assert not (tmp_path / "r.db").exists()


def test_runs_report_is_on_held_out_accuracy_by_default(capsys, tmp_path):
    """`qtl runs --report` reported val accuracy while the sweep's closing report and `qtl study` report
    test accuracy where runs have it: it now does as they do, and --metric val_acc gives the val one."""
    from conftest import run_cli
    from test_runs_status import LINEAR

    from qtl.experiments.database import ResultsDB
    from qtl.experiments.runs import Outcome

    db = tmp_path / "r.db"
    with ResultsDB(db) as results:
        results.add_sweep("s", "", [LINEAR])
        results.start(LINEAR.id)
        row = {"variant": "linear", "backbone": "resnet18", "seed": 1, "val_acc": 0.9, "test_acc": 0.8}
        results.finish(LINEAR.id, Outcome(row, [{"epoch": 1, "val_acc": 0.9}], 1.0))
    code, out, err = run_cli(capsys, "runs", "--db", db, "--report")
    assert code == 0, err
    assert "test_acc per cell" in out and "0.8000" in out and "0.9000" not in out
    code, out, err = run_cli(capsys, "runs", "--db", db, "--report", "--metric", "val_acc")
    assert code == 0 and "val_acc per cell" in out and "0.9000" in out
