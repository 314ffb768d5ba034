"""Configs refuse what they cannot mean (NaN, a string for a flag, 2.5 epochs, an engine this machine lacks)
in one ValueError naming the field, yet read every config stored before; `fit` checks its arguments
(callbacks, given features) before any work, stops a run whose loss is NaN without keeping that epoch,
warns that a kernel SVM writes no checkpoint, and leaves the caller's random stream as it found it."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sqlite3

import pytest
import torch
from conftest import REPO, make_image_folder, run_cli

from qtl.config import (
    MachineConfig,
    ModelConfig,
    TrainConfig,
    check_settings_apply,
    engine_names,
    recipe,
    unused_settings,
)
from qtl.data.features import FeatureSet
from qtl.models.checkpoint import load_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.noise import NoiseConfig
from qtl.training.fit import Callback, Diverged, fit

NAN, INF = float("nan"), float("inf")
CLASSES = ["cats", "dogs"]


# ---- the configs' own checks


@pytest.mark.parametrize(
    "field, value",
    [
        ("q_delta", NAN),
        ("q_delta", INF),
        ("q_delta", -1.0),
        ("q_delta", "big"),
        ("pretrained", "no"),
        ("pretrained", 1),
        ("class_names", "ab"),
        ("class_names", ("a", "a")),
        ("class_names", ("a", "")),
        ("class_names", ("a", " ")),
        ("circuit", 5),
        ("engine", "nonsense"),
        ("engine", None),
        ("diff_method", "bogus"),
        ("max_bond", 0),
        ("max_bond", 2.5),
        ("shots", -5),
        ("shots", 0),
        ("shots", True),
        ("noise", "ideal"),
        ("backbone", "nonsense"),
        ("feature_dim", 1.5),
    ],
)
def test_model_config_refuses(field, value):
    """Each bad value is one ValueError naming its field, when the config is made."""
    name = {"class_names": "class"}.get(field, field)
    with pytest.raises(ValueError, match=name):
        ModelConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", NAN),
        ("lr", INF),
        ("lr", "0.1"),
        ("lr", True),
        ("backbone_lr", NAN),
        ("backbone_lr", INF),
        ("momentum", NAN),
        ("momentum", -0.1),
        ("momentum", 5),
        ("gamma", NAN),
        ("gamma", INF),
        ("epochs", 2.5),
        ("epochs", "3"),
        ("epochs", True),
        ("batch_size", 1.5),
        ("step_size", 2.0),
        ("views", 1.5),
        ("seed", 1.5),
        ("seed", "0"),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", False),
        ("augment", "no"),
        ("shuffle", "no"),
        ("freeze_batchnorm", "x"),
        ("freeze_batchnorm", 0),
        ("regime", 5),
    ],
)
def test_train_config_refuses(field, value):
    """NaN and inf rates, strings for flags, fractional or string counts, seeds numpy cannot take."""
    name = "learning rates" if field.endswith("lr") else field
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_workers", 1.5),
        ("num_workers", "2"),
        ("num_workers", True),
        ("cpu_threads", 1.5),
        ("cpu_threads", "4"),
    ],
)
def test_machine_config_refuses(field, value):
    with pytest.raises(ValueError, match=field):
        MachineConfig(**{field: value})


def test_good_values_still_pass():
    """Ints where floats belong, the largest seed, a PennyLane device installed here, bond and shots of 1."""
    TrainConfig(lr=1, momentum=0, gamma=1, seed=2**32 - 1, backbone_lr=1e-5)
    ModelConfig(q_delta=0, class_names=["a", "b"], max_bond=1, shots=1, engine="default.qubit")
    ModelConfig(engine=engine_names()[-1])
    assert ModelConfig(class_names=["a", "b"]).class_names == ("a", "b")
    MachineConfig(num_workers=0, cpu_threads=None)


def test_mps_with_shots_says_shots():
    """The MPS engine refuses shots alone in words about shots, not about noise channels."""
    with pytest.raises(ValueError, match="100 shots") as caught:
        ModelConfig(engine="mps", noise=NoiseConfig(shots=100))
    assert "dep" not in str(caught.value)
    with pytest.raises(ValueError, match="dep 0.1"):
        ModelConfig("hybrid", engine="mps", noise=NoiseConfig(depolarizing=0.1))
    # a classical variant never builds the engine: a sweep's rows record the quantum runs' settings
    ModelConfig("linear", engine="mps", noise=NoiseConfig(shots=100))


# ---- stored configs still read


def test_stored_configs_read_where_they_are_not_used():
    """A stored config's engine need not be installed here (building it says so), and a classical model's
    simulation settings, never read, are kept as recorded: checkpoints and rows written elsewhere read."""
    quantum = {**ModelConfig().to_dict(), "engine": "some.plugin.device"}
    assert ModelConfig.from_dict(quantum).engine == "some.plugin.device"
    linear = {
        **ModelConfig("linear").to_dict(),
        "engine": "x",
        "q_delta": NAN,
        "max_bond": 0,
        "diff_method": "spsa",
    }
    assert ModelConfig.from_dict(linear).max_bond == 0
    native = {**ModelConfig().to_dict(), "max_bond": 0, "diff_method": "spsa"}  # native reads neither
    assert ModelConfig.from_dict(native).diff_method == "spsa"
    with pytest.raises(ValueError, match="engine"):
        ModelConfig(**{**linear, "circuit": CircuitConfig(), "noise": NoiseConfig()})
    with pytest.raises(ValueError, match="q_delta must be a finite number, got nan"):  # read, so checked
        ModelConfig.from_dict({**ModelConfig().to_dict(), "q_delta": NAN})
    assert ModelConfig.from_dict({**ModelConfig().to_dict(), "q_delta": -0.5}).q_delta == -0.5  # trained so
    with pytest.raises(ValueError, match="class_names"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "class_names": "ab"})


def _stored_configs():
    """(where, model dict, train dict or None) of every shipped checkpoint and docs/*.db run."""
    out = []
    for path in sorted((REPO / "models").glob("*.pt")) + sorted((REPO / "tests" / "data").glob("*.pt")):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        out.append((path.name, payload["model_config"], payload.get("train_config")))
    for db in sorted((REPO / "docs").glob("*.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            for run_id, config in con.execute("SELECT id, config FROM runs"):
                config = json.loads(config)
                out.append((f"{db.name}:{run_id}", config["model"], config["train"]))
    return out


def test_every_shipped_config_reads():
    """Every checkpoint in models/ and tests/data/ and every run of docs/study.db and docs/wide.db."""
    stored = _stored_configs()
    assert len(stored) > 1000
    for where, model, train in stored:
        mc = ModelConfig.from_dict(model)
        assert (mc.variant, mc.engine, mc.q_delta) == (model["variant"], model["engine"], model["q_delta"]), (
            where
        )
        if train is not None:
            TrainConfig.from_dict(train)


# ---- settings a variant never reads (for `qtl train`)


def test_settings_a_linear_model_never_reads():
    mc = ModelConfig("linear", engine="mps", circuit=CircuitConfig(9), noise=NoiseConfig(shots=100))
    assert unused_settings(mc) == ["engine", "circuit.n_qubits", "noise.shots"]
    with pytest.raises(
        ValueError, match=r"^linear has no quantum circuit: --engine, --qubits, --shots do not"
    ):
        check_settings_apply(mc)


def test_settings_each_variant_reads():
    """The width is the dressed layer's; the kernel reads its circuit but no spread; defaults pass."""
    for variant in (
        "quantum",
        "hybrid",
        "linear",
        "finetuned",
        "dressed-classical",
        "rbf-svm",
        "quantum-kernel",
    ):
        assert check_settings_apply(ModelConfig(variant)) == ModelConfig(variant)
    assert unused_settings(ModelConfig("dressed-classical", circuit=CircuitConfig(9))) == []
    assert unused_settings(ModelConfig("quantum-kernel", q_delta=0.5, circuit=CircuitConfig(9))) == [
        "q_delta"
    ]
    assert unused_settings(ModelConfig("quantum", max_bond=3, engine="mps", noise=NoiseConfig())) == []
    with pytest.raises(ValueError, match="--max-bond does not apply"):
        check_settings_apply(ModelConfig("quantum", max_bond=3))


# ---- the command line says it in one line


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("tiny"), per_split=(2, 1))


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--seed", "-1"], "seed must be a whole number from 0"),
        (["--lr", "inf"], "learning rates must be finite numbers above 0, got lr=inf"),
        (["--q-delta", "nan"], "q_delta must be a finite number"),
        (["--engine", "mps", "--shots", "100"], "100 shots"),
    ],
)
def test_cli_refuses_in_one_line(capsys, tmp_path, tiny_folder, flags, said):
    code, _, err = run_cli(
        capsys, "train", "quantum", "--random-init", "--data", tiny_folder, "--out", tmp_path / "q.pt", *flags
    )
    assert code != 0
    assert err.strip().count("\n") == 0 and err.startswith("qtl: error: ") and said in err, err
    assert not (tmp_path / "q.pt").exists()


# ---- fit's arguments


def synthetic(n=16, width=512, classes=CLASSES, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    return FeatureSet(torch.randn(n, width, generator=g) + labels[:, None], labels, ["p"] * n, list(classes))


def pair(**train):
    return synthetic(**train), synthetic(seed=1)


LINEAR = ModelConfig("linear", pretrained=False)
QUICK = dataclasses.replace(recipe("linear"), epochs=1, augment=False, views=0)


def test_fit_continues_the_callers_random_stream():
    """fit seeds torch's generator for its own work, then gives the caller's state back."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(LINEAR, QUICK, features=pair())
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(5)  # and the run itself is still seeded by its recipe
    a = fit(LINEAR, QUICK, features=pair()).model.head.weight
    b = fit(LINEAR, QUICK, features=pair()).model.head.weight
    assert torch.equal(a, b)


def test_fit_of_a_kernel_warns_that_nothing_is_written(tmp_path, caplog):
    path = tmp_path / "kern.pt"
    with caplog.at_level(logging.WARNING, logger="qtl.training.fit"):
        result = fit(
            ModelConfig("quantum-kernel", pretrained=False),
            recipe("quantum-kernel"),
            features=pair(),
            checkpoint_path=path,
        )
    assert result.checkpoint_path is None and not path.exists()
    assert (
        "a kernel SVM has no checkpoint, so nothing is written to" in caplog.text and "kern.pt" in caplog.text
    )


class Count(Callback):
    def __init__(self):
        self.batches = self.epochs = 0

    def on_batch_end(self, progress):
        self.batches += 1

    def on_epoch_end(self, progress):
        self.epochs += 1


def test_fit_takes_one_callback():
    cb = Count()
    fit(LINEAR, QUICK, features=pair(), callbacks=cb)
    assert cb.epochs == 1 and cb.batches > 0


@pytest.mark.parametrize("callbacks", [5, [Count(), "log"], [object()]])
def test_fit_refuses_other_callbacks_at_once(callbacks, monkeypatch):
    """Before any work: the dataset is never opened."""
    import qtl.training.fit as fit_module

    monkeypatch.setattr(fit_module, "open_dataset", lambda *a, **k: pytest.fail("opened the dataset"))
    with pytest.raises(TypeError, match="callbacks must be"):
        fit(LINEAR, QUICK, callbacks=callbacks)


def _set(fs, **changes):
    return dataclasses.replace(fs, **changes)


@pytest.mark.parametrize(
    "features, said",
    [
        (
            (_set(synthetic(), labels=torch.zeros(10, dtype=torch.long)), synthetic()),
            "16 feature rows but labels",
        ),
        ((_set(synthetic(), paths=[]), synthetic()), "16 feature rows but 0 paths"),
        ((synthetic(), synthetic(classes=("x", "y"))), "val's classes"),
        ((synthetic(width=16), synthetic(width=16)), "16 wide, but the model's head takes the 512"),
        ((synthetic(width=16), synthetic()), "val is 512 wide and train 16"),
        ((synthetic(classes=("a",)), synthetic(classes=("a",))), "at least 2 classes"),
        ((synthetic(n=0), synthetic()), "train holds no images"),
        ((_set(synthetic(), features=torch.full((16, 512), NAN)), synthetic()), "NaN or infinite"),
        ((synthetic(), _set(synthetic(), features=torch.full((16, 512), INF))), "val holds NaN or infinite"),
        ((_set(synthetic(), labels=torch.full((16,), 5)), synthetic()), "label 5 is no class index"),
        ((_set(synthetic(), labels=torch.full((16,), -1)), synthetic()), "label -1 is no class index"),
        ((synthetic(),), "a \\(train, val\\) or"),
    ],
)
def test_fit_checks_given_features(features, said):
    with pytest.raises(ValueError, match=said):
        fit(LINEAR, QUICK, features=features)


# ---- a loss that is not finite stops the run


def _nan_head(model):
    with torch.no_grad():
        model.head.weight.fill_(NAN)


def test_a_nan_loss_stops_the_run_and_writes_no_checkpoint(tmp_path):
    mc = dataclasses.replace(LINEAR, class_names=tuple(CLASSES))
    model = build_model(mc)
    _nan_head(model)
    path = tmp_path / "nan.pt"
    with pytest.raises(
        Diverged, match=r"training diverged at epoch 1: the train loss is nan; lower the"
    ) as caught:
        fit(LINEAR, QUICK, features=pair(), model=model, checkpoint_path=path)
    assert "--lr, now 0.001" in str(caught.value) and "no checkpoint was written" in str(caught.value)
    assert not path.exists()


class Poison(Callback):
    """NaN weights after epoch `after`: the next epoch's loss is NaN."""

    def __init__(self, model, after=1):
        self.model, self.after = model, after

    def on_epoch_end(self, progress):
        if progress.epoch == self.after:
            _nan_head(self.model)


def test_a_nan_loss_keeps_the_earlier_best_checkpoint(tmp_path, caplog):
    mc = dataclasses.replace(LINEAR, class_names=tuple(CLASSES))
    model = build_model(mc)
    path = tmp_path / "kept.pt"
    tc = dataclasses.replace(QUICK, epochs=3)
    with pytest.raises(Diverged, match="at epoch 2") as caught:
        fit(LINEAR, tc, features=pair(), model=model, checkpoint_path=path, callbacks=[Poison(model)])
    assert f"{path} keeps epoch 1, the best before it" in str(caught.value)
    with caplog.at_level(logging.WARNING, logger="qtl.models.checkpoint"):
        kept = load_checkpoint(path)
    assert (
        caplog.records[-1]
        .getMessage()
        .endswith(
            "stopped early: 1 of 3 epochs (its loss diverged); it holds the best of those epochs: "
            "train it again with a lower learning rate"
        )
    )
    assert kept.metrics["epoch"] == 1 and math.isfinite(kept.metrics["train_loss"])
    assert all(torch.isfinite(p).all() for p in kept.model.head.parameters())
    assert len(kept.history) == 1
    assert kept.stopped == {"epochs_done": 1, "epochs": 3, "stopped": "diverged"}


def test_diverged_is_a_value_error_for_the_command_line():
    assert issubclass(Diverged, ValueError)  # the CLI prints ValueErrors as "qtl: error: ..."


def test_train_refuses_settings_its_variant_never_reads(capsys, tmp_path):
    """`qtl train linear --shots 100 --engine mps --qubits 9` trained a linear head and kept the three
    unused settings in its checkpoint, unsaid: refused in one line, before any data is read or written."""
    out = tmp_path / "m"
    argv = ["train", "linear", "--shots", 100, "--engine", "mps", "--qubits", 9, "--random-init"]
    code, _, err = run_cli(capsys, *argv, "--data", tmp_path / "none", "--models-dir", out)
    assert code == 1
    assert (
        err.strip() == "qtl: error: linear has no quantum circuit: --engine, --qubits, --shots do not apply"
    )
    assert not out.exists()


def test_planned_kernel_runs_keep_no_checkpoint_path():
    """compare and reproduce plan kernel SVMs with no checkpoint path (fit warned once per kernel run)."""
    from qtl.experiments.runs import plan_runs

    runs = plan_runs(["rbf-svm", "quantum-kernel", "linear"], ModelConfig("quantum"), [0], "models")
    assert [r.checkpoint_path is None for r in runs] == [True, True, False]


def test_a_diverged_run_leaves_the_others_training(monkeypatch, caplog):
    """compare, reproduce and the app train runs one after another (train_runs): a run whose loss turns
    NaN is left out with a warning and the runs after it still train (it stopped them all)."""
    import qtl.experiments.runs as runs_module

    def train_run(run, **kwargs):
        if run.train_config.seed == 0:
            raise Diverged("training diverged at epoch 1: the train loss is nan")
        return runs_module.Outcome({"cancelled": False, "seed": run.train_config.seed}, [], 0.0)

    monkeypatch.setattr(runs_module, "train_run", train_run)
    planned = runs_module.plan_runs(["linear"], LINEAR, [0, 1, 2], "models")
    with caplog.at_level(logging.WARNING, logger="qtl.experiments.runs"):
        done = runs_module.train_runs(planned)
    assert [o.row["seed"] for o in done] == [1, 2]
    assert "linear seed 0 left out: training diverged at epoch 1" in caplog.text
