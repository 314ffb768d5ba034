"""Faults: kill -9 in the middle of training, of a checkpoint write and of an upload; a full disk.

The command line runs as a real `qtl train` subprocess on a tiny generated dataset (random init, a
2-qubit head). A write is caught half way by `tests/midwrite.py`, which runs the same code in a child
whose chosen atomic write stores half its bytes and then waits to be killed. Afterwards: no file is
half-written where a checkpoint or an upload belongs, the store lists only whole checkpoints, the dead
writer's temporary file is removed by the next write, and training starts again and finishes. A full
disk is a file size limit (RLIMIT_FSIZE) on the real command line, or ENOSPC from the disk in-process:
one clear line, and the previous checkpoint is kept byte for byte.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tied_to_this_process

from qtl.config import ModelConfig
from qtl.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from qtl.models.store import import_checkpoint, list_checkpoints
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.utils.atomic import PART, WriteError

QTL = Path(sys.executable).parent / "qtl"
CLASSES = ("cats", "dogs")


@pytest.fixture
def train_args(tiny_image_folder, tmp_path):
    """`qtl train` of a small quantum head into tmp_path/out/q.pt, minus --epochs (--overwrite: a run
    trains again into the file a killed or failed one left)."""
    out = tmp_path / "out"
    args = ["train", "quantum", "--random-init", "--qubits", "2", "--depth", "1", "--data", tiny_image_folder]
    args += ["--cache-dir", tmp_path / "cache", "--out", out / "q.pt", "--overwrite"]
    return [str(a) for a in args]


def child_env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "QTL_OFFLINE": "1"}


def start(cmd: list, log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            **tied_to_this_process(),  # a killed pytest takes it along
            **kwargs,
        )


def wait_for(what, proc: subprocess.Popen, log: Path, timeout: float = 120):
    """Poll `what()` until it is truthy; fail with the log if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} too early:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def midwrite_temp(log: Path) -> Path | None:
    """The temporary file `tests/midwrite.py` stalled in, once it has said so."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("MIDWRITE ")]
    return Path(lines[0].removeprefix("MIDWRITE ")) if lines else None


def run_qtl(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(QTL), *args], capture_output=True, text=True, env=child_env(), timeout=300, **kwargs
    )


def assert_whole(path: Path, epochs: int | None = None) -> None:
    """`path` is a complete checkpoint: it reads, its model rebuilds, and it recorded `epochs` epochs."""
    info = read_checkpoint_info(path)
    assert info.class_names == list(CLASSES) and info.n_qubits == 2
    if epochs is not None:
        assert info.epochs == epochs
    load_checkpoint(path)


def small_quantum() -> tuple[torch.nn.Module, ModelConfig]:
    mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=CircuitConfig(2, 1))
    return build_model(mc), mc


class TestKilledCommandLine:
    def test_killed_mid_training_restarts_and_finishes(self, train_args, tmp_path):
        """kill -9 while epochs run: the saved checkpoint is whole and the only one listed; a new run
        into the same file finishes and leaves nothing else in the folder."""
        out, log = tmp_path / "out", tmp_path / "run1.log"
        proc = start([QTL, *train_args, "--epochs", "100000"], log)
        wait_for(lambda: (out / "q.pt").is_file(), proc, log)
        time.sleep(1.0)  # epochs go on (100000 of them cannot finish): kill in the middle
        kill9(proc)
        assert_whole(out / "q.pt")
        assert [i.path.name for i in list_checkpoints(out)] == ["q.pt"]
        assert all(p.name == "q.pt" or p.name.endswith(PART) for p in out.iterdir())

        done = run_qtl([*train_args, "--epochs", "2"])
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"checkpoint: {out / 'q.pt'}" in done.stdout
        assert_whole(out / "q.pt", epochs=2)
        assert sorted(p.name for p in out.iterdir()) == ["q.pt"]

    def test_killed_mid_checkpoint_write_keeps_the_previous_one(self, train_args, tmp_path):
        """kill -9 half way through the second checkpoint write: q.pt is still the first, whole one; the
        half-written bytes sit only in the dead writer's temporary file, which the restart removes."""
        out, log = tmp_path / "out", tmp_path / "run1.log"
        # a 3-epoch run writes q.pt at least twice: after epoch 1, then on a better epoch or at the end
        proc = start(
            [
                sys.executable,
                REPO / "tests" / "midwrite.py",
                "q.pt",
                "2",
                "qtl",
                *train_args,
                "--epochs",
                "3",
            ],
            log,
        )
        temp = wait_for(lambda: midwrite_temp(log), proc, log)
        kill9(proc)
        assert temp.parent == out and temp.is_file() and temp.stat().st_size > 0
        with pytest.raises(CheckpointError):
            read_checkpoint_info(temp)  # truly half a checkpoint
        assert_whole(out / "q.pt", epochs=1)
        assert [i.path.name for i in list_checkpoints(out)] == ["q.pt"]

        done = run_qtl([*train_args, "--epochs", "3"])
        assert done.returncode == 0, done.stderr[-3000:]
        assert_whole(out / "q.pt", epochs=3)
        assert sorted(p.name for p in out.iterdir()) == ["q.pt"]


def test_killed_mid_upload_stores_nothing_and_the_app_lists_whole_checkpoints(tmp_path, monkeypatch):
    """kill -9 half way through storing an uploaded checkpoint (`qtl.models.store.import_checkpoint`,
    what the Checkpoints page calls): no up.pt appears; after a restart the page lists only the whole
    checkpoint, and the same upload is stored under its own name, with the dead writer's temporary file
    gone."""
    from streamlit.testing.v1 import AppTest

    models, log = tmp_path / "models", tmp_path / "import.log"
    model, mc = small_quantum()
    save_checkpoint(models / "kept.pt", model, mc)
    upload = save_checkpoint(tmp_path / "upload" / "up.pt", model, mc)
    proc = start(
        [sys.executable, REPO / "tests" / "midwrite.py", "up.pt", "1", "import", upload, models], log
    )
    temp = wait_for(lambda: midwrite_temp(log), proc, log)
    kill9(proc)
    assert temp.parent == models and temp.is_file() and not (models / "up.pt").exists()
    assert [i.path.name for i in list_checkpoints(models)] == ["kept.pt"]

    for key, value in {"QTL_MODELS_DIR": models, "QTL_OFFLINE": "1", "QTL_PRETRAINED": "0"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("QTL_DEMO", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.session_state["loaded"] = []
    at.run()
    at.switch_page("app_pages/checkpoints.py").run()
    assert list(at.dataframe[0].value["file"]) == ["kept.pt"]
    at.file_uploader(key="ckpt_upload").set_value(("up.pt", upload.read_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and "Stored and loaded up.pt as `up.pt`" in [s.value for s in at.success][0]
    assert sorted(p.name for p in models.iterdir()) == ["kept.pt", "up.pt"]


class TestFullDisk:
    def test_command_line_says_so_in_one_line_and_keeps_the_checkpoint(self, train_args, tmp_path):
        """`qtl train` under a 4 KiB file size limit: the feature cache is skipped with a warning, the
        checkpoint write fails with one `qtl: error:` line, and the previous q.pt is unchanged."""
        model, mc = small_quantum()
        previous = save_checkpoint(tmp_path / "out" / "q.pt", model, mc).read_bytes()

        def limit_file_size():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        done = run_qtl([*train_args, "--epochs", "1"], preexec_fn=limit_file_size)
        assert done.returncode == 1, done.stderr[-3000:]
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("qtl: error:")]
        assert errors == [
            f"qtl: error: cannot write {tmp_path / 'out' / 'q.pt'}: File too large; any previous q.pt is kept"
        ]
        assert "Traceback" not in done.stderr and "features not cached" in done.stderr
        assert (tmp_path / "out" / "q.pt").read_bytes() == previous
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["q.pt"]

    @pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
    def test_checkpoint_and_upload_writes_raise_write_error(self, tmp_path, monkeypatch, code):
        """The disk refuses the bytes when they are synced (as NFS and delayed allocation do): saving and
        importing raise WriteError naming the file and the reason; the previous file and folder stay."""
        model, mc = small_quantum()
        path = save_checkpoint(tmp_path / "q.pt", model, mc)
        previous = path.read_bytes()

        def full(fd):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(WriteError) as saving:
            save_checkpoint(path, model, mc)
        assert str(saving.value) == f"cannot write {path}: {os.strerror(code)}; any previous q.pt is kept"
        assert saving.value.errno == code
        with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'up.pt'}: {os.strerror(code)}"):
            import_checkpoint(previous, "up.pt", tmp_path)
        assert path.read_bytes() == previous
        assert sorted(p.name for p in tmp_path.iterdir()) == ["q.pt"]


def test_concurrent_uploads_of_one_name_never_overwrite(tmp_path):
    """Eight sessions store an upload called up.pt into one folder at the same moment (local mode: every
    session shares models/): eight whole files under eight names, none lost to another's rename."""
    import threading

    model, mc = small_quantum()
    data = save_checkpoint(tmp_path / "src" / "up.pt", model, mc).read_bytes()
    store, start_line, names = tmp_path / "store", threading.Barrier(8), []

    def upload():
        start_line.wait()
        names.append(import_checkpoint(data, "up.pt", store).path.name)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = ["up.pt"] + [f"up-{k}.pt" for k in range(2, 9)]
    assert sorted(names) == sorted(p.name for p in store.iterdir()) == sorted(expected)
    assert all((store / n).read_bytes() == data for n in expected)
