"""Noise-aware training, checkpoints that record their noise, and `qtl noise` on a tiny real folder."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, run_cli

from qtl import cli
from qtl.analysis.inference import evaluate
from qtl.analysis.robustness import evaluate_noise, head_inputs, noise_grid, noise_sweep
from qtl.config import ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.density import DensityMatrixEngine
from qtl.quantum.engines.native import NativeEngine
from qtl.quantum.noise import NoiseConfig
from qtl.training.fit import fit

NOISY = NoiseConfig(depolarizing=0.02, depolarizing_2q=0.05, readout=0.01, shots=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("noise") / "tiny")


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> dict[str, Path]:
    """A 3-qubit, depth-2 quantum checkpoint trained ideal and one trained with NOISY (1 epoch each)."""
    folder = tmp_path_factory.mktemp("noise-ckpt")
    common = ["train", "quantum", "--random-init", "--data", tiny, "--epochs", 1, "--qubits", 3, "--depth", 2]
    common += ["--lr", 0.01, "--batch-size", 3, "--seed", 1, "-q"]
    noisy = ["--depolarizing", 0.02, 0.05, "--readout", 0.01, "--shots", 200]
    paths = {"ideal": folder / "ideal.pt", "noisy": folder / "noisy.pt"}
    assert cli.main([str(a) for a in [*common, "--out", paths["ideal"]]]) == 0
    assert cli.main([str(a) for a in [*common, *noisy, "--out", paths["noisy"]]]) == 0
    return paths


class TestCheckpoints:
    def test_noise_is_recorded_and_rebuilt(self, trained):
        """The checkpoint keeps the noise it was trained with and reloads onto the density-matrix engine."""
        assert read_checkpoint_info(trained["noisy"]).model_config.noise == NOISY
        noisy, ideal = load_checkpoint(trained["noisy"]), load_checkpoint(trained["ideal"])
        assert isinstance(noisy.model.head.engine, DensityMatrixEngine)
        assert noisy.model.head.engine.noise == NOISY
        assert isinstance(ideal.model.head.engine, NativeEngine) and ideal.model_config.noise.is_ideal
        assert isinstance(
            load_checkpoint(trained["noisy"], noise=NoiseConfig()).model.head.engine, NativeEngine
        )

    def test_evaluate_reports_the_noise(self, capsys, trained, tiny):
        code, out, _ = run_cli(capsys, "evaluate", trained["noisy"], "--data", tiny)
        assert code == 0 and "noise       dep 0.02/0.05, readout 0.01, 200 shots" in out

    def test_checkpoints_without_noise_load_ideal(self):
        """Configs written before noise existed (no "noise" key) are ideal."""
        d = ModelConfig(class_names=("a", "b")).to_dict()
        del d["noise"]
        assert ModelConfig.from_dict(d).noise == NoiseConfig()


def test_noise_aware_training_learns():
    """fit() trains through the density-matrix engine with channels and shots: separable features reach
    val accuracy >= 0.9, and the engine in the trained model is the noisy one."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 2
    x = (torch.randn(128, 512, generator=g) + labels[:, None].float()) * 0.05  # small: tanh stays unsaturated
    train = FeatureSet(x[:96], labels[:96], ["t"] * 96, ["a", "b"])
    val = FeatureSet(x[96:], labels[96:], ["v"] * 32, ["a", "b"])
    noise = NoiseConfig(depolarizing=0.01, depolarizing_2q=0.03, amplitude_damping=0.01, shots=100)
    mc = ModelConfig(pretrained=False, class_names=("a", "b"), circuit=CircuitConfig(2, 2), noise=noise)
    tc = dataclasses.replace(recipe("quantum"), epochs=4, lr=0.05, batch_size=8)
    result = fit(mc, tc, features=(train, val))
    assert isinstance(result.model.head.engine, DensityMatrixEngine)
    assert result.best["val_acc"] >= 0.9


class TestNoiseCommand:
    def test_table_files_and_accuracies(self, capsys, trained, tiny, tmp_path):
        """`qtl noise` prints and writes the grid; p=0 exact equals `evaluate`, and full depolarizing
        (p=0.75, every <Z> = 0) leaves the output layer's bias alone to decide."""
        prefix = tmp_path / "report"
        code, out, err = run_cli(
            capsys, "noise", trained["ideal"], trained["noisy"], "--data", tiny, "--strengths", 0, 0.75,
            "--shots", 0, 20, "--out", prefix, "-q",
        )  # fmt: skip
        assert code == 0, err
        assert "noisy: trained with dep 0.02/0.05, readout 0.01, 200 shots" in out
        with open(prefix.with_suffix(".csv")) as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 8  # 2 checkpoints x 2 strengths x 2 shot counts
        assert len(json.loads(prefix.with_suffix(".json").read_text())) == 8
        assert prefix.with_suffix(".png").stat().st_size > 10_000

        loaded = load_checkpoint(trained["ideal"])
        exact = {(r["model"], r["setting"]): float(r["accuracy"]) for r in rows}
        assert exact[("ideal", "ideal")] == pytest.approx(
            evaluate(loaded, tiny).metrics["accuracy"], abs=1e-4
        )
        bias_class = int(loaded.model.head.post_net.bias.argmax())
        labels = head_inputs(loaded, tiny).labels
        assert exact[("ideal", "dep 0.75")] == pytest.approx(
            (labels == bias_class).double().mean().item(), abs=1e-4
        )

    def test_what_cannot_run_is_skipped_and_said_the_rest_runs(self, capsys, trained, tiny, tmp_path):
        """A 6-qubit model on the 5-qubit FakeManilaV2 and a 30-qubit one under noise (too wide for
        density matrices) are skipped, each in one line; every other cell of the grid still runs. The
        library raises instead where it is given no list for them."""
        wide = {}
        for qubits, engine in ((6, "native"), (30, "mps")):
            wide[qubits] = tmp_path / f"q{qubits}.pt"
            args = ["train", "quantum", "--random-init", "--data", tiny, "--epochs", 1, "--qubits", qubits]
            args += ["--depth", 1, "--engine", engine, "-q", "--out", wide[qubits]]
            assert run_cli(capsys, *args)[0] == 0
        prefix = tmp_path / "report"
        code, out, err = run_cli(
            capsys, "noise", trained["ideal"], wide[6], wide[30], "--data", tiny, "--strengths", 0,
            "--backends", "FakeManilaV2", "--backend-shots", 50, "--out", prefix, "-q",
        )  # fmt: skip
        assert code == 0, err
        assert "skipped q6 on FakeManilaV2: FakeManilaV2 has 5 qubits; the circuit needs 6" in err
        assert "skipped q30 under noise: its 30-qubit circuit is too wide" in err
        rows = json.loads(prefix.with_suffix(".json").read_text())
        assert sorted((r["model"], r["backend"]) for r in rows) == [
            ("ideal", "FakeManilaV2"), ("ideal", "native"), ("q6", "native")
        ]  # fmt: skip
        code, _, err = run_cli(capsys, "noise", wide[30], "--data", tiny, "--out", prefix, "-q")
        assert code == 1 and "nothing could run: q30: its 30-qubit circuit is too wide" in err
        loaded = load_checkpoint(wide[6])
        with pytest.raises(ValueError, match="q6: FakeManilaV2 has 5 qubits"):
            noise_sweep([loaded], [head_inputs(loaded, tiny)], [], backends=["FakeManilaV2"])

    def test_an_exact_ideal_point_runs_where_density_matrices_cannot(self, capsys, tiny, tmp_path):
        """A 14-qubit model: its exact ideal point runs on statevectors, the noisy one is refused in one
        line (the density-matrix engine's own refusal was raised, and the ideal point refused too)."""
        path = tmp_path / "q14.pt"
        args = ["train", "quantum", "--random-init", "--data", tiny, "--epochs", 1, "--qubits", 14]
        assert run_cli(capsys, *args, "--depth", 1, "-q", "--out", path)[0] == 0
        prefix = tmp_path / "report"
        code, _, err = run_cli(capsys, "noise", path, "--data", tiny, "--strengths", 0, 0.01, "--out", prefix)
        assert code == 0, err
        assert "skipped q14 under noise: its 14-qubit circuit" in err and err.count("skipped") == 1
        assert [r["setting"] for r in json.loads(prefix.with_suffix(".json").read_text())] == ["ideal"]

    def test_shots_repeat_with_the_seed(self, trained, tiny):
        loaded = load_checkpoint(trained["ideal"])
        inputs = head_inputs(loaded, tiny)
        (point,) = noise_grid([0.01], [30])
        a, b = evaluate_noise(loaded, inputs, point), evaluate_noise(loaded, inputs, point)
        assert torch.equal(a.expvals, b.expvals)
        assert not torch.equal(
            a.expvals, evaluate_noise(loaded, inputs, dataclasses.replace(point, seed=1)).expvals
        )

    def test_backend_shots_are_checked_first(self, capsys, trained, tiny):
        """0 shots on a backend is refused by the parser, before any features are computed (it was taken
        for "exact", and answered in terms of NoiseConfig after the features)."""
        with pytest.raises(SystemExit) as stop:
            run_cli(
                capsys, "noise", trained, "--data", tiny, "--backends", "FakeManilaV2", "--backend-shots", 0
            )
        assert stop.value.code == 2
        assert "--backend-shots: must be a whole number of at least 1, got 0" in capsys.readouterr().err

    def test_not_quantum(self, capsys, tiny, tmp_path):
        path = tmp_path / "classical.pt"
        args = [
            "train",
            "dressed-classical",
            "--random-init",
            "--data",
            tiny,
            "--epochs",
            1,
            "-q",
            "--out",
            path,
        ]
        assert run_cli(capsys, *args)[0] == 0
        code, _, err = run_cli(capsys, "noise", path, "--data", tiny)
        assert code == 1 and "only quantum checkpoints have a circuit" in err


@pytest.mark.parametrize(
    "variant, qubits, engine, reason",
    [
        ("quantum", 4, "native", None),
        ("quantum", 64, "mps", "64-qubit circuit is too wide"),
        ("quantum", 12, "native", "over the memory budget"),
        ("linear", 4, "native", "has no circuit"),
        ("quantum", -4, "native", "re-uploads the data, which noise simulation"),  # -: reupload=True
    ],
)
def test_noise_refusal_says_what_the_density_matrix_engine_cannot_take(variant, qubits, engine, reason):
    """None for a circuit the noisy evaluation runs; one line naming why for one it cannot: too wide for
    density matrices, over their memory budget for a chunk of images, or no circuit at all."""
    from qtl.analysis.robustness import noise_refusal
    from qtl.models.checkpoint import LoadedModel
    from qtl.models.variants import build_model

    circuit = CircuitConfig(abs(qubits), 1, reupload=qubits < 0)  # a 4-qubit one was "too large"
    mc = ModelConfig(variant, pretrained=False, class_names=("a", "b"), circuit=circuit, engine=engine)
    said = noise_refusal(LoadedModel(build_model(mc), mc, ["a", "b"], [], {}, {}))
    if reason is None:
        assert said is None
    else:
        assert reason in said and "\n" not in said
