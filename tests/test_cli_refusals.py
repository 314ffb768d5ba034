"""Command-line refusals found by walking the commands as users: each is one line that says what the user
can do, before any work, with nothing written."""

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
