"""The Data page and the whole own-images flow, in AppTest: upload a zip of 3 class folders, make it the
active dataset, train quantum and linear on it, classify an image and see every model's heatmap."""

from __future__ import annotations

import io
import re
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import make_class_folders, zip_folder
from test_app import app, app_env, texts, ui_module, wait_for_job  # noqa: F401  (app_env is a fixture)


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


def active_upload(tmp_path: Path, name: str) -> tuple:
    """The Data page after uploading a zip of 2 classes x 5 images as `name` and making it the active
    dataset: (the app, its folder)."""
    data = zip_folder(make_class_folders(tmp_path / "src", 2, 5), tmp_path / name).read_bytes()
    at = app("data")
    upload(at, name, data)
    at.button(key="data_use").click().run()
    return at, Path(at.session_state["data_dir"])


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
        assert root.exists() and "This cannot be undone" in texts(at.warning)  # asked first
        at.button(key="data_confirm").click().run()
        assert not root.exists() and not at.exception

    def test_delete_asks_first_and_is_refused_while_a_job_trains_on_it(self, app_env, tmp_path, monkeypatch):  # noqa: F811
        """Delete removed an uploaded dataset at once, even the one a training job was training on: the
        job then failed ("ImageLoadError: no image in .../train can be decoded any more"). It now asks
        first, and is refused in one line while a job of the server's runner trains on that folder."""
        import qtl.experiments.runs as runs_module

        go = threading.Event()
        real_fit = runs_module.fit

        def held_fit(*args, **kwargs):  # the job trains on the dataset until the test lets it go
            assert go.wait(60), "never let go"
            return real_fit(*args, **kwargs)

        monkeypatch.setattr(runs_module, "fit", held_fit)
        at, root = active_upload(tmp_path, "held.zip")
        at.switch_page("app_pages/train.py").run()
        at.multiselect(key="train_variants").set_value(["linear"])
        at.number_input(key="train_epochs").set_value(1)
        at.button[0].click().run()
        assert not at.exception and not at.error, texts(at.error)
        try:
            at.switch_page("app_pages/data.py").run()
            assert at.session_state["data_pick"] == str(root)
            at.button(key="data_delete").click().run()
            assert not at.exception, at.exception
            (refused,) = [w.value for w in at.warning if "Cannot delete" in w.value]
            assert re.search(r"your job 'train linear' is (running|queued) on it", refused), refused
            assert "data_confirm" not in [b.key for b in at.button] and root.is_dir()
        finally:
            go.set()
        wait_for_job(at)
        job = ui_module().runner().get(at.session_state["job_id"])
        assert job.snapshot().state == "done", job.snapshot().error

        at.button(key="data_delete").click().run()  # the job has finished: asked, then kept or deleted
        assert "Delete **held" in texts(at.warning) and root.is_dir()
        at.button(key="data_keep").click().run()
        assert root.is_dir() and "data_confirm" not in [b.key for b in at.button]
        at.button(key="data_delete").click().run()
        at.button(key="data_confirm").click().run()
        assert not at.exception and not root.exists() and at.session_state["data_dir"] is None

    def test_a_sweep_on_the_active_dataset_keeps_it_from_being_deleted(self, app_env, tmp_path, monkeypatch):  # noqa: F811
        """A sweep of the Experiments page runs on the active dataset through the same runner: Delete is
        refused while it runs, as for a training job."""
        from qtl.experiments import executors

        go, real = threading.Event(), executors.train_run

        def held(run, **kwargs):
            assert go.wait(60), "never let go"
            return real(run, **kwargs)

        monkeypatch.setattr(executors, "train_run", held)
        monkeypatch.setenv("QTL_RESULTS_DB", str(tmp_path / "results.db"))  # no sweep left to other tests
        at, root = active_upload(tmp_path, "swept.zip")
        at.switch_page("app_pages/experiments.py").run()
        at.text_input(key="exp_name").set_value("kept")
        at.multiselect(key="exp_variants").set_value(["linear"])
        at.multiselect(key="exp_seeds").set_value([0])
        at.number_input(key="exp_epochs").set_value(1)
        at.button[0].click().run()
        assert not at.exception and not at.error, texts(at.error)
        job = ui_module().runner().get(at.session_state["exp_job_id"])
        try:
            at.switch_page("app_pages/data.py").run()
            at.button(key="data_delete").click().run()
            assert re.search(r"your job 'sweep kept' is (running|queued) on it", texts(at.warning))
            assert "data_confirm" not in [b.key for b in at.button] and root.is_dir()
        finally:
            go.set()
        assert job.wait(120) and job.snapshot().state == "done", job.snapshot().error
