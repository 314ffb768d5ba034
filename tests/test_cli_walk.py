"""What walking the commands as users found: refusals of one line that say what the user can do, before
any work, with nothing written; help that says what the command takes."""

from __future__ import annotations

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
