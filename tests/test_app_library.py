"""The small library modules behind the app: qtl.experiments.runs, qtl.models.store, qtl.models.weights and
qtl.analysis.difflab."""

from __future__ import annotations

import socket
import statistics

import pytest

from qtl.analysis.difflab import LabCase, run_case, run_lab
from qtl.config import ModelConfig
from qtl.experiments.runs import mean_std, parse_seeds, plan_runs, summarise
from qtl.models.checkpoint import CheckpointError, checkpoint_name
from qtl.models.store import delete_checkpoint, import_checkpoint, safe_name
from qtl.utils.download import reachable


class TestRuns:
    def test_mean_std_matches_statistics(self):
        values = [0.91, 0.95, 0.88, 0.97]
        assert mean_std(values) == pytest.approx((statistics.mean(values), statistics.stdev(values)))
        assert mean_std([0.5]) == (0.5, 0.0)
        with pytest.raises(ValueError):
            mean_std([])

    def test_summarise_groups_seeds_and_skips_missing(self):
        rows = [
            {"setup": "q", "acc": 0.8},
            {"setup": "l", "acc": 0.6},
            {"setup": "q", "acc": 1.0},
            {"setup": "l", "acc": None},
        ]
        out = summarise(rows, "setup", ("acc",))
        assert [(r["setup"], r["n"]) for r in out] == [("q", 2), ("l", 2)]
        assert out[0]["acc_mean"] == pytest.approx(0.9) and out[0]["acc_std"] == pytest.approx(
            0.1414213, 1e-6
        )
        assert (out[1]["acc_mean"], out[1]["acc_std"]) == (0.6, 0.0)

    def test_plan_runs_uses_recipes_and_overrides(self, tmp_path):
        base = ModelConfig(pretrained=False)
        runs = plan_runs(["quantum", "linear"], base, [0, 3], tmp_path, epochs=2, overrides={"lr": 0.01})
        assert [(r.model_config.variant, r.train_config.seed) for r in runs] == [
            ("quantum", 0),
            ("quantum", 3),
            ("linear", 0),
            ("linear", 3),
        ]
        assert {r.train_config.epochs for r in runs} == {2} and {r.train_config.lr for r in runs} == {0.01}
        assert runs[0].train_config.optimizer == "adam" and runs[2].train_config.optimizer == "sgd"
        assert len({r.checkpoint_path for r in runs}) == 4
        with pytest.raises(ValueError, match="cannot override"):
            plan_runs(["quantum"], base, [0], tmp_path, overrides={"optimizer": "sgd"})

    def test_parse_seeds(self):
        assert parse_seeds("0, 1,2") == [0, 1, 2]
        assert parse_seeds(" 3; 4 ,") == [3, 4]
        with pytest.raises(ValueError, match="'x' is not an integer"):
            parse_seeds("1, x")
        with pytest.raises(ValueError, match="at least one seed"):
            parse_seeds(" , ")

    def test_checkpoint_name_says_what_is_inside(self):
        name = checkpoint_name(ModelConfig(pretrained=False), 7, stamp="T")
        assert name == "quantum-resnet18-random-q4d6-s7-T.pt"


class TestStore:
    def test_safe_name(self):
        assert safe_name("../../etc/a b.pt") == "a_b.pt"
        assert safe_name(".hidden") == "hidden.pt"
        assert safe_name("///") == "checkpoint.pt"

    def test_garbage_is_rejected_and_nothing_is_left(self, tmp_path):
        with pytest.raises(CheckpointError, match="x.pt"):
            import_checkpoint(b"definitely not a checkpoint", "x.pt", tmp_path)
        assert list(tmp_path.iterdir()) == []

    def test_delete_only_inside_allowed_folders(self, tmp_path):
        inside, outside = tmp_path / "mine", tmp_path / "shipped"
        inside.mkdir(), outside.mkdir()
        (inside / "a.pt").write_bytes(b"x")
        (outside / "b.pt").write_bytes(b"x")
        with pytest.raises(PermissionError):
            delete_checkpoint(outside / "b.pt", [inside])
        delete_checkpoint(inside / "a.pt", [inside])
        assert not (inside / "a.pt").exists() and (outside / "b.pt").exists()


class TestStatus:
    def test_closed_port_is_unreachable_quickly(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert reachable(f"http://127.0.0.1:{port}/", timeout=1.0) is False

    def test_listening_port_is_reachable(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            assert reachable(f"http://127.0.0.1:{s.getsockname()[1]}/", timeout=1.0) is True


class TestDiffLab:
    def test_pennylane_backprop_gradients_agree_with_reference(self):
        result = run_case(LabCase("default.qubit", "backprop", n_qubits=3, depth=2, batch=4), repeats=1)
        assert result.error is None and result.step_ms > 0
        assert result.max_grad_error < 1e-5

    def test_shot_noise_shows_in_the_agreement(self):
        """Exact engines agree to float32 rounding; 50-shot parameter-shift gradients visibly do not."""
        exact = run_case(LabCase("native", None, n_qubits=2, depth=1, batch=3), repeats=1)
        noisy = run_case(
            LabCase("default.qubit", "parameter-shift", n_qubits=2, depth=1, batch=3, shots=50), repeats=1
        )
        assert noisy.error is None
        assert exact.max_grad_error < 1e-5 and noisy.max_grad_error > 1e-3

    def test_impossible_combination_is_an_error_row(self):
        (result,) = run_lab([LabCase("default.qubit", "adjoint", n_qubits=2, depth=1, batch=2, shots=100)])
        assert result.error and result.step_ms is None
