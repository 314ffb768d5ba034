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
