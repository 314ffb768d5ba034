"""Files that are not a writable results database: another program's SQLite file is refused in one line
and left as it was (reading raised "no such table" tracebacks; a sweep added qtl's tables and switched it
to WAL), and a file this process cannot write is refused before any run trains (a traceback at the
sweep's first write)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import make_image_folder, run_cli

from qtl.experiments.database import ResultsDB


def foreign(path: Path, table: str = "foo (x)") -> Path:
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {table}")
        db.execute(f"INSERT INTO {table.split()[0]} VALUES ({', '.join('1' * (table.count(',') + 1))})")
    db.close()
    return path


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("readonly", [True, False])
def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path, readonly):
    path = foreign(tmp_path / "other.db")
    before = digest(tmp_path)
    with pytest.raises(ValueError, match=r"other.db is an SQLite file but not a qtl results database \(it "
                       r"holds tables foo\)") as exc:  # fmt: skip
        ResultsDB(path, readonly=readonly)
    assert "\n" not in str(exc.value)
    assert digest(tmp_path) == before  # no tables added, no WAL, no journal files
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


@pytest.mark.parametrize("readonly", [True, False])
def test_a_table_named_as_qtls_with_other_columns_is_anothers(tmp_path, readonly):
    """Another program's file whose only table is called "runs" passed for a results database being
    made: reading raised "no such table: sweeps" tracebacks, and a sweep switched it to WAL first."""
    path = foreign(tmp_path / "other.db", "runs (id INTEGER PRIMARY KEY, name TEXT)")
    before = digest(tmp_path)
    with pytest.raises(ValueError, match=r"not a qtl results database \(it holds tables runs\)"):
        ResultsDB(path, readonly=readonly)
    assert digest(tmp_path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


def test_the_commands_that_read_say_it_in_one_line(tmp_path, capsys):
    path = foreign(tmp_path / "other.db")
    before = digest(tmp_path)
    for argv in (["runs", "--db", path], ["runs", "--db", path, "--sweeps"], ["study", "--db", path]):
        code, out, err = run_cli(capsys, *argv)
        assert code != 0 and "not a qtl results database" in err and "Traceback" not in err, argv
    assert digest(tmp_path) == before


def test_an_empty_sqlite_file_is_a_new_database(tmp_path):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with ResultsDB(path) as db:
        assert db.sweeps() == []


def immutable(path: Path) -> bool:
    """chattr +i (root writes a chmod 444 file anyway); False where this file system cannot."""
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def read_only_db(tmp_path, monkeypatch):
    """A results database this process cannot write: chmod 444, and chattr +i for root; where neither
    holds (root without chattr), its connections are opened read-only by SQLite (mode=ro, immutable),
    which refuses every write as a read-only file does."""
    path = tmp_path / "ro.db"
    with ResultsDB(path) as db:
        db.add_sweep("s", "", [])
    path.chmod(0o444)
    made = immutable(path)
    probe = sqlite3.connect(path)
    try:
        probe.execute("CREATE TABLE p (x)")
        probe.rollback()
        writable = True
    except sqlite3.OperationalError:
        writable = False
    probe.close()
    if writable:
        import qtl.experiments.database as database

        connect = sqlite3.connect

        def read_only(target, *args, uri=False, **kwargs):
            if not uri and Path(target) == path:
                target, uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1", True
            return connect(target, *args, uri=uri, **kwargs)

        monkeypatch.setattr(database.sqlite3, "connect", read_only)
    yield path
    if made:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    path.chmod(0o644)


def test_a_read_only_file_is_refused_for_writing_and_read_as_it_is(read_only_db):
    with pytest.raises(
        ValueError, match=r"ro.db cannot be written here \(attempt to write a readonly"
    ) as exc:
        ResultsDB(read_only_db)
    assert "\n" not in str(exc.value)
    with ResultsDB(read_only_db, readonly=True) as db:  # qtl runs and qtl study still read it
        assert [s["name"] for s in db.sweeps()] == ["s"]


def spec_file(folder: Path) -> Path:
    data = make_image_folder(folder / "tiny")
    path = folder / "s1.toml"
    path.write_text(f'name = "s1"\ndataset = "{data}"\npretrained = false\nepochs = 1\nvariant = "linear"\n')
    return path


def test_a_sweep_on_either_is_one_line_before_any_training(read_only_db, tmp_path, capsys):
    spec = spec_file(tmp_path)
    other = foreign(tmp_path / "other.db")
    before = digest(tmp_path)
    for db, words in ((read_only_db, "cannot be written here"), (other, "not a qtl results database")):
        code, out, err = run_cli(capsys, "sweep", spec, "--db", db)
        assert code != 0 and words in err and "Traceback" not in err and "val acc" not in err
    assert digest(tmp_path) == before


def test_a_database_another_program_holds_locked_says_so(tmp_path, monkeypatch):
    """A results database held under an exclusive lock (a database browser, a stuck process) was "cannot
    be opened as a results database: database is locked", after the wait, with nothing to do about it."""
    import qtl.experiments.database as database

    path = tmp_path / "r.db"
    ResultsDB(path).close()
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ValueError, match=r"r.db is locked by another program \(.*\): close it, then run"):
            ResultsDB(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    ResultsDB(path).close()  # free again
