"""The Data page and the whole own-images flow, in AppTest: upload a zip of 3 class folders, make it the
active dataset, train quantum and linear on it, classify an image and see every model's heatmap."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from conftest import make_class_folders, zip_folder
from test_app import app, app_env, texts, wait_for_job  # noqa: F401  (app_env is a fixture)


@pytest.fixture(scope="module")
def three_zip(tmp_path_factory) -> bytes:
    """3 colour classes x 6 images in a wrapping folder, with macOS junk and a text file."""
    tmp = tmp_path_factory.mktemp("three")
    src = make_class_folders(tmp / "src", 3, 6)
    extra = {"__MACOSX/shapes/._x": b"\x00", "shapes/notes.txt": b"hello"}
    return zip_folder(src, tmp / "shapes.zip", prefix="shapes/", extra=extra).read_bytes()


def upload(at, name: str, data: bytes):
    at.file_uploader(key="data_upload").set_value([(name, data, "application/zip")])
    return at.run()


class TestDataPage:
    def test_upload_summary_activate_train_classify_explain(self, app_env, three_zip):  # noqa: F811
        at = app("data")
        upload(at, "shapes.zip", three_zip)
        assert not at.exception and not at.error, texts(at.error)
        assert "3 classes, 18 images" in texts(at.success)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics == {"classes": "3", "images": "18", "train": "15", "val": "3"}
        table = at.dataframe[0].value
        assert list(table["class"]) == ["class_0", "class_1", "class_2"] and list(table["val"]) == [1, 1, 1]
        skipped = at.dataframe[1].value
        assert set(skipped["file"]) == {"__MACOSX", "shapes/notes.txt"}
        (grid,) = at.get("image")  # one grid of thumbnails: the first class only
        captions = [i.caption for i in grid.proto.imgs]
        assert len(captions) == 5 and all(c.startswith("0_") for c in captions)  # class_0's 5 train images

        at.button(key="data_use").click().run()
        root = at.session_state["data_dir"]
        assert Path(root).parent.name == "datasets" and "active dataset" in texts(at.success)
        assert f"data: {Path(root).name}" in texts(at.sidebar.markdown)

        at.switch_page("app_pages/train.py").run()
        at.multiselect(key="train_variants").set_value(["quantum", "linear"])
        at.number_input(key="train_n_qubits").set_value(2)
        at.number_input(key="train_depth").set_value(1)
        at.number_input(key="train_epochs").set_value(1)
        at.button[0].click().run()
        assert not at.exception and not at.error, texts(at.error)
        wait_for_job(at)
        assert "2 checkpoint(s) saved" in texts(at.success)

        at.switch_page("app_pages/classify.py").run()
        picker = at.multiselect(key="cls_samples")
        assert all("class_" in p for p in picker.options)  # val samples of the uploaded dataset
        picker.set_value([picker.options[0]]).run()
        assert not at.exception, at.exception
        answers = [m.value for m in at.markdown if "→" in m.value][0]
        assert "`quantum-" in answers and "`linear-" in answers
        captions = [c for im in at.get("image") for c in im.proto.imgs if "grad-cam" in c.caption]
        assert len(captions) == 2  # one heatmap per loaded model

    def test_hostile_zip_is_refused_and_nothing_is_kept(self, app_env):  # noqa: F811
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a/1.png", b"x")
            zf.writestr("../../evil.png", b"x")
        at = app("data")
        from ui.datasets import store

        before = sorted(store().iterdir()) if store().is_dir() else []
        upload(at, "evil.zip", buf.getvalue())
        assert not at.exception
        assert "evil.zip" in texts(at.error) and "leaves the target folder" in texts(at.error)
        assert (sorted(store().iterdir()) if store().is_dir() else []) == before

    def test_demo_keeps_uploads_private_and_capped(self, app_env, three_zip, monkeypatch):  # noqa: F811
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_DEMO_DATA_MB", "0")
        at = app("data")
        upload(at, "shapes.zip", three_zip)
        assert "more than the cap of 0.0 MB" in texts(at.error)
        monkeypatch.setenv("QTL_DEMO_DATA_MB", "5")
        at.slider(key="data_ratio").set_value(0.3).run()  # a new split: the upload is read again
        assert not at.error, texts(at.error)
        root = Path(at.session_state["data_pick"])
        assert root.parent == Path(at.session_state["session_dir"]) / "datasets"
        at.button(key="data_delete").click().run()
        assert not root.exists() and not at.exception
