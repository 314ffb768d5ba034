"""Checkpoints: one safe format for every variant, atomic writes, clear errors, no code execution."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest
import torch

from qtl.config import FROZEN_VARIANTS, MACHINE_KEYS, VARIANTS, ModelConfig, TrainConfig
from qtl.models.backbones import WeightsUnavailableError
from qtl.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_name,
    default_checkpoint_path,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from qtl.models.store import list_checkpoints
from qtl.models.variants import build_model
from qtl.paths import models_dir
from qtl.quantum.circuit import CircuitConfig

CLASSES = ("ants", "bees")
HISTORY = [
    {
        "epoch": 1,
        "train_loss": 0.7,
        "train_acc": 0.5,
        "val_loss": 0.6,
        "val_acc": 0.75,
        "lr": 1e-3,
        "time_s": 1.0,
    }
]


def config(variant="quantum", **kw):
    return ModelConfig(variant, pretrained=False, class_names=CLASSES, circuit=CircuitConfig(3, 2), **kw)


def saved(path, variant="quantum", seed=0, **kw):
    """Build a fresh model and save it; returns (model, config, path)."""
    mc = config(variant, **kw)
    torch.manual_seed(seed)
    model = build_model(mc)
    save_checkpoint(path, model, mc, history=HISTORY, metrics=HISTORY[0], train_config=TrainConfig(epochs=1))
    return model, mc, path


def edited(path, out, edit):
    """Rewrite a checkpoint's payload through `edit(payload)` (the test's way to forge bad files)."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, out)
    return out


class Evil:
    """A pickle payload that would write a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


class TestRoundTrip:
    @pytest.mark.parametrize("variant", VARIANTS)
    def test_every_variant_round_trips(self, tmp_path, variant):
        """Loading gives the same outputs, config, class names and history, in eval mode."""
        model, mc, path = saved(tmp_path / f"{variant}.pt", variant)
        loaded = load_checkpoint(path)
        assert loaded.model_config == mc and loaded.class_names == list(CLASSES)
        assert loaded.history == HISTORY and loaded.metrics["val_acc"] == 0.75
        assert not loaded.model.training and loaded.variant == variant
        x = torch.randn(2, 3, 64, 64)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(x), model(x), atol=1e-6, rtol=0)

    def test_frozen_variants_store_only_the_head(self, tmp_path):
        """Frozen checkpoints are kilobytes; finetuned carries its whole backbone."""
        for variant in FROZEN_VARIANTS:
            _, _, path = saved(tmp_path / f"{variant}.pt", variant)
            assert path.stat().st_size < 64_000, variant
        _, _, full = saved(tmp_path / "finetuned.pt", "finetuned")
        assert full.stat().st_size > 10_000_000

    def test_metadata(self, tmp_path):
        """Versions, backbone and weights identifiers, creation time and parameter counts are recorded."""
        _, _, path = saved(tmp_path / "q.pt")
        info = read_checkpoint_info(path)
        assert set(info.meta["versions"]) == {"qtl", "torch", "torchvision", "pennylane"}
        assert info.meta["versions"]["torch"] == torch.__version__
        assert (info.backbone, info.weights) == ("resnet18", "random")
        assert (info.n_qubits, info.depth, info.val_acc, info.best_epoch) == (3, 2, 0.75, 1)
        assert info.created and info.size_bytes == path.stat().st_size
        assert info.meta["parameters"]["quantum"] == 6

    def test_records_the_recipe_not_the_machine(self, tmp_path):
        """The train config saved is the recipe alone: no device, data folder, cache, workers or threads."""
        _, _, path = saved(tmp_path / "q.pt")
        recorded = load_checkpoint(path).train_config
        assert recorded == TrainConfig(epochs=1).to_dict()
        assert not MACHINE_KEYS & set(recorded)

    def test_older_checkpoint_with_machine_settings_loads(self, tmp_path):
        """A file from before the recipe/machine split (machine keys in its train config) still loads,
        and its recipe reads back without them."""
        model, _, path = saved(tmp_path / "q.pt")
        legacy = {"device": "cuda", "data": "/data/x", "num_workers": 2, "cache_dir": None, "cpu_threads": 1}
        old = edited(path, tmp_path / "old.pt", lambda p: p["train_config"].update(legacy))
        loaded = load_checkpoint(old)
        assert loaded.train_config["device"] == "cuda"  # the file's record, as written
        assert TrainConfig.from_dict(loaded.train_config) == TrainConfig(epochs=1)
        f = torch.randn(2, 512)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.forward_features(f), model.forward_features(f))

    def test_info_never_builds_a_model(self, tmp_path, monkeypatch):
        """read_checkpoint_info works even when building a model would fail."""
        _, _, path = saved(tmp_path / "q.pt")

        def boom(*args, **kwargs):
            raise AssertionError("a model was built")

        monkeypatch.setattr("qtl.models.variants.build_model", boom)
        monkeypatch.setattr("qtl.models.checkpoint.build_model", boom)
        assert read_checkpoint_info(path).variant == "quantum"

    def test_other_engine_on_load(self, tmp_path):
        """A quantum checkpoint runs on a PennyLane device with the same outputs."""
        model, _, path = saved(tmp_path / "q.pt")
        loaded = load_checkpoint(path, engine="default.qubit")
        assert loaded.model_config.engine == "default.qubit"
        f = torch.randn(3, 512)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.model.forward_features(f), model.forward_features(f), atol=1e-5, rtol=0
            )


class TestStore:
    def test_models_dir_default_and_override(self, monkeypatch, tmp_path):
        """models/ at the repo root, unless QTL_MODELS_DIR says otherwise."""
        monkeypatch.delenv("QTL_MODELS_DIR", raising=False)
        assert models_dir() == Path(__file__).resolve().parents[1] / "models"
        monkeypatch.setenv("QTL_MODELS_DIR", str(tmp_path))
        assert models_dir() == tmp_path
        assert default_checkpoint_path(config()).parent == tmp_path

    def test_list_newest_first_skipping_junk(self, tmp_path, monkeypatch):
        """Valid checkpoints newest first; a junk .pt file is skipped."""
        monkeypatch.setenv("QTL_MODELS_DIR", str(tmp_path))
        a = default_checkpoint_path(config("linear"))
        saved(a, "linear")
        b = tmp_path / "b.pt"
        edited(a, b, lambda p: p["meta"].update(created="2999-01-01T00:00:00+00:00"))
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        assert [i.path for i in list_checkpoints()] == [b, a]
        assert list_checkpoints(tmp_path / "missing") == []

    def test_names_are_unique_and_descriptive(self):
        """Default names say variant, backbone and circuit, and never collide."""
        a, b = default_checkpoint_path(config()), default_checkpoint_path(config())
        assert a != b and a.name.startswith("quantum-resnet18-random-q3d2-")

    def test_names_show_only_what_the_variant_has(self):
        """Linear heads name no circuit; the classical control names its width; a non-native engine shows."""
        assert checkpoint_name(config("linear"), 0, "T") == "linear-resnet18-random-s0-T.pt"
        assert (
            checkpoint_name(config("dressed-classical"), stamp="T")
            == "dressed-classical-resnet18-random-w3-T.pt"
        )
        lightning = dataclasses.replace(config(), engine="lightning.qubit")
        assert checkpoint_name(lightning, 1, "T") == "quantum-resnet18-random-q3d2-lightningqubit-s1-T.pt"


class TestSafety:
    def test_malicious_pickle_never_runs(self, tmp_path):
        """A checkpoint carrying a code-running object fails to load and runs nothing."""
        marker = tmp_path / "marker.txt"
        path = tmp_path / "evil.pt"
        torch.save({"format": "qtl-checkpoint", "format_version": 1, "model_config": Evil(marker)}, path)
        for read in (load_checkpoint, read_checkpoint_info):
            with pytest.raises(CheckpointError, match="not a qtl checkpoint, or is unsafe") as err:
                read(path)
            assert "never executes code from a file" in str(err.value)
            assert "weights_only" not in str(err.value) and "trust" not in str(err.value)  # torch's advice
        assert not marker.exists()

    @pytest.mark.filterwarnings("ignore:Detected pickle protocol")
    def test_raw_malicious_pickle_never_runs(self, tmp_path):
        """A plain (non-zip) pickle stream is refused the same way."""
        marker = tmp_path / "marker.txt"
        path = tmp_path / "evil.pt"
        path.write_bytes(pickle.dumps(Evil(marker)))
        with pytest.raises(CheckpointError, match="never executes code from a file") as err:
            load_checkpoint(path)
        assert "weights_only" not in str(err.value)
        assert not marker.exists()

    def test_the_evil_payload_is_real(self, tmp_path):
        """Control: unpickling the same object without protection does write the marker."""
        marker = tmp_path / "marker.txt"
        pickle.loads(pickle.dumps(Evil(marker)))
        assert marker.read_text() == "pwned"


class TestBadFiles:
    def test_missing_file(self, tmp_path):
        with pytest.raises(CheckpointError, match="no checkpoint file"):
            load_checkpoint(tmp_path / "nope.pt")

    def test_truncated_file(self, tmp_path):
        """A file cut short is reported as corrupt."""
        _, _, path = saved(tmp_path / "q.pt")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="q.pt"):
            load_checkpoint(path)

    @pytest.mark.parametrize("content", [b"hello", b"\xff\xd8\xff\xe0 a JPEG's start", b""])
    def test_files_of_no_torch_format_say_so_in_one_way(self, tmp_path, content):
        """Text, an image, an empty file: one message from every reader (the app's upload maps the
        file, which torch would answer with advice about torch.save options)."""
        path = tmp_path / "notes.pt"
        path.write_bytes(content)
        for read in (load_checkpoint, read_checkpoint_info):
            with pytest.raises(CheckpointError) as err:
                read(path)
            assert str(err.value) == "notes.pt is not a qtl checkpoint (nor any file torch.save writes)"

    def test_exported_files_point_back_to_their_checkpoint(self, tmp_path):
        """A TorchScript archive or an ONNX file (what qtl export writes) given as a checkpoint: said so,
        with the way to run it, and no warning or advice to load it unsafely."""
        scripted = tmp_path / "m.torchscript"
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
        onnx = tmp_path / "m.onnx"
        onnx.write_bytes(b"\x08\x08\x12\x07pytorch")  # an ONNX model's first fields
        renamed = tmp_path / "m2.pt"  # and under a checkpoint's name, told by its bytes (it was "not a
        renamed.write_bytes(onnx.read_bytes())  # qtl checkpoint (nor any file torch.save writes)")
        for path, runtime in ((scripted, "torchscript"), (onnx, "onnx"), (renamed, "onnx")):
            for read in (load_checkpoint, read_checkpoint_info):
                with pytest.raises(CheckpointError, match="load the .pt checkpoint it was exported") as err:
                    read(path)
                assert f"qtl predict --runtime {runtime}" in str(err.value)
                assert "weights_only" not in str(err.value)

    def test_a_file_the_first_look_cannot_open_is_left_to_torch(self, tmp_path, monkeypatch):
        """The look at a file's first bytes never raises an OSError of its own (listing a folder expects
        CheckpointError): where it cannot open the file, torch.load reads it, or says why not."""
        _, _, path = saved(tmp_path / "q.pt")
        real_open = Path.open

        def denied(self, *args, **kwargs):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", denied)
        assert read_checkpoint_info(path).variant == "quantum"

    def test_foreign_torch_file(self, tmp_path):
        """A plain state_dict saved by someone else is not mistaken for a checkpoint."""
        path = tmp_path / "weights.pt"
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
        with pytest.raises(CheckpointError, match="not a qtl checkpoint"):
            load_checkpoint(path)

    def test_newer_format(self, tmp_path):
        """A file from a newer qtl asks for an upgrade."""
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "new.pt", lambda p: p.update(format_version=FORMAT_VERSION + 1))
        with pytest.raises(CheckpointError, match="upgrade qtl"):
            load_checkpoint(bad)

    def test_unknown_variant(self, tmp_path):
        """An unknown variant name lists the known ones."""
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "v.pt", lambda p: p["model_config"].update(variant="qgan"))
        with pytest.raises(CheckpointError, match="qgan.*quantum, finetuned"):
            load_checkpoint(bad)

    def test_mismatched_shapes(self, tmp_path):
        """A weight of the wrong shape is named with both shapes."""
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "s.pt", lambda p: p["state_dict"].update(q_params=torch.zeros(5, 3)))
        with pytest.raises(CheckpointError, match=r"q_params has shape \(5, 3\).*\(2, 3\)"):
            load_checkpoint(bad)

    def test_config_that_does_not_fit_the_weights(self, tmp_path):
        """Weights saved for 3 qubits cannot load into a 4-qubit config."""
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "c.pt", lambda p: p["model_config"]["circuit"].update(n_qubits=4))
        with pytest.raises(CheckpointError, match="shape"):
            load_checkpoint(bad)

    def test_missing_weights(self, tmp_path):
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "m.pt", lambda p: p["state_dict"].pop("post_net.bias"))
        with pytest.raises(CheckpointError, match="missing"):
            load_checkpoint(bad)

    def test_different_backbone_weights(self, tmp_path):
        """A head trained on other backbone weights is refused rather than silently wrong."""
        _, _, path = saved(tmp_path / "q.pt")
        bad = edited(path, tmp_path / "b.pt", lambda p: p["backbone"].update(fingerprint="0" * 16))
        with pytest.raises(CheckpointError, match="different resnet18"):
            load_checkpoint(bad)

    def test_imagenet_weights_unavailable(self, tmp_path, monkeypatch):
        """A pretrained checkpoint offline without cached weights names the file to fetch."""
        model = build_model(config("linear"))
        mc = ModelConfig("linear", pretrained=True, class_names=CLASSES)
        path = save_checkpoint(tmp_path / "p.pt", model, mc)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
        monkeypatch.setenv("QTL_OFFLINE", "1")
        with pytest.raises(WeightsUnavailableError, match=r"resnet18-.*\.pth"):
            load_checkpoint(path)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """If writing fails, the old checkpoint is untouched and no temporary file remains."""
    _, _, path = saved(tmp_path / "q.pt")
    before = path.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, build_model(config()), config())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["q.pt"]
