"""qtl.experiments.runs: one function trains a list of runs, one row describes a finished run (trained or
loaded)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from qtl.config import MachineConfig, ModelConfig
from qtl.data.datasets import open_dataset
from qtl.experiments.runs import (
    ROW_FIELDS,
    Run,
    RunObserver,
    checkpoint_row,
    parse_seeds,
    plan_runs,
    recipe_for,
    recorded_dataset,
    run_id,
    train_runs,
)
from qtl.experiments.stats import group_cells, one_per_run, setup_label, summarise
from qtl.models.checkpoint import checkpoint_name, load_checkpoint
from qtl.quantum.circuit import CircuitConfig
from qtl.testing.image_folders import make_class_folders, make_image_folder

BASE = ModelConfig(pretrained=False, circuit=CircuitConfig(2, 1))


class Recorder(RunObserver):
    def __init__(self):
        self.events = []

    def preparing(self, index, total, run):
        self.events.append(("preparing", index, total))

    def finished(self, index, total, run, outcome):
        self.events.append(("finished", index, total, outcome.row["variant"]))


class TestTrainRuns:
    def test_rows_of_trained_and_loaded_runs_are_the_same(self, tiny_image_folder, tmp_path):
        """Every run gives one ROW_FIELDS row; loading its checkpoint gives the very same row."""
        machine = MachineConfig(data_dir=tiny_image_folder)
        runs = plan_runs(["quantum", "linear"], BASE, [0], tmp_path, epochs=2, machine=machine)
        rec = Recorder()
        outcomes = train_runs(runs, observer=rec)
        assert rec.events == [
            ("preparing", 0, 2),
            ("finished", 0, 2, "quantum"),
            ("preparing", 1, 2),
            ("finished", 1, 2, "linear"),
        ]
        for run, outcome in zip(runs, outcomes, strict=True):
            row = outcome.row
            assert tuple(row) == ROW_FIELDS
            assert row["id"] == run.id and row["epochs_done"] == 2 == len(outcome.history)
            assert row["val_acc"] == max(h["val_acc"] for h in outcome.history)
            assert outcome.wall_s >= row["train_time_s"] > 0
            assert checkpoint_row(load_checkpoint(row["checkpoint"])) == row
        q, lin = (o.row for o in outcomes)
        assert (q["quantum"], q["classical"]) == (2, 512 * 2 + 2 + 2 * 2 + 2)  # 2q x depth 1; dressed layers
        assert (lin["quantum"], lin["classical"]) == (0, 512 * 2 + 2)

    def test_two_datasets_are_two_cells_and_a_second_checkpoint_one_sample(self, tmp_path, monkeypatch):
        """Rows name the data a run trained on (the checkpoint's record), so the same settings and seed
        on two datasets are two cells (not two seeds of one); a second checkpoint of one run is left out
        of a cell's seeds (`one_per_run`), but not a run of other settings; the default set is None, as
        in checkpoints that recorded no dataset, whatever its folder is called."""
        folders = [make_image_folder(tmp_path / n, classes) for n, classes in [("a", "xy"), ("b", "uv")]]
        rows = []
        for i, folder in enumerate([*folders, folders[0]]):
            machine = MachineConfig(data_dir=folder)
            runs = plan_runs(["linear"], BASE, [0], tmp_path / f"m{i}", epochs=1, machine=machine)
            row = train_runs(runs)[0].row
            assert checkpoint_row(load_checkpoint(row["checkpoint"])) == row
            rows.append(row)
        assert [r["dataset"] for r in rows] == ["a", "b", "a"]
        assert len(group_cells(rows)) == 2 and "data b" in setup_label(rows[1])
        kept, repeats = one_per_run(rows)
        assert kept == rows[:2] and repeats == rows[2:]
        assert [s["n"] for s in summarise(kept, ("val_acc",))] == [1, 1]
        other = {**rows[2], "id": "another-batch-size"}  # same cell and seed, other settings: a run
        assert one_per_run([rows[0], other]) == ([rows[0], other], [])
        assert one_per_run([{**rows[0], "id": None}] * 2) == ([{**rows[0], "id": None}] * 2, [])
        hymenoptera = {"name": "hymenoptera_data", "source": "hymenoptera_data", "classes": ["ants", "bees"]}
        assert recorded_dataset(hymenoptera) is None and recorded_dataset(None) is None
        monkeypatch.setenv("QTL_DATA_DIR", str(folders[1]))  # the default set, in a folder of another name
        assert recorded_dataset(open_dataset(folders[1]).record()) is None
        assert recorded_dataset(open_dataset(folders[0]).record()) == "a"
        # another val split of one folder of class folders is other data (compare dropped one run as a
        # checkpoint of the other): the default split keeps the plain name
        flat = make_class_folders(tmp_path / "flat", 2, 10)
        assert recorded_dataset(open_dataset(flat).record()) == "flat"
        assert recorded_dataset(open_dataset(flat, val_ratio=0.5, seed=3).record()) == "flat-r0.5-s3"

    def test_a_stop_ends_the_list(self, tiny_image_folder, tmp_path):
        """A stop set during the first run cancels it and trains nothing after it."""
        machine = MachineConfig(data_dir=tiny_image_folder)
        runs = plan_runs(["quantum", "linear"], BASE, [0], tmp_path, epochs=3, machine=machine)
        stop = threading.Event()

        class StopAfterFirstEpoch(RunObserver):
            def callbacks(self, index, total, run):
                from qtl.training.fit import Callback

                class C(Callback):
                    def on_epoch_end(self, p):
                        stop.set()

                return [C()]

        outcomes = train_runs(runs, observer=StopAfterFirstEpoch(), stop=stop)
        assert len(outcomes) == 1 and outcomes[0].row["cancelled"] and outcomes[0].row["epochs_done"] == 1


class TestRunIds:
    def test_ids_follow_the_recipe_not_the_machine(self):
        tc = recipe_for("quantum", seed=1)
        a = Run(BASE, tc, dataset="hymenoptera", machine=MachineConfig(data_dir="/data/a"))
        assert a.id == run_id(BASE, tc, "hymenoptera") and len(a.id) == 12
        moved = MachineConfig(device="cuda", data_dir="/elsewhere", cache_dir="/c", num_workers=3)
        assert Run(BASE, tc, dataset="hymenoptera", machine=moved).id == a.id  # machine settings do not count
        legacy = {**tc.to_dict(), "device": "cuda", "data": "/x", "cpu_threads": 1}  # an older checkpoint's
        assert run_id(BASE, legacy, "hymenoptera") == a.id
        named = dataclasses.replace(BASE, class_names=("ants", "bees"))
        assert Run(named, tc, dataset="hymenoptera").id == a.id  # fit fills class names in
        others = [
            Run(BASE, dataclasses.replace(tc, seed=2), dataset="hymenoptera"),
            Run(BASE, dataclasses.replace(tc, lr=1e-3), dataset="hymenoptera"),
            Run(dataclasses.replace(BASE, circuit=CircuitConfig(2, 2)), tc, dataset="hymenoptera"),
            Run(BASE, tc, dataset="other"),
        ]
        assert len({a.id, *(r.id for r in others)}) == 5

    def test_ids_ignore_what_a_variant_does_not_use(self):
        """A linear head has no circuit and a dressed-classical one only a width: those settings do not
        make another run."""
        tc = recipe_for("linear", seed=0)
        deep = dataclasses.replace(BASE, circuit=CircuitConfig(3, 9, "ring"), engine="default.qubit")
        lin = [dataclasses.replace(m, variant="linear") for m in (BASE, deep)]
        assert run_id(lin[0], tc, "d") == run_id(lin[1], tc, "d")
        dc = [
            dataclasses.replace(BASE, variant="dressed-classical", circuit=CircuitConfig(3, d))
            for d in (1, 6)
        ]
        assert run_id(dc[0], tc, "d") == run_id(dc[1], tc, "d")
        wider = dataclasses.replace(dc[0], circuit=CircuitConfig(4, 1))
        assert run_id(wider, tc, "d") != run_id(dc[0], tc, "d")

    def test_recipe_for_caches_views_for_frozen_augmentation(self):
        assert recipe_for("linear", epochs=3).views == 5 and recipe_for("linear", epochs=3).epochs == 3
        assert recipe_for("quantum", augment=True).views == 5
        assert recipe_for("finetuned").views == 0
        with pytest.raises(TypeError):
            recipe_for("quantum", colour="red")


class TestPlanning:
    def test_plan_runs_uses_recipes_and_overrides(self, tmp_path):
        base = ModelConfig(pretrained=False)
        runs = plan_runs(["quantum", "linear"], base, [0, 3], tmp_path, epochs=2, overrides={"lr": 0.01})
        assert [(r.model_config.variant, r.train_config.seed) for r in runs] == [
            ("quantum", 0),
            ("quantum", 3),
            ("linear", 0),
            ("linear", 3),
        ]
        assert {r.train_config.epochs for r in runs} == {2} and {r.train_config.lr for r in runs} == {0.01}
        assert runs[0].train_config.optimizer == "adam" and runs[2].train_config.optimizer == "sgd"
        assert len({r.checkpoint_path for r in runs}) == 4
        with pytest.raises(ValueError, match="cannot override"):
            plan_runs(["quantum"], base, [0], tmp_path, overrides={"optimizer": "sgd"})

    def test_a_seed_given_twice_is_refused(self, tmp_path):
        """Seeds "0, 0" trained the same run twice into one file, and the app counted two checkpoints."""
        base = ModelConfig(pretrained=False)
        for seeds, twice in (([0, 0], 0), ([3, 1, 2, 1], 1)):
            with pytest.raises(ValueError, match=f"^seed {twice} is given twice"):
                plan_runs(["quantum", "linear"], base, seeds, tmp_path)
        assert [r.train_config.seed for r in plan_runs(["linear"], base, [2, 0], tmp_path)] == [2, 0]

    def test_parse_seeds(self):
        assert parse_seeds("0, 1,2") == [0, 1, 2]
        assert parse_seeds(" 3; 4 ,") == [3, 4]
        with pytest.raises(ValueError, match="'x' is not an integer"):
            parse_seeds("1, x")
        with pytest.raises(ValueError, match="at least one seed"):
            parse_seeds(" , ")

    def test_checkpoint_name_says_what_is_inside(self):
        name = checkpoint_name(ModelConfig(pretrained=False), 7, stamp="T")
        assert name == "quantum-resnet18-random-q4d6-s7-T.pt"
