"""Sweeps: specs, plans with stable ids, the results database, resuming after Ctrl-C and SIGKILL, the
process and Ray backends against local execution, and `qtl sweep` / `qtl runs`."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_image_folder, tied_to_this_process

from qtl import cli
from qtl.data.folders import file_listing_id
from qtl.experiments.database import ResultsDB
from qtl.experiments.spec import SpecError, load_spec, parse_spec, plan
from qtl.experiments.stats import cells, format_report, group_cells
from qtl.experiments.sweeps import run_sweep

SPEC = """
name = "tiny"
dataset = "{data}"
pretrained = false
epochs = {epochs}

[[grid]]
variant = ["quantum", "dressed-classical"]
qubits = [2]
depth = [1, 2]
seeds = 2

[[grid]]
variant = "linear"
seeds = [0, 1]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("sweep") / "tiny")


def write_spec(folder: Path, data: Path, epochs: int = 2, text: str = SPEC) -> Path:
    path = folder / "spec.toml"
    path.write_text(text.format(data=data, epochs=epochs))
    return path


def history_of(db: ResultsDB, rows: list[dict]) -> dict:
    return {r["id"]: db.history(r["id"]) for r in rows}


class TestSpec:
    def test_grids_expand_and_ids_collapse_what_a_variant_ignores(self, tiny, tmp_path):
        """2 variants x 2 depths x 2 seeds + 2 linear = 10 points; dressed-classical ignores depth, so its
        4 points are 2 runs: 8 distinct runs, in grid order, ids stable across plans."""
        spec = load_spec(write_spec(tmp_path, tiny))
        assert spec.name == "tiny" and len(spec.points()) == 10
        runs = plan(spec)
        assert len(runs) == 8 and len({r.id for r in runs}) == 8
        assert [r.id for r in plan(load_spec(write_spec(tmp_path, tiny)))] == [r.id for r in runs]
        kinds = [(r.model_config.variant, r.model_config.circuit.n_qubits) for r in runs]
        assert kinds.count(("dressed-classical", 2)) == 2 and kinds.count(("quantum", 2)) == 4
        assert {r.train_config.epochs for r in runs} == {2}
        assert all(r.checkpoint_path is None and r.dataset == str(tiny) for r in runs)
        lin = [r for r in runs if r.model_config.variant == "linear"]
        assert lin[0].train_config.optimizer == "sgd" and lin[0].train_config.views == 5  # the recipe

    def test_a_name_from_the_file_name_says_so_where_it_cannot_be_one(self, tmp_path):
        """A spec without a name in "my study.toml": the refusal named a name the user never wrote."""
        path = tmp_path / "my study.toml"
        path.write_text('variant = "linear"\n')
        with pytest.raises(
            SpecError, match=r"name 'my study' must be .* \(taken from the file name: add name"
        ):
            load_spec(path)
        path.write_text('name = "my study"\nvariant = "linear"\n')  # written so: said as before
        with pytest.raises(SpecError, match=r"or '-'$"):
            load_spec(path)

    def test_one_folder_spelt_several_ways_is_one_dataset(self, tiny, tmp_path, monkeypatch):
        """ "tiny", "./tiny/" and its absolute path trained every run once for each spelling, and the report
        showed their cells alike ("on tiny"), each a comparison of its own; they are one dataset, named
        as the spec first names it."""
        monkeypatch.chdir(tiny.parent)
        doc = {"variant": "linear", "seeds": 2, "epochs": 1, "dataset": ["tiny", "./tiny/", str(tiny)]}
        runs = plan(parse_spec(doc, name="spelt"))
        assert [(r.dataset, r.train_config.seed) for r in runs] == [("tiny", 0), ("tiny", 1)]
        assert {Path(r.machine.data_dir).resolve() for r in runs} == {tiny.resolve()}

    def test_the_data_a_run_names_is_the_data_it_trains_on(self, tiny, tmp_path, monkeypatch):
        """No dataset key, $QTL_DATA_DIR at another dataset than hymenoptera: the runs name that folder
        (they were recorded as hymenoptera's, whose real runs were then skipped as done); at a folder named
        hymenoptera_data they stay hymenoptera's (the shipped study's ids). A folder of class folders and
        a zip are datasets of a spec too, as of --data (they were refused)."""
        from qtl.testing.image_folders import make_class_folders, zip_folder

        text = 'name = "d"\npretrained = false\nepochs = 1\nvariant = "linear"\nseeds = 1\n'
        other = make_image_folder(tmp_path / "tiny2")
        monkeypatch.setenv("QTL_DATA_DIR", str(other))
        (run,) = plan(parse_spec(__import__("tomllib").loads(text), source=text))
        assert run.dataset == "tiny2" and run.machine.data_dir == str(other)
        monkeypatch.chdir(other)
        monkeypatch.setenv("QTL_DATA_DIR", ".")  # the folder's own name, not ""
        (here,) = plan(parse_spec(__import__("tomllib").loads(text), source=text))
        assert here.dataset == "tiny2" and here.id == run.id
        monkeypatch.setenv("QTL_DATA_DIR", str(other))
        monkeypatch.setenv("QTL_DATA_DIR", str(make_image_folder(tmp_path / "x" / "hymenoptera_data")))
        (default,) = plan(parse_spec(__import__("tomllib").loads(text), source=text))
        assert default.dataset == "hymenoptera" and default.id != run.id
        flat = make_class_folders(tmp_path / "flat", 2, 6)
        for source in (flat, zip_folder(flat, tmp_path / "flat.zip")):
            spec_text = text + f'dataset = "{source}"\n'
            (one,) = plan(parse_spec(__import__("tomllib").loads(spec_text), source=spec_text))
            assert (Path(one.machine.data_dir) / "train").is_dir()

    def test_a_value_no_config_takes_is_said_with_its_point(self, tiny):
        """qubits = 0 passes the spec's types but no circuit takes it: the error names the sweep and the
        point (it was the config's bare ValueError)."""
        text = f'name = "z"\ndataset = "{tiny}"\nvariant = "quantum"\nqubits = [2, 0]\ndepth = 1\n'
        with pytest.raises(SpecError, match=r"sweep 'z', the point .*qubits = 0.*: "):
            plan(parse_spec(__import__("tomllib").loads(text), source=text))

    def test_top_level_is_the_grid_and_seeds_count(self, tiny):
        spec = parse_spec(
            {"variants": ["quantum"], "qubits": [2, 4], "seeds": 3, "lr": 1, "dataset": str(tiny)}
        )
        assert [(p["qubits"], p["seed"]) for p in spec.points()] == [(q, s) for s in range(3) for q in (2, 4)]
        assert {p["lr"] for p in spec.points()} == {1.0}

    @pytest.mark.parametrize(
        "text, message",
        [
            ("qbits = 3", "unknown key 'qbits'"),
            ("qubits = 'four'", "'qubits' in the top level: 'four' is not a whole number"),
            ("name = 'a b'", "name 'a b' must be"),
            ("[[grid]]\ndepth = []", "'depth' in [[grid]] number 1 is an empty list"),
            ("seeds = -3", "'seeds' in the top level: a number of seeds must be at least 1, got -3"),
            (
                "engine = 'nope'",
                "'engine' in the top level: 'nope' is no engine here; choose from: native, mps",
            ),
            ('[[grid]]\nbackbones = ["resnet18", "nosuch"]', "number 1: unknown backbone 'nosuch'"),
            ("qubits = [", "is not valid TOML"),
            ("per_class = ['few']", "'per_class' in the top level: 'few' is not a whole number or \"all\""),
            (
                "seeds = 100000\n[[grid]]\nqubits = [1, 2, 3, 4, 5]\ndepth = [1, 2]\n"
                "[[grid]]\nvariant = 'linear'",
                "plans 1,100,000 runs, over the limit of 100,000 (grid 1: seed 100,000 x qubits 5 x depth 2 "
                "= 1,000,000; grid 2: seed 100,000 = 100,000)",
            ),
        ],
    )
    def test_bad_specs_are_one_line_errors(self, tmp_path, text, message):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(SpecError) as exc:
            load_spec(path)
        assert message in str(exc.value)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)

    def test_a_huge_plan_is_refused_at_once_and_the_cap_is_configurable(self, tmp_path, monkeypatch):
        """A typo such as seeds = 100000 is counted, not enumerated: refused in well under a second; the
        limit follows --max-runs / QTL_SWEEP_MAX_RUNS."""
        path = tmp_path / "typo.toml"
        path.write_text(
            "seeds = 100000\nqubits = [2, 4, 6, 8, 10]\ndepth = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"
        )
        start = time.perf_counter()
        with pytest.raises(SpecError, match="plans 5,500,000 runs"):
            load_spec(path)
        assert time.perf_counter() - start < 1.0
        assert load_spec(path, limit=6_000_000).size() == 5_500_000
        monkeypatch.setenv("QTL_SWEEP_MAX_RUNS", "10")
        with pytest.raises(SpecError, match="over the limit of 10 "):
            parse_spec({"seeds": 11})

    def test_a_spec_that_is_not_utf8_is_refused_by_name(self, tmp_path):
        path = tmp_path / "latin1.toml"
        path.write_bytes("name = 'caf\u00e9'".encode("latin-1"))
        with pytest.raises(SpecError, match=r"latin1.toml is not UTF-8 text \(byte 11 is 0xe9\)"):
            load_spec(path)

    def test_regime_axes_make_distinct_runs_and_all_means_no_limit(self, tiny):
        """per_class, label_noise, split, reupload and feature_dim are axes: each value its own run id;
        "all" is the default (no limit); classical heads ignore reupload (one run)."""
        text = (
            f"dataset = '{tiny}'\nsplit = 'kfold'\nfolds = 3\n[[grid]]\nvariant = ['quantum', 'linear']\n"
            "reupload = [false, true]\nper_class = [2, 'all']\nlabel_noise = [0.0, 0.25]\n"
            "[[grid]]\nvariant = 'quantum'\nfeature_dim = [8, 'all']"
        )
        runs = plan(parse_spec(__import__("tomllib").loads(text)))
        quantum = [r for r in runs if r.model_config.variant == "quantum"]
        assert len(quantum) == 2 * 2 * 2 + 1 and len(runs) - len(quantum) == 2 * 2
        regimes = {(r.train_config.regime.per_class, r.train_config.regime.label_noise) for r in runs}
        assert regimes == {(2, 0.0), (2, 0.25), (None, 0.0), (None, 0.25)}
        assert {r.model_config.feature_dim for r in runs} == {None, 8}
        assert all(r.train_config.regime.split == "kfold" and r.train_config.regime.folds == 3 for r in runs)


class TestLocalSweep:
    def test_runs_land_in_the_database_and_a_rerun_skips_them(self, tiny, tmp_path):
        spec = load_spec(write_spec(tmp_path, tiny))
        db_path = tmp_path / "r.db"
        report = run_sweep(spec, db_path)
        assert (report.planned, report.done, report.skipped, report.failed) == (8, 8, 0, 0)
        with ResultsDB(db_path) as db:
            rows = db.rows("tiny")
            assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
            for r in rows:
                history = db.history(r["id"])
                assert [h["epoch"] for h in history] == [1, 2]
                assert r["val_acc"] == max(h["val_acc"] for h in history)
                t = db.timings(r["id"])
                assert set(t) == {"wall", "epochs", "setup", "queue", "dispatch"}
                assert t["wall"] >= t["epochs"] == pytest.approx(r["train_time_s"])
                assert db.environment(r["id"])["torch"]
            assert db.sweeps()[0]["done"] == 8 and "qubits = [2]" in db.spec("tiny")
            first = {r["id"]: r["finished"] for r in rows}

        again = run_sweep(spec, db_path)
        assert (again.done, again.skipped, again.earlier) == (0, 8, 0)
        # a second sweep that shares runs reuses them and trains only its new ones
        wider = spec.source.replace("qubits = [2]", "qubits = [2, 3]").replace('"tiny"', '"wider"', 1)
        other = parse_spec(__import__("tomllib").loads(wider), source=wider)
        more = run_sweep(other, db_path)
        assert (more.planned, more.skipped, more.done) == (14, 8, 6)  # 2 qubits and linear were done
        with ResultsDB(db_path) as db:
            assert {r["id"]: r["finished"] for r in db.rows("tiny")} == first  # untouched
            assert len(db.rows()) == 14 and len(db.rows(status=None)) == 14

    def test_runs_that_differ_in_their_recipe_are_cells_apart(self, tiny, tmp_path, capsys):
        """A grid over batch size (a documented axis): two cells of two seeds each, named apart, where
        the report pooled them into one cell of four "seeds" (recipe_label, a cell key); the rows read
        the recipe from the stored configs, so rows of any age agree."""
        text = (
            f'name = "bs"\ndataset = "{tiny}"\npretrained = false\nepochs = 1\n\n[[grid]]\n'
            'variant = "quantum"\nqubits = [2]\ndepth = [1]\nbatch_size = [4, 8]\nseeds = 2\n'
        )
        spec = parse_spec(__import__("tomllib").loads(text), source=text)
        db_path = tmp_path / "r.db"
        run_sweep(spec, db_path)
        with ResultsDB(db_path, readonly=True) as db:
            rows = db.rows("bs")
        assert sorted(r["recipe"] or "" for r in rows) == ["", "", "batch_size 8", "batch_size 8"]
        assert [c["n"] for c in cells(rows)] == [2, 2]
        report = format_report(rows)
        assert "recipe default" in report and "recipe batch_size 8" in report

    def test_another_spec_under_a_sweeps_name_joins_it_and_says_so(self, tiny, tmp_path, capsys):
        """The sweep keeps the first spec's runs (its reports count them): the dry run, the run and the
        report say so, where they said nothing and the report mixed the two specs' runs silently."""
        db_path = tmp_path / "r.db"
        first = load_spec(write_spec(tmp_path, tiny, epochs=1))
        run_sweep(first, db_path)
        narrow = write_spec(
            tmp_path, tiny, epochs=1, text=SPEC.replace('"quantum", "dressed-classical"', '"quantum"')
        )
        assert cli.main(["-q", "sweep", str(narrow), "--db", str(db_path), "--dry-run"]) == 0
        said = capsys.readouterr().out
        assert "6 runs, 6 done" in said and "sweep tiny also holds 2 runs of an earlier spec" in said
        report = run_sweep(load_spec(narrow), db_path)
        assert (report.planned, report.skipped, report.earlier) == (6, 6, 2)
        with ResultsDB(db_path) as db:
            assert len(db.rows("tiny")) == 8 and "dressed" not in db.spec("tiny")
        capsys.readouterr()
        assert cli.main(["sweep", str(narrow), "--db", str(db_path)]) == 0
        assert "note: sweep tiny also holds 2 runs of an earlier spec" in capsys.readouterr().err
        assert cli.main(["sweep", str(write_spec(tmp_path, tiny, epochs=1)), "--db", str(db_path)]) == 0
        assert "earlier spec" not in capsys.readouterr().err  # the first spec again: nothing else held


def sweep_process(spec: Path, db: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = "import sys; from qtl.cli import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, "sweep", str(spec), "--db", str(db), *extra]
    tied = tied_to_this_process()  # a killed pytest takes it along
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **tied)


def wait_until(db_path: Path, condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=10) as c:
                try:
                    counts = dict(c.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
                except sqlite3.OperationalError:  # the schema is not there yet
                    counts = {}
            if condition(counts):
                return
        if proc.poll() is not None:
            pytest.fail(f"sweep exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the sweep did not reach the expected state in time")


NEWER_RUN_COLUMNS = ("engine", "noise", "reupload", "feature_dim", "split", "n_classes", "per_class",
                     "label_noise", "test_acc", "test_loss", "n_train", "n_test")  # fmt: skip
NEWER_EPOCH_COLUMNS = ("grad_backbone", "grad_pre_net", "grad_circuit", "grad_hidden", "grad_post_net")


def shipped_copy(folder: Path) -> Path:
    copy = folder / "wide.db"
    copy.write_bytes((REPO / "docs" / "wide.db").read_bytes())
    return copy


def upgraded_copy(folder: Path) -> Path:
    """docs/wide.db with its first three seeds' newer columns NULL, as the migration leaves rows written
    before those columns existed (the shipped file's already are; here it is the premise)."""
    copy = shipped_copy(folder)
    with sqlite3.connect(copy) as db:
        db.execute(f"UPDATE runs SET {', '.join(f'{c} = NULL' for c in NEWER_RUN_COLUMNS)} WHERE seed < 3")
    db.close()
    return copy


def edit_config(db: sqlite3.Connection, run_id: str, edit) -> None:
    """A run's stored config changed in place: `edit` mutates the parsed JSON."""
    config = json.loads(db.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
    edit(config)
    db.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), run_id))


class TestOlderDatabases:
    def test_an_older_database_reads_without_a_write_and_gains_new_columns_on_its_first(self, tmp_path):
        """A file from before the engine, noise, test and regime columns and the epochs' gradient norms
        (docs/wide.db with them dropped): reading it changes nothing on disk; the settings its stored
        configs decide read as those configs say, results it never had as None; the first write adds the
        columns, and the old rows keep their values."""
        copy = shipped_copy(tmp_path)
        with sqlite3.connect(copy) as db:
            for column in NEWER_RUN_COLUMNS:
                db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
            for column in NEWER_EPOCH_COLUMNS:
                db.execute(f"ALTER TABLE epochs DROP COLUMN {column}")
        db.close()

        def columns(table):
            with sqlite3.connect(copy) as db:
                found = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            db.close()
            return found

        old_columns = columns("runs")
        with ResultsDB(copy) as db:
            rows = db.rows()
            history = db.history(rows[0]["id"])
        quantum = [r for r in rows if r["variant"] == "quantum"]
        assert quantum and all(r["engine"] == "mps" and r["reupload"] == 0 for r in quantum)
        assert all(r["engine"] is None and r["reupload"] is None for r in rows if r not in quantum)
        assert all(r["split"] == "given" and r["label_noise"] == 0 and r["per_class"] is None for r in rows)
        assert all(r["test_acc"] is None and r["n_classes"] is None for r in rows)  # no row records them
        assert history and all(h["grad_circuit"] is None for h in history)
        assert columns("runs") == old_columns
        with ResultsDB(copy) as db:
            db.fail(rows[0]["id"], "marked by the test")
            after = db.rows(status=None)
        assert {"engine", "noise", "test_acc", "split", "per_class"} <= columns("runs")
        assert {"grad_circuit", "grad_pre_net"} <= columns("epochs")
        before = {r["id"]: r["val_acc"] for r in rows}
        assert {r["id"]: r["val_acc"] for r in after if r["id"] in before} == before

    def test_seeds_run_before_and_after_an_upgrade_are_one_cell(self, tmp_path, capsys):
        """docs/wide.db's first three seeds were written before the regime columns existed (here: their
        newer columns NULL, as the migration leaves them); the seeds a resumed sweep adds record them.
        Each configuration is one cell of every seed: the old rows' class count is the one the new rows
        on the same dataset with all its classes recorded, or the regime's where it kept k classes."""
        copy = upgraded_copy(tmp_path)
        regime = {"split": "given", "folds": 5, "classes": 3, "per_class": None, "label_noise": 0.0}

        def keep_three_classes(config):
            config["train"]["regime"] = regime

        with sqlite3.connect(copy) as db:
            old = [r[0] for r in db.execute("SELECT id FROM runs WHERE seed < 3 ORDER BY id")]
            edit_config(db, old[0], keep_three_classes)
            # a new seed of the same configuration that kept 3 classes: no count for all of them
            (new,) = db.execute(
                "SELECT n.id FROM runs n JOIN runs o ON o.id = ? "
                "WHERE n.seed = 3 AND n.variant = o.variant AND n.qubits = o.qubits",
                old[:1],
            ).fetchone()
            edit_config(db, new, keep_three_classes)
            db.execute("UPDATE runs SET n_classes = 3 WHERE id = ?", (new,))
        db.close()
        with ResultsDB(copy, readonly=True) as db:
            rows = {r["id"]: r for r in db.rows()}
        assert len(old) == 30 and len(rows) == 50
        assert rows[old[0]]["n_classes"] == 3 and all(rows[i]["n_classes"] == 2 for i in old[1:])
        cells = group_cells(list(rows.values()))
        assert len(cells) == 11 and sorted(len(c) for c in cells.values()) == [2, 3] + [5] * 9

        assert cli.main(["runs", "--db", str(copy), "--report"]) == 0
        report = capsys.readouterr().out.split("quantum vs controls")[0]
        assert [report.count(f"n={n}") for n in (5, 3, 2)] == [9, 1, 1]

    def test_filters_see_the_filled_settings_and_an_unreadable_config_is_left_as_stored(self, tmp_path):
        """Filters on the filled columns apply to what the rows read; an old row whose stored config this
        version cannot read (a setting since removed) lists as stored instead of failing every read."""
        copy = upgraded_copy(tmp_path)
        with sqlite3.connect(copy) as db:
            query = "SELECT id FROM runs WHERE seed = 0 AND variant = 'quantum' AND qubits = 4"
            (unreadable,) = db.execute(query).fetchone()
            edit_config(db, unreadable, lambda config: config["model"].update(removed_setting=1))
        db.close()
        with ResultsDB(copy, readonly=True) as db:
            rows = {r["id"]: r for r in db.rows()}
            mps, given, unrecorded = db.rows(engine="mps"), db.rows(split="given"), db.rows(split=None)
        assert len(rows) == 50 and rows[unreadable]["engine"] is rows[unreadable]["split"] is None
        assert len(mps) == 24 and {(r["engine"], type(r["reupload"])) for r in mps} == {("mps", int)}
        assert len(given) == 49 and [r["id"] for r in unrecorded] == [unreadable]

    def test_read_only_opens_leave_the_file_as_it_was(self, tmp_path):
        """readonly=True: rows and histories read, any write refused, the bytes unchanged and no journal
        files left beside it (the app opens the shipped studies so)."""
        copy = shipped_copy(tmp_path)
        with ResultsDB(copy, readonly=True) as db:
            rows = db.rows()
            assert len(rows) == 50 and db.history(rows[0]["id"])
            with pytest.raises(PermissionError, match="read-only"):
                db.fail(rows[0]["id"], "no")
        assert copy.read_bytes() == (REPO / "docs" / "wide.db").read_bytes()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.db"]

    def test_a_file_without_tables_yet_has_no_sweeps(self, tmp_path):
        """Read-only, a results database a sweep is just creating (the file made, no table yet): no sweeps,
        runs or jobs (the app's Experiments page raised 'no such table: sweeps', qtl runs 'no such table:
        runs'), and the file stays as it was."""
        empty = tmp_path / "results.db"
        empty.touch()
        with ResultsDB(empty, readonly=True) as db:
            assert db.sweeps() == [] and db.rows() == [] and db.rows(status=None) == []
            assert db.spec("s") is None and db.history("r") == [] and db.hardware_jobs() == []
        assert empty.read_bytes() == b""  # read, not written

    def test_reading_commands_leave_the_file_as_it_was(self, tmp_path, capsys):
        """qtl runs (every listing) and a dry run read a shipped study's copy without changing a byte
        (opened for writing, it would have turned to WAL mode and gained a journal)."""
        copy = shipped_copy(tmp_path)
        for args in (["--sweeps"], ["--report"], ["--sweep", "wide", "--json", "-"]):
            assert cli.main(["runs", "--db", str(copy), *args]) == 0
        spec = tmp_path / "s.toml"
        data = make_image_folder(tmp_path / "data")
        spec.write_text(f'name = "wide"\nvariant = "quantum"\ndataset = "{data}"\n')
        assert cli.main(["sweep", str(spec), "--db", str(copy), "--dry-run"]) == 0
        assert copy.read_bytes() == (REPO / "docs" / "wide.db").read_bytes()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "s.toml", "wide.db"]

    def test_a_file_from_before_timings_reads_read_only(self, tmp_path):
        """Read-only opens write no schema, so a file from before the timings table reads without it."""
        path = tmp_path / "old.db"
        with ResultsDB(path) as db:
            db.add_sweep("s", "", [])
        with sqlite3.connect(path) as raw:
            raw.execute("DROP TABLE timings")
        with ResultsDB(path, readonly=True) as db:
            assert db.rows("s") == [] and db.timings("x") == {}

    def test_a_live_database_is_read_as_it_is_written(self, tmp_path):
        """Read-only, a database a sweep is writing (WAL) shows the runs written after it was opened."""
        path = tmp_path / "r.db"
        with ResultsDB(path) as writer:
            writer.add_sweep("s", "", [])
            reader = ResultsDB(path, readonly=True)
            assert [sw["name"] for sw in reader.sweeps()] == ["s"]
            writer.add_sweep("t", "", [])
            assert [sw["name"] for sw in reader.sweeps()] == ["s", "t"]
            reader.close()

    def test_runs_names_a_sweep_it_does_not_hold_and_markdown_is_a_report(self, tmp_path, capsys):
        copy = shipped_copy(tmp_path)
        assert cli.main(["runs", "--db", str(copy), "--sweep", "wdie"]) == 1
        assert f"no sweep 'wdie' in {copy}; it holds: wide" in capsys.readouterr().err
        assert cli.main(["runs", "--db", str(copy), "--sweep", "wide", "--markdown"]) == 0
        assert "| qubits \\ depth |" in capsys.readouterr().out

    @pytest.mark.parametrize("command", [["runs", "--sweeps"], ["study"], ["sweep", "SPEC", "--dry-run"]])
    def test_a_file_that_is_no_database_is_one_line(self, tmp_path, capsys, command):
        bogus = tmp_path / "notes.db"
        bogus.write_text("not a database")
        spec = tmp_path / "s.toml"
        spec.write_text(f'name = "s"\nvariant = "quantum"\ndataset = "{make_image_folder(tmp_path / "d")}"\n')
        argv = [str(spec) if a == "SPEC" else a for a in command] + ["--db", str(bogus)]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"qtl: error: {bogus} cannot be opened as a results database")
        assert err.count("\n") == 1
        assert bogus.read_text() == "not a database"


class TestConcurrentOpen:
    def test_connections_opening_a_new_database_at_once_all_succeed(self, tmp_path):
        """A sweep creating its database while the Experiments page opens it to browse: each connection
        switches the new file to WAL, which SQLite does not wait for; none may fail "database is locked"."""
        import threading

        errors = []

        def open_and_read(path, start):
            start.wait()
            try:
                with ResultsDB(path) as db:
                    db.sweeps()
            except (sqlite3.OperationalError, ValueError) as exc:  # ValueError: a schema seen half made
                errors.append(str(exc))

        for i in range(60):
            start = threading.Barrier(4)
            threads = [
                threading.Thread(target=open_and_read, args=(tmp_path / f"r{i}.db", start)) for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []


class TestInterruptions:
    def test_sigkill_loses_nothing_finished_and_counts_nothing_half_written(self, tiny, tmp_path):
        """kill -9 mid-sweep: finished runs stay whole, the killed one is not counted, and re-running the
        spec trains exactly the runs that were not finished."""
        spec, db_path = write_spec(tmp_path, tiny, epochs=25), tmp_path / "r.db"
        proc = sweep_process(spec, db_path, "--quiet")
        wait_until(db_path, lambda c: c.get("done", 0) >= 2 and c.get("running", 0) == 1, proc)
        with ResultsDB(db_path, readonly=True) as db:
            assert db.sweeps()[0]["interrupted"] == 0  # its process is alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with ResultsDB(db_path) as db:
            done = db.rows("tiny")
            assert len(done) >= 2
            for r in done:
                assert len(db.history(r["id"])) == 25 and r["val_acc"] is not None
            unfinished = [r for r in db.rows("tiny", status=None) if r["status"] != "done"]
            # the killed run is said to be interrupted, not running (it read "1 running" for good)
            assert sorted(r["status"] for r in unfinished if r["status"] != "pending") == ["interrupted"]
            (summary,) = db.sweeps()
            assert (summary["running"], summary["interrupted"]) == (0, 1)
            assert all(r["val_acc"] is None for r in unfinished)
            before = {r["id"]: (r["finished"], db.history(r["id"])) for r in done}

        resumed = run_sweep(load_spec(spec), db_path)
        assert resumed.skipped == len(done) and resumed.done == 8 - len(done)
        with ResultsDB(db_path) as db:
            rows = db.rows("tiny")
            assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
            assert {
                r["id"]: (r["finished"], db.history(r["id"])) for r in rows if r["id"] in before
            } == before
            assert all(len(db.history(r["id"])) == 25 for r in rows)

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
    def test_sigkill_of_a_process_pool_sweep_ends_its_workers(self, tiny, tmp_path):
        """kill -9 of a `--backend processes` sweep: its worker processes end with it (they stayed, about
        1 GB each, blocked on their call queue, until killed by hand)."""
        spec, db_path = write_spec(tmp_path, tiny, epochs=25), tmp_path / "r.db"
        proc = sweep_process(spec, db_path, "--quiet", "--backend", "processes", "--workers", "2")
        wait_until(db_path, lambda c: c.get("running", 0) >= 1, proc)

        def children() -> list[int]:
            found = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == proc.pid:  # the parent pid
                    found.append(int(stat.parent.name))
            return found

        def is_worker(pid: int) -> bool:  # a pool worker, not multiprocessing's resource tracker
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False
            return b"spawn_main" in cmdline and b"resource_tracker" not in cmdline

        deadline = time.monotonic() + 60
        while not (workers := [w for w in children() if is_worker(w)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers, "no worker processes found"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        alive = [
            w
            for w in workers
            if Path(f"/proc/{w}/stat").exists() and " Z " not in Path(f"/proc/{w}/stat").read_text()
        ]
        for w in alive:  # leave nothing behind, whatever the outcome
            os.kill(w, signal.SIGKILL)
        assert alive == []

    def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(self, tiny, tmp_path):
        # runs of many epochs (seconds each, where 400 could end within the second below on a fast or
        # unevenly loaded machine, and the signal then fell between two runs)
        epochs = 4000
        spec, db_path = write_spec(tmp_path, tiny, epochs=epochs), tmp_path / "r.db"
        proc = sweep_process(spec, db_path, "--quiet")
        wait_until(db_path, lambda c: c.get("running", 0) == 1, proc)
        time.sleep(1.0)  # inside the run's epochs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err
        with ResultsDB(db_path) as db:
            statuses = [r["status"] for r in db.rows("tiny", status=None)]
            assert statuses.count("cancelled") == 1 and "running" not in statuses
            assert db.rows("tiny") == [] or all(len(db.history(r["id"])) == epochs for r in db.rows("tiny"))


class TestBackends:
    def test_a_ray_address_that_does_not_answer_is_one_line_and_nothing_left_needs_none(self, tiny, tmp_path):
        """An address no cluster listens on fails at once (ray.init would retry for minutes, deaf to
        Ctrl-C), runs untouched; a sweep with nothing left to run starts no cluster at all."""
        from qtl.experiments import executors

        spec = load_spec(write_spec(tmp_path, tiny, epochs=1))
        with socket.socket() as probe:  # a free port, then closed: nothing listens there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ValueError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
            run_sweep(spec, tmp_path / "r.db", backend="ray", address=f"127.0.0.1:{port}")
        assert time.monotonic() - started < executors.CONNECT_TIMEOUT_S
        with ResultsDB(tmp_path / "r.db") as db:
            assert db.rows("tiny", status=None) and not db.rows("tiny")
        assert list(executors.execute([], backend="ray", address=f"127.0.0.1:{port}")) == []

    def test_a_bracketed_ipv6_ray_address_is_reached_without_its_brackets(self, monkeypatch):
        from qtl.experiments import executors

        reached = []

        class Connection:
            def close(self):
                pass

        def connect(where, timeout):
            reached.append(where)
            return Connection()

        monkeypatch.setattr(executors.socket, "create_connection", connect)
        for address in ("[::1]:6379", "ray://[::1]:10001", "head.example:6379"):
            executors._check_reachable(address)
        assert reached == [("::1", 6379), ("::1", 10001), ("head.example", 6379)]

    def test_processes_and_ray_give_the_local_results(self, tiny, tmp_path):
        """Same spec, same seeds: worker processes and a real local Ray instance (2 CPUs) produce the
        very same per-epoch metrics as running in this process."""
        ray = pytest.importorskip("ray")
        text = SPEC.replace("depth = [1, 2]", "depth = [2]")
        spec = load_spec(write_spec(tmp_path, tiny, epochs=3, text=text))
        results = {}
        for backend in ("local", "processes", "ray"):
            db_path = tmp_path / f"{backend}.db"
            if backend == "ray":
                ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False)
            try:
                report = run_sweep(spec, db_path, backend=backend, workers=2)
            finally:
                if backend == "ray":
                    ray.shutdown()
            assert (report.done, report.failed) == (6, 0), report.errors
            with ResultsDB(db_path) as db:
                rows = db.rows("tiny")
                envs = {db.environment(r["id"])["host"] for r in rows}
                results[backend] = (
                    {r["id"]: (r["val_acc"], r["val_loss"]) for r in rows},
                    history_of(db, rows),
                )
            assert envs
        for backend in ("processes", "ray"):
            assert results[backend][0] == results["local"][0]
            strip = {
                k: [{c: h[c] for c in h if c != "time_s"} for h in v] for k, v in results[backend][1].items()
            }
            local = {
                k: [{c: h[c] for c in h if c != "time_s"} for h in v] for k, v in results["local"][1].items()
            }
            assert strip == local


class TestCommandLine:
    def test_sweep_then_runs_list_filter_export(self, capsys, tiny, tmp_path):
        spec, db = write_spec(tmp_path, tiny, epochs=1), tmp_path / "r.db"
        code = cli.main(["sweep", str(spec), "--db", str(db), "--dry-run"])
        out = capsys.readouterr().out
        assert code == 0 and "8 runs, 0 done, 8 to run" in out
        code = cli.main(["sweep", str(spec), "--db", str(db)])
        out, err = capsys.readouterr()
        assert code == 0 and "sweep tiny: 8 runs (10 grid points), 0 already done, 8 to run" in err
        assert "quantum 2q d1 resnet18 on tiny vs dressed-classical" in out and "val_acc per cell" in out

        code = cli.main(["runs", "--db", str(db), "--variant", "quantum", "--depth", "2"])
        out = capsys.readouterr().out
        assert code == 0 and len(out.strip().splitlines()) == 1 + 2  # header + 2 seeds
        csv_path, json_path = tmp_path / "runs.csv", tmp_path / "runs.json"
        assert cli.main(["runs", "--db", str(db), "--sweep", "tiny", "--csv", str(csv_path)]) == 0
        assert cli.main(["runs", "--db", str(db), "--json", str(json_path)]) == 0
        with open(csv_path, newline="") as f:
            table = list(csv.DictReader(f))
        doc = json.loads(json_path.read_text())
        assert len(table) == len(doc) == 8
        assert {r["id"] for r in table} == {r["id"] for r in doc}
        assert {float(r["val_acc"]) for r in table} == {r["val_acc"] for r in doc}
        assert cli.main(["runs", "--db", str(db), "--sweeps"]) == 0
        assert "tiny  8 runs (8 done)" in capsys.readouterr().out
        # the sweeps as JSON, and the data alone on stdout beside a report (both wrote nothing, or mixed)
        assert cli.main(["runs", "--db", str(db), "--sweeps", "--json", "-"]) == 0
        sweeps = json.loads(capsys.readouterr().out)
        assert [s["done"] for s in sweeps] == [8]
        from qtl.experiments.database import SWEEP_COLUMNS

        assert tuple(sweeps[0]) == SWEEP_COLUMNS  # the columns an empty database's CSV is headed with
        assert cli.main(["runs", "--db", str(db), "--json", "-", "--report"]) == 0
        out, err = capsys.readouterr()
        assert len(json.loads(out)) == 8 and "val_acc per cell" in err
        assert cli.main(["runs", "--db", str(db), "--report", "--markdown"]) == 0
        md = capsys.readouterr().out
        assert "| qubits \\ depth | 1 | 2 |" in md
        assert "| quantum 2q d1 resnet18 on tiny | dressed-classical | 2 |" in md
        # a cancelled run is listed with --status any but never counted (it was a third "seed")
        with sqlite3.connect(db) as raw:
            (one,) = raw.execute(
                "SELECT id FROM runs WHERE variant = 'quantum' AND depth = 1 LIMIT 1"
            ).fetchone()
            raw.execute("UPDATE runs SET status = 'cancelled' WHERE id = ?", (one,))
        assert cli.main(["runs", "--db", str(db), "--status", "any", "--report", "--markdown"]) == 0
        assert "| quantum 2q d1 resnet18 on tiny | dressed-classical | 1 |" in capsys.readouterr().out

    def test_an_address_needs_the_ray_backend(self, capsys, tmp_path):
        """--address with --backend processes was ignored: the runs went to this machine, unsaid."""
        argv = ["sweep", str(tmp_path / "s.toml"), "--backend", "processes", "--address", "auto"]
        assert cli.main(argv) == 1
        assert "--address names a Ray cluster: use it with --backend ray" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("options", "said"),
        [
            (["--workers", "2"], "--workers runs several at once: use it with --backend processes or ray"),
            (["--cpus-per-run", "2"], "--backend local is not Ray, so --cpus-per-run would do nothing"),
            (
                ["--backend", "processes", "--gpus-per-run", "1"],
                "not Ray, so --gpus-per-run would do nothing",
            ),
        ],
    )
    def test_options_the_backend_ignores_are_refused(self, capsys, tmp_path, options, said):
        """--workers 2 on the local backend ran one run at a time, unsaid; Ray's per-run resources on
        another backend likewise did nothing."""
        assert cli.main(["sweep", str(tmp_path / "s.toml"), *options]) == 1
        assert said in capsys.readouterr().err

    def test_checkpoints_are_kept_where_a_run_has_one(self, capsys, tiny, tmp_path):
        """checkpoints = true keeps each trained head's best epoch, loadable and scoring as its row says;
        a kernel SVM has no checkpoint, and the plan, the dry run and the sweep say so."""
        spec = tmp_path / "keep.toml"
        spec.write_text(
            f'name = "keep"\ncheckpoints = true\ndataset = "{tiny.as_posix()}"\npretrained = false\n'
            'epochs = 1\nvariant = ["linear", "rbf-svm"]\n'
        )
        models, db = tmp_path / "models", tmp_path / "r.db"
        runs = plan(load_spec(spec), models_dir=models)
        paths = {r.model_config.variant: r.checkpoint_path for r in runs}
        assert (
            paths["rbf-svm"] is None
            and paths["linear"] == models / "sweeps" / "keep" / f"linear-{runs[0].id}.pt"
        )
        note = "checkpoints = true keeps no file for the rbf-svm runs: a kernel SVM has no checkpoint"
        assert cli.main(["sweep", str(spec), "--db", str(db), "--models-dir", str(models), "--dry-run"]) == 0
        assert note in capsys.readouterr().out
        assert cli.main(["-q", "sweep", str(spec), "--db", str(db), "--models-dir", str(models)]) == 0
        assert note in capsys.readouterr().err
        assert sorted(p.name for p in (models / "sweeps" / "keep").iterdir()) == [paths["linear"].name]
        with ResultsDB(db, readonly=True) as results:
            row = next(r for r in results.rows("keep") if r["variant"] == "linear")
        assert row["checkpoint"] == str(paths["linear"])
        code = cli.main(["evaluate", str(paths["linear"]), "--data", str(tiny), "--json"])
        assert code == 0 and json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == pytest.approx(
            row["val_acc"]
        )

    def test_done_runs_on_other_images_are_not_taken_as_done(self, capsys, tmp_path):
        """A run's id names its dataset by name: when the folder lists other images than a done run trained
        on, the sweep stops before writing anything and says why, the dry run marks the run "changed", and
        --rerun-changed trains it again on the images there now. Runs recorded before qtl kept the listing
        stay done."""
        import shutil

        data = make_image_folder(tmp_path / "data")
        spec = tmp_path / "s.toml"
        spec.write_text(
            f'name = "s"\ndataset = "{data.as_posix()}"\npretrained = false\nvariant = "linear"\nepochs = 1\n'
        )
        db = tmp_path / "r.db"
        run = ["-q", "sweep", str(spec), "--db", str(db)]
        assert cli.main(run) == 0
        with ResultsDB(db, readonly=True) as results:
            (before,) = results.rows("s")
            assert results.recorded_data([before["id"]]) == {before["id"]: file_listing_id(data)}
        capsys.readouterr()
        assert cli.main(["sweep", str(spec), "--db", str(db), "--dry-run"]) == 0
        assert "1 runs, 1 done, 0 to run" in capsys.readouterr().out
        shutil.copy(data / "train" / "cats" / "cats_0.png", data / "train" / "cats" / "added.png")
        assert cli.main(run) == 1
        err = capsys.readouterr().err
        assert "sweep s: 1 done run trained on other images than" in err and "--rerun-changed" in err
        assert err.count("\n") == 1
        with ResultsDB(db, readonly=True) as results:
            assert results.rows("s") == [before]  # nothing written
        assert cli.main(["sweep", str(spec), "--db", str(db), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert (
            "1 runs, 0 done, 1 changed (need --rerun-changed), 0 to run" in out
            and f"{before['id']}  changed" in out
        )
        assert cli.main([*run, "--rerun-changed"]) == 0
        with ResultsDB(db, readonly=True) as results:
            (after,) = results.rows("s")
            assert after["n_train"] == before["n_train"] + 1
            assert results.recorded_data([after["id"]]) == {after["id"]: file_listing_id(data)}
        shutil.copy(data / "val" / "dogs" / "dogs_0.png", data / "val" / "dogs" / "more.png")
        report = run_sweep(load_spec(spec), db, rerun_changed=True)  # as the app runs sweeps
        assert (report.changed, report.done, report.skipped) == (1, 1, 0)
        with sqlite3.connect(db) as raw:  # as a database written before the listing was kept
            raw.execute("UPDATE runs SET config = json_remove(config, '$.data')")
        (data / "train" / "cats" / "added.png").unlink()
        (data / "val" / "dogs" / "more.png").unlink()
        capsys.readouterr()
        assert cli.main(["sweep", str(spec), "--db", str(db), "--dry-run"]) == 0
        assert "1 runs, 1 done, 0 to run" in capsys.readouterr().out

    def test_errors_are_one_line(self, capsys, tmp_path):
        assert cli.main(["runs", "--db", str(tmp_path / "none.db")]) == 1
        assert "no results database" in capsys.readouterr().err
        bad = tmp_path / "bad.toml"
        bad.write_text("variant = 'quantom'\ndataset = '.'\n")
        assert cli.main(["sweep", str(bad), "--db", str(tmp_path / "r.db")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "qtl: error:" in err


class TestMlflow:
    def test_runs_are_logged_when_mlflow_is_installed(self, tiny, tmp_path, monkeypatch):
        """Skipped unless mlflow (or mlflow-skinny) is installed: every finished run becomes an MLflow run
        of the sweep's experiment, with its per-epoch metrics."""
        mlflow = pytest.importorskip("mlflow")
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        text = SPEC.replace("depth = [1, 2]", "depth = [1]")
        spec = load_spec(write_spec(tmp_path, tiny, epochs=2, text=text))
        uri = (tmp_path / "mlruns").as_uri()  # a file store: mlflow-skinny has no SQL backend
        run_sweep(spec, tmp_path / "r.db", mlflow_uri=uri)
        mlflow.set_tracking_uri(uri)
        found = mlflow.search_runs(experiment_names=["tiny"])
        assert len(found) == 6 and set(found["metrics.best_val_acc"]) <= {i / 8 for i in range(9)}
        curve = mlflow.tracking.MlflowClient().get_metric_history(found["run_id"][0], "val_acc")
        assert [m.step for m in curve] == [1, 2]
        assert set(found["params.split"]) == {"given"}  # the regime too (runs of other regimes looked alike)

    def test_an_mlflow_store_that_refuses_stops_logging_not_the_sweep(self, tiny, tmp_path, monkeypatch):
        """A file store without MLFLOW_ALLOW_FILE_STORE (MLflow refuses it): every run still trains and is
        recorded, and one warning says why logging stopped (it was a traceback after the first run, and
        the sweep stopped with the rest pending)."""
        pytest.importorskip("mlflow")
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
        import qtl.experiments.sweeps as sweeps

        def refused(*args):
            raise RuntimeError("the file store is in maintenance mode")

        monkeypatch.setattr(sweeps, "log_to_mlflow", refused)
        text = SPEC.replace("depth = [1, 2]", "depth = [1]")
        spec = load_spec(write_spec(tmp_path, tiny, epochs=1, text=text))
        report = run_sweep(spec, tmp_path / "r.db", mlflow_uri=(tmp_path / "mlruns").as_uri())
        assert (report.done, report.remaining) == (6, 0)
        (warning,) = report.warnings
        assert warning.startswith("MLflow logging stopped at ") and warning.endswith("maintenance mode")
