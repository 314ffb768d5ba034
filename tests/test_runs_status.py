"""Runs not done, as `qtl runs` and the dry run read them: their settings from the stored configs (they
read '-' and null, so `--status failed --variant quantum` found none), and a killed sweep's run called
"interrupted" everywhere (the dry run and `--status any` said "running", `--sweeps` "interrupted")."""

from __future__ import annotations

import socket
import subprocess
import sys

from qtl.config import DataRegime, ModelConfig, TrainConfig
from qtl.experiments.database import ResultsDB, run_status
from qtl.experiments.runs import Run
from qtl.quantum.circuit import CircuitConfig

QUANTUM = Run(
    ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(n_qubits=3, depth=2)),
    TrainConfig(epochs=2, seed=4, lr=0.01, regime=DataRegime(per_class=5)),
    dataset="digits",
)
LINEAR = Run(ModelConfig("linear", pretrained=False), TrainConfig(epochs=1, seed=1))


def gone_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return f"{socket.gethostname()}:{int(proc.stdout)}"


def test_a_failed_run_reads_its_settings_and_filters_find_it(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_sweep("s", "", [QUANTUM, LINEAR])
        db.start(QUANTUM.id)
        db.fail(QUANTUM.id, "ValueError: no")
        (row,) = db.rows("s", status="failed")
        expected = {
            "variant": "quantum", "backbone": "resnet18", "weights": "random", "dataset": "digits",
            "qubits": 3, "depth": 2, "entangler": "chain", "rotation": "ry", "engine": "native", "seed": 4,
            "lr": 0.01, "epochs": 2, "per_class": 5, "reupload": 0, "error": "ValueError: no",
        }  # fmt: skip
        assert {k: row[k] for k in expected} == expected
        assert row["setup"].startswith("quantum (resnet18 random, 3q d2") and row["val_acc"] is None
        assert [r["id"] for r in db.rows("s", status="failed", variant="quantum")] == [QUANTUM.id]
        assert db.rows("s", status="failed", variant="linear") == []
        pending = db.rows("s", status="pending", seed=1)
        assert [(r["variant"], r["qubits"], r["depth"]) for r in pending] == [("linear", None, None)]
        assert len(db.rows("s", status=None, variant="quantum")) == 1


def test_a_killed_sweeps_run_is_interrupted_everywhere(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_sweep("s", "", [QUANTUM, LINEAR])
        db.start(QUANTUM.id, owner=gone_owner())
        db.start(LINEAR.id)  # this process: alive, running
        assert db.statuses([QUANTUM.id, LINEAR.id]) == {QUANTUM.id: "interrupted", LINEAR.id: "running"}
        assert {r["id"]: r["status"] for r in db.rows("s", status=None)} == {
            QUANTUM.id: "interrupted",
            LINEAR.id: "running",
        }
        assert [r["id"] for r in db.rows("s", status="interrupted")] == [QUANTUM.id]
        assert [r["id"] for r in db.rows("s", status="running")] == [LINEAR.id]
        (summary,) = db.sweeps()
        assert (summary["running"], summary["interrupted"]) == (1, 1)


def test_run_status():
    assert run_status("running", gone_owner()) == "interrupted"
    assert run_status("running", "elsewhere:1") == "running"  # another host: cannot tell
    assert run_status("done", gone_owner()) == "done"
