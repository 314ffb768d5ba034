"""Checkpoints of runs that stopped early, and sweep specs refused before anything trains.

A run cancelled partway (a sweep's stop, the app's Cancel, `qtl train`'s Ctrl-C) keeps its best epoch
so far, and its checkpoint says it stopped at epoch k of N and why: the loaders, `qtl evaluate` and the
app's Checkpoints page tell it apart from a finished run's, and a complete rerun of the same sweep run
replaces it. A `feature_dim` wider than its backbone's features is refused by the plan (dry run and
sweep alike), without any weights, before anything is written.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, run_cli
from test_app import app, app_env, texts  # noqa: F401  (app_env is a fixture)

from qtl.config import ModelConfig, TrainConfig
from qtl.experiments.database import ResultsDB
from qtl.experiments.runs import checkpoint_row
from qtl.experiments.spec import SpecError, load_spec, plan
from qtl.experiments.sweeps import SweepObserver, run_sweep
from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info
from qtl.training.fit import Callback, Cancelled, Diverged, fit

EPOCHS, STOP_AFTER = 4, 2

SPEC = """
name = "early"
checkpoints = true
dataset = "{data}"
pretrained = false
epochs = {epochs}
variant = "linear"
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("early") / "tiny")


class StopAfter(SweepObserver):
    """Sets the sweep's stop event at the end of epoch `epoch` of every run (as Ctrl-C or Cancel does)."""

    def __init__(self, stop: threading.Event, epoch: int) -> None:
        self.stop, self.epoch = stop, epoch

    def callbacks(self, index, total, run):
        observer = self

        class Stopper(Callback):
            def on_epoch_end(self, p):
                if p.epoch == observer.epoch:
                    observer.stop.set()

        return [Stopper()]


def cancelled_sweep(tmp_path: Path, tiny: Path):
    """A sweep of one linear run (EPOCHS epochs, checkpoints kept) stopped after epoch STOP_AFTER:
    (spec path, database, models folder, the run's checkpoint path)."""
    spec_path = tmp_path / "early.toml"
    spec_path.write_text(SPEC.format(data=tiny.as_posix(), epochs=EPOCHS))
    db, models = tmp_path / "r.db", tmp_path / "models"
    stop = threading.Event()
    report = run_sweep(
        load_spec(spec_path), db, models_dir=models, observer=StopAfter(stop, STOP_AFTER), stop=stop
    )
    assert (report.cancelled, report.done, report.stopped) == (1, 0, True)
    (run,) = plan(load_spec(spec_path), models_dir=models)
    assert run.checkpoint_path.is_file()
    return spec_path, db, models, run.checkpoint_path


class TestCancelledSweepRun:
    def test_its_checkpoint_records_the_early_stop_and_still_loads_and_scores(
        self, tiny, tmp_path, capsys, caplog
    ):
        """The file keeps the best of the epochs trained, says "stopped early: 2 of 4 epochs (cancelled)"
        in its metadata and its row, loads with a one-line warning and scores with `qtl evaluate`."""
        spec, db, models, path = cancelled_sweep(tmp_path, tiny)
        info = read_checkpoint_info(path)
        assert info.stopped == {"epochs_done": STOP_AFTER, "epochs": EPOCHS, "stopped": "cancelled"}
        assert info.stop_note == f"stopped early: {STOP_AFTER} of {EPOCHS} epochs (cancelled)"
        assert info.epochs == STOP_AFTER and info.best_epoch <= STOP_AFTER

        with caplog.at_level(logging.WARNING, logger="qtl.models.checkpoint"):
            loaded = load_checkpoint(path)
        assert loaded.stop_note == info.stop_note
        said = [r.getMessage() for r in caplog.records if r.name == "qtl.models.checkpoint"]
        assert said == [
            f"{path.name}: {info.stop_note}; it holds the best of those epochs: "
            "train it again with the same settings to finish it"
        ]
        row = checkpoint_row(loaded)
        assert row["cancelled"] is True and row["epochs_done"] == STOP_AFTER and row["epochs"] == EPOCHS

        caplog.clear()
        code, out, err = run_cli(capsys, "evaluate", path, "--data", tiny, "--json")
        assert code == 0 and 0 <= json.loads(out)["metrics"]["accuracy"] <= 1
        assert any(info.stop_note in r.getMessage() for r in caplog.records)  # "qtl: warning: ..." on stderr

        with ResultsDB(db, readonly=True) as results:
            (stored,) = results.rows("early", status=None)
        assert stored["status"] == "cancelled" and stored["checkpoint"] == str(path)
        code, out, _ = run_cli(capsys, "runs", "--db", db, "--sweep", "early", "--status", "any")
        assert code == 0 and "cancelled" in out

    def test_the_apps_checkpoints_page_says_so_until_a_complete_rerun_replaces_it(
        self,
        app_env,  # noqa: F811
        tiny,
        tmp_path,
        monkeypatch,
        capsys,
        caplog,
    ):
        """Listed under its sweep (models/sweeps/early/: the page listed models/ alone) with "stopped
        early: 2 of 4 epochs (cancelled)", and loadable from there; the same spec run again trains the
        run to its end into the same file, which then reads as finished everywhere."""
        spec, db, models, path = cancelled_sweep(tmp_path, tiny)
        monkeypatch.setenv("QTL_MODELS_DIR", str(models))
        at = app("checkpoints")
        assert any(h.value.startswith("sweep early: ") for h in at.subheader)
        table = at.dataframe[0].value  # models/ itself holds none
        note = f"stopped early: {STOP_AFTER} of {EPOCHS} epochs (cancelled)"
        assert list(table.loc[table["file"] == path.name, "finished"]) == [note]
        assert f"`{path.name}`: {note}" in texts(at.caption)
        at.button(key="ckpt_load_sweep early").click().run()
        assert at.session_state["loaded"] == [str(path.resolve())] and not at.exception

        report = run_sweep(load_spec(spec), db, models_dir=models)  # the same spec, nothing stopping it
        assert (report.done, report.skipped) == (1, 0)
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # replaced, not beside it
        info = read_checkpoint_info(path)
        assert info.stopped is None and info.stop_note is None and info.epochs == EPOCHS
        assert info.meta["training"] == {"epochs_done": EPOCHS, "epochs": EPOCHS, "stopped": None}
        with ResultsDB(db, readonly=True) as results:
            (stored,) = results.rows("early", status=None)
        assert stored["status"] == "done" and stored["epochs_done"] == EPOCHS

        at = app("checkpoints")
        table = at.dataframe[0].value
        assert list(table.loc[table["file"] == path.name, "finished"]) == ["yes"]
        assert "stopped early" not in texts(at.caption)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qtl.models.checkpoint"):
            assert checkpoint_row(load_checkpoint(path))["cancelled"] is False
        assert not [r for r in caplog.records if r.name == "qtl.models.checkpoint"]


def test_a_demo_lists_a_sweeps_checkpoints_read_only(app_env, tiny, tmp_path, monkeypatch):  # noqa: F811
    """A hosted demo's models/sweeps/<name>/ is the server's: listed and loadable, never deletable."""
    spec, db, models, path = cancelled_sweep(tmp_path, tiny)
    monkeypatch.setenv("QTL_DEMO", "1")
    monkeypatch.setenv("QTL_MODELS_DIR", str(models))
    at = app("checkpoints")
    assert at.button(key="ckpt_delete_sweep early").disabled
    at.button(key="ckpt_load_sweep early").click().run()
    assert str(path.resolve()) in at.session_state["loaded"] and not at.exception


def synthetic(n=24, width=512):
    from qtl.data.features import FeatureSet

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    x = torch.randn(n, width, generator=g) + labels[:, None].float()
    half = n // 2
    return (
        FeatureSet(x[:half], labels[:half], ["t"] * half, ["a", "b"]),
        FeatureSet(x[half:], labels[half:], ["v"] * half, ["a", "b"]),
    )


class TestEveryPathThatSavesDuringFit:
    def test_ctrl_c_inside_fit_records_interrupted_with_the_best_epochs_weights(self, tmp_path):
        """A KeyboardInterrupt in epoch 3 (Ctrl-C in `qtl train`) rewrites the file as stopped early,
        "interrupted", with the history so far and the best epoch's weights (not the ones trained
        since); while the run trained, each save said "unfinished"."""
        path = tmp_path / "q.pt"
        seen, saved = [], {}

        class Watch(Callback):
            def on_batch_end(self, p):
                if (p.epoch, p.batch) == (3, 1):
                    raise KeyboardInterrupt

            def on_epoch_end(self, p):
                seen.append(read_checkpoint_info(path).stop_note)
                saved[p.best_epoch] = torch.load(path, weights_only=True)["state_dict"]

        mc = ModelConfig("linear", pretrained=False, class_names=("a", "b"))
        with pytest.raises(KeyboardInterrupt):
            fit(mc, TrainConfig(epochs=6, batch_size=4, lr=0.05), features=synthetic(), callbacks=[Watch()],
                checkpoint_path=path)  # fmt: skip
        assert len(seen) == 2 and all(
            n.startswith("unfinished: ")
            and n.endswith(" of 6 epochs (still training, or its process was killed)")
            for n in seen
        )
        info = read_checkpoint_info(path)
        assert info.stopped == {"epochs_done": 2, "epochs": 6, "stopped": "interrupted"}
        assert info.stop_note == "stopped early: 2 of 6 epochs (interrupted)" and info.epochs == 2
        stored = torch.load(path, weights_only=True)["state_dict"]
        best = saved[info.best_epoch]
        assert stored.keys() == best.keys() and all(torch.equal(stored[k], best[k]) for k in stored)
        load_checkpoint(path)  # loads as any other

    def test_qtl_train_ctrl_c_keeps_the_checkpoint_marked(self, tiny, tmp_path, capsys, monkeypatch):
        """`qtl train` stopped by Ctrl-C in its third epoch says where the checkpoint is kept, and the
        file says how far the run got; `--overwrite` trains it again to its end."""
        from qtl.cli.progress import BarCallback

        def ctrl_c(self, p):
            if (p.epoch, p.batch) == (3, 1):
                raise KeyboardInterrupt

        out_path = tmp_path / "t.pt"
        argv = ["train", "linear", "--data", tiny, "--random-init", "--epochs", 5, "--out", out_path]
        with monkeypatch.context() as m:
            m.setattr(BarCallback, "on_batch_end", ctrl_c)
            code, _, err = run_cli(capsys, "-q", *argv)
        assert code == 130 and f"the last good checkpoint is kept at {out_path}" in err
        assert read_checkpoint_info(out_path).stop_note == "stopped early: 2 of 5 epochs (interrupted)"

        code, out, _ = run_cli(capsys, "-q", *argv, "--overwrite")
        assert code == 0 and read_checkpoint_info(out_path).stopped is None

    def test_a_run_that_trains_every_epoch_is_finished_even_if_stopped_after_it(self, tmp_path):
        """A stop after the last epoch is no early stop: all planned epochs trained."""
        stop = threading.Event()

        class Last(Callback):
            def on_epoch_end(self, p):
                if p.epoch == p.epochs:
                    stop.set()

        mc = ModelConfig("linear", pretrained=False, class_names=("a", "b"))
        path = tmp_path / "q.pt"
        r = fit(mc, TrainConfig(epochs=2, batch_size=4), features=synthetic(), callbacks=[Last()], stop=stop,
                checkpoint_path=path)  # fmt: skip
        assert r.cancelled and read_checkpoint_info(path).stopped is None


class TestARerunIntoTheSameFile:
    """A rerun of the same settings (a sweep's run again, the same `qtl train`, the app's Train) writes the
    file an earlier run left: before, its first improvement overwrote it, so a rerun stopped sooner lost
    the better epoch the earlier run had kept."""

    def run(self, path, stop_at=None, lr=0.05):
        class StopAt(Callback):
            def on_epoch_end(self, p):
                if p.epoch == stop_at:
                    raise Cancelled("stop requested")

        mc = ModelConfig("linear", pretrained=False, class_names=("a", "b"))
        tc = TrainConfig(epochs=6, batch_size=4, lr=lr)
        return fit(mc, tc, features=synthetic(), callbacks=[StopAt()], checkpoint_path=path)

    def test_one_stopped_sooner_leaves_the_earlier_runs_file_and_says_so(self, tmp_path, caplog):
        path = tmp_path / "q.pt"
        first = self.run(path, stop_at=4)
        kept = path.read_bytes()
        with caplog.at_level(logging.WARNING, logger="qtl.training.fit"):
            again = self.run(path, stop_at=1)
        assert again.cancelled and again.checkpoint_path is None
        assert path.read_bytes() == kept
        info = read_checkpoint_info(path)
        assert info.stopped == {"epochs_done": 4, "epochs": 6, "stopped": "cancelled"}
        assert info.best_epoch == first.best_epoch
        said = [r.getMessage() for r in caplog.records if "still holds" in r.getMessage()]
        assert said == [
            f"{path} still holds an earlier run of these settings (epoch {first.best_epoch}, val acc "
            f"{first.metrics['val_acc']:.4f}): this run stopped early (cancelled) after 1 of 6 epochs "
            f"without beating it (its best: epoch 1, val acc {again.history[0]['val_acc']:.4f})"
        ]

    def test_one_cancelled_after_its_last_epoch_is_finished_and_writes_it(self, tmp_path):
        """A Cancel after the last epoch is no early stop: the rerun of a finished run, which never beats
        it (the same seed, the same epochs), still writes its file as finished."""
        path = tmp_path / "q.pt"
        self.run(path)
        again = self.run(path, stop_at=6)
        info = read_checkpoint_info(path)
        assert again.checkpoint_path == path and again.kept_earlier is None
        assert info.stopped is None and info.epochs == 6

    def test_one_that_diverges_says_the_file_keeps_the_earlier_run(self, tmp_path):
        """It said "no checkpoint was written" though the file held the earlier run's better epoch."""
        path = tmp_path / "q.pt"
        first = self.run(path, stop_at=4)
        kept = path.read_bytes()

        class Poison(Callback):
            def on_batch_end(self, p):
                if p.epoch == 2:
                    with torch.no_grad():
                        model.head.weight.fill_(float("nan"))

        mc = ModelConfig("linear", pretrained=False, class_names=("a", "b"))
        tc = TrainConfig(epochs=6, batch_size=4, lr=0.05)
        torch.manual_seed(tc.seed)
        from qtl.models.variants import build_model

        model = build_model(mc)
        with pytest.raises(Diverged) as caught:
            fit(mc, tc, features=synthetic(), model=model, callbacks=[Poison()], checkpoint_path=path)
        assert str(caught.value).endswith(
            f"; {path} keeps an earlier run of these settings (epoch {first.best_epoch}, val acc "
            f"{first.metrics['val_acc']:.4f})"
        )
        assert path.read_bytes() == kept

    def test_a_sweeps_row_stays_the_files(self, tiny, tmp_path):
        """The sweep's row of a rerun cancelled sooner is the earlier run's, as the file is: it had the
        rerun's scores and no checkpoint, the file still holding the earlier run."""
        spec, db, models, path = cancelled_sweep(tmp_path, tiny)
        stop = threading.Event()
        report = run_sweep(load_spec(spec), db, models_dir=models, observer=StopAfter(stop, 1), stop=stop)
        assert report.cancelled == 1
        with ResultsDB(db, readonly=True) as results:
            (stored,) = results.rows("early", status=None)
        assert stored["status"] == "cancelled" and stored["checkpoint"] == str(path)
        assert stored["epochs_done"] == STOP_AFTER == read_checkpoint_info(path).epochs

    def test_one_that_finishes_replaces_it(self, tmp_path):
        path = tmp_path / "q.pt"
        self.run(path, stop_at=2)
        done = self.run(path)
        info = read_checkpoint_info(path)
        assert done.checkpoint_path == path and info.stopped is None and info.epochs == 6
        assert info.best_epoch == done.best_epoch

    def test_a_file_whose_metadata_is_not_a_dict_is_read_by_its_settings(self, tmp_path):
        """Such a file loads (`_read` does not check `meta`); the comparison raised AttributeError, so
        fit() failed before training. Its model and recipe are these, and it names no dataset, as a run
        on given features does: the earlier run's."""
        path = tmp_path / "q.pt"
        self.run(path, stop_at=4)
        payload = torch.load(path, weights_only=True)
        payload["meta"] = None
        torch.save(payload, path)
        assert self.run(path, stop_at=1).kept_earlier == path

    def test_another_runs_file_is_overwritten_from_its_first_epoch(self, tmp_path):
        path = tmp_path / "q.pt"
        self.run(path, stop_at=4)
        other = self.run(path, stop_at=1, lr=0.01)  # other settings: the file is this run's
        assert other.checkpoint_path == path
        assert read_checkpoint_info(path).stopped == {"epochs_done": 1, "epochs": 6, "stopped": "cancelled"}


class TestTheOtherWaysOut:
    """Every exception that ends `fit` once a checkpoint exists leaves it saying why, and only then."""

    MC = ModelConfig("linear", pretrained=False, class_names=("a", "b"))

    def run(self, path, epochs=3, **kwargs):
        return fit(self.MC, TrainConfig(epochs=epochs, batch_size=4, lr=0.05), features=synthetic(),
                   checkpoint_path=path, **kwargs)  # fmt: skip

    def test_an_error_in_an_epoch_records_failed(self, tmp_path):
        class Broken(Callback):
            def on_epoch_end(self, p):
                if p.epoch == 2:
                    raise RuntimeError("a callback broke")

        path = tmp_path / "q.pt"
        with pytest.raises(RuntimeError, match="a callback broke"):
            self.run(path, callbacks=[Broken()])
        assert read_checkpoint_info(path).stop_note == "stopped early: 2 of 3 epochs (training failed)"

    def test_an_interrupt_before_any_save_writes_nothing(self, tmp_path):
        class Early(Callback):
            def on_batch_end(self, p):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            self.run(tmp_path / "q.pt", callbacks=[Early()])
        assert not (tmp_path / "q.pt").exists()

    def test_an_interrupt_after_the_last_epoch_leaves_a_finished_file(self, tmp_path, monkeypatch):
        """A Ctrl-C while the test split is scored, after every epoch trained: the file said "unfinished:
        at least 1 of 3 epochs", with the history up to its last improvement."""
        import qtl.training.fit as fit_module

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(fit_module, "_test_metrics", interrupted)
        path = tmp_path / "q.pt"
        with pytest.raises(KeyboardInterrupt):
            self.run(path)
        info = read_checkpoint_info(path)
        assert info.stopped is None and info.epochs == 3, info.meta["training"]
        assert info.meta["training"] == {"epochs_done": 3, "epochs": 3, "stopped": None}

    def test_a_rewrite_that_fails_never_hides_what_stopped_the_run(self, tmp_path, monkeypatch, caplog):
        """The disk full when the stop is recorded: the run's own exception comes out, the failed rewrite
        is one logged line, and the file keeps its last save."""
        import qtl.training.fit as fit_module

        real = fit_module.save_checkpoint

        def full_disk(*args, training=None, **kwargs):
            if training and training["stopped"] not in (None, "unfinished"):
                raise OSError(28, "No space left on device")
            return real(*args, training=training, **kwargs)

        class Broken(Callback):
            def on_epoch_end(self, p):
                if p.epoch == 2:
                    raise RuntimeError("a callback broke")

        monkeypatch.setattr(fit_module, "save_checkpoint", full_disk)
        path = tmp_path / "q.pt"
        with caplog.at_level(logging.WARNING, logger="qtl.training.fit"), pytest.raises(RuntimeError):
            self.run(path, callbacks=[Broken()])
        said = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
        assert len(said) == 1 and "No space left on device" in said[0]
        assert read_checkpoint_info(path).stop_note.startswith("unfinished: at least ")
        with caplog.at_level(logging.WARNING, logger="qtl.models.checkpoint"):
            load_checkpoint(path)
        warned = [r.getMessage() for r in caplog.records if r.name == "qtl.models.checkpoint"]
        assert warned[-1].endswith(": unless a run is still writing it, train it again with the same "
                                   "settings to finish it")  # fmt: skip

    def test_a_file_without_the_record_claims_nothing(self):
        """A checkpoint written before qtl recorded how far its run got (the suite's own, one history row
        of a 30-epoch recipe) is not said to have stopped early: older files kept history only up to the
        best epoch, so a finished run would read as stopped."""
        from conftest import REPO

        info = read_checkpoint_info(REPO / "tests" / "data" / "quantum-resnet18-random-q4d2-fb103e4.pt")
        assert "training" not in info.meta and len(info.history) == 1
        assert info.stopped is None and info.stop_note is None


WIDE = """
name = "wide"
checkpoints = true
dataset = "{data}"
variant = "linear"
backbone = {backbones}
feature_dim = {dims}
"""


class TestFeatureDimWiderThanTheBackbone:
    @pytest.mark.parametrize(
        ("backbones", "dims", "said"),
        [
            ('"resnet18"', "[8, 2000]", "feature_dim 2000 is wider than the 512 features of resnet18"),
            ('["efficientnet_lite0", "resnet18"]', "[1000]",
             "feature_dim 1000 is wider than the 512 features of resnet18"),
            ('"efficientnet_lite0"', "2000",
             "feature_dim 2000 is wider than the 1280 features of efficientnet_lite0"),
        ],
    )  # fmt: skip
    def test_the_dry_run_and_the_sweep_refuse_it_before_anything(
        self, tiny, tmp_path, capsys, monkeypatch, backbones, dims, said
    ):
        """One line naming the value, the backbone and its width, from the architecture alone (no weights:
        offline, with resnet18's ImageNet weights absent and loading any backbone forbidden); no database
        or checkpoint folder is written."""
        from qtl.models.backbones import efficientnet_lite0, timm_models, torchvision_models

        def no_weights(*args, **kwargs):
            raise AssertionError("a backbone was loaded to check feature_dim")

        monkeypatch.setenv("QTL_OFFLINE", "1")
        for source in (efficientnet_lite0, timm_models, torchvision_models):  # what load_backbone calls
            monkeypatch.setattr(source, "load", no_weights)
        spec = tmp_path / "wide.toml"
        spec.write_text(WIDE.format(data=tiny.as_posix(), backbones=backbones, dims=dims))
        db, models = tmp_path / "r.db", tmp_path / "models"
        for extra in (["--dry-run"], []):
            code, out, err = run_cli(capsys, "sweep", spec, "--db", db, "--models-dir", models, *extra)
            assert code == 1 and len(err.strip().splitlines()) == 1, err
            assert err.startswith(f"qtl: error: sweep 'wide': {said}: give at most ")
        with pytest.raises(SpecError, match=said):
            run_sweep(load_spec(spec), db, models_dir=models)
        assert not db.exists() and not models.exists()


def test_feature_width_needs_no_weights_and_a_feature_dim_within_it_is_planned(
    tiny, tmp_path, capsys, monkeypatch
):
    """The width of every named backbone from its architecture, offline (resnet18's weights absent); a
    feature_dim of the whole width, or "all", plans and dry-runs as before."""
    from qtl.models.backbones import feature_width

    monkeypatch.setenv("QTL_OFFLINE", "1")
    feature_width.cache_clear()
    rng = torch.get_rng_state()
    assert [feature_width(n) for n in ("resnet18", "resnet50", "vit_b_16", "efficientnet_lite0")] == [
        512, 2048, 768, 1280,
    ]  # fmt: skip
    assert torch.equal(torch.get_rng_state(), rng)  # no generator moved (another thread's draws stay)
    spec = tmp_path / "wide.toml"
    spec.write_text(WIDE.format(data=tiny.as_posix(), backbones='"efficientnet_lite0"', dims='[1280, "all"]'))
    runs = plan(load_spec(spec), models_dir=tmp_path / "models")
    assert sorted(str(r.model_config.feature_dim) for r in runs) == ["1280", "None"]
    code, out, _ = run_cli(capsys, "sweep", spec, "--db", tmp_path / "r.db", "--dry-run")
    assert code == 0 and "2 runs, 0 done, 2 to run" in out
