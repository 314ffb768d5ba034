"""The end of a training job in the app, in AppTest: every checkpoint it saved is loaded, and the summary
counts the ones that were."""

from __future__ import annotations

from pathlib import Path

from test_app import app, app_env, texts, train_with  # noqa: F401  (app_env is a fixture)


def test_every_checkpoint_is_loaded_though_one_is_gone(app_env, monkeypatch):  # noqa: F811
    """A job's first checkpoint deleted (on the Checkpoints page) while its second run trained: the end
    of the job stopped at the first file it could not load, so the second was never loaded, and the
    summary said both were saved and loaded."""
    import qtl.experiments.runs as runs_module

    real_fit = runs_module.fit
    files: list[Path] = []

    def fit_losing_the_first(*args, **kwargs):
        if files:  # the second run: the first one's file is deleted meanwhile
            files[0].unlink()
        result = real_fit(*args, **kwargs)
        files.append(Path(result.checkpoint_path))
        return result

    monkeypatch.setattr(runs_module, "fit", fit_losing_the_first)
    at = app("train")
    train_with(at, ["linear"], epochs=1, seeds="3, 4")
    gone, kept = files
    assert str(kept.resolve()) in at.session_state["loaded"]
    assert str(gone.resolve()) not in at.session_state["loaded"]
    assert texts(at.success).startswith("Finished: 2 checkpoint(s) saved to `"), texts(at.success)
    assert texts(at.success).endswith("`; 1 loaded."), texts(at.success)
    assert texts(at.error) == f"Saved, but could not load {gone.name}: it is gone (deleted?)"
    at.run()  # said again on the next run, not loaded again
    assert texts(at.error) == f"Saved, but could not load {gone.name}: it is gone (deleted?)"
