"""Findings of a browser walkthrough of the app, each checked in AppTest: a typed timm model timm does not
know, the sweep's dataset, the active dataset across a reload, the default results database, number
formatting, the job log, demo labels, the Noise page's default pair and the Overview after a failed
download."""

from __future__ import annotations

from test_app import app, app_env, texts  # noqa: F401  (app_env is a fixture)


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
