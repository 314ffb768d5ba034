"""fit(): every variant trains, same seed gives same metrics, callbacks, cancellation and checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading

import pytest
import torch
from conftest import make_image_folder
from torch import nn

from qtl.config import VARIANTS, DataRegime, MachineConfig, ModelConfig, TrainConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.checkpoint import load_checkpoint
from qtl.models.variants import build_model
from qtl.training.fit import Callback, Cancelled, fit
from qtl.training.gradients import COLUMNS as GRAD_COLUMNS
from qtl.training.optim import make_optimizer
from qtl.utils.devices import resolve_device

CLASSES = ["cats", "dogs"]


def quick(variant: str, **overrides) -> TrainConfig:
    """The variant's recipe, cut down to seconds: 1 epoch, at most 2 cached views."""
    r = recipe(variant)
    return dataclasses.replace(r, **{"epochs": 1, "views": min(r.views, 2), **overrides})


def synthetic_features(n=24, seed=0):
    """A (train, val) pair of separable 512-d FeatureSets."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, 512, generator=g) + labels[:, None].float()
    half = n // 2
    return (
        FeatureSet(x[:half], labels[:half], ["t"] * half, CLASSES),
        FeatureSet(x[half:], labels[half:], ["v"] * half, CLASSES),
    )


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_time(history):
    """The rows without their timing (and without the gradient groups a model does not have)."""
    return [{k: v for k, v in row.items() if k != "time_s" and v is not None} for row in history]


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory):
    """2 classes, 2 train and 1 val image each: one batch per epoch keeps backbone training cheap."""
    return make_image_folder(tmp_path_factory.mktemp("micro"), per_split=(2, 1))


class Recorder(Callback):
    def __init__(self, cancel_at=None):
        self.batches, self.epochs, self.cancel_at = [], [], cancel_at

    def on_batch_end(self, p):
        self.batches.append((p.epoch, p.batch, p.batches, p.fraction, p.loss))
        if self.cancel_at == (p.epoch, p.batch):
            raise Cancelled

    def on_epoch_end(self, p):
        self.epochs.append((p.epoch, dict(p.metrics), p.best_epoch))


class Exploding(nn.Module):
    """Stands in for a backbone that must never run."""

    def forward(self, x):
        raise AssertionError("the backbone ran during a frozen-feature epoch")


GROUPS_OF = {
    "quantum": {"pre_net", "circuit", "post_net"},
    "hybrid": {"backbone", "pre_net", "circuit", "post_net"},
    "finetuned": {"backbone", "post_net"},
    "linear": {"post_net"},
    "dressed-classical": {"pre_net", "hidden", "post_net"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_one_epoch(micro_folder, variant):
    """One epoch of each variant's recipe on a tiny image folder records a full history row."""
    result = fit(ModelConfig(variant, pretrained=False), quick(variant), MachineConfig(data_dir=micro_folder))
    assert result.model_config.class_names == ("cats", "dogs")
    assert len(result.history) == 1 and result.best_epoch == 1 and not result.cancelled
    row = result.history[0]
    assert set(row) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s"} | set(
        GRAD_COLUMNS
    )
    assert all(math.isfinite(row[k]) for k in ("train_loss", "val_loss"))
    groups = {k[len("grad_") :] for k in GRAD_COLUMNS if row[k] is not None}  # every group that trains
    assert groups == GROUPS_OF[variant] and all(row[f"grad_{g}"] > 0 for g in groups)
    assert 0 <= row["train_acc"] <= 1 and row["val_acc"] in {0.0, 0.5, 1.0}
    assert not result.model.training


def test_image_batches_follow_the_regime(micro_folder):
    """A trainable backbone under 3 folds and one labelled image per class: images, not features, are
    selected (2 train, 2 val, 2 test of the 6), and the selected epoch is scored on its test fold."""
    regime = DataRegime(split="kfold", folds=3, per_class=1)
    tc = dataclasses.replace(quick("finetuned"), regime=regime)
    result = fit(ModelConfig("finetuned", pretrained=False), tc, MachineConfig(data_dir=micro_folder))
    m = result.metrics
    assert (m["n_train"], m["n_val"], m["n_test"]) == (2, 2, 2) and m["test_acc"] in (0.0, 0.5, 1.0)


class TestReproducibility:
    def test_frozen_same_seed_same_metrics(self, tiny_image_folder):
        """quantum through the real feature cache: equal seeds agree to 1e-6, another seed differs."""
        mc = ModelConfig("quantum", pretrained=False)
        tc, machine = quick("quantum", epochs=3), MachineConfig(data_dir=tiny_image_folder)
        a, b = fit(mc, tc, machine), fit(mc, tc, machine)
        c = fit(mc, dataclasses.replace(tc, seed=1), machine)
        for ra, rb in zip(without_time(a.history), without_time(b.history), strict=True):
            assert ra == pytest.approx(rb, abs=1e-6, rel=0)
        assert without_time(a.history) != without_time(c.history)

    def test_trainable_backbone_same_seed_same_metrics(self, micro_folder):
        """finetuned with augmentation and shuffling: equal seeds agree to 1e-6."""
        mc = ModelConfig("finetuned", pretrained=False)
        tc, machine = quick("finetuned", batch_size=2), MachineConfig(data_dir=micro_folder)
        a, b = fit(mc, tc, machine), fit(mc, tc, machine)
        assert without_time(a.history)[0] == pytest.approx(without_time(b.history)[0], abs=1e-6, rel=0)
        for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)


class TestCallbacks:
    def test_progress_counts_every_batch_and_epoch(self):
        """on_batch_end fires once per batch with 1-based counters; fraction ends at 1."""
        rec = Recorder()
        train, val = synthetic_features(n=22)  # 11 training samples, batch 4 -> 3 batches
        mc = ModelConfig("linear", pretrained=False, class_names=CLASSES)
        fit(mc, TrainConfig(epochs=2, batch_size=4), features=(train, val), callbacks=[rec])
        assert [(e, b, n) for e, b, n, _, _ in rec.batches] == [(e, b, 3) for e in (1, 2) for b in (1, 2, 3)]
        assert rec.batches[-1][3] == pytest.approx(1.0)
        assert [e for e, _, _ in rec.epochs] == [1, 2]
        assert rec.epochs[0][1]["epoch"] == 1

    def test_stop_event_cancels(self):
        """Setting the stop event mid-run ends it after the current batch, with cancelled=True."""
        stop = threading.Event()

        class StopLater(Callback):
            def on_batch_end(self, p):
                if (p.epoch, p.batch) == (2, 1):
                    stop.set()

        train, val = synthetic_features()
        mc = ModelConfig("linear", pretrained=False, class_names=CLASSES)
        r = fit(
            mc, TrainConfig(epochs=5, batch_size=4), features=(train, val), callbacks=[StopLater()], stop=stop
        )
        assert r.cancelled and len(r.history) == 1 and r.best_epoch == 1


class TestCheckpoints:
    def test_checkpoint_holds_the_best_epoch(self, tmp_path):
        """The file's metrics and weights are the best epoch's, its history the whole run's."""
        train, val = synthetic_features()
        mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES)
        path = tmp_path / "q.pt"
        r = fit(mc, TrainConfig(epochs=6, batch_size=4, lr=0.02), features=(train, val), checkpoint_path=path)
        best = max(r.history, key=lambda row: (row["val_acc"], -row["val_loss"]))
        assert r.best_epoch == best["epoch"] and r.checkpoint_path == path
        loaded = load_checkpoint(path)
        assert loaded.metrics["epoch"] == r.best_epoch
        assert loaded.history == r.history  # every epoch, also those after the best
        with torch.no_grad():
            preds = loaded.model.forward_features(val.features).argmax(1)
            same = r.model.forward_features(val.features).argmax(1)
        assert (preds == val.labels).float().mean().item() == pytest.approx(best["val_acc"])
        assert torch.equal(preds, same)

    def test_epochs_after_the_best_still_reach_the_checkpoints_history(self, tmp_path):
        """After epoch 1 the lr is ~1e-32, so later epochs tie and epoch 1 stays best; the file has all 3."""
        train, val = synthetic_features()
        mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES)
        path = tmp_path / "q.pt"
        tc = TrainConfig(epochs=3, batch_size=4, lr=0.02, step_size=1, gamma=1e-30)
        r = fit(mc, tc, features=(train, val), checkpoint_path=path)
        loaded = load_checkpoint(path)
        assert r.best_epoch == 1 and loaded.metrics["epoch"] == 1
        assert [row["epoch"] for row in loaded.history] == [1, 2, 3]

    def test_cancelled_run_leaves_previous_checkpoint_intact(self, tmp_path):
        """A second run cancelled in its first epoch never touches the first run's file."""
        train, val = synthetic_features()
        mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES)
        path = tmp_path / "q.pt"
        fit(mc, TrainConfig(epochs=2, batch_size=4), features=(train, val), checkpoint_path=path)
        before = sha(path)
        r = fit(
            mc,
            TrainConfig(epochs=3, batch_size=4, seed=5),
            features=(train, val),
            checkpoint_path=path,
            callbacks=[Recorder(cancel_at=(1, 2))],
        )
        assert r.cancelled and r.best_epoch is None and r.checkpoint_path is None
        assert sha(path) == before
        assert load_checkpoint(path).metrics["epoch"] >= 1
        assert list(tmp_path.iterdir()) == [path]

    def test_crash_while_saving_leaves_previous_checkpoint_intact(self, tmp_path, monkeypatch):
        """torch.save dying halfway through leaves the old file whole and no temporary files."""
        train, val = synthetic_features()
        mc = ModelConfig("linear", pretrained=False, class_names=CLASSES)
        path = tmp_path / "l.pt"
        fit(mc, TrainConfig(epochs=1, batch_size=4), features=(train, val), checkpoint_path=path)
        before = sha(path)

        def dying_save(obj, f, *args, **kwargs):
            f.write(b"half a checkpoint")
            raise OSError("disk full")

        monkeypatch.setattr(torch, "save", dying_save)
        with pytest.raises(OSError, match="disk full"):
            fit(mc, TrainConfig(epochs=1, batch_size=4, seed=3), features=(train, val), checkpoint_path=path)
        monkeypatch.undo()
        assert sha(path) == before
        assert list(tmp_path.iterdir()) == [path]
        load_checkpoint(path)


class TestFrozenPath:
    def test_frozen_epochs_never_run_the_backbone(self, tiny_image_folder):
        """After extraction (which has its own backbone), a frozen run only reads cached features."""
        mc = ModelConfig("quantum", pretrained=False, class_names=("cats", "dogs"))
        model = build_model(mc)
        model.backbone = Exploding()
        r = fit(mc, quick("quantum", epochs=2), MachineConfig(data_dir=tiny_image_folder), model=model)
        assert len(r.history) == 2

    def test_augmentation_without_views_runs_the_backbone_each_epoch(self, micro_folder, tmp_path):
        """linear with augment and views=0 bypasses the cache: fresh crops through the backbone; only the
        val split's features are cached (evaluation still reads them)."""
        mc = ModelConfig("linear", pretrained=False, class_names=("cats", "dogs"))
        model = build_model(mc)
        calls = []
        model.backbone.register_forward_hook(lambda *_: calls.append(1))
        tc = quick("linear", epochs=2, views=0, batch_size=2)
        fit(mc, tc, MachineConfig(data_dir=micro_folder, cache_dir=tmp_path), model=model)
        assert len(calls) == 2 * 2  # 4 training images, batch 2: two backbone passes per epoch
        assert [p.name.split("-")[1] for p in tmp_path.glob("*.pt")] == ["val"]

    def test_cached_views_are_used(self, tiny_image_folder):
        """linear with views=2 trains on cached augmented views and never runs the model's backbone."""
        mc = ModelConfig("linear", pretrained=False, class_names=("cats", "dogs"))
        model = build_model(mc)
        model.backbone = Exploding()
        r = fit(
            mc, quick("linear", epochs=2, views=2), MachineConfig(data_dir=tiny_image_folder), model=model
        )
        assert len(r.history) == 2

    def test_cold_cache_builds_and_hashes_the_backbone_once(self, tiny_image_folder, tmp_path, monkeypatch):
        """fit() in a fresh process builds one backbone (the shared one, which also extracts both splits)
        and hashes it once."""
        import qtl.data.features
        import qtl.models.backbones
        import qtl.models.checkpoint
        import qtl.models.variants
        import qtl.training.fit

        calls = {"load_backbone": 0, "backbone_fingerprint": 0}

        def counted(module, name):
            original = getattr(module, name)

            def wrapper(*args, **kwargs):
                calls[name] += 1
                return original(*args, **kwargs)

            return wrapper

        build = counted(qtl.models.backbones, "load_backbone")
        for module in (qtl.models.backbones, qtl.models.variants, qtl.data.features, qtl.training.fit):
            monkeypatch.setattr(module, "load_backbone", build)
        fingerprint = counted(qtl.models.checkpoint, "backbone_fingerprint")
        for module in (qtl.models.checkpoint, qtl.training.fit):
            monkeypatch.setattr(module, "backbone_fingerprint", fingerprint)
        monkeypatch.setattr(qtl.models.backbones, "_SHARED", {})  # as in a fresh process
        mc = ModelConfig("quantum", pretrained=False, class_names=("cats", "dogs"))
        machine = MachineConfig(data_dir=tiny_image_folder, cache_dir=tmp_path / "cache")
        r = fit(mc, quick("quantum", epochs=3), machine, checkpoint_path=tmp_path / "q.pt")
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # a cold cache: both splits extracted
        assert calls == {"load_backbone": 1, "backbone_fingerprint": 1}
        monkeypatch.undo()
        assert load_checkpoint(r.checkpoint_path).metrics["epoch"] == r.best_epoch  # its fingerprint matches


def test_hybrid_learns_backbone_and_head_at_their_own_rates():
    """hybrid's optimizer holds the backbone at backbone_lr and the head at lr, both decayed by StepLR."""
    model = build_model(ModelConfig("hybrid", pretrained=False, class_names=CLASSES))
    tc = recipe("hybrid")
    opt = make_optimizer(model, tc)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    rates = {(all(id(p) in backbone_ids for p in g["params"]), g["lr"]) for g in opt.param_groups}
    assert rates == {(True, tc.backbone_lr), (False, tc.lr)}
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    frozen = make_optimizer(build_model(ModelConfig("quantum", pretrained=False, class_names=CLASSES)), tc)
    assert len(frozen.param_groups) == 1


class TestErrors:
    def test_features_for_a_trainable_variant(self):
        """Cached features cannot train a backbone: a clear error."""
        with pytest.raises(ValueError, match="frozen"):
            fit(ModelConfig("finetuned", pretrained=False), TrainConfig(), features=synthetic_features())

    def test_class_names_must_match_the_data(self):
        """A config made for other classes is refused before training."""
        mc = ModelConfig("linear", pretrained=False, class_names=("ants", "bees"))
        with pytest.raises(ValueError, match="dataset classes"):
            fit(mc, TrainConfig(epochs=1), features=synthetic_features())

    @pytest.mark.parametrize(
        "field, value, message",
        [("epochs", 0, "epochs"), ("optimizer", "rmsprop", "optimizer"), ("lr", 0.0, "learning rates")],
    )
    def test_bad_train_config(self, field, value, message):
        """Invalid settings fail when the config is made."""
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{field: value})

    @pytest.mark.parametrize(
        "field, value, message", [("num_workers", -1, "num_workers"), ("cpu_threads", 0, "cpu_threads")]
    )
    def test_bad_machine_config(self, field, value, message):
        """Invalid machine settings fail when the config is made."""
        with pytest.raises(ValueError, match=message):
            MachineConfig(**{field: value})

    def test_paths_are_stored_as_strings(self, tmp_path):
        """pathlib folders become strings, so the machine settings stay JSON-safe."""
        m = MachineConfig(data_dir=tmp_path, cache_dir=tmp_path)
        assert (m.data_dir, m.cache_dir) == (str(tmp_path), str(tmp_path))

    def test_auto_device(self):
        """auto picks CUDA when present, else the CPU."""
        assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
        assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("hooked", [True, False])
@pytest.mark.parametrize("rotation", ["ry", "rot"])
def test_every_update_is_an_optimizer_step_and_nothing_warns(rotation, hooked):
    """The quantum head's closed-form step (RY circuits) computes its own update and autograd's (Rot)
    does not, yet both update through the optimizer's step: a global step hook counts every batch, and
    StepLR, stepped every epoch, warns nothing (it used to warn "lr_scheduler.step() before
    optimizer.step()" on every closed-form run). Without a hook the closed-form update skips torch's
    step wrapper, and the scheduler still counts it."""
    import warnings

    from torch.optim.optimizer import register_optimizer_step_post_hook

    from qtl.quantum.circuit import CircuitConfig

    torch.optim.Adam([nn.Parameter(torch.zeros(1))])  # torch hooks Adam.step itself: still one call a step
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, *_: steps.append(opt))
    if not hooked:
        handle.remove()
    mc = ModelConfig(
        "quantum", pretrained=False, class_names=CLASSES, circuit=CircuitConfig(rotation=rotation)
    )
    tc = dataclasses.replace(recipe("quantum"), epochs=3, step_size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = fit(mc, tc, features=synthetic_features())
    finally:
        handle.remove()
    assert len(steps) == (3 * 3 if hooked else 0)  # 12 training features, batch 4: 3 steps an epoch
    assert [row["lr"] for row in result.history] == pytest.approx([4e-4, 4e-5, 4e-6])


def test_a_wide_head_is_evaluated_within_its_engines_budget(monkeypatch):
    """A circuit that trains in small batches is evaluated in batches its engine's memory budget holds
    (`eval_batch_size`), not all of val in one forward: a 14-qubit ring under a 4 MiB budget, where one
    forward of the 64 val samples needs about 12 MiB."""
    from qtl.data.feed import EVAL_BATCH, eval_batch_size
    from qtl.quantum.circuit import CircuitConfig
    from qtl.quantum.engines.native import MEMORY_BUDGET_ENV

    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(4 * 2**20))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 2
    x = torch.randn(128, 512, generator=g) + 1.5 * labels[:, None].float()
    train = FeatureSet(x[:64], labels[:64], ["t"] * 64, ["a", "b"])
    val = FeatureSet(x[64:], labels[64:], ["v"] * 64, ["a", "b"])
    mc = ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(14, 2, "ring"))
    result = fit(mc, TrainConfig(epochs=3, batch_size=8, lr=0.05), features=(train, val))
    assert result.best["val_acc"] >= 0.8  # 64 validation samples, chance is 0.5
    engine = result.model.head.engine
    batch = eval_batch_size(result.model.head)
    assert 1 < batch < 64 and engine.estimate_bytes(batch, training=False) <= engine.memory_budget
    assert engine.estimate_bytes(2 * batch, training=False) > engine.memory_budget
    assert eval_batch_size(nn.Linear(512, 2)) == EVAL_BATCH  # no engine, no budget


def test_images_are_evaluated_within_the_heads_budget(tmp_path, monkeypatch):
    """A variant that runs images through the whole model (hybrid) evaluates them in batches its head's
    engine holds: a 14-qubit ring whose budget holds one training sample, and 6 val images (one forward
    of all of them would need more)."""
    from qtl.quantum.circuit import CircuitConfig
    from qtl.quantum.engines.native import MEMORY_BUDGET_ENV, NativeEngine

    circuit = CircuitConfig(14, 1, "ring")
    engine = NativeEngine(circuit)
    assert engine.estimate_bytes(6, training=False) > engine.estimate_bytes(1)
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(engine.estimate_bytes(1)))
    folder = make_image_folder(tmp_path, per_split=(1, 3))
    mc = ModelConfig("hybrid", pretrained=False, circuit=circuit)
    result = fit(mc, quick("hybrid", batch_size=1), MachineConfig(data_dir=folder))
    assert len(result.history) == 1 and math.isfinite(result.history[0]["val_loss"])
