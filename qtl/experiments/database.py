"""The results database: one SQLite file (WAL) where sweeps, runs, per-epoch metrics, timings and the
environment that ran them accumulate.

    db = ResultsDB("models/results.db")
    db.add_sweep("study", spec_text, runs)       # registers runs as pending (finished ones stay finished)
    db.start(run.id)                             # -> running; "done"/"running" where another sweep has it
    db.finish(run.id, outcome, environment, timings)   # one transaction: row, epochs, timings -> done
    db.rows(sweep="study")                       # finished runs, one ROW_FIELDS-like dict each

Hardware jobs (`qtl hardware run`) have their own table: a job's row, with everything needed to score
it, is written when the job is submitted, before anything waits on the device, so `qtl hardware resume
JOB_ID` can finish it after a restart:

    db.add_hardware_job(job_id, provider=..., backend=..., ..., plan={...})   # status "submitted"
    db.finish_hardware_job(job_id, results)          # or fail_hardware_job(job_id, error)
    db.hardware_job(job_id), db.hardware_jobs()

A run's results land in one transaction, so a process killed at any moment leaves either a finished run
or one still marked `running` (re-run by the next `qtl sweep` of the same spec), never half a run.
Only `done` runs count anywhere. Several readers and one writer at a time (SQLite's WAL rules).

A file written before some columns existed (test accuracy, the data regime, gradient norms) reads as it
is and gains them on its first write. Its rows read the settings their stored configs decide (engine,
data regime ...) as those configs say, so seeds added after an upgrade fall in the same cells as the
old ones; results they never had (test accuracy, gradient norms) read as None.
`ResultsDB(path, readonly=True)` reads without changing the file (`qtl runs`, `qtl study`, a dry run,
the app's browsing; a study shipped in docs/): no schema, no journal, no write; a file a sweep is
writing is read live. A file that is not a results database raises ValueError, in one line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
from pathlib import Path

from qtl.config import DataRegime, ModelConfig, circuit_label, recipe_label, row_settings, run_settings
from qtl.experiments.stats import setup_label

STATUSES = ("pending", "running", "done", "failed", "cancelled")
SWEEP_COLUMNS = ("name", "created", "updated", "runs", *STATUSES, "interrupted")  # ResultsDB.sweeps
RESULT_COLUMNS = (
    "variant", "setup", "backbone", "weights", "dataset", "qubits", "depth", "entangler", "rotation",
    "engine", "noise", "seed", "lr", "epochs", "best_epoch", "val_acc", "val_loss", "train_acc", "classical",
    "quantum", "train_time_s", "epochs_done", "checkpoint", "reupload", "feature_dim", "split", "n_classes",
    "per_class", "label_noise", "test_acc", "test_loss", "n_train", "n_test",
)  # fmt: skip
EPOCH_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s", "grad_backbone",
    "grad_pre_net", "grad_circuit", "grad_hidden", "grad_post_net",
)  # fmt: skip
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, config TEXT NOT NULL,
    {", ".join(RESULT_COLUMNS)},
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, started TEXT, finished TEXT,
    environment TEXT REFERENCES environments(id));
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep TEXT NOT NULL REFERENCES sweeps(name), run TEXT NOT NULL REFERENCES runs(id),
    position INTEGER NOT NULL, PRIMARY KEY (sweep, run));
CREATE TABLE IF NOT EXISTS epochs (
    run TEXT NOT NULL REFERENCES runs(id), {", ".join(f"{c} REAL" for c in EPOCH_COLUMNS)},
    PRIMARY KEY (run, epoch));
CREATE TABLE IF NOT EXISTS timings (
    run TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (run, name));
CREATE TABLE IF NOT EXISTS environments (id TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS hardware_jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, provider TEXT NOT NULL, backend TEXT NOT NULL,
    local INTEGER NOT NULL, checkpoint TEXT NOT NULL, samples INTEGER NOT NULL, shots INTEGER NOT NULL,
    mitigations TEXT NOT NULL, plan TEXT NOT NULL, results TEXT, error TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL);
"""
ALL_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))
"""Every table of a results database (SCHEMA's)."""
QTL_TABLES = frozenset({"sweeps", "runs", "sweep_runs", "epochs"})
"""Tables every results database has had: an SQLite file with other tables and not these is not one."""
FILLED_COLUMNS = (*row_settings(ModelConfig(), DataRegime()), "n_classes")
"""The columns `ResultsDB.rows` fills for rows written before they existed (`qtl.config.row_settings`'s
keys and the class count)."""
HARDWARE_STATUSES = ("submitted", "done", "failed")
HARDWARE_COLUMNS = ("id", "status", "provider", "backend", "local", "checkpoint", "samples", "shots",
                    "mitigations", "error", "created", "updated")  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def owner_tag() -> str:
    """host:pid of this process, recorded on the runs it starts, with @ and when the process started
    where the system says (`_started`), so that a pid another process takes later is not read as it."""
    started = _started(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}" + (f"@{started}" if started else "")


def owner_parts(owner: str | None) -> tuple[str, str, str]:
    """An `owner_tag`'s host, pid and start ("" where it has none: a tag from before it was recorded)."""
    host, _, rest = (owner or "").rpartition(":")
    pid, _, started = rest.partition("@")
    return host, pid, started


def _started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks after boot (/proc/PID/stat's 22nd field); None where
    there is no such process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def owner_gone(owner: str | None) -> bool:
    """Whether the process that marked a run `running` has ended without finishing it (a sweep killed
    with SIGKILL, a machine that lost power): it ran on this host and no process has its pid now, or the
    process that has it started at another time (its pid was taken again). A run another host started
    cannot be checked from here, and counts as running; nor can one on a system without POSIX signals (on
    Windows, os.kill(pid, 0) would end the process)."""
    host, pid, started = owner_parts(owner)
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: is there such a process (nothing is sent)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return bool(started) and _started(int(pid)) not in (None, started)


def live_here(owner: str | None) -> bool:
    """Whether `owner` is a process of this host that is still running (`owner_gone` says it is not
    gone): the one case in which a run marked running is left to it. A run marked by another host's
    process cannot be checked from here: a sweep run again takes it over, as a sweep killed there and
    resumed here (a batch job on another node) needs."""
    host, pid, _ = owner_parts(owner)
    return host == socket.gethostname() and pid.isdigit() and not owner_gone(owner)


def run_status(status: str, owner: str | None) -> str:
    """A run's status as qtl says it: "interrupted" for one still marked running whose process has ended
    (`owner_gone`), as `ResultsDB.sweeps` counts it (the dry run and `qtl runs --status any` said
    "running" where `qtl runs --sweeps` said "interrupted"); the stored status otherwise."""
    return "interrupted" if status == "running" and owner_gone(owner) else status


BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another connection's lock


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to write-ahead logging (it stays so). The switch takes an exclusive lock without
    waiting for it (SQLite's busy timeout does not cover it), so two connections opening a new file at
    once, a sweep and the page that browses it, would get "database is locked": retry within the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@functools.cache
def _schema_columns() -> dict[str, frozenset[str]]:
    """Each table of SCHEMA -> its columns."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return {t: frozenset(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in ALL_TABLES}
    finally:
        db.close()


class ResultsDB:
    """A results database file; created with its schema on first use. Use as a context manager or
    call `close()`. Every write is one transaction (BEGIN IMMEDIATE ... COMMIT)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path, self.readonly = Path(path), readonly
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not SQLite, damaged, a folder, no access
            if "locked" in str(exc):  # after BUSY_TIMEOUT_S: another program holds it
                raise ValueError(
                    f"{self.path} is locked by another program (a database browser, a stuck process): "
                    "close it, then run again"
                ) from None
            raise ValueError(f"{self.path} cannot be opened as a results database: {exc}") from None

    def _open(self) -> None:
        if self.readonly:  # read-only, never changed: a file a sweep is writing (its write-ahead log
            # beside it) is read live; any other one (a study shipped in docs/, a finished sweep's) as
            # immutable, so that reading leaves no journal files either
            if not self.path.is_file():
                raise FileNotFoundError(f"no results database at {self.path}")
            live = self.path.with_name(self.path.name + "-wal").exists()
            uri = f"{self.path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._check_ours()
        if not self.readonly:
            self._check_writable()
        if self.readonly and not self._db.execute("SELECT 1 FROM sqlite_master").fetchone():
            # no table yet (a sweep is just creating the file): read as an empty database of this schema
            self._db.close()
            self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        if not self.readonly:
            _use_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
            self._db.execute("PRAGMA foreign_keys=ON")
            # every statement is IF NOT EXISTS: safe on an existing file; one transaction, so that another
            # connection never sees a new file's schema half made (it took it for another program's)
            self._db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}COMMIT;")
        self._columns = {r["name"] for r in self._db.execute("PRAGMA table_info(runs)")}
        self._epoch_columns = {r["name"] for r in self._db.execute("PRAGMA table_info(epochs)")}
        tables = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        self._tables = {r["name"] for r in tables}  # read-only, an older file may lack newer ones

    def _check_ours(self) -> None:
        """ValueError, before anything is written, for an SQLite file that holds tables but not a results
        database's (another program's file: reading it raised "no such table" tracebacks, and a sweep
        added qtl's tables to it and switched it to WAL)."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # all of qtl's tables, or some of them with qtl's columns only (a file being made): another
        # program's table of the same name ("runs") held other columns, and reading it raised tracebacks
        partial = tables <= ALL_TABLES and all(
            set(self._column_names(t)) <= _schema_columns()[t] for t in tables
        )
        if tables and not QTL_TABLES <= tables and not partial:
            self._db.close()
            held = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise ValueError(
                f"{self.path} is an SQLite file but not a qtl results database (it holds tables {held}); "
                "qtl leaves it as it is: give another file"
            )

    def _column_names(self, table: str) -> list[str]:
        return [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]

    def _check_writable(self) -> None:
        """ValueError, before any run is trained, for a file this process cannot write (read-only,
        immutable, on a read-only mount): it failed with a traceback at the sweep's first write. The
        probe is a table created and rolled back: nothing is written."""
        try:
            with _Transaction(self._db) as db:
                db.execute("CREATE TABLE qtl_write_probe (x)")
                raise _Probed
        except _Probed:
            return
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc).replace(" ", "").replace("-", ""):
                raise
            self._db.close()
            raise ValueError(
                f"{self.path} cannot be written here ({exc}): a sweep records its runs in it; make it "
                "writable or give another file (qtl runs and qtl study only read it)"
            ) from None

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _write(self):
        if self.readonly:
            raise PermissionError(f"{self.path} was opened read-only")
        missing = [c for c in RESULT_COLUMNS if c not in self._columns]
        missing_epochs = [c for c in EPOCH_COLUMNS if c not in self._epoch_columns]
        if missing or missing_epochs:  # a file written before these columns existed: add them now
            with _Transaction(self._db) as db:
                for column in missing:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
                for column in missing_epochs:
                    db.execute(f"ALTER TABLE epochs ADD COLUMN {column} REAL")
            self._columns.update(missing)
            self._epoch_columns.update(missing_epochs)
        return _Transaction(self._db)

    # ---- writing

    def add_sweep(self, name: str, spec: str, runs: list) -> None:
        """Record the sweep (its spec text as given now) and its runs: new runs are `pending`; runs the
        database already holds, from this or any other sweep, keep their status and results."""
        with self._write() as db:
            now = _now()
            db.execute(
                "INSERT INTO sweeps VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
                (name, spec, now, now),
            )
            for position, run in enumerate(runs):
                db.execute(
                    "INSERT OR IGNORE INTO runs (id, status, config) VALUES (?, 'pending', ?)",
                    (run.id, json.dumps(_config(run))),
                )
                db.execute(
                    "INSERT INTO sweep_runs VALUES (?, ?, ?) "
                    "ON CONFLICT(sweep, run) DO UPDATE SET position = excluded.position",
                    (name, run.id, position),
                )

    def start(self, run_id: str, owner: str | None = None, *, redo: bool = False) -> str | None:
        """Claim a run: mark it `running` (one more attempt) and drop anything an earlier attempt left,
        unless it is `done` (redo: a done run is trained again, its results replaced) or `running` under
        another live process of this host (`live_here`; a run another host marked is taken over: it
        cannot be checked from here, and a sweep killed there must resume). The check and the
        mark are one transaction (BEGIN IMMEDIATE), so two sweeps of one database never both train a
        run, nor does one reset a run the other finished meanwhile (it was marked running, its epochs
        deleted, and left `interrupted` when that sweep was stopped). Returns None when claimed, else the
        status that kept it ("done" or "running")."""
        owner = owner or owner_tag()
        with self._write() as db:
            row = db.execute("SELECT status, owner FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None and row["status"] == "done" and not redo:
                return "done"
            if row is not None and row["status"] == "running" and row["owner"] not in (owner, None):
                if live_here(row["owner"]):
                    return "running"
            db.execute("DELETE FROM epochs WHERE run = ?", (run_id,))
            db.execute("DELETE FROM timings WHERE run = ?", (run_id,))
            db.execute(
                "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?, started = ?, "
                "finished = NULL, error = NULL WHERE id = ?",
                (owner, _now(), run_id),
            )
        return None

    def finish(
        self,
        run_id: str,
        outcome,
        environment: dict | None = None,
        timings: dict | None = None,
        data: str | None = None,
    ):
        """A run's results in one transaction: its row, every epoch, its timings, then status `done`
        (`cancelled` when the outcome was cancelled: kept for inspection, never counted). data: the
        images it trained on (`qtl.data.folders.file_listing_id`), kept in its config (`recorded_data`)."""
        row = outcome.row
        env_id = self._environment(environment) if environment else None
        with self._write() as db:
            db.execute("DELETE FROM epochs WHERE run = ?", (run_id,))
            db.execute("DELETE FROM timings WHERE run = ?", (run_id,))
            db.executemany(
                f"INSERT INTO epochs (run, {', '.join(EPOCH_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' * len(EPOCH_COLUMNS))})",
                [(run_id, *(h.get(c) for c in EPOCH_COLUMNS)) for h in outcome.history],
            )
            db.executemany(
                "INSERT INTO timings VALUES (?, ?, ?)",
                [(run_id, k, float(v)) for k, v in (timings or {}).items()],
            )
            status = "cancelled" if row.get("cancelled") else "done"
            sets = ", ".join(f"{c} = ?" for c in RESULT_COLUMNS)
            db.execute(
                f"UPDATE runs SET {sets}, status = ?, finished = ?, environment = ?, "
                "config = json_set(config, '$.data', ?) WHERE id = ?",
                (*(row.get(c) for c in RESULT_COLUMNS), status, _now(), env_id, data, run_id),
            )

    def fail(self, run_id: str, error: str, status: str = "failed") -> None:
        """Mark a run failed (or cancelled before it produced anything), with a one-line reason."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, finished = ? WHERE id = ?",
                (status, error, _now(), run_id),
            )

    def add_hardware_job(
        self, job_id: str, *, provider: str, backend: str, local: bool, checkpoint: str, samples: int,
        shots: int, mitigations: list[str], plan: dict,
    ) -> None:  # fmt: skip
        """Record a submitted hardware job with its plan (what scoring it needs), status `submitted`."""
        now = _now()
        with self._write() as db:
            db.execute(
                "INSERT INTO hardware_jobs (id, status, provider, backend, local, checkpoint, samples, "
                "shots, mitigations, plan, created, updated) "
                "VALUES (?, 'submitted', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, provider, backend, int(local), checkpoint, samples, shots,
                 json.dumps(mitigations), json.dumps(plan), now, now),
            )  # fmt: skip

    def finish_hardware_job(self, job_id: str, results: dict) -> None:
        """A hardware job's scored results; status `done`."""
        with self._write() as db:
            db.execute(
                "UPDATE hardware_jobs SET status = 'done', results = ?, error = NULL, updated = ? "
                "WHERE id = ?",
                (json.dumps(results), _now(), job_id),
            )

    def fail_hardware_job(self, job_id: str, error: str) -> None:
        """A hardware job that failed on the device or while scoring, with a one-line reason."""
        with self._write() as db:
            db.execute(
                "UPDATE hardware_jobs SET status = 'failed', error = ?, updated = ? WHERE id = ?",
                (error, _now(), job_id),
            )

    def _environment(self, info: dict) -> str:
        text = json.dumps(info, sort_keys=True)
        env_id = hashlib.sha256(text.encode()).hexdigest()[:12]
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO environments VALUES (?, ?)", (env_id, text))
        return env_id

    # ---- reading

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        """run id -> status (`run_status`: "interrupted" for a killed sweep's run) for the ids the
        database holds."""
        marks = ", ".join("?" * len(run_ids))
        rows = self._db.execute(f"SELECT id, status, owner FROM runs WHERE id IN ({marks})", run_ids)
        return {r["id"]: run_status(r["status"], r["owner"]) for r in rows}

    def recorded_data(self, run_ids: list[str]) -> dict[str, str]:
        """Run id -> the images it trained on (`finish`'s data), for the done runs that recorded them
        (runs finished before qtl recorded it are left out)."""
        marks = ", ".join("?" * len(run_ids))
        rows = self._db.execute(
            f"SELECT id, json_extract(config, '$.data') AS data FROM runs "
            f"WHERE status = 'done' AND id IN ({marks})",
            run_ids,
        )
        return {r["id"]: r["data"] for r in rows if r["data"] is not None}

    def sweeps(self) -> list[dict]:
        """Every sweep, newest first: name, created, updated, runs, a count per status, and
        `interrupted`: runs still marked running whose process has ended on this host (`owner_gone`),
        which are counted there and not as running; the next run of the spec trains them again."""
        out = []
        for s in self._db.execute("SELECT * FROM sweeps ORDER BY updated DESC, name"):
            counts = dict(
                self._db.execute(
                    "SELECT r.status, COUNT(*) FROM sweep_runs s JOIN runs r ON r.id = s.run "
                    "WHERE s.sweep = ? GROUP BY r.status",
                    (s["name"],),
                ).fetchall()
            )
            owners = self._db.execute(
                "SELECT r.owner FROM sweep_runs s JOIN runs r ON r.id = s.run "
                "WHERE s.sweep = ? AND r.status = 'running'",
                (s["name"],),
            )
            gone = sum(owner_gone(r["owner"]) for r in owners)
            row = {k: s[k] for k in ("name", "created", "updated")}
            out.append({**row, "runs": sum(counts.values()), **{k: counts.get(k, 0) for k in STATUSES}})
            out[-1].update(running=out[-1]["running"] - gone, interrupted=gone)
        return out

    def held_beside(self, sweep: str, run_ids) -> int:
        """How many runs `sweep` holds beyond `run_ids`: those of an earlier spec under its name (none for a
        sweep the database does not hold)."""
        held = {r["run"] for r in self._db.execute("SELECT run FROM sweep_runs WHERE sweep = ?", (sweep,))}
        return len(held - set(run_ids))

    def spec(self, sweep: str) -> str | None:
        row = self._db.execute("SELECT spec FROM sweeps WHERE name = ?", (sweep,)).fetchone()
        return None if row is None else row["spec"]

    def rows(self, sweep: str | None = None, *, status: str | None = "done", **where) -> list[dict]:
        """Runs as dicts (id, status, RESULT_COLUMNS, error, attempts, started, finished, wall_s), in
        the sweep's order (or by id). status None: any status; "interrupted" (`run_status`) is a run
        still marked running whose process has ended. where: column = value filters. A done row written
        before some settings were recorded reads them as its stored configs say (`_fill_unrecorded`), and
        a run not done its settings (`_fill_settings`: they were '-', so `--status failed --variant
        quantum` found none); filters apply to what it reads."""
        clauses, params, filled = [], [], {}
        if status is not None:
            if status not in (*STATUSES, "interrupted"):
                raise ValueError(f"no status {status!r}; choose from {', '.join((*STATUSES, 'interrupted'))}")
            clauses.append("r.status = ?")  # interrupted: running, told apart below
            params.append("running" if status == "interrupted" else status)
        for column, value in where.items():
            if column not in RESULT_COLUMNS:
                raise ValueError(f"cannot filter on {column!r}; choose from {', '.join(RESULT_COLUMNS)}")
            if column in FILLED_COLUMNS or status != "done":  # filtered after filling
                filled[column] = value
                continue
            clauses.append(f"r.{column} IS ?")
            params.append(value)
        wall = "(SELECT seconds FROM timings t WHERE t.run = r.id AND t.name = 'wall') AS wall_s"
        wall = wall if "timings" in self._tables else "NULL AS wall_s"  # a file from before timings
        results = ", ".join(f"r.{c}" if c in self._columns else f"NULL AS {c}" for c in RESULT_COLUMNS)
        columns = f"r.id, r.status, {results}, r.error, r.attempts, "
        columns += f"r.started, r.finished, {wall}, r.config, r.owner"
        if sweep is not None:
            clauses.append("s.sweep = ?")
            params.append(sweep)
            query = f"SELECT {columns} FROM sweep_runs s JOIN runs r ON r.id = s.run"
            order = "s.position"
        else:
            query, order = f"SELECT {columns} FROM runs r", "r.id"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = [dict(r) for r in self._db.execute(f"{query} ORDER BY {order}", params)]
        counts: dict = {}  # dataset -> its class count, looked up once per call
        for row in rows:
            config = row.pop("config")
            row["status"] = run_status(row["status"], row.pop("owner"))
            # from the stored configs, so that rows of every age read alike
            row["recipe"], row["circuit_options"] = _labels(config)
            if row["status"] == "done" and row["split"] is None:
                self._fill_unrecorded(row, config, counts)
            elif row["status"] != "done":
                _fill_settings(row, config)
        return [
            r
            for r in rows
            if (status is None or r["status"] == status)
            and all(r[k] == v if v is not None else r[k] is None for k, v in filled.items())
        ]

    def _fill_unrecorded(self, row: dict, config: str, counts: dict) -> None:
        """Fill the settings a row written before they were recorded left NULL (its split is NULL: every
        run since records one). Those its stored configs decide come from `qtl.config.row_settings`; its
        class count is the regime's where it kept the first k classes, else the one count that the runs
        on the same dataset with all its classes recorded (None where there is none). Without this such
        rows would form cells of their own, apart from the seeds a sweep resumed after an upgrade adds.
        A config this version cannot read (keys since removed, or from a newer one) leaves the row as
        stored."""
        try:
            config = json.loads(config)
            model = ModelConfig.from_dict(config.get("model") or {})
            regime = DataRegime.from_dict((config.get("train") or {}).get("regime"))
        except (ValueError, TypeError, AttributeError):  # json.JSONDecodeError is a ValueError
            return
        for key, value in row_settings(model, regime).items():
            if row[key] is None:
                row[key] = int(value) if isinstance(value, bool) else value  # as SQLite stores a bool
        if row["n_classes"] is None:
            if row["dataset"] not in counts:
                counts[row["dataset"]] = self._class_count(row["dataset"])
            row["n_classes"] = regime.classes or counts[row["dataset"]]

    def _class_count(self, dataset: str | None) -> int | None:
        """The class count the done runs on `dataset` that kept all its classes recorded, if they agree."""
        if "n_classes" not in self._columns:
            return None
        query = (
            "SELECT config, n_classes FROM runs WHERE status = 'done' AND dataset IS ? AND n_classes NOTNULL"
        )
        seen = set()
        for r in self._db.execute(query, (dataset,)):
            try:
                regime = (json.loads(r["config"]).get("train") or {}).get("regime") or {}
            except (ValueError, AttributeError):
                continue
            if not regime.get("classes"):
                seen.add(r["n_classes"])
        return seen.pop() if len(seen) == 1 else None

    def history(self, run_id: str) -> list[dict]:
        """A run's epochs, oldest first."""
        columns = ", ".join(c if c in self._epoch_columns else f"NULL AS {c}" for c in EPOCH_COLUMNS)
        rows = self._db.execute(f"SELECT {columns} FROM epochs WHERE run = ? ORDER BY epoch", (run_id,))
        return [dict(r) for r in rows]

    def timings(self, run_id: str) -> dict[str, float]:
        if "timings" not in self._tables:
            return {}
        rows = self._db.execute("SELECT name, seconds FROM timings WHERE run = ?", (run_id,))
        return {r["name"]: r["seconds"] for r in rows}

    def hardware_job(self, job_id: str) -> dict | None:
        """One hardware job: its columns, mitigations, plan and results (None until done) as values."""
        row = self._db.execute("SELECT * FROM hardware_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        for key in ("mitigations", "plan", "results"):
            out[key] = None if out[key] is None else json.loads(out[key])
        out["local"] = bool(out["local"])
        return out

    def hardware_jobs(self) -> list[dict]:
        """Every hardware job, newest first: HARDWARE_COLUMNS (no plan, no results)."""
        rows = self._db.execute(
            f"SELECT {', '.join(HARDWARE_COLUMNS)} FROM hardware_jobs ORDER BY created DESC, id"
        )
        out = [dict(r) for r in rows]
        for r in out:
            r["mitigations"], r["local"] = json.loads(r["mitigations"]), bool(r["local"])
        return out

    def environment(self, run_id: str) -> dict | None:
        row = self._db.execute(
            "SELECT e.info FROM runs r JOIN environments e ON e.id = r.environment WHERE r.id = ?", (run_id,)
        ).fetchone()
        return None if row is None else json.loads(row["info"])


class _Probed(Exception):
    """Rolls `ResultsDB._check_writable`'s probe back."""


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises; nests (inner blocks join)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.outer = db, False

    def __enter__(self) -> sqlite3.Connection:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, exc, tb) -> None:
        if self.outer:
            self.db.execute("ROLLBACK" if kind else "COMMIT")


def _fill_settings(row: dict, config: str) -> None:
    """Fill a run's settings that its stored configs decide, where its row has none yet (a run pending,
    running, failed or cancelled before its results were written), as `qtl.experiments.runs.result_row`
    writes them for a finished run. A config this version cannot read leaves the row as stored."""
    try:
        stored = json.loads(config)
        settings = run_settings(ModelConfig.from_dict(stored.get("model") or {}), stored.get("train") or {})
    except (ValueError, TypeError, AttributeError):
        return
    settings["dataset"] = stored.get("dataset")
    for key, value in settings.items():
        if row.get(key) is None:
            row[key] = int(value) if isinstance(value, bool) else value
    if row.get("setup") is None:
        row["setup"] = setup_label(row)  # with its recipe and circuit labels, set before


def _labels(config: str) -> tuple[str | None, str | None]:
    """`qtl.config.recipe_label` and `circuit_label` of a run's stored configs (None, None where this
    version cannot read them)."""
    try:
        config = json.loads(config)
        model = ModelConfig.from_dict(config.get("model") or {})
        return recipe_label(model, config.get("train") or {}), circuit_label(model)
    except (ValueError, TypeError, AttributeError, KeyError):
        return None, None


def _config(run) -> dict:
    """What a run trains, as stored in the database (its MachineConfig is this machine's business)."""
    return {"model": run.model_config.to_dict(), "train": run.train_config.to_dict(), "dataset": run.dataset}
