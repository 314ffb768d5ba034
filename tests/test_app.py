"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest (no browser).

Every test runs the real entry point (app.py, st.navigation) on a tiny generated dataset with a
random-init backbone; checkpoints are trained with the library itself, once per module.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
import threading
import time
from pathlib import Path

import pyarrow
import pytest
from conftest import REPO, make_image_folder
from PIL import Image
from streamlit.testing.v1 import AppTest

APP = str(REPO / "app.py")
PAGES = [
    "overview",
    "data",
    "train",
    "checkpoints",
    "circuit",
    "classify",
    "compare",
    "noise",
    "hardware",
    "experiments",
    "diff_lab",
]
ENV_KEYS = (
    "QTL_DATA_DIR", "QTL_MODELS_DIR", "QTL_PRETRAINED", "QTL_DEMO", "QTL_OFFLINE", "QTL_AUTOLOAD",
    "QTL_RESULTS_DB",
)  # fmt: skip


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """Environment for the app: a tiny dataset, an empty models/ and random init, restored afterwards."""
    root = tmp_path_factory.mktemp("app")
    old = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update(
        QTL_DATA_DIR=str(make_image_folder(root / "tiny")),
        QTL_MODELS_DIR=str(root / "models"),
        QTL_PRETRAINED="0",
        QTL_OFFLINE="1",
        QTL_AUTOLOAD="0",
    )
    os.environ.pop("QTL_DEMO", None)
    os.environ.pop("QTL_RESULTS_DB", None)  # the app's default: models/results.db of its models folder
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def checkpoints(app_env) -> dict[str, Path]:
    """quantum (seeds 0 and 1), linear and finetuned, 1 epoch each, trained by the library into a folder."""
    from qtl.config import ModelConfig
    from qtl.experiments.runs import plan_runs
    from qtl.quantum.circuit import CircuitConfig
    from qtl.training.fit import fit

    base = ModelConfig(pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(3, 2))
    runs = plan_runs(["quantum"], base, [0, 1], app_env / "trained", epochs=1)
    runs += plan_runs(["linear", "finetuned"], base, [0], app_env / "trained", epochs=1)
    out = {}
    for run in runs:
        result = fit(run.model_config, run.train_config, run.machine, checkpoint_path=run.checkpoint_path)
        out[run.label.replace(" seed ", "-")] = result.checkpoint_path
    return out


def png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def app(page: str = "overview", state: dict | None = None) -> AppTest:
    """The app after one run of `page`, with session state preset from `state`.

    Every run executes app.py (session init with setdefault, st.navigation, the page, the sidebar);
    switch_page picks the page the way a click in the navigation does.
    """
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def ui_module():
    """The app's ui.server_jobs module, as the running app imported it (shares st.cache_resource objects)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from ui import server_jobs

    return server_jobs


def wait_for_job(at: AppTest, timeout: float = 90) -> None:
    """Rerun the app until this session's training job has finished (bounded)."""
    runner = ui_module().runner()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.get(at.session_state["job_id"])
        if job is not None and job.wait(0.5):
            at.run()
            return
        at.run()
    pytest.fail(f"training job did not finish within {timeout} s")


def train_with(at: AppTest, variants: list[str], epochs: int, seeds: str = "0", **numbers) -> None:
    """Fill the Train form (numbers: train_<key> number inputs, e.g. n_qubits=2), submit it and wait for
    the job to finish."""
    at.multiselect(key="train_variants").set_value(variants)
    for key, value in {"epochs": epochs, **numbers}.items():
        at.number_input(key=f"train_{key}").set_value(value)
    at.text_input(key="train_seeds").set_value(seeds)
    at.button[0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    wait_for_job(at)
    assert not at.exception, at.exception


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


class TestPages:
    @pytest.mark.parametrize("page", PAGES)
    def test_page_renders(self, app_env, page):
        """Every page renders without an exception, inside the entry point (navigation and sidebar)."""
        at = app(page)
        assert at.title, f"{page} has no title"
        assert "Active configuration" in texts(at.sidebar.markdown)

    def test_sidebar_shows_configuration_and_loaded_checkpoints(self, app_env, checkpoints):
        """The entry point's sidebar lists the active configuration and every loaded checkpoint."""
        at = app("circuit")
        assert "4 qubits, depth 6" in texts(at.sidebar.markdown)
        assert "None yet" in texts(at.sidebar.caption)
        at.session_state["loaded"] = [str(checkpoints["quantum-0"]), str(checkpoints["linear-0"])]
        at.run()
        sidebar = texts(at.sidebar.markdown)
        assert checkpoints["quantum-0"].name in sidebar and checkpoints["linear-0"].name in sidebar

    def test_overview_reports_offline_weights_and_dataset(self, app_env):
        """Offline without cached weights the overview says so and switches to random init; data is found."""
        at = app("overview")
        assert "ImageNet weights offline" in texts(at.warning)
        assert "Dataset found" in texts(at.success)
        toggle = at.toggle(key="ov_pretrained")
        assert toggle.value is False and toggle.disabled
        assert "random init" in texts(at.sidebar.markdown)

    def test_overview_offline_never_offers_the_dataset_download(self, app_env, monkeypatch):
        """QTL_OFFLINE=1 and no dataset at the default place: the overview says missing and where to put
        it, not "downloadable"."""
        monkeypatch.delenv("QTL_DATA_DIR")
        at = app("overview")
        errors = texts(at.error)
        assert "Dataset missing" in errors and "QTL_OFFLINE is set" in errors
        assert "downloadable" not in texts(at.info)


class TestChoicesKept:
    def test_a_pages_picks_survive_a_visit_to_another_page(self, app_env, checkpoints):
        """The Circuit page's model and the Noise page's sliders, set, then Overview, then back: as set
        (they were back at their defaults, the Noise page recomputed at p = 0)."""
        at = app("circuit", {"loaded": [str(checkpoints["quantum-0"])]})
        picked = at.selectbox(key="circ_model").options[1]
        at.selectbox(key="circ_model").set_value(picked).run()
        at.switch_page("app_pages/noise.py").run()
        at.slider(key="noise_dep1").set_value(0.1).run()
        at.switch_page("app_pages/overview.py").run()
        at.switch_page("app_pages/circuit.py").run()
        assert at.selectbox(key="circ_model").value == picked
        at.switch_page("app_pages/noise.py").run()
        assert at.slider(key="noise_dep1").value == 0.1 and not at.exception

    def test_every_choice_widget_of_a_page_is_kept_or_said_not_to_be(self):
        """Every keyed value widget of app_pages/ and ui/ is in KEPT_CHOICES or one of those its docstring
        leaves out (the sweep form, the device confirmation; widgets bound to the configuration are
        `bound` calls, not counted here); every kept key is drawn by some page."""
        import ast
        import re

        from ui.session import KEPT_CHOICES

        value_widgets = {"selectbox", "multiselect", "select_slider", "slider", "number_input", "toggle",
                         "checkbox", "text_input", "radio", "segmented_control", "pills"}  # fmt: skip
        literal, templates, prefixes = set(), set(), set()
        for path in [*(REPO / "app_pages").glob("*.py"), *(REPO / "ui").glob("*.py")]:
            source = path.read_text()
            prefixes |= set(re.findall(r'(?:image_inputs|noise_widgets)\("(\w+)"', source))
            for node in ast.walk(ast.parse(source)):
                name = getattr(getattr(node, "func", None), "attr", None)
                key = next((k.value for k in getattr(node, "keywords", []) if k.arg == "key"), None)
                if isinstance(node, ast.Call) and name in value_widgets and key is not None:
                    if isinstance(key, ast.Constant):
                        literal.add(key.value)
                    elif "{prefix}" in ast.unparse(key):
                        templates.add(ast.unparse(key)[2:-1])  # f'{prefix}_x' -> {prefix}_x
        drawn = literal | {t.replace("{prefix}", p) for t in templates for p in prefixes}
        form = {"exp_name", "exp_variants", "exp_qubits", "exp_depths", "exp_seeds", "exp_epochs",
                "exp_backbone", "exp_pretrained"}  # fmt: skip
        assert literal - form - {"hw_confirm"} <= set(KEPT_CHOICES)
        assert set(KEPT_CHOICES) <= drawn


class TestFallback:
    def test_every_page_names_the_same_backbone_and_weights(self, app_env, monkeypatch):
        """ImageNet weights wanted (QTL_PRETRAINED=1) but resnet18's are offline: a first visit straight to
        Classify already shows the bundled efficientnet_lite0 (ImageNet, bundled) and why; Overview's
        drawing, status and sidebar then say the same."""
        monkeypatch.setenv("QTL_PRETRAINED", "1")
        at = AppTest.from_file(APP, default_timeout=90)
        at.switch_page("app_pages/classify.py").run()
        assert not at.exception, at.exception
        label = "backbone: efficientnet_lite0 (ImageNet, bundled)"
        assert label in texts(at.sidebar.markdown)
        assert "resnet18's ImageNet weights are not available here" in texts(at.sidebar.caption)
        at.switch_page("app_pages/overview.py").run()
        assert not at.exception, at.exception
        assert label in texts(at.sidebar.markdown)
        assert "Using the bundled pretrained backbone" in texts(at.info)
        drawing = at.get("graphviz_chart")[0].proto.spec
        assert "efficientnet_lite0\\n(ImageNet, bundled, frozen)" in drawing
        assert at.toggle(key="ov_pretrained").value is True


class TestTrain:
    def test_form_trains_tiny_config(self, app_env):
        """Submitting the form trains in the background, saves a checkpoint to models/ and loads it."""
        at = app("train")
        train_with(at, ["quantum", "linear"], epochs=2, n_qubits=2, depth=1)
        saved = sorted(p.name for p in (app_env / "models").glob("*.pt"))
        assert [n.split("-")[0] for n in saved] == ["linear", "quantum"]
        assert "2 checkpoint(s) saved" in texts(at.success)
        assert sorted(Path(p).name for p in at.session_state["loaded"]) == saved
        job = ui_module().runner().get(at.session_state["job_id"]).snapshot()
        assert [(r["variant"], r["epoch"]) for r in job.records] == [
            ("quantum", 1),
            ("quantum", 2),
            ("linear", 1),
            ("linear", 2),
        ]
        assert all(r["grad_post_net"] > 0 for r in job.records)  # every epoch's gradient norms, live
        assert [r["grad_circuit"] is not None for r in job.records] == [True, True, False, False]
        assert len(at.get("vega_lite_chart")) == 3  # loss, accuracy and the gradient norms
        assert at.dataframe, "no summary table"

    def test_a_rerun_stopped_before_beating_the_file_is_not_counted_saved(self, app_env, monkeypatch):
        """The same settings trained again into the same file (planned within the same second: the
        Train page's names are stamped to the second) and stopped after an epoch leave the file to the
        first run (`checkpoint.earlier_best`): the summary said "1 checkpoint(s) saved" for a file this
        job never wrote."""
        import qtl.experiments.runs as runs_module
        from qtl.training.fit import Callback

        real_name = runs_module.checkpoint_name  # both runs planned in one second: one file name
        monkeypatch.setattr(runs_module, "checkpoint_name", lambda mc, seed, stamp: real_name(mc, seed, "T"))

        before = set((app_env / "models").glob("*.pt"))
        at = app("train")
        train_with(at, ["linear"], epochs=3, seeds="7")
        assert "Finished: 1 checkpoint(s) saved" in texts(at.success)
        paths = set((app_env / "models").glob("*.pt"))
        (path,) = paths - before
        kept = path.read_bytes()

        class StopAfterOne(Callback):
            def __init__(self, stop):
                self.stop = stop

            def on_epoch_end(self, p):
                self.stop.set()

        def stopped_fit(*args, callbacks=(), stop=None, **kwargs):
            stop = threading.Event()
            return real_fit(*args, callbacks=[*callbacks, StopAfterOne(stop)], stop=stop, **kwargs)

        real_fit = runs_module.fit
        monkeypatch.setattr(runs_module, "fit", stopped_fit)
        at.button[0].click().run()
        wait_for_job(at)
        assert not at.exception, at.exception
        summary = texts(at.success)
        assert "Finished: 0 checkpoint(s) saved" in summary, summary
        assert "1 run(s) stopped before beating the earlier run in their file; it keeps that run" in summary
        assert path.read_bytes() == kept and set((app_env / "models").glob("*.pt")) == paths
        assert str(path) in at.session_state["loaded"]

    def test_the_quick_start_after_a_refused_form(self, app_env):
        """A refused Train form leaves its values the active configuration: the quick start then raised
        IndexError on an empty variant list, and launched an engine setting the form had refused (a job
        that failed in the background). It now plans its own variants and refuses such a setting in one
        line, submitting nothing."""
        at = app("train")
        for key, value in {
            "train_engine": "default.qubit",
            "train_diff": "adjoint",
            "train_shots": 5,
        }.items():
            at.session_state[key] = value
        at.run()
        at.multiselect(key="train_variants").set_value([])
        at.button[0].click().run()
        assert texts(at.error) == "Cannot train this configuration: choose at least one variant"
        at.switch_page("app_pages/overview.py").run()
        at.button(key="ov_quick").click().run()
        assert not at.exception, at.exception
        assert texts(at.error).startswith(
            "Cannot start the quick start: diff_method='adjoint' needs exact simulation"
        ), texts(at.error)
        assert at.session_state["job_id"] is None
        at.session_state["config"] = dict(at.session_state["config"], engine="native", shots=0)
        at.run()
        at.button(key="ov_quick").click().run()  # the variant list still empty: its own three
        assert not at.exception and not at.error, texts(at.error)
        job = ui_module().runner().get(at.session_state["job_id"])
        job.cancel()
        wait_for_job(at)

    def test_backbone_takes_a_timm_name(self, app_env):
        """A timm model typed as timm/<model> (AppTest cannot type: the session is given it) stays offered
        and selected, and the form runs with it (here refused only for want of a variant)."""
        config = dict(app("train").session_state["config"])
        config.update(backbone="timm/resnet10t", pretrained=False, variants=[])
        at = app("train", {"config": config})
        assert not at.exception and not at.error, texts(at.error)
        box = at.selectbox(key="train_backbone")
        assert "timm/resnet10t" in box.options and box.value == "timm/resnet10t"
        at.button[0].click().run()
        assert not at.exception
        assert texts(at.error) == "Cannot train this configuration: choose at least one variant"

    def test_form_trains_a_wide_circuit_on_mps(self, app_env):
        """40 qubits: the native engine is refused with the reason, the MPS engine trains and saves it."""
        at = app("train")
        at.multiselect(key="train_variants").set_value(["quantum"])
        at.number_input(key="train_n_qubits").set_value(40)
        at.number_input(key="train_depth").set_value(1)
        at.number_input(key="train_epochs").set_value(1)
        at.button[0].click().run()
        assert "use engine 'mps'" in texts(at.error)
        at.selectbox(key="train_engine").set_value("mps")
        at.button[0].click().run()
        assert not at.exception and not at.error, texts(at.error)
        wait_for_job(at)
        from qtl.models.checkpoint import read_checkpoint_info

        (saved,) = (app_env / "models").glob("quantum*-q40d1-*.pt")  # the tiny-config test saved one too
        info = read_checkpoint_info(saved)
        assert info.n_qubits == 40 and info.model_config.engine == "mps"

    def test_offline_weights_switch_the_form_to_the_bundled_backbone(self, app_env):
        """Reached directly with ImageNet resnet18 asked for and its weights offline, the Train page falls
        back to the bundled pretrained efficientnet_lite0 (not random init) and says why."""
        at = app("train")
        at.session_state["config"] = dict(at.session_state["config"], backbone="resnet18", pretrained=True)
        at.run()
        assert not at.exception, at.exception
        c = at.session_state["config"]
        assert (c["backbone"], c["pretrained"]) == ("efficientnet_lite0", True)
        assert at.selectbox(key="train_backbone").value == "efficientnet_lite0"
        assert at.toggle(key="train_pretrained").value is True
        assert "resnet18's ImageNet weights are not available" in texts(at.caption)
        assert "efficientnet_lite0 (ImageNet, bundled)" in texts(at.sidebar.markdown)

    def test_bad_seed_is_a_clear_error(self, app_env):
        """A non-integer seed is reported on the page and nothing is submitted."""
        at = app("train")
        at.text_input(key="train_seeds").set_value("0, x")
        at.button[0].click().run()
        assert "seed 'x' is not an integer" in texts(at.error)
        assert at.session_state["job_id"] is None

    def test_second_request_is_refused_in_demo(self, app_env, monkeypatch):
        """In demo mode one run at a time: a request while another session's job runs is refused."""
        monkeypatch.setenv("QTL_DEMO", "1")
        release = threading.Event()
        blocker = ui_module().job_runner(0).submit("someone else's run", lambda job: release.wait(30))
        try:
            at = app("train")
            at.button[0].click().run()
            assert "refused" in texts(at.warning) and "someone else's run" in texts(at.warning)
            assert at.session_state["job_id"] is None
        finally:
            release.set()
            blocker.wait(10)

    def test_demo_limits_the_form(self, app_env, monkeypatch):
        """Demo mode caps epochs and qubits in the form."""
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_DEMO_MAX_EPOCHS", "3")
        at = app("train")
        assert at.number_input(key="train_epochs").max == 3
        assert at.number_input(key="train_n_qubits").max == 8
        assert "Demo mode" in texts(at.sidebar.info)

    def test_quick_start_then_cancel(self, app_env):
        """The quick start queues quantum, linear and finetuned; Cancel stops it with state 'cancelled'."""
        at = app("overview")
        at.button(key="ov_quick").click().run()
        job = ui_module().runner().get(at.session_state["job_id"])
        assert job.snapshot().name == "quick start"
        at.button(key=f"cancel_{job.id}").click().run()
        assert job.wait(60)
        assert job.snapshot().state == "cancelled"
        at.run()
        assert not at.exception


class TestExperiments:
    def test_a_results_database_that_is_no_database_is_one_line(self, app_env, monkeypatch):
        """QTL_RESULTS_DB naming a file that is not SQLite: an error naming it, no traceback, the file
        untouched, and the shipped studies still open."""
        bogus = app_env / "notes.db"
        bogus.write_text("not a database")
        monkeypatch.setenv("QTL_RESULTS_DB", str(bogus))
        at = app("experiments")
        assert not at.exception and "cannot be opened as a results database" in texts(at.error)
        assert bogus.read_text() == "not a database"
        label = next(o for o in at.selectbox(key="exp_db").options if o.startswith("study"))
        at.selectbox(key="exp_db").set_value(label).run()
        assert not at.exception and not at.error and at.dataframe

    def test_the_heatmap_keeps_datasets_apart_and_is_drawn_where_it_has_a_grid(self):
        """Cells of two datasets: a row of panels each (they were drawn over one another); a sweep of one
        qubit count and depth gets no heatmap (one square per panel)."""
        from ui.charts import heatmap_worth_drawing, sweep_heatmap

        def cell(dataset, qubits, mean):
            return dict(variant="quantum", backbone="resnet18", dataset=dataset, qubits=qubits, depth=2,
                        n=2, mean=mean, std=0.0)  # fmt: skip

        grid = [cell(d, q, 0.5 + q / 10) for d in (None, "digits") for q in (2, 4)]
        spec = sweep_heatmap(grid).to_dict()
        panels = {r["panel"] for r in spec["datasets"][spec["data"]["name"]]}
        assert spec["facet"]["row"]["field"] == "panel" and panels == {"resnet18", "resnet18 on digits"}
        assert heatmap_worth_drawing(grid)
        assert not heatmap_worth_drawing([c for c in grid if c["qubits"] == 2])
        widths = [{**c, "variant": "dressed-classical", "depth": None} for c in grid]  # a width sweep
        assert heatmap_worth_drawing(widths) and not heatmap_worth_drawing(grid[:1] + widths[:1])
        assert "row" not in sweep_heatmap(grid[:2]).to_dict()["facet"]
        lrs = [{**c, "lr": lr} for c in grid[:2] for lr in (0.01, 0.001)]  # one grid at two rates
        spec = sweep_heatmap(lrs).to_dict()
        panels = {r["panel"] for r in spec["datasets"][spec["data"]["name"]]}
        assert panels == {"resnet18 lr 0.01", "resnet18 lr 0.001"}  # they shared squares

    def test_a_second_sweep_waits_for_the_first(self, app_env):
        """While this session's sweep runs, another is refused in one line (it hid the first one's
        progress and Cancel button, and kept running unseen)."""
        release = threading.Event()
        first = ui_module().runner().submit("sweep first", lambda job: release.wait(30))
        try:
            at = app("experiments", {"exp_job_id": first.id})
            at.text_input(key="exp_name").set_value("second")
            at.button[0].click().run()
            assert "Sweep refused: your 'sweep first' is still" in texts(at.warning)
            assert at.session_state["exp_job_id"] == first.id
        finally:
            release.set()
            first.wait(10)

    def test_a_name_with_quotes_gets_the_name_rule_not_a_toml_error(self, app_env):
        at = app("experiments")
        at.text_input(key="exp_name").set_value("../evil name\"'")
        at.button[0].click().run()
        assert not at.exception
        said = texts(at.error)
        assert "Cannot run this sweep: name" in said and "must be 1-64 letters, digits" in said
        assert "TOML" not in said and "line 1" not in said

    def test_sweep_from_the_form_then_its_results(self, app_env):
        """The form's sweep runs as a background job into the results database; the page then shows the
        heatmap, the paired comparisons (a verdict per quantum cell and control) and the CSV export."""
        at = app("experiments")
        assert at.selectbox(key="exp_db").value.startswith("study")  # no sweep of its own yet: a shipped one

        def sweep_from_the_form():
            at.text_input(key="exp_name").set_value("page-sweep")
            at.multiselect(key="exp_qubits").set_value([2])
            at.multiselect(key="exp_depths").set_value([1])
            at.multiselect(key="exp_seeds").set_value([0, 1])
            at.number_input(key="exp_epochs").set_value(1)
            at.button[0].click().run()
            assert not at.exception and not at.error, texts(at.error)
            job = ui_module().runner().get(at.session_state["exp_job_id"])
            assert job.wait(120), "the sweep did not finish"
            return job

        job = sweep_from_the_form()
        at.run()
        snap = job.snapshot()
        assert snap.state == "done" and snap.result.done == 6, snap.error
        at = app("experiments")  # a fresh visit browses the database
        assert "6 finished runs" in texts(at.markdown)
        comps = at.dataframe[1].value
        assert list(comps["vs"]) == ["dressed-classical", "linear"] and set(comps["seeds"]) == {2}
        assert all(comps["verdict"].str.len() > 0)
        assert (app_env / "models" / "results.db").is_file()
        # the dataset changes: the same sweep trains its done runs again on the images there now, and says so
        added = app_env / "tiny" / "train" / "cats" / "added.png"
        shutil.copyfile(added.with_name("cats_0.png"), added)
        try:
            snap = sweep_from_the_form().snapshot()
            assert snap.state == "done" and (snap.result.changed, snap.result.done) == (6, 6), snap.error
            at.run()
            assert "6 run(s) trained, 0 already done, 0 failed, 6 of them again on the dataset's changed" in (
                texts(at.success)
            )
        finally:
            added.unlink()

    def test_shipped_width_study_shows_accuracy_against_width(self, app_env):
        """docs/wide.db, the width study of docs/wide.md, is browsable read-only: its 50 runs, and the
        accuracy-against-width chart (shown for sweeps over more than two widths)."""
        at = app("experiments")
        label = next(o for o in at.selectbox(key="exp_db").options if o.startswith("wide"))
        at.selectbox(key="exp_db").set_value(label).run()
        assert not at.exception and not at.error, texts(at.error)
        assert "Accuracy vs width" in [h.value for h in at.subheader]
        assert "50 finished runs" in texts(at.markdown)

    def test_shipped_study_shows_its_findings_and_stays_as_shipped(self, app_env):
        """docs/study.db, the study of docs/study.md, opens read-only with its findings view: the verdict
        tally and one part per dataset and regime; the file stays byte for byte as shipped, no journal."""
        shipped = REPO / "docs" / "study.db"
        before = shipped.read_bytes()
        at = app("experiments")
        label = next(o for o in at.selectbox(key="exp_db").options if o.startswith("study"))
        at.selectbox(key="exp_db").set_value(label).run()
        assert not at.exception and not at.error, texts(at.error)
        assert "Findings on held-out test accuracy" in [h.value for h in at.subheader]
        parts = [e.label for e in at.expander if "per class" in e.label or "all labels" in e.label]
        assert "digits, 10 classes; 5 labelled images per class" in parts and len(parts) >= 20
        assert "better" in at.dataframe[1].value.columns  # the tally of verdicts
        assert shipped.read_bytes() == before
        assert not list(shipped.parent.glob("study.db-*"))

    def test_demo_bounds_the_sweep(self, app_env, monkeypatch):
        monkeypatch.setenv("QTL_DEMO", "1")
        at = app("experiments")
        at.multiselect(key="exp_qubits").set_value([2, 3, 4])
        at.multiselect(key="exp_depths").set_value([1, 2, 3, 4])
        at.multiselect(key="exp_seeds").set_value([0, 1, 2])
        at.button[0].click().run()
        assert "at most 24 per sweep here" in texts(at.error)
        assert at.session_state["exp_job_id"] is None


class TestClassify:
    def test_without_models_says_how_to_get_one(self, app_env):
        at = app("classify")
        assert "No checkpoint is loaded" in texts(at.info)

    def test_upload_classifies_with_every_model_and_bad_file_gets_its_own_error(self, app_env, checkpoints):
        """Three variants answer for the good upload; the bad file gets an error; the page keeps working."""
        loaded = [str(checkpoints[k]) for k in ("quantum-0", "linear-0", "finetuned-0")]
        at = app("classify", {"loaded": loaded})
        at.file_uploader(key="cls_upload").set_value(
            [("red.png", png(), "image/png"), ("broken.jpg", b"\xff\xd8 not really a jpeg", "image/jpeg")]
        )
        at.run()
        assert not at.exception
        assert "broken.jpg" in texts(at.error) and "red.png" not in texts(at.error)
        answers = [m.value for m in at.markdown if "→" in m.value]
        assert len(answers) == 1
        for variant in ("quantum", "linear", "finetuned"):
            assert f"`{variant}-resnet18-random" in answers[0]
        latency = at.dataframe[0].value
        assert list(latency["variant"]) == ["quantum", "linear", "finetuned"]
        assert (latency["latency (ms)"] > 0).all()

        at.file_uploader(key="cls_upload").set_value([("blue.png", png((20, 20, 220)), "image/png")])
        at.run()
        assert not at.exception and not at.error
        assert len([m for m in at.markdown if "→" in m.value]) == 1

    def test_learning_curves_of_many_runs_keep_their_colours_apart(self):
        """12 runs: 20 colours (the theme's 10 repeated, two pairs of curves shared one); 3 runs: the
        theme's own."""
        from ui.charts import curves_chart

        def records(n):
            return [{"run": f"r{i}", "epoch": 1, "train_loss": 1.0, "val_loss": 1.0} for i in range(n)]

        assert (
            curves_chart(records(12), "loss").to_dict()["encoding"]["color"]["scale"]["scheme"] == "tableau20"
        )
        assert "scale" not in curves_chart(records(3), "loss").to_dict()["encoding"]["color"]

    def test_models_of_other_classes_get_a_probability_chart_each(self):
        """A 10-class and a 2-class model: a chart each, with only its own classes (in one grouped chart
        the 2-class model's bars sat among 12 slots and shared the 10-class model's colours)."""
        from ui.charts import probs_chart

        rows = [{"model": "digits", "class": str(i), "probability": 0.1} for i in range(10)]
        rows += [{"model": "bugs", "class": c, "probability": 0.5} for c in ("ants", "bees")]
        spec = probs_chart(rows).to_dict()
        shown = [sorted({r["class"] for r in spec["datasets"][c["data"]["name"]]}) for c in spec["vconcat"]]
        assert shown == [sorted(map(str, range(10))), ["ants", "bees"]]
        assert spec["resolve"]["scale"]["color"] == "independent"
        for chart in spec["vconcat"]:  # every class named (it dropped every other label at 14 px a row)
            assert chart["encoding"]["y"]["axis"]["labelOverlap"] is False and chart["height"]["step"] >= 18
        same = probs_chart(rows[10:] + [{**r, "model": "again"} for r in rows[10:]]).to_dict()
        assert "vconcat" not in same and same["encoding"]["yOffset"]["field"] == "class"

    def test_a_demo_classifies_at_most_its_cap_at_once(self, app_env, checkpoints, monkeypatch):
        """Demo mode, 18 uploads with a cap of 16: the first 16 are answered and the page says so (one
        click on "Select all" classified 153 val images with 5 models and 4 heatmaps, about 53 s)."""
        monkeypatch.setenv("QTL_DEMO", "1")
        at = app("classify", {"loaded": [str(checkpoints["linear-0"])]})
        uploads = [(f"u{i}.png", png((10 * i, 30, 200)), "image/png") for i in range(18)]
        at.file_uploader(key="cls_upload").set_value(uploads)
        at.run()
        assert not at.exception
        assert "18 images uploaded; this server classifies at most 16 at once: the first 16." in texts(
            at.warning
        )
        assert len([m for m in at.markdown if "→" in m.value]) == 16
        assert at.multiselect(key="cls_samples").proto.max_selections == 1

    def test_val_samples_can_be_picked(self, app_env, checkpoints):
        at = app("classify", {"loaded": [str(checkpoints["linear-0"])]})
        picker = at.multiselect(key="cls_samples")
        picker.set_value(picker.options[:2]).run()
        assert len([m for m in at.markdown if "→" in m.value]) == 2


class TestCheckpoints:
    def test_lists_loads_unloads_and_deletes(self, app_env, checkpoints, monkeypatch):
        """Local mode: the table lists metadata; Load, Unload and Delete act on the chosen file."""
        monkeypatch.setenv("QTL_MODELS_DIR", str(checkpoints["quantum-0"].parent))
        at = app("checkpoints")
        table = at.dataframe[0].value
        assert sorted(table["variant"]) == ["finetuned", "linear", "quantum", "quantum"]
        assert set(table.loc[table["variant"] == "quantum", "qubits"]) == {3}
        pick = at.selectbox(key="ckpt_pick_models/")
        pick.set_value(checkpoints["linear-0"].name).run()
        at.button(key="ckpt_load_models/").click().run()
        assert at.session_state["loaded"] == [str(checkpoints["linear-0"].resolve())]
        at.button(key="ckpt_unload_models/").click().run()
        assert at.session_state["loaded"] == []
        original = checkpoints["quantum-1"]  # shared with later tests: delete a copy of it
        victim = Path(shutil.copy(original, original.with_name(f"copy-{original.name}")))
        at.run()
        at.selectbox(key="ckpt_pick_models/").set_value(victim.name).run()
        at.button(key="ckpt_delete_models/").click().run()  # asks first, and keeps it on "Keep it"
        assert victim.exists() and f"Delete `{victim.name}` from disk?" in texts(at.warning)
        at.button(key="ckpt_keep_models/").click().run()
        assert victim.exists() and not at.warning
        at.button(key="ckpt_delete_models/").click().run()  # then another file picked: the question goes
        at.selectbox(key="ckpt_pick_models/").set_value(original.name).run()
        at.selectbox(key="ckpt_pick_models/").set_value(victim.name).run()
        assert victim.exists() and not at.warning
        at.button(key="ckpt_delete_models/").click().run()
        at.button(key="ckpt_confirm_models/").click().run()
        assert not victim.exists() and original.exists() and not at.exception and not at.warning

    def test_demo_protects_shipped_checkpoints(self, app_env, checkpoints, monkeypatch):
        """Demo mode: shipped checkpoints cannot be deleted; uploads go to a private session folder."""
        shipped = checkpoints["quantum-0"].parent
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.setenv("QTL_MODELS_DIR", str(shipped))
        at = app("checkpoints")
        assert at.button(key="ckpt_delete_shipped (read-only)").disabled
        at.file_uploader(key="ckpt_upload").set_value(
            ("mine.pt", checkpoints["linear-0"].read_bytes(), "application/octet-stream")
        )
        at.run()
        session_dir = Path(at.session_state["session_dir"])
        assert session_dir != shipped and [p.name for p in session_dir.glob("*.pt")] == ["mine.pt"]
        assert "Stored and loaded mine.pt" in texts(at.success)
        assert at.button(key="ckpt_delete_this session").disabled is False

    def test_demo_session_starts_with_shipped_checkpoints(self, app_env, checkpoints, monkeypatch):
        """A hosted demo classifies uploads without training: new sessions load models/'s checkpoints."""
        shipped = checkpoints["linear-0"].parent
        monkeypatch.setenv("QTL_DEMO", "1")
        monkeypatch.delenv("QTL_AUTOLOAD")  # the default: new sessions load models/
        monkeypatch.setenv("QTL_MODELS_DIR", str(shipped))
        at = app("classify")
        assert sorted(at.session_state["loaded"]) == sorted(str(p.resolve()) for p in shipped.glob("*.pt"))
        at.file_uploader(key="cls_upload").set_value(("x.png", png(), "image/png"))
        at.run()
        assert not at.exception and len([m for m in at.markdown if "→" in m.value]) == 1

    def test_malicious_upload_is_rejected_without_running_code(self, app_env, tmp_path):
        """A pickle that would run code is refused with a clear error, and nothing is stored."""
        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        at = app("checkpoints")
        at.file_uploader(key="ckpt_upload").set_value(
            ("evil.pt", pickle.dumps(Exploit()), "application/octet-stream")
        )
        at.run()
        assert not at.exception
        assert "evil.pt was rejected" in texts(at.error)
        assert not marker.exists()
        assert not list((app_env / "models").glob("evil*"))


class TestNoisePage:
    def test_accuracy_distributions_curve_and_fake_backend(self, app_env, checkpoints):
        """Two loaded quantum checkpoints: the ideal accuracy equals `evaluate`'s, the sliders change the
        noise, the curve is drawn, and a fake IBM backend run gives a row per checkpoint."""
        from qtl.analysis.inference import evaluate
        from qtl.models.checkpoint import load_checkpoint

        paths = [str(checkpoints["quantum-0"]), str(checkpoints["quantum-1"])]
        at = app("noise", {"loaded": paths})
        assert [m.label for m in at.metric] == ["val accuracy", "val accuracy"]
        expected = evaluate(load_checkpoint(paths[0]), os.environ["QTL_DATA_DIR"]).metrics["accuracy"]
        assert at.metric[0].value == f"{expected:.3f}"
        assert "Accuracy against depolarizing strength" in texts(at.subheader)
        at.slider(key="noise_readout").set_value(0.2).run()
        at.select_slider(key="noise_shots").set_value(100).run()
        assert not at.exception and "readout 0.2, 100 shots" in texts(at.caption)
        at.select_slider(key="noise_backend_shots").set_value(100).run()
        at.button(key="noise_run_backend").click().run()
        assert not at.exception
        assert list(at.dataframe[0].value["backend"]) == ["FakeManilaV2, 100 shots"] * 2

    def test_a_model_wider_than_the_backend_is_said_and_the_others_run(self, app_env, checkpoints):
        """A 6-qubit checkpoint beside a 3-qubit one on the 5-qubit FakeManilaV2: one line for the wide
        one, a row for the other, and it stays said on the next rerun."""
        from qtl.config import ModelConfig
        from qtl.models.checkpoint import save_checkpoint
        from qtl.models.variants import build_model
        from qtl.quantum.circuit import CircuitConfig

        mc = ModelConfig(pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(6, 1))
        wide = save_checkpoint(app_env / "wide6.pt", build_model(mc), mc)
        at = app("noise", {"loaded": [str(checkpoints["quantum-0"]), str(wide)]})
        at.select_slider(key="noise_backend_shots").set_value(100).run()
        at.button(key="noise_run_backend").click().run()
        assert not at.exception
        (row,) = at.dataframe[0].value["checkpoint"]
        assert checkpoints["quantum-0"].stem in row
        said = "wide6**: cannot run it there: FakeManilaV2 has 5 qubits; the circuit needs 6."
        assert said in texts(at.warning)
        at.run()
        assert said in texts(at.warning)

    def test_no_quantum_checkpoint(self, app_env):
        at = app("noise", {"loaded": []})
        assert "Load a `quantum` or `hybrid` checkpoint" in texts(at.info)


class TestCircuitCompareLab:
    def test_circuit_with_quantum_checkpoint_and_image(self, app_env, checkpoints):
        """Trained weights and the per-qubit angles / <Z> of an uploaded image are charted."""
        at = app("circuit", {"loaded": [str(checkpoints["quantum-0"])]})
        at.selectbox(key="circ_model").set_value(at.selectbox(key="circ_model").options[1]).run()
        assert "Trained circuit weights" in texts(at.subheader)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["quantum parameters"] == "6"  # 3 qubits x depth 2
        at.file_uploader(key="circ_upload").set_value(("x.png", png(), "image/png"))
        at.run()
        assert not at.exception
        assert any(m.value.startswith("**cats**") or m.value.startswith("**dogs**") for m in at.markdown)

    def test_a_circuit_of_depth_0_has_no_weights_to_chart(self, app_env):
        """Depth 0 (the Train form's least) has no trained angles: the weights chart raised RuntimeError on
        the empty tensor; the page says so instead, and still traces an image."""
        from qtl.config import ModelConfig
        from qtl.experiments.runs import plan_runs
        from qtl.quantum.circuit import CircuitConfig
        from qtl.training.fit import fit

        base = ModelConfig(pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(2, 0))
        (run,) = plan_runs(["quantum"], base, [0], app_env / "depth0", epochs=1)
        path = fit(run.model_config, run.train_config, run.machine, checkpoint_path=run.checkpoint_path)
        at = app("circuit", {"loaded": [str(path.checkpoint_path)]})
        at.selectbox(key="circ_model").set_value(at.selectbox(key="circ_model").options[1]).run()
        assert not at.exception, at.exception
        assert "Depth 0: the circuit has no trained angles" in texts(at.caption)
        at.file_uploader(key="circ_upload").set_value(("x.png", png(), "image/png"))
        at.run()
        assert not at.exception, at.exception
        assert any(m.value.startswith(("**cats**", "**dogs**")) for m in at.markdown)  # its prediction

    def test_wide_circuit_is_summarised(self, app_env):
        """64 qubits: no 64-wire drawing but one block on 8 wires, the MPS bond per cut, and the counts."""
        at = app("circuit")
        at.number_input(key="circ_n_qubits").set_value(64).run()
        assert not at.exception
        assert "too many to draw legibly" in texts(at.markdown)
        (chart,) = at.get("vega_lite_chart")  # the bond chart
        spec = json.loads(chart.proto.spec)
        # bars rise from 0, which a log scale cannot place: on one, Vega draws no bar at all
        assert spec["mark"]["type"] == "bar" and spec["encoding"]["y"].get("scale", {}).get("type") != "log"
        data = pyarrow.ipc.open_stream(chart.proto.datasets[0].data.data).read_all()
        heights = data.column(spec["encoding"]["y"]["field"]).to_pylist()
        assert len(heights) == 63 and min(heights) >= 1 and max(heights) == 6  # log2 bond, depth 6 at most
        # the top gridline is the tallest bar's (bars ran past it), and the title has room (its top was cut)
        y = spec["encoding"]["y"]
        assert y["scale"]["domain"] == [0, 6] and y["axis"]["values"][-1] == 6
        assert spec["padding"]["top"] >= 10
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["quantum parameters"] == f"{64 * 6}"

    def test_compare_groups_seeds_and_evaluates(self, app_env, checkpoints):
        """Two quantum seeds give a mean ± std row, and a copy of one seed's checkpoint is no third seed
        (the page says it left it out); evaluation draws confusion matrices."""
        copy = app_env / "copies" / "quantum-again.pt"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(checkpoints["quantum-0"], copy)
        loaded = [str(p) for p in checkpoints.values()] + [str(copy)]
        at = app("compare", {"loaded": loaded})
        table = at.dataframe[0].value
        seeds = dict(zip(table["setup"], table["seeds"], strict=True))
        quantum = [s for s in seeds if s.startswith("quantum")]
        assert len(quantum) == 1 and seeds[quantum[0]] == 2 and sum(seeds.values()) == len(loaded) - 1
        assert "Left out of the means, as other checkpoints of the same runs: quantum-again" in (
            texts(at.caption)
        )
        if seeds[quantum[0]] == 2:
            assert "±" in table.loc[table["setup"] == quantum[0], "val accuracy"].item()
        at.toggle(key="cmp_eval").set_value(True).run()
        assert not at.exception and not at.error
        assert any("misclassified of 8" in e.label for e in at.expander)
        # a checkpoint whose recorded val accuracy is not what the evaluation finds says why, once
        import torch

        payload = torch.load(copy, weights_only=True)
        payload["metrics"]["val_acc"] = 0.0
        torch.save(payload, copy)
        at = app("compare", {"loaded": loaded})
        at.toggle(key="cmp_eval").set_value(True).run()
        why = [c.value for c in at.caption if "0.000 at training" in c.value]
        assert len(why) == 1 and "bfloat16" in why[0]
        # each score names its data; one scored on the active dataset for want of a record says so
        del payload["meta"]["dataset"]
        torch.save(payload, copy)
        at = app("compare", {"loaded": loaded})
        at.toggle(key="cmp_eval").set_value(True).run()
        scores = [c.value for c in at.caption if "macro F1" in c.value]
        assert len(scores) == len(loaded) and all(c.startswith("on tiny, 8 val images") for c in scores)
        (fallback,) = [c for c in scores if "does not record its own" in c]
        assert fallback.startswith("on tiny, 8 val images (the active dataset: this checkpoint")

    def test_scores_follow_the_datasets_images(self, app_env, checkpoints, tmp_path):
        """Compare's cached evaluation is keyed by the dataset's version: every val image of one class
        replaced by one of the other class's, under the same names, is scored again: its probabilities
        are those of the image it now holds (the old scores stayed until the server restarted)."""
        from ui import cache

        root = shutil.copytree(os.environ["QTL_DATA_DIR"], tmp_path / "data")
        path = checkpoints["linear-0"]

        def probs() -> dict[str, list[float]]:
            ev = cache.evaluation(str(path), path.stat().st_mtime, str(root), cache.data_version(str(root)))
            return {Path(s.path).relative_to(root).as_posix(): s.probs for s in ev.samples}

        before = probs()
        cats, dogs = (sorted((root / "val" / c).iterdir()) for c in ("cats", "dogs"))
        for cat, dog in zip(cats, dogs, strict=True):
            shutil.copy(dog, cat)
        cache.data_version.clear()  # read again every 10 s at most
        after = probs()
        for cat, dog in zip(cats, dogs, strict=True):
            cat_name, dog_name = (f.relative_to(root).as_posix() for f in (cat, dog))
            assert after[cat_name] == pytest.approx(before[dog_name], abs=1e-6)

    def test_diff_lab_times_and_checks_gradients(self, app_env):
        """The native engine at 2 and 3 qubits: two timed rows with gradients matching the reference."""
        at = app("diff_lab")
        at.multiselect(key="lab_engines").set_value(["native"])
        at.multiselect(key="lab_qubits").set_value([2, 3])
        at.number_input(key="lab_batch").set_value(4)
        at.button[0].click().run()
        assert not at.exception
        table = at.dataframe[0].value
        assert list(table["qubits"]) == [2, 3]
        assert (table["step (ms)"] > 0).all()
        assert (table["max |grad − ref|"] < 1e-4).all()

    def test_diff_lab_runs_mps_past_the_statevector_wall(self, app_env):
        """mps at 30 qubits: timed, its float32 gradients checked against exact MPS in float64."""
        at = app("diff_lab")
        at.multiselect(key="lab_engines").set_value(["mps"])
        at.multiselect(key="lab_qubits").set_value([30])
        at.number_input(key="lab_depth").set_value(2)
        at.number_input(key="lab_batch").set_value(4)
        at.number_input(key="lab_cap").set_value(30.0)
        at.button[0].click().run()
        assert not at.exception
        table = at.dataframe[0].value
        assert list(table["qubits"]) == [30] and (table["step (ms)"] > 0).all()
        assert (table["max |grad − ref|"] < 1e-4).all()
