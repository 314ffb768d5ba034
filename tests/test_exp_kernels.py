"""Kernel SVM baselines ignore epochs and lr (one fit): a spec's epochs or lr neither gives them other
ids (they were fitted again under new ids) nor other cells (the report showed two identical cells); the
runs a database holds keep their ids."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import REPO, make_image_folder

from qtl.config import ModelConfig
from qtl.experiments.runs import run_id
from qtl.experiments.spec import parse_spec, plan
from qtl.experiments.stats import cells, format_report


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("k") / "tiny")


def planned(data, **top) -> dict:
    doc = {"dataset": str(data), "pretrained": False, "variant": ["quantum-kernel", "rbf-svm", "linear"]}
    return {r.model_config.variant: r for r in plan(parse_spec({**doc, "seeds": 2, **top}))}


def test_epochs_and_lr_leave_a_kernels_id_and_recipe_as_they_are(data):
    base, two, three = planned(data), planned(data, epochs=2), planned(data, epochs=3, lr=0.01)
    for kernel in ("quantum-kernel", "rbf-svm"):
        assert base[kernel].id == two[kernel].id == three[kernel].id
        assert three[kernel].train_config.epochs == 1 and three[kernel].train_config.lr == 4e-4
    assert len({base["linear"].id, two["linear"].id, three["linear"].id}) == 3  # a trained head: apart
    few = planned(data, epochs=2, per_class=2)  # the data regime and the seed still count
    assert few["rbf-svm"].id != two["rbf-svm"].id and few["rbf-svm"].train_config.regime.per_class == 2


def test_the_shipped_databases_kernel_runs_keep_their_ids():
    db = sqlite3.connect(f"file:{REPO / 'docs' / 'study.db'}?mode=ro&immutable=1", uri=True)
    kernels = 0
    for rid, config in db.execute("SELECT id, config FROM runs"):
        config = json.loads(config)
        model = ModelConfig.from_dict(config["model"])
        kernels += model.is_kernel
        assert run_id(model, config["train"], config["dataset"]) == rid
    db.close()
    assert kernels > 0


def kernel_rows(epochs: int, lr: float, seeds=(0, 1)) -> list[dict]:
    cell = {"variant": "rbf-svm", "backbone": "b", "weights": "imagenet", "qubits": 4}
    return [{**cell, "id": f"{epochs}-{s}", "seed": s, "epochs": epochs, "lr": lr, "val_acc": 0.5 + s / 10}
            for s in seeds]  # fmt: skip


def test_fits_a_spec_gave_other_epochs_or_lr_before_are_one_cell_of_their_seeds():
    rows = kernel_rows(2, 4e-4) + kernel_rows(3, 4e-4) + kernel_rows(3, 0.01, seeds=(0, 1, 2))
    (cell,) = cells(rows)
    assert (cell["n"], cell["seeds"], cell["epochs"], cell["lr"]) == (3, [0, 1, 2], 1, 4e-4)
    assert len(format_report(rows).splitlines()) == 2  # the header and one cell
