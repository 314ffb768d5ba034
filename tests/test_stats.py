"""qtl.experiments.stats against scipy.stats called by hand on synthetic runs: one comparison with a real
difference,
one without, and the cells' confidence intervals."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from qtl.experiments.stats import (
    cells,
    comparisons,
    detectable,
    format_report,
    paired,
    power,
    seeds_needed,
    setup_label,
    summarise,
    summary,
)

SEEDS = range(8)


def rows_for(variant, accs, qubits=None, depth=None, **extra):
    base = dict(
        backbone="b", weights="imagenet", dataset="d", entangler=None, rotation=None, lr=4e-4, epochs=30
    )
    if variant == "quantum":
        base.update(entangler="chain", rotation="ry")
    return [
        {
            **base,
            **extra,
            "variant": variant,
            "qubits": qubits,
            "depth": depth,
            "seed": s,
            "val_acc": float(a),
        }
        for s, a in zip(SEEDS, accs, strict=True)
    ]


@pytest.fixture
def study():
    """Quantum 4q d1 beats its control by ~0.05 on every seed (a real difference); quantum 4q d2 and
    the control differ only by noise; linear is its own thing."""
    rng = np.random.default_rng(0)
    control = 0.80 + rng.normal(0, 0.02, 8)
    better = control + 0.05 + rng.normal(0, 0.005, 8)
    same = control + rng.normal(0, 0.02, 8)
    linear = 0.85 + rng.normal(0, 0.02, 8)
    rows = rows_for("dressed-classical", control, qubits=4)
    rows += rows_for("quantum", better, qubits=4, depth=1) + rows_for("quantum", same, qubits=4, depth=2)
    rows += rows_for("linear", linear, lr=1e-3, epochs=25)
    rows += rows_for("dressed-classical", control + 0.3, qubits=6)  # another width: never a control for 4q
    return rows, {"control": control, "better": better, "same": same, "linear": linear}


class TestSummary:
    def test_mean_std_and_t_interval(self):
        values = [0.81, 0.84, 0.79, 0.88, 0.83]
        s = summary(values)
        mean, sd = statistics.mean(values), statistics.stdev(values)
        half = sps.t.ppf(0.975, 4) * sd / math.sqrt(5)
        assert (s["n"], s["mean"], s["std"]) == (5, pytest.approx(mean), pytest.approx(sd))
        assert (s["ci_low"], s["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
        assert summary([0.7])["ci_low"] is None and summary([0.7, 0.7])["ci_high"] == 0.7

    def test_cells_group_seeds_by_configuration(self, study):
        rows, v = study
        by_name = {(c["variant"], c["qubits"], c["depth"]): c for c in cells(rows)}
        assert len(by_name) == 5
        c = by_name[("quantum", 4, 1)]
        assert c["n"] == 8 and c["seeds"] == list(SEEDS)
        assert c["mean"] == pytest.approx(v["better"].mean()) and c["std"] == pytest.approx(
            v["better"].std(ddof=1)
        )
        low, high = sps.t.interval(0.95, 7, loc=v["better"].mean(), scale=sps.sem(v["better"]))
        assert (c["ci_low"], c["ci_high"]) == (pytest.approx(low), pytest.approx(high))


class TestPaired:
    def test_against_ttest_rel(self, study):
        _, v = study
        a, b = dict(zip(SEEDS, v["better"], strict=True)), dict(zip(SEEDS, v["control"], strict=True))
        p = paired(a, b)
        d = v["better"] - v["control"]
        assert p["n"] == 8 and p["diff"] == pytest.approx(d.mean())
        assert p["p"] == pytest.approx(sps.ttest_rel(v["better"], v["control"]).pvalue)
        low, high = sps.t.interval(0.95, 7, loc=d.mean(), scale=sps.sem(d))
        assert (p["ci_low"], p["ci_high"]) == (pytest.approx(low), pytest.approx(high))

    def test_only_common_seeds_pair(self):
        p = paired({0: 0.9, 1: 0.8, 2: 0.7}, {1: 0.7, 2: 0.7, 5: 0.1})
        assert p["seeds"] == [1, 2] and p["diff"] == pytest.approx(0.05)

    def test_undefined_tests_say_so(self):
        assert paired({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.7})["p"] is None  # the same difference each time
        assert paired({0: 0.9}, {0: 0.8})["p"] is None


class TestComparisons:
    def test_real_difference_and_none(self, study):
        rows, v = study
        comps = {(c["quantum"]["depth"], c["control"]): c for c in comparisons(rows)}
        assert set(comps) == {
            (1, "dressed-classical"),
            (1, "linear"),
            (2, "dressed-classical"),
            (2, "linear"),
        }
        real, noise = comps[(1, "dressed-classical")], comps[(2, "dressed-classical")]
        assert real["diff"] == pytest.approx((v["better"] - v["control"]).mean())  # the 4q control, not 6q
        assert real["p"] == pytest.approx(sps.ttest_rel(v["better"], v["control"]).pvalue)
        assert noise["p"] == pytest.approx(sps.ttest_rel(v["same"], v["control"]).pvalue)
        assert comps[(1, "linear")]["p"] == pytest.approx(sps.ttest_rel(v["better"], v["linear"]).pvalue)
        ps = [c["p"] for c in comparisons(rows)]
        adjusted = sps.false_discovery_control(ps, method="bh")
        assert [c["p_adjusted"] for c in comparisons(rows)] == pytest.approx(list(adjusted))
        assert real["significant"] and real["verdict"].startswith("quantum better")
        assert not noise["significant"] and noise["verdict"] == "no significant difference"

    def test_report_says_no_significant_difference(self, study):
        rows, _ = study
        text = format_report(rows)
        assert "quantum 4q d2 b on d vs dressed-classical" in text and "no significant difference" in text
        assert "quantum better" in text and "comparisons significant after adjustment" in text


class TestPower:
    @pytest.mark.parametrize(
        "n, effect, sd", [(5, 0.02, 0.02), (10, 0.02, 0.02), (8, 0.01, 0.02), (20, -0.015, 0.03)]
    )
    def test_noncentral_t_power_matches_simulated_studies(self, n, effect, sd):
        """20,000 simulated paired studies with true mean difference `effect`: the share whose t-test
        rejects at 0.05 equals the noncentral t power within Monte Carlo error (3 standard errors)."""
        rng = np.random.default_rng(n)
        diffs = rng.normal(effect, sd, size=(20_000, n))
        rejected = (sps.ttest_1samp(diffs, 0, axis=1).pvalue < 0.05).mean()
        p = power(n, effect, sd)
        assert abs(rejected - p) < 3 * math.sqrt(p * (1 - p) / 20_000)

    def test_seeds_needed_and_detectable_invert_power(self):
        """seeds_needed is the first n reaching 80%; detectable(n) is the effect whose power is 80%."""
        n = seeds_needed(0.02, 0.02)
        assert power(n, 0.02, 0.02) >= 0.8 > power(n - 1, 0.02, 0.02)
        assert power(10, detectable(10, 0.02), 0.02) == pytest.approx(0.8, abs=1e-9)
        assert power(1, 0.02, 0.02) is None and seeds_needed(0.02, 0) is None

    def test_every_comparison_carries_its_power(self, study):
        """Power at the measured noise (std of the paired differences), printed in the report."""
        rows, v = study
        noise = next(c for c in comparisons(rows) if c["quantum"]["depth"] == 2 and c["control"] != "linear")
        sd = statistics.stdev(v["same"] - v["control"])
        assert noise["power"] == pytest.approx(power(8, 0.02, sd)) and noise["seeds_needed"] == seeds_needed(
            0.02, sd
        )
        assert "power 0." in format_report(rows) and "seeds; these 8 detect" in format_report(rows)

    def test_each_quantum_lr_pairs_with_the_linear_head_of_that_lr(self):
        """A grid over lr: quantum at lr 0.05 against linear at lr 0.05, not the first linear cell (at
        0.001), which flipped the difference's sign (+0.04 reported, -0.08 true)."""
        rows = []
        for seed in range(3):
            base = {"backbone": "b", "seed": seed, "epochs": 30}
            rows += [{**base, "variant": "quantum", "qubits": 4, "depth": 2, "lr": 0.05, "val_acc": 0.6}]
            rows += [{**base, "variant": "linear", "lr": 0.001, "val_acc": 0.55 + seed / 100}]
            rows += [{**base, "variant": "linear", "lr": 0.05, "val_acc": 0.7 + seed / 100}]
        (c,) = [c for c in comparisons(rows) if c["control"] == "linear"]
        assert c["diff"] == pytest.approx(-0.11)

    def test_a_quantum_circuit_option_leaves_the_recipe_to_pair_on(self):
        """A quantum run at batch 16 without Hadamards pairs with the linear head at batch 16: the
        circuit's options are a label of their own, so the recipe still matches (it fell back to the
        first linear cell and reported +0.19 for a true -0.11)."""
        rows = []
        for seed in range(3):
            base = {"backbone": "b", "seed": seed}
            q = {"variant": "quantum", "qubits": 4, "depth": 2, "recipe": "batch_size 16"}
            rows += [{**base, **q, "circuit_options": "no hadamard", "val_acc": 0.6}]
            rows += [{**base, "variant": "linear", "recipe": None, "val_acc": 0.41 + seed / 100}]
            rows += [{**base, "variant": "linear", "recipe": "batch_size 16", "val_acc": 0.71 + seed / 100}]
        (c,) = [c for c in comparisons(rows) if c["control"] == "linear"]
        assert c["diff"] == pytest.approx(-0.12)

    def test_a_grid_over_the_recipe_pairs_cells_trained_alike(self):
        """A grid over batch size and augmentation for quantum and linear: a recipe label is relative to
        its variant's recipe (linear's augments with 5 views, quantum's does not), so quantum at batch 2
        with augmentation matched no linear label and was paired with the first linear cell (batch 2
        without augmentation): its difference depended on the database's order."""
        linear = {
            None: 0.60,
            "batch_size 2, augment False": 0.50,
            "batch_size 2": 0.80,
            "augment False": 0.70,
        }
        for order in (list(linear), list(reversed(linear))):
            rows = []
            for seed in range(3):
                base = {"backbone": "b", "seed": seed}
                q = {
                    "variant": "quantum",
                    "qubits": 4,
                    "depth": 2,
                    "recipe": "batch_size 2, augment True, views 5",
                }
                rows += [{**base, **q, "val_acc": 0.9}]
                rows += [
                    {**base, "variant": "linear", "recipe": r, "val_acc": linear[r] + seed / 100}
                    for r in order
                ]
            (c,) = [c for c in comparisons(rows) if c["control"] == "linear"]
            assert c["diff"] == pytest.approx(0.9 - 0.81), order  # against batch 2 with augmentation

    def test_labels_name_only_what_a_variant_uses(self):
        """The kernels make one fit whatever the recipe, and the quantum kernel has no q_delta: their
        labels stay None where a quantum head's name what it changed (cells split on settings that do not
        matter, e.g. kernel seeds of a run with --q-delta 0.5 apart from the others)."""
        from qtl.config import ModelConfig, circuit_label, recipe_label
        from qtl.quantum.circuit import CircuitConfig

        train = {"batch_size": 32, "augment": True}
        for variant in ("quantum-kernel", "rbf-svm"):
            assert recipe_label(ModelConfig(variant), train) is None
        assert circuit_label(ModelConfig("quantum-kernel", q_delta=0.5)) is None
        assert (
            circuit_label(ModelConfig("quantum-kernel", circuit=CircuitConfig(hadamard=False)))
            == "no hadamard"
        )
        quantum = ModelConfig("quantum", q_delta=0.5, circuit=CircuitConfig(hadamard=False))
        assert circuit_label(quantum) == "q_delta 0.5, no hadamard"
        assert recipe_label(quantum, train) == "batch_size 32, augment True"

    def test_kernel_baselines_are_controls_of_the_same_width_and_regime(self):
        """quantum-kernel and rbf-svm pair with the quantum cell of their width, in its regime only."""
        rng = np.random.default_rng(3)
        regime = {"split": "kfold-5", "per_class": 5}
        rows = rows_for("quantum", 0.8 + rng.normal(0, 0.02, 8), qubits=4, depth=6, **regime)
        rows += rows_for("quantum-kernel", 0.7 + rng.normal(0, 0.02, 8), qubits=4, depth=6, **regime)
        rows += rows_for("rbf-svm", 0.75 + rng.normal(0, 0.02, 8), qubits=4, **regime)
        rows += rows_for("rbf-svm", 0.95 + rng.normal(0, 0.02, 8), qubits=4, split="kfold-5")  # all labels
        comps = comparisons(rows)
        assert [c["control"] for c in comps] == ["quantum-kernel", "rbf-svm"]
        assert (
            comps[1]["diff"] == pytest.approx(0.05, abs=0.03)
            and comps[0]["verdict"] == "quantum better (adjusted p < 0.05)"
        )


class TestSummarise:
    def test_groups_seeds_by_cell_and_skips_missing(self):
        """Rows equal on every cell key are one cell; mean and std are scipy's, std None for one value."""
        q = {"variant": "quantum", "backbone": "resnet18", "weights": "random", "qubits": 4, "depth": 6}
        q |= {"engine": "native"}
        lin = {"variant": "linear", "backbone": "resnet18", "weights": "random"}
        rows = [{**q, "acc": 0.8}, {**lin, "acc": 0.6}, {**q, "acc": 1.0}, {**lin, "acc": None}]
        rows.append({**q, "noise": "dep0.1", "acc": 0.5})  # another configuration: noise is part of the key
        out = summarise(rows, ("acc",))
        assert [(r["setup"], r["n"]) for r in out] == [
            ("quantum (resnet18 random, 4q d6 native)", 2),
            ("linear (resnet18 random)", 2),
            ("quantum (resnet18 random, 4q d6 native, noise dep0.1)", 1),
        ]
        assert out[0]["acc_mean"] == pytest.approx(0.9)
        assert out[0]["acc_std"] == pytest.approx(statistics.stdev([0.8, 1.0]))
        assert (out[1]["acc_mean"], out[1]["acc_std"]) == (0.6, None)
        assert out[2]["variant"] == "quantum"

    def test_label_names_what_differs(self):
        dc = {
            "variant": "dressed-classical",
            "backbone": "efficientnet_lite0",
            "weights": "imagenet",
            "qubits": 6,
        }
        assert setup_label(dc) == "dressed-classical (efficientnet_lite0 imagenet, width 6)"
        ring = {"variant": "quantum", "backbone": "b", "weights": "random", "qubits": 4, "depth": 2}
        ring |= {"engine": "mps", "entangler": "ring", "rotation": "ry", "dataset": "scans"}
        assert setup_label(ring) == "quantum (b random, 4q d2 mps ring, data scans)"
        # the recipe where it is not the variant's: lr, epochs and the rest (they read as one setup)
        quick = {**ring, "lr": 0.01, "epochs": 3, "recipe": "batch_size 32"}
        assert (
            setup_label(quick)
            == "quantum (b random, 4q d2 mps ring, data scans, lr 0.01, 3 epochs, batch_size 32)"
        )
        assert setup_label({**ring, "lr": 4e-4, "epochs": 30}) == setup_label(ring)  # the paper's recipe
        assert setup_label({**ring, "epochs": 1}) == "quantum (b random, 4q d2 mps ring, data scans, 1 epoch)"


def test_cells_that_differ_only_in_unnamed_settings_are_named_apart():
    """Two learning rates of one circuit: each report line and Markdown table names its own (both read
    "quantum 4q d2 b", and the Markdown grid showed the first cell only); settings that differ only
    between differently named cells (each variant's own recipe) stay unnamed."""
    from qtl.experiments.stats import format_report, markdown_report

    def rows(variant, lr, acc, **extra):
        cell = dict(variant=variant, backbone="b", lr=lr, **extra)
        return [{**cell, "seed": s, "val_acc": acc + s / 100} for s in range(2)]

    quantum = dict(qubits=4, depth=2)
    both = rows("quantum", 0.01, 0.7, **quantum) + rows("quantum", 0.001, 0.9, **quantum)
    text = format_report(both + rows("linear", 0.05, 0.8))
    assert "quantum 4q d2 b lr 0.01 " in text and "quantum 4q d2 b lr 0.001 " in text
    assert "linear b lr 0.05 " in text
    tables = markdown_report(both)
    assert "**quantum** b lr 0.01 (" in tables and "**quantum** b lr 0.001 (" in tables
    assert "0.705 ± 0.007" in tables and "0.905 ± 0.007" in tables
    one = format_report(rows("quantum", 0.01, 0.7, **quantum) + rows("linear", 0.05, 0.8))
    assert "lr" not in one  # each variant at its own recipe: nothing to tell apart
    # an ideal cell (noise None) and a noisy one are apart too (None was not counted: one name, and the
    # Markdown grid showed the ideal cell only)
    ideal = rows("quantum", 0.01, 0.7, **quantum)
    noisy = [{**r, "noise": "dep 0.05", "val_acc": r["val_acc"] - 0.2} for r in ideal]
    tables = markdown_report(ideal + noisy)
    assert "**quantum** b noise-free (" in tables and "**quantum** b noise dep 0.05 (" in tables
    assert "0.505 ± 0.007" in tables
    # a report names a quantum cell alike in its cell lines and its comparisons (two linear recipes:
    # the cells read "... epochs 30", the comparison "quantum 4q d2 b vs linear")
    both_linear = [{**r, "epochs": 30} for r in ideal] + rows("linear", 0.05, 0.6, epochs=10)
    both_linear += rows("linear", 0.05, 0.65, epochs=30)
    text = format_report(both_linear)
    assert "quantum 4q d2 b epochs 30 " in text and "quantum 4q d2 b epochs 30 vs linear" in text


def test_the_report_cuts_an_accuracy_interval_at_0_and_1():
    """Two seeds at 1.0 and 0.9: the Student t interval runs past 1 (to 1.585); an accuracy cannot."""
    from qtl.experiments.stats import format_report

    rows = [dict(variant="linear", backbone="b", seed=s, val_acc=v) for s, v in ((0, 1.0), (1, 0.9))]
    assert "n=2  0.9500 ± 0.0707  [0.3147, 1.0000]" in format_report(rows)


def test_the_markdown_report_on_held_out_accuracy_says_each_cells_metric():
    """metric None (qtl runs --report's default, as the sweep's closing report): a dataset with test/ on
    test_acc, one without on val_acc, each table and comparison saying which; a table whose cells differ
    marks the val_acc ones. It took one metric for all, leaving out the runs without it."""
    from qtl.experiments.stats import markdown_report

    def rows(variant, dataset, acc, test=True, **extra):
        cell = dict(variant=variant, backbone="b", dataset=dataset, qubits=4, depth=2, **extra)
        out = [{**cell, "seed": s, "val_acc": acc + s / 100} for s in range(3)]
        return [{**r, "test_acc": r["val_acc"] - 0.1 if test else None} for r in out]

    tested = rows("quantum", "t", 0.8) + rows("dressed-classical", "t", 0.7)
    untested = rows("quantum", "u", 0.6, test=False) + rows("dressed-classical", "u", 0.5, test=False)
    text = markdown_report(tested + untested, None)
    assert "**quantum** b on t (test_acc, mean ± std" in text and "0.710 ± 0.010 (n=3)" in text
    assert "**quantum** b on u (val_acc, mean ± std" in text and "0.610 ± 0.010 (n=3)" in text
    assert "else on val_acc:" in text
    assert "quantum 4q d2 b on t, on test_acc" in text and "quantum 4q d2 b on u, on val_acc" in text
    assert "Note:" not in text  # nothing left out
    # one table of cells on either metric (another depth without a test split): the val ones marked
    deeper = [{**r, "depth": 3} for r in rows("quantum", "t", 0.6, test=False)]
    text = markdown_report(rows("quantum", "t", 0.8) + deeper, None)
    assert "(test_acc, val_acc where marked (no test split), mean ± std" in text
    assert "0.710 ± 0.010 (n=3) | 0.610 ± 0.010 (n=3, val_acc)" in text
    on_val = markdown_report(tested + untested, "val_acc")  # a metric named: one for all, as before
    assert "on val_acc" not in on_val and "0.810 ± 0.010 (n=3)" in on_val
