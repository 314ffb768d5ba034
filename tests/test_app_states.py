"""The page x state matrix: every page of the app, in every state a user reaches, renders without an
exception, and where it cannot serve the state it says why in one line (AppTest, no browser).

States: a fresh clone offline (no dataset, no ImageNet weights), offline with a dataset, ImageNet weights
present, demo mode, no checkpoints at all, a 3-class model loaded, a 64-qubit MPS model loaded, a
noise-trained model alone, a corrupt file in models/, and a model whose backbone weights are missing.
The shipped checkpoints (models/, the bundled efficientnet_lite0) are what a fresh clone loads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from conftest import REPO, make_class_folders, make_image_folder
from test_app import PAGES, app, png, texts, wait_for_job

from qtl.config import ModelConfig
from qtl.models import backbones
from qtl.models.checkpoint import save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig

STATES = (
    "fresh_offline",
    "offline_dataset",
    "missing_weights",  # before weights_present: that one builds the shared ImageNet resnet18
    "weights_present",
    "demo",
    "no_checkpoints",
    "three_class",
    "mps64",
    "noise_model",
    "corrupt_file",
)
NOISY = "quantum-efficientnet_lite0-imagenet-q4d6-noisy-s0-dep0.1.pt"
ENV_KEYS = ("QTL_DATA_DIR", "QTL_MODELS_DIR", "QTL_PRETRAINED", "QTL_DEMO", "QTL_OFFLINE", "QTL_AUTOLOAD")


@dataclass
class World:
    """Everything the states are made of, built once."""

    root: Path
    empty: Path  # an empty folder: no dataset, no checkpoints, no weights
    ants_bees: Path  # a tiny dataset with the shipped models' classes
    models: Path  # a copy of the shipped checkpoints
    three_class: Path  # a 3-class quantum checkpoint on the bundled backbone
    mps64: Path  # a 64-qubit quantum checkpoint on the MPS engine
    resnet18_imagenet: Path  # a linear head on ImageNet resnet18 (weights only under `torch_weights`)
    torch_weights: Path  # a TORCH_HOME holding a resnet18 ImageNet weights file (written here)


def fake_resnet18_weights(torch_home: Path) -> None:
    """A resnet18 state dict under the file name torchvision reads ImageNet weights from (no download)."""
    import torch

    from qtl.models.backbones import weights_status

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        path = weights_status("resnet18").path
        path.parent.mkdir(parents=True, exist_ok=True)
        model, _ = backbones.load_backbone("resnet18", pretrained=False)
        state = {**model.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
        torch.save(state, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("states")
    (root / "empty").mkdir()
    models = root / "models"
    models.mkdir()
    for p in (REPO / "models").iterdir():
        if p.suffix == ".pt" or p.name == "SHIPPED":
            shutil.copy(p, models / p.name)
    ants_bees = make_image_folder(root / "ants_bees", classes=("ants", "bees"), per_split=(3, 3))
    make_class_folders(root / "three", 3, 4)
    bundled = dict(backbone="efficientnet_lite0", pretrained=True)
    three = ModelConfig("quantum", class_names=("a", "b", "c"), circuit=CircuitConfig(3, 2), **bundled)
    wide = ModelConfig("quantum", class_names=("ants", "bees"), circuit=CircuitConfig(64, 2), engine="mps")
    wide = ModelConfig.from_dict({**wide.to_dict(), **bundled})
    extra = root / "extra"
    w = World(
        root,
        root / "empty",
        ants_bees,
        models,
        save_checkpoint(extra / "quantum-three-class.pt", build_model(three), three),
        save_checkpoint(extra / "quantum-wide-q64d2-mps.pt", build_model(wide), wide),
        extra / "linear-resnet18-imagenet.pt",
        root / "torch-with-weights",
    )
    fake_resnet18_weights(w.torch_weights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(w.torch_weights))
        mc = ModelConfig("linear", class_names=("ants", "bees"))
        save_checkpoint(w.resnet18_imagenet, build_model(mc), mc)
    return w


def state_setup(w: World, state: str) -> tuple[dict, dict]:
    """(environment, preset session state) of a state."""
    offline = {"QTL_OFFLINE": "1", "TORCH_HOME": str(w.empty), "QTL_MODELS_DIR": str(w.models)}
    env = {**offline, "QTL_DATA_DIR": str(w.ants_bees)}
    shipped = sorted(str(p.resolve()) for p in w.models.glob("*.pt"))
    if state == "fresh_offline":  # fresh: no dataset, and no upload (other tests' are in the shared cache)
        return {**offline, "QTL_DATA_DIR": str(w.empty), "QTL_CACHE_DIR": str(w.root / "fresh-cache")}, {}
    if state == "weights_present":
        return {**env, "TORCH_HOME": str(w.torch_weights)}, {"loaded": [str(w.resnet18_imagenet), *shipped]}
    if state == "demo":
        return {**env, "QTL_DEMO": "1"}, {}
    if state == "no_checkpoints":
        return {**env, "QTL_MODELS_DIR": str(w.empty)}, {}
    if state == "three_class":  # Noise starts on the shipped pair (ideal, noisy): this one picked too
        picked = ["quantum-three-class", "quantum-efficientnet_lite0-imagenet-q4d6-s0"]
        return env, {"loaded": [str(w.three_class), *shipped], "noise_models": picked}
    if state == "mps64":
        return env, {
            "loaded": [str(w.mps64), *shipped],
            "circ_model": "quantum-wide-q64d2-mps",
            "hw_model": "quantum-wide-q64d2-mps",
        }
    if state == "noise_model":
        return env, {"loaded": [str(w.models / NOISY)]}
    if state == "corrupt_file":
        models = w.root / "models-with-a-corrupt-file"
        if not models.is_dir():
            shutil.copytree(w.models, models)
            (models / "broken.pt").write_bytes(b"PK\x03\x04 half a zip")
        return {**env, "QTL_MODELS_DIR": str(models)}, {}
    if state == "missing_weights":
        return env, {"loaded": [str(w.resnet18_imagenet), *shipped]}
    return env, {}


_current: list[str] = []  # the state the Streamlit caches were filled in


@pytest.fixture
def in_state(world, monkeypatch):
    """Enter a state: its environment, fresh Streamlit caches when the state changed, and no shared
    ImageNet resnet18 where its weights are not here."""

    def enter(state: str) -> dict:
        env, preset = state_setup(world, state)
        for key in ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if _current != [state]:
            st.cache_data.clear()
            st.cache_resource.clear()
            _current[:] = [state]
        # a copy, restored after the test: the ImageNet resnet18 that weights_present builds from this
        # module's fake weights file must not serve later tests (they expect those weights missing)
        kept = {
            k: v
            for k, v in backbones._SHARED.items()
            if state == "weights_present" or not (k[0] == "resnet18" and k[1] != "random")
        }
        monkeypatch.setattr(backbones, "_SHARED", kept)
        return {"cmp_eval": True, **preset}  # Compare evaluates too: its scoring path in every state

    return enter


def alerts(at) -> list[str]:
    return [e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind)]


def expect(state: str, page: str, at) -> None:
    """What each state must show on the pages that cannot fully serve it (or that it exercises)."""
    shown = "\n".join(alerts(at))
    side = texts(at.sidebar.caption) + texts(at.sidebar.markdown)
    if page == "experiments":  # the shipped studies are browsable in every state, offline included
        assert "finished runs" in texts(at.markdown), shown
    if page == "data":  # every page draws the sidebar, the Data page without a dataset too (it stopped)
        assert "Active configuration" in side, (state, side)
    if state == "fresh_offline" and page == "overview":  # the drawing's last box names what comes out
        assert 'out [label="class probabilities"' in at.get("graphviz_chart")[0].proto.spec
    if state == "fresh_offline" and page == "overview":
        assert "Dataset missing" in shown and "Using the bundled pretrained backbone" in shown
    if state == "fresh_offline" and page in ("noise", "compare", "hardware"):
        assert "no dataset on disk to score it on" in shown and "upload one on the Data page" in shown
    if state == "weights_present" and page == "overview":
        assert "ImageNet weights cached" in shown and "resnet18 (ImageNet" in side
    if state == "missing_weights" and page == "classify":
        assert "resnet18-imagenet.pt` could not be loaded: ImageNet weights for resnet18 are not" in side
    if state == "corrupt_file" and page == "checkpoints":
        assert "`broken.pt` is not listed" in shown
    if state == "corrupt_file" and page == "classify":
        assert "`broken.pt` could not be loaded" in side
    if state == "mps64" and page == "noise":
        assert "quantum-wide-q64d2-mps" in shown and "64-qubit circuit is too wide" in shown
    if state == "mps64" and page == "hardware":
        assert "hardware runs count up to 16 measured qubits" in shown and "the circuit has 64" in shown
    if state == "mps64" and page == "circuit":
        assert "too many to draw legibly" in texts(at.markdown)
    if state == "three_class" and page in ("noise", "compare"):
        assert "quantum-three-class" in shown and "predicts ['a', 'b', 'c']" in shown
    if state == "no_checkpoints" and page in ("classify", "compare"):
        assert "No checkpoint is loaded" in shown
    if state == "noise_model" and page == "noise":
        assert "trained with dep 0.1" in texts(at.caption)
    if page == "classify" and state not in ("no_checkpoints",):
        answers = [m.value for m in at.markdown if "→" in m.value]
        assert len(answers) == 1, shown  # the uploaded image, answered by every loaded model


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("state", STATES)
def test_page_in_state(in_state, state, page):
    """The page renders in the state with no exception; every message is one line, none a traceback."""
    preset = in_state(state)
    at = app(page, preset)
    if page == "classify":
        at.file_uploader(key="cls_upload").set_value([("bee.png", png((200, 170, 40)), "image/png")])
        at.run()
    assert not at.exception, (state, page, [e.value for e in at.exception])
    assert at.title, f"{page} has no title in {state}"
    for message in alerts(at) + [c.value for c in at.sidebar.caption]:
        assert "Traceback" not in message and "\n" not in message.strip(), (state, page, message)
    expect(state, page, at)


@pytest.mark.parametrize("page", ["train", "overview"])
def test_training_that_fails_says_why_once(in_state, page):
    """Fresh and offline, no dataset: training from the Train form or the Overview's button fails, and
    the page says why in one line; it also showed a TypeError (the failed job's traceback read as its
    list of saved runs), and repeated it in the server log every second."""
    at = app(page, in_state("fresh_offline"))
    at.button[0].click().run()
    wait_for_job(at)
    assert not at.exception, [e.value for e in at.exception]
    (failed,) = [e.value for e in at.error if e.value.startswith("Training failed")]
    assert "\n" not in failed.strip() and "Traceback" not in failed


def test_new_sessions_load_every_shipped_checkpoint_after_training(world, in_state, tmp_path, monkeypatch):
    """Local mode after a user trained 8 models: a new session loads the 6 newest of them, newest first,
    and every shipped checkpoint (models/SHIPPED), which used to drop out of the 6 newest files."""
    import os

    models = tmp_path / "models"
    shutil.copytree(world.models, models)
    mc = ModelConfig("linear", pretrained=False, class_names=("ants", "bees"))
    model = build_model(mc)
    mine = [save_checkpoint(models / f"linear-mine-{i}.pt", model, mc) for i in range(8)]
    for i, path in enumerate(mine):  # trained after the shipped files were checked out
        os.utime(path, (2e9 + i, 2e9 + i))
    preset = in_state("offline_dataset")
    monkeypatch.setenv("QTL_MODELS_DIR", str(models))
    monkeypatch.delenv("QTL_AUTOLOAD", raising=False)  # the default: new sessions load models/
    at = app("overview", {k: v for k, v in preset.items() if k != "loaded"})
    names = [Path(p).name for p in at.session_state["loaded"]]
    shipped = [n for n in (REPO / "models" / "SHIPPED").read_text().split() if n.endswith(".pt")]
    assert names == [f"linear-mine-{i}.pt" for i in range(7, 1, -1)] + shipped


def test_first_page_paints_without_loading_torch(world):
    """A fresh server's first page, the Overview (offline, ImageNet weights missing: the bundled
    fallback named), renders in a fresh interpreter without importing torch, torchvision or timm: it
    waits for none of them (seconds on 2 cores); the pages that run models load them."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from streamlit.testing.v1 import AppTest;"
        f"at = AppTest.from_file({str(REPO / 'app.py')!r}, default_timeout=60); at.run();"
        "assert not at.exception, at.exception;"
        "assert 'Using the bundled pretrained backbone' in ' '.join(i.value for i in at.info);"
        "print([m for m in ('torch', 'torchvision', 'timm') if m in sys.modules])"
    )
    env_vars, _ = state_setup(world, "fresh_offline")
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS} | env_vars
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.split("\n")[-2] == "[]", out.stderr[-2000:]
