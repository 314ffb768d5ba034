"""Checkpoint files in the app: deleting where the folder is read-only, uploads that share a shipped
checkpoint's name, uploads that do not load, upload names in any script, and histories that lack a curve.

Checkpoints are written directly (`save_checkpoint` of a random-init linear model), not trained, so each
test takes seconds; the app runs with streamlit.testing.v1.AppTest (no browser).
"""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
from pathlib import Path

import pyarrow
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import app, app_env, texts  # noqa: F401  (app_env is a fixture)

SHIPPED_NAME = "linear-resnet18-imagenet-s0.pt"  # a shipped-looking name
HISTORY = [
    {"epoch": e, "train_loss": 0.7 - 0.1 * e, "train_acc": 0.5 + 0.1 * e, "val_loss": 0.8 - 0.1 * e,
     "val_acc": 0.5 + 0.05 * e}
    for e in (1, 2)
]  # fmt: skip


def make_checkpoint(path: Path, seed: int = 0, history=HISTORY) -> Path:
    """A linear checkpoint on the random-init backbone (loads offline), its head seeded by `seed`."""
    import torch

    from qtl.config import ModelConfig
    from qtl.models.checkpoint import save_checkpoint
    from qtl.models.variants import build_model

    torch.manual_seed(seed)
    mc = ModelConfig("linear", pretrained=False, class_names=("cats", "dogs"))
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"epoch": len(history), "val_acc": 0.6, "val_loss": 0.6} if history else {}
    return save_checkpoint(path, build_model(mc), mc, history=history, metrics=metrics)


def png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def every_run_table(at: AppTest):
    """Compare's "Every run" table: one row per loaded model, its label in "model"."""
    (table,) = [
        d.value for d in at.dataframe if "model" in d.value.columns and "checkpoint" in d.value.columns
    ]
    return table


class TestDelete:
    def test_a_read_only_folder_offers_no_delete(self, app_env, monkeypatch):  # noqa: F811
        """A models folder that takes no changes: Delete is disabled and says why.

        The folder is made read-only with chmod. Root writes past permissions (and `os.access` says so),
        so when the tests run as root the read-only mount is simulated: `os.access` answers False for
        that folder, as it does for root on a read-only file system."""
        models = make_checkpoint(app_env / "ro" / "a.pt").parent
        monkeypatch.setenv("QTL_MODELS_DIR", str(models))
        models.chmod(0o555)
        try:
            if os.geteuid() == 0:
                real = os.access
                ro = str(models.resolve())

                def access(path, mode, *args, **kwargs):
                    if mode & os.W_OK and str(Path(path).resolve()) == ro:
                        return False
                    return real(path, mode, *args, **kwargs)

                monkeypatch.setattr(os, "access", access)
            at = app("checkpoints")
            delete = at.button(key="ckpt_delete_models/")
            assert delete.disabled and "read-only" in delete.help
            assert at.button(key="ckpt_load_models/")  # the rest of the page still works
        finally:
            models.chmod(0o755)

    def test_a_delete_the_disk_refuses_keeps_the_model_and_says_why(self, app_env, monkeypatch):  # noqa: F811
        """The folder looked writable, but removing the file fails (a mount turned read-only since, an
        immutable file): one st.error line, no traceback, the file and its loaded model stay.

        Simulated by making `Path.unlink` of that one file raise OSError(EROFS), as a read-only mount
        does whoever runs the tests (root included)."""
        victim = make_checkpoint(app_env / "refuses" / "b.pt").resolve()
        monkeypatch.setenv("QTL_MODELS_DIR", str(victim.parent))
        real = pathlib.Path.unlink

        def unlink(self, *args, **kwargs):
            if Path(self).resolve() == victim:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "unlink", unlink)
        at = app("checkpoints", {"loaded": [str(victim)]})
        assert at.button(key="ckpt_delete_models/").disabled is False
        at.button(key="ckpt_delete_models/").click().run()
        at.button(key="ckpt_confirm_models/").click().run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == ["Cannot delete `b.pt`: Read-only file system."]
        assert victim.exists() and at.session_state["loaded"] == [str(victim)]
        at.run()  # said once, not on every later run
        assert not at.error and at.session_state["loaded"] == [str(victim)]


class TestUploads:
    def test_an_upload_named_like_a_shipped_checkpoint_hides_no_model(self, app_env, monkeypatch):  # noqa: F811
        """Demo: another linear checkpoint uploaded under a shipped one's file name is stored under a free
        name, and Compare and Classify show both models, each with its own answers."""
        shipped = make_checkpoint(app_env / "shipped" / SHIPPED_NAME, seed=0)
        other = make_checkpoint(app_env / "elsewhere" / SHIPPED_NAME, seed=1)
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_AUTOLOAD", "1")
        monkeypatch.setenv("QTL_MODELS_DIR", str(shipped.parent))
        at = app("checkpoints")
        assert at.session_state["loaded"] == [str(shipped.resolve())]
        at.file_uploader(key="ckpt_upload").set_value(
            (SHIPPED_NAME, other.read_bytes(), "application/octet-stream")
        )
        at.run()
        assert not at.exception, at.exception
        stored = [p.name for p in Path(at.session_state["session_dir"]).glob("*.pt")]
        assert stored == ["linear-resnet18-imagenet-s0-2.pt"]
        assert len(at.session_state["loaded"]) == 2
        at.switch_page("app_pages/compare.py").run()
        assert not at.exception, at.exception
        assert sorted(every_run_table(at)["model"]) == [
            "linear-resnet18-imagenet-s0",
            "linear-resnet18-imagenet-s0-2",
        ]
        at.switch_page("app_pages/classify.py").run()
        at.file_uploader(key="cls_upload").set_value(("x.png", png(), "image/png"))
        at.run()
        assert not at.exception, at.exception
        answers = [line for m in at.markdown for line in m.value.splitlines() if "→" in line]
        assert [a.split("`")[1] for a in answers] == [
            "linear-resnet18-imagenet-s0",
            "linear-resnet18-imagenet-s0-2",
        ]

    def test_two_loaded_files_of_one_name_both_show(self, app_env):  # noqa: F811
        """Files of one name in two folders, both loaded: neither hides the other; the later is "(2)"."""
        first = make_checkpoint(app_env / "one" / "same.pt", seed=0).resolve()
        second = make_checkpoint(app_env / "two" / "same.pt", seed=1).resolve()
        at = app("compare", {"loaded": [str(first), str(second)]})
        table = every_run_table(at)
        assert list(table["model"]) == ["linear · same", "linear · same (2)"]
        assert sorted(table["checkpoint"].map(lambda p: str(Path(p).resolve()))) == sorted(
            [str(first), str(second)]
        )

    def test_an_upload_that_does_not_load_leaves_no_file(self, app_env, tmp_path):  # noqa: F811
        """A valid checkpoint whose ImageNet weights are not here (offline) is rejected, and removed: no
        file stays listed, and uploading it again adds none (no X-2.pt, X-3.pt ...)."""
        import torch

        source = make_checkpoint(tmp_path / "src.pt")
        payload = torch.load(source, weights_only=True)
        payload["model_config"]["pretrained"] = True  # needs resnet18's ImageNet weights: none offline
        payload["backbone"]["weights"] = "IMAGENET1K_V1"
        buf = io.BytesIO()
        torch.save(payload, buf)
        models = app_env / "models"
        for _ in range(2):
            at = app("checkpoints")
            at.file_uploader(key="ckpt_upload").set_value(
                ("r18.pt", buf.getvalue(), "application/octet-stream")
            )
            at.run()
            assert not at.exception, at.exception
            assert "r18.pt was rejected" in texts(at.error) and not at.success
            assert not list(models.glob("r18*")) and at.session_state["loaded"] == []
            assert not at.dataframe  # nothing listed

    def test_upload_names_keep_letters_of_any_script(self, app_env, tmp_path):  # noqa: F811
        """A name in another script keeps its letters; separators, "..", a leading dot, control characters
        and symbols still go."""
        from qtl.models.store import safe_name

        assert safe_name("mon modèle ünï 🐝.pt") == "mon_modèle_ünï.pt"
        assert safe_name("日本語のモデル.pt") == "日本語のモデル.pt"
        assert safe_name("mode\u0301le.pt") == "modéle.pt"  # a combining accent: composed first
        assert safe_name("../../etc/a b.pt") == "a_b.pt"
        assert safe_name("..\\..\\x.pt") == "x.pt"
        assert safe_name(".hidden.pt") == "hidden.pt"
        assert safe_name("..") == "checkpoint.pt"
        assert safe_name("a\x00b\nc\x1b[0m\u202e.pt") == "a_b_c_0m.pt"
        assert len(safe_name("𝔘" * 100).encode()) <= 200  # file systems count bytes
        good = make_checkpoint(tmp_path / "good.pt").read_bytes()
        at = app("checkpoints")
        at.file_uploader(key="ckpt_upload").set_value(
            ("mon modèle ünï 🐝.pt", good, "application/octet-stream")
        )
        at.run()
        assert not at.exception, at.exception
        assert (app_env / "models" / "mon_modèle_ünï.pt").is_file()
        assert "as `mon_modèle_ünï.pt`" in texts(at.success)
        (app_env / "models" / "mon_modèle_ünï.pt").unlink()


class TestCurves:
    def test_a_history_without_train_loss_is_drawn_and_said(self, app_env):  # noqa: F811
        """Compare with a checkpoint whose history has no train_loss / train_acc (hand-made or older):
        the val curves are drawn, the chart says in one line what is not recorded, and nothing fails."""
        partial = [
            {"epoch": 1, "val_loss": 0.7, "val_acc": 0.6},
            {"epoch": 2, "val_loss": 0.6, "val_acc": 0.7},
        ]
        bare = make_checkpoint(app_env / "curves" / "bare.pt", history=partial).resolve()
        full = make_checkpoint(app_env / "curves" / "full.pt", seed=1).resolve()
        at = app("compare", {"loaded": [str(bare), str(full)]})
        charts = at.get("vega_lite_chart")
        specs = [json.loads(c.proto.spec) for c in charts]
        titles = {
            s["title"]["text"]: s["title"].get("subtitle") for s in specs if isinstance(s.get("title"), dict)
        }
        assert titles == {
            "cross-entropy loss": "not recorded: train_loss (linear · bare)",
            "accuracy": "not recorded: train_acc (linear · bare)",
        }
        for chart in charts[:2]:  # what the histories have: bare's val curve, full's train and val
            (data,) = chart.proto.datasets
            rows = pyarrow.ipc.open_stream(data.data.data).read_all().to_pylist()
            drawn = sorted({(r["run"], r["split"]) for r in rows})
            assert drawn == [("linear · bare", "val"), ("linear · full", "train"), ("linear · full", "val")]
            assert len(rows) == 6
