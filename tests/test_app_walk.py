"""Findings of a browser walkthrough of the app, each checked in AppTest: a typed timm model timm does not
know, the sweep's dataset, the active dataset across a reload, the default results database, number
formatting, the job log, demo labels, the Noise page's default pair and the Overview after a failed
download."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_class_folders, make_image_folder, zip_folder
from streamlit.testing.v1 import AppTest
from test_app import APP, app, app_env, texts, ui_module  # noqa: F401  (app_env is a fixture)


class TestUnknownTimmBackbone:
    def test_refused_on_the_form_no_job_other_pages_fine(self, app_env):  # noqa: F811
        """A timm name timm does not know is refused by the form with one line; the backbone before is
        kept, no job is queued, and the other pages still render (a ValueError traceback replaced them)."""
        at = app("train")
        before = at.session_state["config"]["backbone"]
        box = at.selectbox(key="train_backbone")
        box.options.append("timm/does_not_exist_model")  # typed: the browser sends the string, as here
        box.set_value("timm/does_not_exist_model")
        at.button[0].click().run()
        assert not at.exception, at.exception
        assert "Cannot use this backbone: unknown timm model 'does_not_exist_model'" in texts(at.error)
        assert at.session_state["config"]["backbone"] == before
        assert at.session_state["job_id"] is None
        for page in ("overview", "circuit", "train"):
            at.switch_page(f"app_pages/{page}.py").run()
            assert not at.exception, (page, at.exception)
            assert not at.error, (page, texts(at.error))

    def test_a_known_model_with_an_unknown_tag_is_refused_alike(self, app_env):  # noqa: F811
        """timm knows resnet18 but has no weights tagged 'bogus_tag' (timm raises RuntimeError): the same
        one line, no traceback."""
        at = app("train")
        box = at.selectbox(key="train_backbone")
        box.options.append("timm/resnet18.bogus_tag")
        box.set_value("timm/resnet18.bogus_tag")
        at.button[0].click().run()
        assert not at.exception, at.exception
        assert "Cannot use this backbone: timm model 'resnet18.bogus_tag'" in texts(at.error)
        assert at.session_state["job_id"] is None

    def test_a_session_holding_one_falls_back_on_every_page(self, app_env):  # noqa: F811
        """Should a session's configuration hold such a name anyway, the pages that check its weights say
        so in one line and go back to the default backbone, with no traceback."""
        config = dict(app().session_state["config"], backbone="timm/does_not_exist_model", pretrained=True)
        at = app("overview", {"config": config})
        assert "Cannot use the backbone timm/does_not_exist_model" in texts(at.warning)
        assert at.session_state["config"]["backbone"] != "timm/does_not_exist_model"
        at.switch_page("app_pages/train.py").run()
        assert not at.exception, at.exception


class TestKeptChoices:
    def test_kept_widgets_log_no_session_state_warning(self, app_env, monkeypatch):  # noqa: F811
        """A page's picks survive a visit to another page without Streamlit's "created with a default value
        but also had its value set via the Session State API" (logged for data_ratio on every Data page
        run once kept choices were assigned before the page)."""
        from streamlit.elements.lib import policies

        logged = []
        monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # once per process
        monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: logged.append(msg % a))
        at = app("data")
        at.slider(key="data_ratio").set_value(0.3).run()
        at.number_input(key="data_seed").set_value(7).run()
        at.switch_page("app_pages/overview.py").run()
        at.switch_page("app_pages/data.py").run()
        at.run()
        assert not at.exception, at.exception
        assert at.slider(key="data_ratio").value == 0.3 and at.number_input(key="data_seed").value == 7
        assert not [m for m in logged if "default value" in m], logged


def ui_cache():
    """The app's ui.cache module, as the running app imported it."""
    ui_module()  # puts the repository on sys.path
    from ui import cache

    return cache


@pytest.fixture
def no_default_data(app_env, tmp_path, monkeypatch):  # noqa: F811
    """No dataset on disk but the ones uploaded in the test: qtl's default one (hymenoptera, in an empty
    cache) is not there; uploads go to that cache. Offline unless the test says otherwise."""
    monkeypatch.delenv("QTL_DATA_DIR")
    monkeypatch.setenv("QTL_CACHE_DIR", str(tmp_path / "cache"))
    cache = ui_cache()
    clear = (cache.dataset_status.clear, cache.dataset_classes.clear, cache.val_samples.clear)
    for f in clear:
        f()
    yield tmp_path
    for f in clear:
        f()


def upload_and_activate(at, folder: Path, name: str = "pets") -> str:
    """Upload a zip of 2 class folders on the Data page, make it active; returns its root."""
    src = make_class_folders(folder / name, 2, 6)
    data = zip_folder(src, folder / f"{name}.zip").read_bytes()
    at.file_uploader(key="data_upload").set_value([(f"{name}.zip", data, "application/zip")]).run()
    assert not at.exception and not at.error, texts(at.error)
    at.button(key="data_use").click().run()
    return at.session_state["data_dir"]


def wait_for(at, key: str, timeout: float = 120) -> None:
    job = ui_module().runner().get(at.session_state[key])
    assert job is not None and job.wait(timeout), "the job did not finish"
    at.run()


class TestActiveDataset:
    def test_survives_a_reload(self, no_default_data):
        """The active dataset is named in the address (?data=<its folder>), so a reload (a new session on
        that address) makes it active again; a name no upload has is dropped."""
        at = app("data")
        root = upload_and_activate(at, no_default_data)
        assert at.query_params.get("data") == Path(root).name
        at.switch_page("app_pages/compare.py").run()
        assert at.query_params.get("data") == Path(root).name  # kept through a page change

        fresh = AppTest.from_file(APP, default_timeout=90)
        fresh.query_params["data"] = Path(root).name
        fresh.run()
        assert not fresh.exception and fresh.session_state["data_dir"] == root
        assert f"data: {Path(root).name}" in texts(fresh.sidebar.markdown)

        other = AppTest.from_file(APP, default_timeout=90)
        other.query_params["data"] = "../../etc"
        other.run()
        assert not other.exception and other.session_state["data_dir"] is None
        assert "data" not in other.query_params

    def test_not_in_the_address_in_demo_mode(self, no_default_data, monkeypatch):
        """Demo mode: a visitor's uploads are their session's alone, so the address never names one (a
        reload could not find it, and the name of the visitor's file would travel in links)."""
        monkeypatch.setenv("QTL_DEMO", "1")
        at = app("data")
        root = upload_and_activate(at, no_default_data)
        assert root and "data" not in at.query_params

    def test_sweep_runs_on_it(self, no_default_data):
        """The form names the active dataset and the sweep runs on it (it ran on qtl's default dataset and
        failed offline with the command line's advice)."""
        at = app("data")
        root = upload_and_activate(at, no_default_data)
        at.switch_page("app_pages/experiments.py").run()
        assert f"Runs on **{Path(root).name}**, the active dataset" in texts(at.caption)
        at.text_input(key="exp_name").set_value("walk-data")
        at.multiselect(key="exp_variants").set_value(["linear"])
        at.multiselect(key="exp_seeds").set_value([0])
        at.number_input(key="exp_epochs").set_value(1)
        next(b for b in at.button if b.label == "Run sweep").click().run()
        assert not at.exception and not at.error, texts(at.error)
        wait_for(at, "exp_job_id")
        assert not at.error, texts(at.error)
        assert "walk-data: 1 run(s) trained" in texts(at.success)
        from qtl.experiments.database import ResultsDB
        from qtl.paths import results_db

        with ResultsDB(results_db(), readonly=True) as db:
            (row,) = db.rows("walk-data")
        assert Path(row["dataset"]).name == Path(root).name

    def test_without_one_the_sweep_says_what_to_do_in_the_app(self, no_default_data):
        at = app("experiments")
        assert "No dataset on disk to run on: upload one on the Data page" in texts(at.caption)
        next(b for b in at.button if b.label == "Run sweep").click().run()
        said = texts(at.error)
        assert "Cannot run this sweep: no dataset on disk" in said and "--data" not in said
        assert at.session_state["exp_job_id"] is None


@pytest.fixture(scope="module")
def orphan(app_env, tmp_path_factory):  # noqa: F811
    """A linear checkpoint (1 epoch) whose dataset is gone: it is scored on the active dataset."""
    import shutil

    from qtl.config import MachineConfig, ModelConfig
    from qtl.experiments.runs import plan_runs
    from qtl.training.fit import fit

    root = tmp_path_factory.mktemp("orphan")
    data = make_image_folder(root / "gone")
    base = ModelConfig(pretrained=False, class_names=("cats", "dogs"))
    machine = MachineConfig(data_dir=str(data))
    (run,) = plan_runs(["linear"], base, [0], root / "models", epochs=1, machine=machine)
    saved = fit(run.model_config, run.train_config, run.machine, checkpoint_path=run.checkpoint_path)
    shutil.rmtree(data)
    return saved.checkpoint_path


class TestNoDatasetOnDisk:
    def test_compare_points_to_the_uploaded_datasets(self, no_default_data, orphan):
        """With qtl's default dataset not on disk and none active, Compare says to choose one of those
        uploaded (it said "add one", though they were listed on the Data page), without CLI advice."""
        at = app("data")
        src = make_class_folders(no_default_data / "pets", 2, 6)
        data = zip_folder(src, no_default_data / "pets.zip").read_bytes()
        at.file_uploader(key="data_upload").set_value([("pets.zip", data, "application/zip")]).run()
        at.session_state["loaded"] = [str(orphan)]
        at.switch_page("app_pages/compare.py").run()
        at.toggle(key="cmp_eval").set_value(True).run()
        assert not at.exception, at.exception
        said = texts(at.warning) + texts(at.error)
        assert "no dataset on disk to score it on" in said
        assert "choose one of the 1 uploaded dataset(s) on the Data page and make it active" in said
        assert "--data" not in said

    def test_overview_after_a_failed_download(self, no_default_data, monkeypatch):
        """Once this session's job failed to download the dataset, the Overview says so (it kept saying
        "downloadable ... downloaded on first use") and shows the failure once, without CLI advice."""
        monkeypatch.delenv("QTL_OFFLINE")
        at = app()
        assert "Dataset downloadable" in texts(at.info)
        error = (
            "could not download https://download.pytorch.org/tutorial/hymenoptera_data.zip: [Errno -3] "
            "Temporary failure in name resolution): put the dataset (train/ and val/ with one folder per "
            "class) in /x, or point to it with --data PATH or the QTL_DATA_DIR environment variable"
        )

        def fail(job):
            from qtl.data.folders import DatasetError

            raise DatasetError(f"cannot download the dataset ({error}")

        job = ui_module().runner().submit("quick start", fail, owner=at.session_state["session_id"])
        assert job.wait(10)
        at.session_state["job_id"] = job.id
        at.run()
        assert not at.exception, at.exception
        shown = texts(at.error) + texts(at.warning) + texts(at.info) + texts(at.markdown)
        assert "Dataset downloadable" not in shown
        assert "Dataset not downloaded" in texts(at.warning)
        assert "download failed in this session" in texts(at.warning)
        assert shown.count("Temporary failure in name resolution") == 2  # the status, and the job once
        assert "Training failed: the dataset could not be downloaded" in texts(at.error)
        assert "--data" not in shown and "QTL_DATA_DIR" not in shown
        assert [p.proto.text for p in at.get("progress")] == [""]  # not again on the job's progress bar

    def test_another_failure_is_no_failed_download(self, no_default_data, monkeypatch):
        """A job that failed for another reason while the dataset was still to be downloaded is said as
        itself: the dataset stays 'downloadable' and the error is not called a failed download."""
        monkeypatch.delenv("QTL_OFFLINE")
        at = app()

        def fail(job):
            raise RuntimeError("CUDA out of memory")

        job = ui_module().runner().submit("quick start", fail, owner=at.session_state["session_id"])
        assert job.wait(10)
        at.session_state["job_id"] = job.id
        at.run()
        assert not at.exception, at.exception
        assert "Dataset downloadable" in texts(at.info)
        assert "could not be downloaded" not in texts(at.error) and "CUDA out of memory" in texts(at.error)


class TestExperimentsDefault:
    def test_a_database_without_sweeps_is_not_the_default(self, app_env, tmp_path, monkeypatch):  # noqa: F811
        """A results database a Hardware run made (hardware runs, no sweeps) is not the page's default:
        the shipped study is (it showed "No sweeps yet")."""
        from qtl.experiments.database import ResultsDB

        monkeypatch.setenv("QTL_RESULTS_DB", str(tmp_path / "results.db"))
        ResultsDB(tmp_path / "results.db").close()  # created, as a Hardware run creates it
        at = app("experiments")
        assert not at.exception, at.exception
        assert at.selectbox(key="exp_db").value.startswith("study")
        assert "No sweeps yet" not in texts(at.info)


class TestNumbers:
    def test_checkpoint_table_rounds_val_acc_as_compare(self, orphan):
        """Checkpoints' "val acc" has 3 decimals as Compare's (it showed 0.9477124183006536)."""
        import dataclasses

        from qtl.models.checkpoint import read_checkpoint_info

        ui_module()
        from ui.tables import checkpoint_table

        info = dataclasses.replace(read_checkpoint_info(orphan), val_acc=0.9477124183006536)
        assert checkpoint_table([info], set())["val acc"].tolist() == [0.948]

    def test_diff_lab_shows_gradient_differences_in_scientific_notation(self, app_env):  # noqa: F811
        import json

        at = app("diff_lab")
        at.multiselect(key="lab_engines").set_value(["native"])
        at.multiselect(key="lab_qubits").set_value([2])
        at.number_input(key="lab_batch").set_value(4)
        at.button[0].click().run()
        assert not at.exception, at.exception
        columns = json.loads(at.dataframe[0].proto.columns)
        assert columns["max |grad − ref|"]["type_config"]["format"] == "%.1e"

    def test_one_epoch_is_singular(self, app_env, monkeypatch):  # noqa: F811
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_DEMO_MAX_EPOCHS", "1")
        at = app()
        said = texts(at.markdown)
        assert "`quantum` (1 epoch)" in said and "1 epochs" not in said


class TestDemoServerFiles:
    def test_files_that_are_not_shipped_are_not_called_shipped(self, orphan, tmp_path, monkeypatch):
        """Demo mode: models/ holding a checkpoint its SHIPPED manifest does not list (a model trained
        there, an upload) is "on the server (read-only)", not "shipped"; both are still loaded, as the
        README says."""
        import shutil

        models = tmp_path / "models"
        models.mkdir()
        shutil.copy(orphan, models / "linear-shipped.pt")
        shutil.copy(orphan, models / "my-linear.pt")
        (models / "SHIPPED").write_text("linear-shipped.pt\n")
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_MODELS_DIR", str(models))
        monkeypatch.setenv("QTL_AUTOLOAD", "1")
        at = app("checkpoints")
        assert not at.exception, at.exception
        headings = texts(at.subheader)
        assert "on the server (read-only)" in headings and "shipped" not in headings
        assert {Path(p).name for p in at.session_state["loaded"]} == {"linear-shipped.pt", "my-linear.pt"}
        (models / "my-linear.pt").unlink()
        assert "shipped (read-only)" in texts(app("checkpoints").subheader)


class TestNoiseDefaults:
    def test_one_ideal_one_noisy(self):
        """The Noise page starts on the best ideal and the best noisy quantum checkpoint, as its label says
        (it took the first two loaded: a 1-epoch run of the user's and an ideal one)."""
        from types import SimpleNamespace

        ui_module()
        from ui.noise import default_pair

        def model(noise: str, acc: float | None):
            config = SimpleNamespace(noise=SimpleNamespace(label=lambda: noise))
            return SimpleNamespace(model_config=config, metrics={"val_acc": acc})

        loaded = {
            "mine-1-epoch": model("ideal", 0.5),
            "shipped-ideal": model("ideal", 0.948),
            "shipped-noisy": model("dep 0.1", 0.954),
        }
        assert default_pair(loaded) == ["shipped-ideal", "shipped-noisy"]
        two = {k: loaded[k] for k in ("mine-1-epoch", "shipped-ideal")}
        assert default_pair(two) == ["shipped-ideal", "mine-1-epoch"]  # one kind: the best two
        assert default_pair({"old": model("ideal", None)}) == ["old"] and default_pair({}) == []

    def test_a_database_being_created_is_no_traceback(self, app_env, tmp_path, monkeypatch):  # noqa: F811
        """The results database a sweep that just started is creating (the file there, no tables yet):
        the page opens the shipped study, and that database says "No sweeps yet" (it raised "no such
        table: sweeps" while the test's own sweep started)."""
        (tmp_path / "results.db").write_bytes(b"")
        monkeypatch.setenv("QTL_RESULTS_DB", str(tmp_path / "results.db"))
        at = app("experiments")
        assert at.selectbox(key="exp_db").value.startswith("study")
        at.selectbox(key="exp_db").set_value("results database").run()
        assert not at.exception, at.exception
        assert "No sweeps yet" in texts(at.info)


def test_a_blank_heatmap_is_captioned_with_why():
    """Classify's caption of a heatmap with no evidence says why (a uniform tint read as a map); one with
    a map keeps its caption."""
    import numpy as np
    import torch
    from PIL import Image

    from qtl.analysis.explain import explain
    from qtl.config import ModelConfig
    from qtl.models.checkpoint import LoadedModel
    from qtl.models.variants import build_model
    from ui.widgets import explanation_caption

    mc = ModelConfig("linear", pretrained=False, class_names=("against", "for"))
    torch.manual_seed(0)
    loaded = LoadedModel(build_model(mc).eval(), mc, list(mc.class_names), [], {}, {})
    with torch.no_grad():  # ReLU features are >= 0: 'against' (-1 per feature) wins, with no evidence
        loaded.model.head.weight.copy_(torch.tensor([-1.0, -2.0]).repeat_interleave(512).view(2, 512))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    blank = explain(loaded, image, method="grad-cam")
    assert explanation_caption("m", blank).endswith(
        " · grad-cam · no positive Grad-CAM evidence for against; try saliency"
    )
    assert explanation_caption("m", explain(loaded, image, method="saliency")).endswith(" · saliency")
