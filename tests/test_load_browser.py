"""Two visitors at once on one served demo app, in real Chromium contexts: each uploads a checkpoint and
classifies images, and neither sees the other's upload (AppTest runs one session; only a real server
shares its process, caches and models/ among sessions). bench/load_app.py is the full-size version."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_image_folder

from qtl.config import ModelConfig
from qtl.models.checkpoint import save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.testing.served_app import Server, ServerError, chromium_missing, offline_env
from qtl.testing.visitors import upload_name, visit_all


@pytest.mark.e2e
def test_two_sessions_classify_at_once_and_see_only_their_own_uploads(tmp_path):
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    data = make_image_folder(tmp_path / "tiny")
    shipped = ModelConfig("linear", pretrained=False, class_names=("cats", "dogs"))
    save_checkpoint(tmp_path / "models" / "linear-shipped.pt", build_model(shipped), shipped)
    mine = ModelConfig("quantum", pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(2, 1))
    upload = save_checkpoint(tmp_path / "upload.pt", build_model(mine), mine).read_bytes()
    images = [p.read_bytes() for p in sorted((data / "val").rglob("*.png"))]
    env = offline_env(tmp_path, QTL_DATA_DIR=str(data), QTL_MODELS_DIR=str(tmp_path / "models"), QTL_DEMO="1")
    with Server(env, tmp_path / "streamlit.log") as server:
        try:
            server.wait_healthy()
        except ServerError as exc:
            pytest.fail(str(exc))
        visits = asyncio.run(visit_all(server.url, 2, upload, images, 3.0, {"linear-shipped"}))
        log = server.log_tail(20_000)
    for v in visits:
        assert not v.errors, (v.visitor, v.errors)
        assert v.latencies and not v.foreign
        assert v.models == {"linear-shipped", upload_name(v.visitor).removesuffix(".pt")}
        assert v.checkpoints == [upload_name(v.visitor)]
    assert "Traceback" not in log
